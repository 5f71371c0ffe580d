// Every dot kernel (portable, AVX2 and AVX-512) against the double-precision dot of
// the dequantized weights and the dequantized activations, the activations
// converted by the same quantizer the runtime uses.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "runtime/quant/quant.h"
#include "schema/quant_types.h"
#include "tests/runtime/quant_test_util.h"

namespace fqpack::runtime::quant {
namespace {

using testing::DotInDouble;
using testing::DotTolerance;
using testing::RefDot;
using testing::WeightTypes;

std::vector<int64_t> RowLengths(uint32_t type) {
  switch (testing::BlockElems(type)) {
    case 1:
      return {1, 7, 16, 17, 172, 256, 1000, 4096};
    case 32:
      return {32, 64, 96, 160, 1024, 4096};
    default:
      return {256, 512, 768, 2816, 4096};
  }
}

struct KernelCase {
  const char* name;
  DotFn dot;
};

std::vector<KernelCase> Kernels(const TypeTraits& t) {
  std::vector<KernelCase> k = {{"portable", t.dot}};
  if (t.dot_avx2 != nullptr && CpuHasAvx2()) k.push_back({"avx2", t.dot_avx2});
  if (t.dot_avx512 != nullptr && CpuSimdLevel() >= SimdLevel::kAvx512) {
    k.push_back({"avx512", t.dot_avx512});
  }
  return k;
}

TEST(QuantKernels, EveryDotMatchesTheDequantizedReference) {
  std::mt19937 rng(1234);
  for (uint32_t type : WeightTypes()) {
    const TypeTraits* t = FindTraits(type);
    ASSERT_NE(t, nullptr) << QTypeName(type);
    const TypeTraits* act = FindTraits(t->vec_dot_type);
    ASSERT_NE(act, nullptr) << QTypeName(t->vec_dot_type);
    for (int64_t n : RowLengths(type)) {
      SCOPED_TRACE(QTypeName(type) + " n=" + std::to_string(n));
      const std::vector<float> wf = testing::RandomValues(n, &rng, 0.05f);
      const Bytes w = testing::Quantize(type, wf, 1, n);
      const std::vector<float> wd = testing::Dequantize(type, w, 1, n);

      const int nt_max = kMaxDotTokens;
      const std::vector<float> xf = testing::RandomValues(n * nt_max, &rng, 3.0f);
      const Bytes a = testing::Quantize(t->vec_dot_type, xf, nt_max, n);
      const std::vector<float> ad = testing::Dequantize(t->vec_dot_type, a, nt_max, n);
      const size_t a_stride = testing::RowBytesOf(t->vec_dot_type, n);

      std::vector<RefDot> ref;
      for (int i = 0; i < nt_max; ++i) ref.push_back(DotInDouble(wd.data(), ad.data() + i * n, n));

      for (const KernelCase& k : Kernels(*t)) {
        for (int nt = 1; nt <= nt_max; ++nt) {
          // Start the tile at a different token each time, so a kernel that
          // mixes up its activation rows cannot pass.
          const int first = nt_max - nt;
          float out[kMaxDotTokens];
          k.dot(n, w.data(), a.data() + first * a_stride, a_stride, nt, out);
          for (int i = 0; i < nt; ++i) {
            const RefDot& r = ref[first + i];
            EXPECT_NEAR(out[i], r.value, DotTolerance(type, w.data(), &ad[(first + i) * n], n, r))
                << k.name << " nt=" << nt << " token " << i;
          }
        }
      }
    }
  }
}

TEST(QuantKernels, AllZeroActivationsGiveZero) {
  // Zero activation blocks take the quantizers' d = 0 branch; the dots must
  // still read them as zeros (not NaN from 0 * inf or 1 / 0).
  std::mt19937 rng(5);
  for (uint32_t type : WeightTypes()) {
    const TypeTraits* t = FindTraits(type);
    const int64_t n = testing::BlockElems(type) == 1 ? 64 : 512;
    const Bytes w = testing::Quantize(type, testing::RandomValues(n, &rng), 1, n);
    const Bytes a = testing::Quantize(t->vec_dot_type, std::vector<float>(n, 0.0f), 1, n);
    for (const KernelCase& k : Kernels(*t)) {
      float out = 1;
      k.dot(n, w.data(), a.data(), a.size(), 1, &out);
      EXPECT_EQ(out, 0.0f) << QTypeName(type) << " " << k.name;
    }
  }
}

TEST(QuantKernels, PortableAndSimdAgreeOnExtremeCodes) {
  // Weights at the ends of every grid (the quantizers clamp there) and
  // activations at +-127: the int16 pair sums of maddubs are closest to
  // saturation here.
  if (!CpuHasAvx2()) GTEST_SKIP() << "no AVX2";
  for (uint32_t type : WeightTypes()) {
    const TypeTraits* t = FindTraits(type);
    const int64_t n = testing::BlockElems(type) == 1 ? 64 : 512;
    std::vector<float> wf(n), xf(n);
    for (int64_t i = 0; i < n; ++i) {
      wf[i] = (i % 3 == 0) ? -1.0f : 1.0f;
      xf[i] = (i % 5 < 2) ? -1.0f : 1.0f;
    }
    const Bytes w = testing::Quantize(type, wf, 1, n);
    const Bytes a = testing::Quantize(t->vec_dot_type, xf, 1, n);
    const std::vector<float> wd = testing::Dequantize(type, w, 1, n);
    const std::vector<float> ad = testing::Dequantize(t->vec_dot_type, a, 1, n);
    const RefDot r = DotInDouble(wd.data(), ad.data(), n);
    const double tol = DotTolerance(type, w.data(), ad.data(), n, r);
    for (const KernelCase& k : Kernels(*t)) {
      float out = 0;
      k.dot(n, w.data(), a.data(), a.size(), 1, &out);
      EXPECT_NEAR(out, r.value, tol) << QTypeName(type) << " " << k.name;
    }
  }
}

TEST(QuantKernels, SimdActivationQuantizersGiveTheScalarBytes) {
  if (!CpuHasAvx2()) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(77);
  for (QType q : {QType::kF16, QType::kQ8_0, QType::kQ8_1, QType::kQ8_K}) {
    const TypeTraits* t = FindTraits(ToId(q));
    ASSERT_NE(t->quantize_avx2, nullptr) << QTypeName(ToId(q));
    const int64_t block = testing::BlockElems(ToId(q));
    for (int64_t n : {block == 1 ? int64_t{172} : block, int64_t{4096}}) {
      std::vector<float> x = testing::RandomValues(n, &rng, 5.0f);
      // The cases where a vectorized quantizer could part ways with the
      // scalar one: an all-zero block, exact ties (amax = 127 makes the
      // reciprocal 1, so k + 0.5 is a tie), and the largest magnitude twice
      // with opposite signs (Q8_K scales by the first).
      if (n >= 768) {
        std::fill(x.begin(), x.begin() + 256, 0.0f);
        for (int j = 0; j < 32; ++j) x[256 + j] = static_cast<float>(j - 16) + 0.5f;
        x[256] = 127;
        x[512 + 3] = -9.0f;
        x[512 + 200] = 9.0f;
        for (int j = 0; j < 256; ++j) {
          if (j != 3 && j != 200) x[512 + j] = std::clamp(x[512 + j], -8.0f, 8.0f);
        }
      }
      const uint64_t bytes = testing::RowBytesOf(ToId(q), n);
      Bytes scalar(bytes), simd(bytes);
      t->quantize(x.data(), scalar.data(), n);
      t->quantize_avx2(x.data(), simd.data(), n);
      EXPECT_EQ(scalar, simd) << QTypeName(ToId(q)) << " n=" << n;
    }
  }
}

TEST(QuantTraits, ActivationTypesFollowLlamaCpp) {
  const std::vector<std::pair<QType, QType>> expected = {
      {QType::kF32, QType::kF32},   {QType::kF16, QType::kF16},   {QType::kBF16, QType::kBF16},
      {QType::kQ4_0, QType::kQ8_0}, {QType::kQ4_1, QType::kQ8_1}, {QType::kQ5_0, QType::kQ8_0},
      {QType::kQ5_1, QType::kQ8_1}, {QType::kQ8_0, QType::kQ8_0}, {QType::kIQ4_NL, QType::kQ8_0},
      {QType::kQ2_K, QType::kQ8_K}, {QType::kQ3_K, QType::kQ8_K}, {QType::kQ4_K, QType::kQ8_K},
      {QType::kQ5_K, QType::kQ8_K}, {QType::kQ6_K, QType::kQ8_K}};
  for (const auto& [weight, act] : expected) {
    const TypeTraits* t = FindTraits(ToId(weight));
    ASSERT_NE(t, nullptr) << QTypeName(ToId(weight));
    EXPECT_EQ(t->vec_dot_type, ToId(act)) << QTypeName(ToId(weight));
    EXPECT_TRUE(IsExecutable(ToId(weight)));
  }
  EXPECT_FALSE(IsExecutable(ToId(QType::kQ8_K)));
  EXPECT_FALSE(IsExecutable(ToId(QType::kQ8_1)));
  EXPECT_FALSE(IsExecutable(ToId(QType::kIQ2_XXS)));
  EXPECT_EQ(FindTraits(ToId(QType::kIQ2_XXS)), nullptr);
}

TEST(QuantTraits, RowsAgreeWithSchemasTable) {
  // The layout facts of a row are schema's (quant_types.h); names and sizes
  // must read the same through either table, group-int rows included.
  for (const TypeTraits& t : AllTraits()) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(QTypeName(t.type), t.name);
    if (t.type != kGroupIntActType) {
      EXPECT_EQ(ParseQTypeName(t.name).value(), t.type);
    }
    EXPECT_EQ(RowBytes(t.type, t.block_elems).value(), t.block_bytes);
    EXPECT_EQ(t.gguf, FindGgmlType(t.type) != nullptr);
    EXPECT_DOUBLE_EQ(t.bits_per_weight, 8.0 * t.block_bytes / t.block_elems);
    if (t.codec.kind != CodecShape::Kind::kNone) {
      EXPECT_NE(t.encode, nullptr);
      EXPECT_TRUE(IsExecutable(t.type)) << "a type fqpack makes must run";
    }
  }
}

TEST(QuantTraits, SimdSwitchSelectsThePortableDot) {
  const TypeTraits* t = FindTraits(ToId(QType::kQ2_K));
  SetSimdEnabled(false);
  EXPECT_EQ(BestDot(*t), t->dot);
  SetSimdEnabled(true);
  EXPECT_EQ(BestDot(*t), CpuSimdLevel() >= SimdLevel::kAvx512 ? t->dot_avx512
                         : CpuHasAvx2()                       ? t->dot_avx2
                                                              : t->dot);
  SetSimdCap(SimdLevel::kAvx2);
  EXPECT_EQ(BestDot(*t), CpuHasAvx2() ? t->dot_avx2 : t->dot);
  EXPECT_EQ(BestDecode(*t), nullptr);
  SetSimdCap(SimdLevel::kAvx512);
  EXPECT_EQ(BestDecode(*t), CpuSimdLevel() >= SimdLevel::kAvx512 ? t->decode : nullptr);
  SetSimdCap(kWidestSimd);
  EXPECT_EQ(BestDecode(*t), CpuSimdLevel() >= SimdLevel::kAvx512Gfni ? t->decode_gfni
                            : CpuSimdLevel() >= SimdLevel::kAvx512   ? t->decode
                                                                     : nullptr);
  ASSERT_NE(t->decode_gfni, nullptr);
}

// The decode types of users' ladders: each must have an AVX-512 dot.
TEST(QuantTraits, LadderTypesHaveAvx512Dots) {
  for (QType q : {QType::kQ8_0, QType::kQ6_K, QType::kQ5_K, QType::kQ4_K, QType::kQ4_0,
                  QType::kQ3_K, QType::kQ2_K, QType::kIQ4_NL}) {
    EXPECT_NE(FindTraits(ToId(q))->dot_avx512, nullptr) << QTypeName(ToId(q));
  }
  for (uint32_t type : WeightTypes()) {
    const TypeTraits* t = FindTraits(type);
    if (type >= kGroupIntBase) {
      EXPECT_NE(t->dot_avx512, nullptr) << QTypeName(type);
    }
  }
}

// The AVX-512 dots sum the same integer products as the AVX2 ones and
// differ only in the order of their fp32 additions: per block (or
// super-block) the exact int32 sum is scaled by d_w * d_a and accumulated.
// Their difference is bounded by that reordering: a few fp32 ulps of the
// sum of the absolute block terms, bounded here by
//   kReorderUlps * 2^-24 * sum_k |w_k| |a_k| (in double).
constexpr double kReorderUlps = 16;

TEST(QuantKernels, Avx512MatchesAvx2UpToAdditionOrder) {
  if (CpuSimdLevel() < SimdLevel::kAvx512) GTEST_SKIP() << "no AVX-512 + VNNI";
  std::mt19937 rng(99);
  // Every type with an AVX-512 dot, fqpack's group-int types included.
  for (const TypeTraits& traits : AllTraits()) {
    if (traits.dot_avx512 == nullptr) continue;
    const uint32_t type = traits.type;
    const TypeTraits* t = &traits;
    // Row lengths with an odd number of blocks and, for the group-int
    // types, whole 16-chunk tiles, tiles plus single groups, and partial
    // groups and chunks, so every path of the kernels runs.
    const std::vector<int64_t> lengths =
        type >= kGroupIntBase
            ? std::vector<int64_t>{32, 64, 96, 200, 512, 544, 1000, 1536, 2080, 2048 + 384 + 7}
            : RowLengths(type);
    for (int64_t n : lengths) {
      SCOPED_TRACE(QTypeName(type) + " n=" + std::to_string(n));
      const std::vector<float> wf = testing::RandomValues(n, &rng, 0.05f);
      const Bytes w = testing::Quantize(type, wf, 1, n);
      const std::vector<float> wd = testing::Dequantize(type, w, 1, n);
      const std::vector<float> xf = testing::RandomValues(n * kMaxDotTokens, &rng, 3.0f);
      const Bytes a = testing::Quantize(t->vec_dot_type, xf, kMaxDotTokens, n);
      const std::vector<float> ad = testing::Dequantize(t->vec_dot_type, a, kMaxDotTokens, n);
      const size_t a_stride = testing::RowBytesOf(t->vec_dot_type, n);
      for (int nt = 1; nt <= kMaxDotTokens; ++nt) {
        const int first = kMaxDotTokens - nt;
        float wide[kMaxDotTokens], narrow[kMaxDotTokens], portable[kMaxDotTokens];
        t->dot_avx512(n, w.data(), a.data() + first * a_stride, a_stride, nt, wide);
        t->dot_avx2(n, w.data(), a.data() + first * a_stride, a_stride, nt, narrow);
        t->dot(n, w.data(), a.data() + first * a_stride, a_stride, nt, portable);
        for (int i = 0; i < nt; ++i) {
          double abs_sum = 0;
          for (int64_t k = 0; k < n; ++k) {
            abs_sum += std::abs(static_cast<double>(wd[k]) * ad[(first + i) * n + k]);
          }
          const double bound = kReorderUlps * 0x1p-24 * abs_sum;
          EXPECT_NEAR(wide[i], narrow[i], bound) << "avx2, nt=" << nt << " token " << i;
          EXPECT_NEAR(wide[i], portable[i], bound) << "portable, nt=" << nt << " token " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace fqpack::runtime::quant
