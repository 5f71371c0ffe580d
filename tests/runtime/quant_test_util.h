// Helpers shared by the quant and matmul tests: realistic random weights,
// row conversions through the traits table, and the double-precision
// reference dot everything is measured against.
#ifndef FQPACK_TESTS_RUNTIME_QUANT_TEST_UTIL_H_
#define FQPACK_TESTS_RUNTIME_QUANT_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/quant/blocks.h"
#include "runtime/quant/group_int.h"
#include "runtime/quant/quant.h"
#include "schema/coding.h"
#include "schema/half.h"
#include "schema/quant_types.h"

namespace fqpack::runtime::quant::testing {

// Every GGUF weight type the runtime executes: the rows of the type table
// with a dot, in table order (fqpack's group-int types have tests of their
// own).
inline const std::vector<uint32_t>& WeightTypes() {
  static const std::vector<uint32_t> types = [] {
    std::vector<uint32_t> v;
    for (const TypeTraits& t : AllTraits()) {
      if (t.gguf && t.dot != nullptr) v.push_back(t.type);
    }
    return v;
  }();
  return types;
}

inline uint32_t BlockElems(uint32_t type) { return FindGgmlType(type)->block_elems; }

// Weight-like values: Gaussian, with the scale drifting from block to block
// and a few outliers, so that per-block scales and mins get exercised.
inline std::vector<float> RandomValues(int64_t n, std::mt19937* rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.2f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  float block_scale = 1;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 32 == 0) block_scale = uniform(*rng);
    v[i] = scale * block_scale * normal(*rng);
    if ((*rng)() % 97 == 0) v[i] *= 6;
  }
  return v;
}

inline uint64_t RowBytesOf(uint32_t type, int64_t n) {
  return RowBytes(type, static_cast<uint64_t>(n)).value();
}

// `rows` rows of `cols` values converted to `type` by its table quantizer.
inline Bytes Quantize(uint32_t type, const std::vector<float>& x, int64_t rows, int64_t cols) {
  const TypeTraits* t = FindTraits(type);
  const uint64_t row_bytes = RowBytesOf(type, cols);
  Bytes out(row_bytes * rows);
  for (int64_t r = 0; r < rows; ++r)
    t->quantize(x.data() + r * cols, out.data() + r * row_bytes, cols);
  return out;
}

inline std::vector<float> Dequantize(uint32_t type, const Bytes& bytes, int64_t rows,
                                     int64_t cols) {
  const TypeTraits* t = FindTraits(type);
  const uint64_t row_bytes = RowBytesOf(type, cols);
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    t->dequantize(bytes.data() + r * row_bytes, out.data() + r * cols, cols);
  return out;
}

struct RefDot {
  double value = 0;
  double abs_sum = 0;  // sum |w * a|: the scale errors are measured against
};

inline RefDot DotInDouble(const float* w, const float* a, int64_t n) {
  RefDot r;
  for (int64_t k = 0; k < n; ++k) {
    const double p = static_cast<double>(w[k]) * static_cast<double>(a[k]);
    r.value += p;
    r.abs_sum += std::fabs(p);
  }
  return r;
}

// Error bounds of a kernel against the double reference of the same
// (dequantized) operands, relative to sum |w * a|. Integer block sums are
// exact, so what remains is fp32 rounding of scales and accumulation. One
// wrong code in a row of n weights moves a dot by about 1/n of sum |w * a|,
// which is above this bound for the row lengths tested (n <= 4096).
constexpr double kFloatAccumulationBound = 1e-5;
// Q4_1/Q5_1 fold each block's weight offset m in as m * s, with s = d * sum(q)
// of the activation block rounded to fp16 (as llama.cpp does), while the
// reference sees m * d_fp16 * sum(q): the two differ by up to 2^-10 of
// |m * s| per block.
constexpr double kOffsetTimesFp16SumBound = 1e-3;

// The allowed |kernel - reference| for one dot of weight row `w` (stored
// type) with dequantized activations `a`.
inline double DotTolerance(uint32_t type, const uint8_t* w, const float* a, int64_t n,
                           const RefDot& ref) {
  double tol = kFloatAccumulationBound * ref.abs_sum;
  if (type == ToId(QType::kQ4_1) || type == ToId(QType::kQ5_1)) {
    // Both block layouts start with fp16 d then fp16 m (schema/quant_types.md).
    const size_t block_bytes = FindGgmlType(type)->block_bytes;
    for (int64_t b = 0; b < n / 32; ++b) {
      const float m = Fp16ToF32(DecodeU16(w + b * block_bytes + 2));
      double sum = 0;
      for (int j = 0; j < 32; ++j) sum += a[32 * b + j];
      tol += kOffsetTimesFp16SumBound * std::fabs(m * sum);
    }
  }
  return tol;
}

// For the types whose weights are a scaled code minus (or plus) a
// per-(sub-)block offset that the kernels apply apart from the codes (Q2_K,
// Q4_K and Q5_K's dmin * min; the group-int types' m): sum over (sub-)blocks
// of |offset| * sum |a|. The two parts can cancel, so the fp32 rounding of
// each is relative to its own size, not to sum |w * a|; 0 for other types.
inline double OffsetMagnitude(uint32_t type, const uint8_t* w, const float* a, int64_t n) {
  double total = 0;
  const auto add = [&](double offset, int64_t start, int64_t len) {
    double sum_abs = 0;
    for (int64_t e = start; e < start + len; ++e) sum_abs += std::fabs(a[e]);
    total += std::fabs(offset) * sum_abs;
  };
  if (IsGroupIntType(type)) {
    const int bits = static_cast<int>(GroupIntBits(type));
    const int g = static_cast<int>(GroupIntGroup(type));
    for (int64_t start = 0; start < n; start += g) {
      const int len = static_cast<int>(std::min<int64_t>(g, n - start));
      // int8 codes are stored + 128, so their offset holds 128 d as well.
      add(Fp16ToF32(DecodeU16(w + 2)) + (bits == 8 ? 128.0 * Fp16ToF32(DecodeU16(w)) : 0), start,
          len);
      w += GroupBytes(bits, len);
    }
  } else if (type == ToId(QType::kQ2_K)) {
    const auto* x = reinterpret_cast<const BlockQ2_K*>(w);
    for (int64_t b = 0; b < n / kQKK; ++b) {
      for (int s = 0; s < 16; ++s) {
        add(Fp16ToF32(x[b].dmin) * (x[b].scales[s] >> 4), kQKK * b + int64_t{16} * s, 16);
      }
    }
  } else if (type == ToId(QType::kQ4_K) || type == ToId(QType::kQ5_K)) {
    const size_t block_bytes = FindGgmlType(type)->block_bytes;
    for (int64_t b = 0; b < n / kQKK; ++b) {
      // Both layouts: fp16 d, fp16 dmin, then the 12 scale bytes.
      const uint8_t* block = w + b * block_bytes;
      for (int j = 0; j < 8; ++j) {
        uint8_t sc = 0, mn = 0;
        K4ScaleMin(block + 4, j, &sc, &mn);
        add(Fp16ToF32(DecodeU16(block + 2)) * mn, kQKK * b + int64_t{32} * j, 32);
      }
    }
  }
  return total;
}

}  // namespace fqpack::runtime::quant::testing

#endif  // FQPACK_TESTS_RUNTIME_QUANT_TEST_UTIL_H_
