// The decode path of the kAvx512 and kAvx512Gfni tiers
// (runtime/quant/decode.h): the packed activation and row kernel of every
// type that has one, against the portable dot of the same bytes (and the
// GFNI kernels against the others, bit for bit), and through MatMul with
// one token against the portable tier, on no pool and on pools of one and
// two threads.
#include "runtime/quant/decode.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/matmul.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/quant.h"
#include "schema/coding.h"
#include "schema/half.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"
#include "tests/runtime/quant_test_util.h"

namespace fqpack::runtime {
namespace {

namespace qt = quant::testing;
using quant::SimdLevel;

// The decode kernels sum the same exact int32 block sums as the portable
// dot and scale each by the same fp32 d_w * d_a; only the order of the fp32
// additions across blocks differs (and one rounding fewer per block, from
// the FMA). The difference is bounded by that reordering, as the AVX-512
// dots are bounded against the portable ones:
//   kReorderUlps * 2^-24 * (sum_k |w_k a_k| + offsets),
// offsets the size of the per-block offset terms (mins, group-int m) that
// are summed apart from the codes and may cancel against them
// (qt::OffsetMagnitude).
// A wrong offset correction (K - 1 instead of K) moves every block by
// d_w d_a sum(a), far above this.
constexpr double kReorderUlps = 16;

// Writes fp16 `h` little-endian at p, as block fields are stored.
void PutHalf(uint8_t* p, uint16_t h) {
  p[0] = static_cast<uint8_t>(h);
  p[1] = static_cast<uint8_t>(h >> 8);
}

bool HasDecodeTier() { return quant::CpuSimdLevel() >= SimdLevel::kAvx512; }

// 64-byte aligned storage for a packed activation.
struct AlignedBytes {
  std::vector<uint8_t> storage;
  uint8_t* data = nullptr;
  explicit AlignedBytes(size_t n) : storage(n + 64) {
    const auto address = reinterpret_cast<uintptr_t>(storage.data());
    data = storage.data() + (64 - address % 64) % 64;
  }
};

bool HasGfniTier() { return quant::CpuSimdLevel() >= SimdLevel::kAvx512Gfni; }

// The decode ops of `t` this CPU runs: decode, then decode_gfni.
std::vector<const quant::DecodeOps*> OpsOf(const quant::TypeTraits& t) {
  std::vector<const quant::DecodeOps*> ops = {t.decode};
  if (t.decode_gfni != nullptr && HasGfniTier()) ops.push_back(t.decode_gfni);
  return ops;
}

// y = rows . a through `ops`, y starting as a value no kernel writes.
std::vector<float> RunOps(const quant::DecodeOps& ops, int64_t cols, const uint8_t* w,
                          size_t row_bytes, int64_t nrows, const Bytes& a) {
  AlignedBytes packed(ops.act_bytes(cols));
  ops.pack_act(cols, a.data(), packed.data);
  std::vector<float> y(static_cast<size_t>(nrows), -12345.0f);
  ops.rows(cols, w, row_bytes, nrows, packed.data, y.data());
  return y;
}

// Every weight type with DecodeOps, in table order.
std::vector<const quant::TypeTraits*> DecodeTypes() {
  std::vector<const quant::TypeTraits*> types;
  for (const quant::TypeTraits& t : quant::AllTraits()) {
    if (t.decode != nullptr) types.push_back(&t);
  }
  return types;
}

// Column counts: one block, fewer than a 16-block tile, whole tiles, whole
// tiles plus an odd number of blocks, and model widths; for the 256-element
// k-quants (which use those of whole super-blocks) one, two and odd
// numbers of super-blocks.
const std::vector<int64_t> kCols = {32,  64,   96,   160,  256,  480,  512,  544,        608,
                                    768, 1120, 1280, 2048, 2080, 2304, 4096, 4096 + 224, 5632};

// The counts of kCols a row of `t` may have: whole blocks of the GGUF
// types, any length for the group-int types (whose last group may be
// partial).
std::vector<int64_t> ColsFor(const quant::TypeTraits& t) {
  std::vector<int64_t> cols;
  for (int64_t c : kCols) {
    if (!t.gguf || c % t.block_elems == 0) cols.push_back(c);
  }
  return cols;
}

// Checks t.decode's rows over `nrows` rows of `w` (stride row_bytes)
// against the portable dot with activation row `a`, and t.decode_gfni's
// against t.decode's bit for bit; returns the decode outputs.
std::vector<float> ExpectRowsMatchPortable(const quant::TypeTraits& t, int64_t cols, const Bytes& w,
                                           size_t row_bytes, int64_t nrows, const Bytes& a) {
  const std::vector<float> y = RunOps(*t.decode, cols, w.data(), row_bytes, nrows, a);
  for (const quant::DecodeOps* ops : OpsOf(t)) {
    EXPECT_EQ(RunOps(*ops, cols, w.data(), row_bytes, nrows, a), y)
        << (ops == t.decode_gfni ? "the GFNI kernel" : "the kernel") << " differs from decode's";
  }

  const std::vector<float> ad = qt::Dequantize(t.vec_dot_type, a, 1, cols);
  std::vector<float> wd(static_cast<size_t>(cols));
  int failures = 0;
  for (int64_t r = 0; r < nrows && failures < 5; ++r) {
    const uint8_t* row = w.data() + r * row_bytes;
    float portable = 0;
    t.dot(cols, row, a.data(), a.size(), 1, &portable);
    t.dequantize(row, wd.data(), cols);
    const qt::RefDot ref = qt::DotInDouble(wd.data(), ad.data(), cols);
    const double bound =
        kReorderUlps * 0x1p-24 * (ref.abs_sum + qt::OffsetMagnitude(t.type, row, ad.data(), cols));
    if (!(std::fabs(y[r] - portable) <= bound)) {
      ADD_FAILURE() << "row " << r << ": decode " << y[r] << ", portable " << portable << ", bound "
                    << bound;
      ++failures;
    }
  }
  return y;
}

TEST(Decode, RandomRowsMatchThePortableDot) {
  if (!HasDecodeTier()) GTEST_SKIP() << "the CPU lacks AVX-512 F/BW/VL/DQ + VNNI";
  std::mt19937 rng(31);
  const std::vector<const quant::TypeTraits*> types = DecodeTypes();
  // Q8_0, Q4_0, IQ4_NL, the five k-quants and the 18 group-int types.
  ASSERT_EQ(types.size(), 26u);
  for (const quant::TypeTraits* t : types) {
    for (int64_t cols : ColsFor(*t)) {
      SCOPED_TRACE(std::string(t->name) + " cols=" + std::to_string(cols));
      // Two whole groups of eight rows (the k-quants' kernels run eight
      // rows at a time) and a partial one.
      const int64_t nrows = 19;
      const Bytes w =
          qt::Quantize(t->type, qt::RandomValues(nrows * cols, &rng, 0.05f), nrows, cols);
      const Bytes a = qt::Quantize(t->vec_dot_type, qt::RandomValues(cols, &rng, 3.0f), 1, cols);
      ExpectRowsMatchPortable(*t, cols, w, qt::RowBytesOf(t->type, cols), nrows, a);
    }
  }
}

// Offsets of a weight block's fp16 fields (scales and mins) that raw test
// bytes must keep finite.
std::vector<uint32_t> HalfFields(uint32_t type) {
  if (type == ToId(QType::kQ4_K) || type == ToId(QType::kQ5_K)) return {0, 2};
  if (type == ToId(QType::kQ2_K)) return {80, 82};
  if (type == ToId(QType::kQ3_K)) return {108};
  if (type == ToId(QType::kQ6_K)) return {208};
  return {0};  // Q8_0, Q4_0, IQ4_NL: d first
}

// An activation row of `cols` elements of `type` (Q8_0 or Q8_K) from raw
// codes: whole blocks of +127, of -128 and of random codes in turn, scales
// from `scales`; Q8_K's block sums are those of its codes.
Bytes RawActivation(const quant::TypeTraits& act, int64_t cols, const float (&scales)[5],
                    std::mt19937* rng) {
  Bytes a(qt::RowBytesOf(act.type, cols));
  const int64_t nb = cols / act.block_elems;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* block = a.data() + b * act.block_bytes;
    const auto code = [&] {
      return b % 3 == 0 ? int8_t{127} : b % 3 == 1 ? int8_t{-128} : static_cast<int8_t>((*rng)());
    };
    if (act.type == ToId(QType::kQ8_K)) {
      auto* y = reinterpret_cast<quant::BlockQ8_K*>(block);
      y->d = scales[(b + 2) % 5];
      for (int16_t& s : y->bsums) s = 0;
      for (int e = 0; e < quant::kQKK; ++e) {
        y->qs[e] = code();
        y->bsums[e / 16] = static_cast<int16_t>(y->bsums[e / 16] + y->qs[e]);
      }
    } else {
      PutHalf(block, F32ToFp16(scales[(b + 2) % 5]));
      for (uint32_t k = 2; k < act.block_bytes; ++k) block[k] = static_cast<uint8_t>(code());
    }
  }
  return a;
}

TEST(Decode, ExtremeCodesAndScalesMatchThePortableDot) {
  // Raw bytes rather than quantizer output: every code of the type (Q8_0's
  // and Q8_K's -128 included, which no quantizer writes), all-max and
  // all-min blocks, and scales from tiny to large, for weights and
  // activations alike. The rows are stored with a stride longer than a row.
  if (!HasDecodeTier()) GTEST_SKIP() << "the CPU lacks AVX-512 F/BW/VL/DQ + VNNI";
  std::mt19937 rng(32);
  const float kScales[] = {1e-4f, 0.01f, 0.5f, 3.0f, 200.0f};
  for (const quant::TypeTraits* t : DecodeTypes()) {
    // The group-int types' own extremes are in group_int_test.cc.
    if (!t->gguf) continue;
    const quant::TypeTraits& act = *quant::FindTraits(t->vec_dot_type);
    const std::vector<uint32_t> halves = HalfFields(t->type);
    for (int64_t cols : ColsFor(*t)) {
      SCOPED_TRACE(std::string(t->name) + " cols=" + std::to_string(cols));
      const int64_t nb = cols / t->block_elems;
      const int64_t nrows = 11;
      const size_t row_bytes = qt::RowBytesOf(t->type, cols) + 6;
      Bytes w(nrows * row_bytes);
      for (int64_t r = 0; r < nrows; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
          uint8_t* block = w.data() + r * row_bytes + b * t->block_bytes;
          for (uint32_t k = 0; k < t->block_bytes; ++k) {
            // Row 0: every byte 0xFF; row 1: 0x00; row 2: 0x80; others random.
            block[k] = r == 0 ? 0xFF : r == 1 ? 0x00 : r == 2 ? 0x80 : static_cast<uint8_t>(rng());
          }
          for (size_t f = 0; f < halves.size(); ++f) {
            PutHalf(block + halves[f],
                    F32ToFp16(kScales[(r + b + f) % 5] * ((b % 3 == 0) ? -1.0f : 1.0f)));
          }
        }
      }
      ExpectRowsMatchPortable(*t, cols, w, row_bytes, nrows,
                              RawActivation(act, cols, kScales, &rng));
    }
  }
}

