// The kAvx512 GEMM of the batched matmul (runtime/quant/gemm.h), through
// MatMul: against the double-precision product of the dequantized weights
// and the dequantized activations, against the AVX2 per-row dots in the same
// process, and across thread counts.
#include "runtime/quant/gemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "runtime/matmul.h"
#include "runtime/quant/group_int.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"
#include "tests/runtime/quant_test_util.h"

namespace fqpack::runtime {
namespace {

namespace qt = quant::testing;
using quant::SimdLevel;

// Every weight type with a GEMM entry, in table order.
std::vector<uint32_t> GemmTypes() {
  std::vector<uint32_t> types;
  for (const quant::TypeTraits& t : quant::AllTraits()) {
    if (t.gemm != nullptr) types.push_back(t.type);
  }
  return types;
}

// Error bounds, relative to sum |w a| (plus, for group-int, the offset term
// sum |m| |a|, whose two parts can cancel). The integer block sums of the
// GEMM are exact like the dots'; only fp32 scaling and the order of the
// float additions differ, so the per-row dots' bound holds.
constexpr double kGemmBound = qt::kFloatAccumulationBound;
// GEMM against the AVX2 per-row dots: each is within kGemmBound of the
// reference, so they are within twice that of each other.
constexpr double kTierBound = 2 * qt::kFloatAccumulationBound;

// The scale sum |w a| (+ sum |m a| for group-int) errors are measured against.
double ErrorScale(uint32_t type, const uint8_t* w, const float* a, int64_t n,
                  const qt::RefDot& ref) {
  double scale = ref.abs_sum;
  if (IsGroupIntType(type)) {
    const int bits = static_cast<int>(GroupIntBits(type));
    const int g = static_cast<int>(GroupIntGroup(type));
    for (int64_t start = 0; start < n; start += g) {
      const int len = static_cast<int>(std::min<int64_t>(g, n - start));
      const double m = Fp16ToF32(DecodeU16(w + 2));
      double sum_abs = 0;
      for (int e = 0; e < len; ++e) sum_abs += std::fabs(a[start + e]);
      scale += std::fabs(m) * sum_abs;
      w += quant::GroupBytes(bits, len);
    }
  }
  return scale;
}

struct Case {
  uint32_t type;
  int64_t rows, cols;
  Bytes w;
  std::vector<float> wd;  // dequantized weights
  size_t row_bytes;