// A kernel that runs rows in groups must give each row the same bits
// whichever rows share its group: MatMul's threads start their runs of rows
// anywhere, and a partial last group pads itself with repeated rows.
TEST(Decode, ARowsBitsDoNotDependOnWhereItsRunStartsOrEnds) {
  if (!HasDecodeTier()) GTEST_SKIP() << "the CPU lacks AVX-512 F/BW/VL/DQ + VNNI";
  std::mt19937 rng(35);
  for (const quant::TypeTraits* t : DecodeTypes()) {
    SCOPED_TRACE(t->name);
    const int64_t cols = t->block_elems == quant::kQKK ? 768 : 544, nrows = 21;
    const size_t row_bytes = qt::RowBytesOf(t->type, cols);
    const Bytes w = qt::Quantize(t->type, qt::RandomValues(nrows * cols, &rng, 0.05f), nrows, cols);
    const Bytes a = qt::Quantize(t->vec_dot_type, qt::RandomValues(cols, &rng, 3.0f), 1, cols);
    for (const quant::DecodeOps* ops : OpsOf(*t)) {
      const std::vector<float> all = RunOps(*ops, cols, w.data(), row_bytes, nrows, a);
      for (int64_t first = 0; first <= 9; ++first) {
        for (int64_t count : {int64_t{1}, int64_t{3}, int64_t{8}, nrows - first}) {
          const std::vector<float> part =
              RunOps(*ops, cols, w.data() + first * row_bytes, row_bytes, count, a);
          EXPECT_EQ(part, std::vector<float>(all.begin() + first, all.begin() + first + count))
              << "rows " << first << ".." << first + count;
        }
      }
    }
  }
}

TEST(Decode, AllZeroActivationsGiveZero) {
  if (!HasDecodeTier()) GTEST_SKIP() << "the CPU lacks AVX-512 F/BW/VL/DQ + VNNI";
  std::mt19937 rng(33);
  for (const quant::TypeTraits* t : DecodeTypes()) {
    const int64_t cols = t->block_elems == quant::kQKK ? 768 : 544;
    const Bytes w = qt::Quantize(t->type, qt::RandomValues(cols, &rng), 1, cols);
    const Bytes a = qt::Quantize(t->vec_dot_type, std::vector<float>(cols, 0.0f), 1, cols);
    for (const quant::DecodeOps* ops : OpsOf(*t)) {
      EXPECT_EQ(RunOps(*ops, cols, w.data(), w.size(), 1, a), std::vector<float>{0.0f}) << t->name;
    }
  }
}

// MatMul with one token: the decode path on the kAvx512 tier, the per-row
// dots when the tier is capped below it.
TEST(Decode, MatMulOneTokenUsesItAndMatchesThePortableTier) {
  if (!HasDecodeTier()) GTEST_SKIP() << "the CPU lacks AVX-512 F/BW/VL/DQ + VNNI";
  std::mt19937 rng(34);
  ThreadPool one(1), two(2);
  for (const quant::TypeTraits* t : DecodeTypes()) {
    // 65 blocks per row (four tiles and one block; nine super-blocks of the
    // k-quants, four pairs and one), and enough rows that the matrix is
    // split over the pool's threads.
    const int64_t cols = t->block_elems == quant::kQKK ? 2304 : 2080, rows = 450;
    SCOPED_TRACE(t->name);
    const size_t row_bytes = qt::RowBytesOf(t->type, cols);
    const Bytes w = qt::Quantize(t->type, qt::RandomValues(rows * cols, &rng, 0.05f), rows, cols);
    const std::vector<float> x = qt::RandomValues(cols, &rng, 2.0f);
    const WeightView view{t->type, cols, rows, w.data(), row_bytes};

    // What the kernel gives for these bytes, called directly.
    const Bytes a = qt::Quantize(t->vec_dot_type, x, 1, cols);
    const std::vector<float> direct = RunOps(*t->decode, cols, w.data(), row_bytes, rows, a);

    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &one, &two}) {
      std::vector<float> y(static_cast<size_t>(rows), -12345.0f);
      MatMul(view, x.data(), 1, y.data(), pool);
      // Each row is computed whole by one thread, so the bits do not depend
      // on the split.
      EXPECT_EQ(y, direct) << "pool of " << (pool == nullptr ? 0 : pool->size());
    }

    std::vector<float> portable(static_cast<size_t>(rows));
    quant::SetSimdCap(SimdLevel::kPortable);
    MatMul(view, x.data(), 1, portable.data(), &two);
    std::vector<float> avx2(static_cast<size_t>(rows));
    quant::SetSimdCap(SimdLevel::kAvx2);
    MatMul(view, x.data(), 1, avx2.data(), &two);
    // Capped below GFNI, MatMul runs decode (above, decode_gfni where the
    // CPU has it): the same bits.
    std::vector<float> no_gfni(static_cast<size_t>(rows));
    quant::SetSimdCap(SimdLevel::kAvx512);
    MatMul(view, x.data(), 1, no_gfni.data(), &two);
    EXPECT_EQ(no_gfni, direct);
    quant::SetSimdCap(quant::kWidestSimd);

    const std::vector<float> ad = qt::Dequantize(t->vec_dot_type, a, 1, cols);
    std::vector<float> wd(static_cast<size_t>(cols));
    int failures = 0;
    for (int64_t r = 0; r < rows && failures < 5; ++r) {
      t->dequantize(w.data() + r * row_bytes, wd.data(), cols);
      const double bound =
          kReorderUlps * 0x1p-24 *
          (qt::DotInDouble(wd.data(), ad.data(), cols).abs_sum +
           qt::OffsetMagnitude(t->type, w.data() + r * row_bytes, ad.data(), cols));
      if (!(std::fabs(direct[r] - portable[r]) <= bound)) {
        ADD_FAILURE() << "row " << r << ": decode " << direct[r] << ", portable " << portable[r];
        ++failures;
      }
      float dot = 0;
      t->dot_avx2(cols, w.data() + r * row_bytes, a.data(), a.size(), 1, &dot);
      if (avx2[r] != dot) {
        ADD_FAILURE() << "row " << r << ": capped at AVX2 MatMul gave " << avx2[r]
                      << ", the AVX2 dot " << dot;
        ++failures;
      }
    }
  }
}

}  // namespace
}  // namespace fqpack::runtime