  WeightView view() const { return {type, cols, rows, w.data(), row_bytes}; }
};

Case MakeCase(uint32_t type, int64_t rows, int64_t cols, std::mt19937* rng) {
  Case c{type, rows, cols, {}, {}, static_cast<size_t>(qt::RowBytesOf(type, cols))};
  std::vector<float> values = qt::RandomValues(rows * cols, rng, 0.05f);
  // An offset so that mins and group-int offsets carry real weight.
  for (float& v : values) v += 0.02f;
  c.w = qt::Quantize(type, values, rows, cols);
  c.wd = qt::Dequantize(type, c.w, rows, cols);
  return c;
}

// Block elements of the weight type and of its activation type: the step of
// the column counts tested.
int64_t ColStep(uint32_t type) {
  const quant::TypeTraits* t = quant::FindTraits(type);
  return std::max<int64_t>(t->block_elems, quant::FindTraits(t->vec_dot_type)->block_elems);
}

bool HasGemmTier() { return quant::CpuSimdLevel() >= SimdLevel::kAvx512; }

// Runs MatMul on `c` and checks every output against the double reference.
void ExpectMatchesReference(const Case& c, int64_t n_tokens, ThreadPool* pool, std::mt19937* rng) {
  SCOPED_TRACE(QTypeName(c.type) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols) +
               " tokens=" + std::to_string(n_tokens));
  const uint32_t act_type = quant::FindTraits(c.type)->vec_dot_type;
  const std::vector<float> x = qt::RandomValues(n_tokens * c.cols, rng, 2.0f);
  const std::vector<float> xd =
      qt::Dequantize(act_type, qt::Quantize(act_type, x, n_tokens, c.cols), n_tokens, c.cols);
  std::vector<float> y(static_cast<size_t>(n_tokens * c.rows), -12345.0f);
  MatMul(c.view(), x.data(), n_tokens, y.data(), pool);
  std::vector<float> y2(y.size(), -12345.0f);
  quant::SetSimdCap(SimdLevel::kAvx2);
  MatMul(c.view(), x.data(), n_tokens, y2.data(), pool);
  quant::SetSimdCap(quant::kWidestSimd);
  int failures = 0;
  for (int64_t t = 0; t < n_tokens && failures < 5; ++t) {
    for (int64_t r = 0; r < c.rows && failures < 5; ++r) {
      const float* a = xd.data() + t * c.cols;
      const qt::RefDot ref = qt::DotInDouble(c.wd.data() + r * c.cols, a, c.cols);
      const double scale = ErrorScale(c.type, c.w.data() + r * c.row_bytes, a, c.cols, ref);
      const float got = y[t * c.rows + r];
      const float avx2 = y2[t * c.rows + r];
      if (std::fabs(got - ref.value) > kGemmBound * scale ||
          std::fabs(got - avx2) > kTierBound * scale) {
        ADD_FAILURE() << "token " << t << " row " << r << ": gemm " << got << ", avx2 " << avx2
                      << ", reference " << ref.value;
        ++failures;
      }
    }
  }
}

TEST(Gemm, EveryTypeMatchesTheReferenceAndTheAvx2Path) {
  if (!HasGemmTier()) GTEST_SKIP() << "the CPU lacks AVX-512 F/BW/VL/DQ + VNNI";
  std::mt19937 rng(2024);
  ThreadPool pool(2);
  const std::vector<uint32_t> types = GemmTypes();
  ASSERT_FALSE(types.empty());
  for (uint32_t type : types) {
    const int64_t step = ColStep(type);
    // Rows: below, at and past one 16-row panel; tokens: whole 8-token
    // tiles and a partial one (MatMul takes the per-row dots below
    // kGemmMinTokens); cols: one block to many.
    for (int64_t cols : {step, 3 * step, std::max<int64_t>(2048, 5 * step)}) {
      const Case c = MakeCase(type, cols > 1024 ? 21 : 37, cols, &rng);
      for (int64_t n_tokens : {quant::kGemmMinTokens, 29})
        ExpectMatchesReference(c, n_tokens, &pool, &rng);
    }
  }
}

TEST(Gemm, ManyTokensAndRowsOnThePool) {
  if (!HasGemmTier()) GTEST_SKIP() << "the CPU lacks AVX-512 F/BW/VL/DQ + VNNI";
  std::mt19937 rng(2025);
  ThreadPool pool(2);
  for (uint32_t type : GemmTypes()) {
    const Case c = MakeCase(type, 50, 4 * ColStep(type), &rng);
    ExpectMatchesReference(c, 200, &pool, &rng);
  }
}

TEST(Gemm, PoolOfTwoGivesTheSameBitsAsNoPool) {
  // Every output is computed by the same kernel on the same panel and tile
  // whichever thread runs it, so thread counts change nothing.
  if (!HasGemmTier()) GTEST_SKIP() << "the CPU lacks AVX-512 F/BW/VL/DQ + VNNI";
  std::mt19937 rng(2026);
  ThreadPool pool(2);
  for (uint32_t type : GemmTypes()) {
    SCOPED_TRACE(QTypeName(type));
    // Few rows: the pool splits the tokens too.
    for (int64_t rows : {19, 130}) {
      const Case c = MakeCase(type, rows, 2 * ColStep(type), &rng);
      const int64_t n_tokens = 37;
      const std::vector<float> x = qt::RandomValues(n_tokens * c.cols, &rng, 2.0f);
      std::vector<float> y1(static_cast<size_t>(n_tokens * rows)), y2(y1.size());
      MatMul(c.view(), x.data(), n_tokens, y1.data(), nullptr);
      MatMul(c.view(), x.data(), n_tokens, y2.data(), &pool);
      EXPECT_EQ(y1, y2);
    }
  }
}

}  // namespace
}  // namespace fqpack::runtime
