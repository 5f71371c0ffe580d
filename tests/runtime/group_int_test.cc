// fqpack's group-int types: the code layout against an independent reading
// of schema/quant_types.md, every dot kernel (portable and AVX2) against the
// double-precision dot of the dequantized operands, the int8-act quantizers,
// and the reference quantizer's round-trip bound.
#include "runtime/quant/group_int.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "runtime/matmul.h"
#include "runtime/quant/decode.h"
#include "runtime/quant/quant.h"
#include "schema/coding.h"
#include "schema/half.h"
#include "schema/quant_types.h"
#include "tests/runtime/quant_test_util.h"

namespace fqpack::runtime::quant {
namespace {

using testing::DotInDouble;
using testing::RefDot;

constexpr int kBitWidths[] = {2, 3, 4, 5, 6, 8};
constexpr int kGroups[] = {32, 64, 128};

std::vector<uint32_t> GroupIntTypes() {
  std::vector<uint32_t> types;
  for (int b : kBitWidths) {
    for (int g : kGroups) types.push_back(GroupIntId(b, g));
  }
  return types;
}

// Row lengths: whole groups, rows ending in a shorter group, a partial
// chunk of every size class, and the 172 of stories260K's ffn_down.
const std::vector<int64_t> kRowLengths = {1, 7, 31, 32, 33, 64, 96, 100, 172, 256, 1000, 4096};

// The code of element e of a group, read straight from the spec's wording
// (schema/quant_types.md): whole chunks are bit planes, a partial chunk a bit
// stream. Written independently of group_int.cc's packing.
int SpecCode(int bits, const uint8_t* codes, int len, int e) {
  const int c = e / 32, j = e % 32;
  const uint8_t* p = codes + 4 * bits * c;
  if (32 * (c + 1) > len) {
    int v = 0;
    for (int b = 0; b < bits; ++b) {
      const int k = j * bits + b;
      v |= ((p[k / 8] >> (k % 8)) & 1) << b;
    }
    return v;
  }
  const auto nibble = [&](const uint8_t* q) { return (q[j % 16] >> (4 * (j / 16))) & 0xF; };
  const auto crumb = [&](const uint8_t* q) { return (q[j % 8] >> (2 * (j / 8))) & 3; };
  const auto bit = [&](const uint8_t* q) { return static_cast<int>((DecodeU32(q) >> j) & 1); };
  switch (bits) {
    case 2:
      return crumb(p);
    case 3:
      return crumb(p) | bit(p + 8) << 2;
    case 4:
      return nibble(p);
    case 5:
      return nibble(p) | bit(p + 16) << 4;
    case 6:
      return nibble(p) | crumb(p + 16) << 4;
    default:
      return p[j];
  }
}

TEST(GroupInt, PackedCodesFollowTheSpec) {
  std::mt19937 rng(3);
  for (int bits : kBitWidths) {
    for (int len : {1, 5, 12, 31, 32, 44, 64, 77, 128}) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " len=" + std::to_string(len));
      std::vector<uint8_t> q(len);
      for (auto& v : q) v = static_cast<uint8_t>(rng() % (1u << bits));
      std::vector<uint8_t> packed(GroupCodeBytes(bits, len), 0xAA);
      PackGroupCodes(bits, q.data(), len, packed.data());
      std::vector<uint8_t> back(len);
      UnpackGroupCodes(bits, packed.data(), len, back.data());
      EXPECT_EQ(back, q);
      for (int e = 0; e < len; ++e) {
        ASSERT_EQ(SpecCode(bits, packed.data(), len, e), q[e]) << "element " << e;
      }
    }
  }
}

TEST(GroupInt, RowBytesAndBitsPerWeight) {
  // A whole group is 4 bytes of fp16 scale and offset plus g * b / 8 bytes:
  // b + 32 / g bits per weight.
  for (int b : kBitWidths) {
    for (int g : kGroups) {
      const uint32_t type = GroupIntId(b, g);
      EXPECT_EQ(*RowBytes(type, g), 4u + static_cast<uint64_t>(g * b / 8));
      EXPECT_DOUBLE_EQ(8.0 * static_cast<double>(*RowBytes(type, 4096)) / 4096, b + 32.0 / g);
    }
  }
  EXPECT_EQ(*RowBytes(kGroupIntActType, 172), 6u * 40u);
  EXPECT_EQ(QTypeName(kGroupIntActType), "int8-act");
  // Never a module type, so no name parses to it.
  EXPECT_FALSE(ParseQTypeName("int8-act").ok());
  EXPECT_FALSE(IsGroupIntType(kGroupIntActType));
}

TEST(GroupInt, DequantizerIsScaleTimesCodePlusOffset) {
  // One hand-made int3-g64 row of 70 weights: two groups, the second of 6.
  const uint32_t type = GroupIntId(3, 64);
  Bytes row(*RowBytes(type, 70), 0);
  std::vector<uint8_t> q1(64), q2(6);
  for (int e = 0; e < 64; ++e) q1[e] = static_cast<uint8_t>(e % 8);
  for (int e = 0; e < 6; ++e) q2[e] = static_cast<uint8_t>(7 - e);
  EncodeGroup(3, F32ToFp16(0.5f), F32ToFp16(-1.0f), q1.data(), 64, row.data());
  EncodeGroup(3, F32ToFp16(0.25f), F32ToFp16(2.0f), q2.data(), 6, row.data() + GroupBytes(3, 64));
  std::vector<float> x(70);
  FindTraits(type)->dequantize(row.data(), x.data(), 70);
  for (int e = 0; e < 64; ++e) EXPECT_EQ(x[e], 0.5f * (e % 8) - 1.0f) << e;
  for (int e = 0; e < 6; ++e) EXPECT_EQ(x[64 + e], 0.25f * (7 - e) + 2.0f) << e;
}

TEST(GroupInt, ReferenceQuantizerStaysWithinHalfAStep) {
  // Min/max grid: every weight is within half a step of its value, plus what
  // rounding d and m to fp16 moves the grid (at most max_code ulps of d and
  // one ulp of m, at fp16's 2^-11 relative precision).
  std::mt19937 rng(11);
  for (uint32_t type : GroupIntTypes()) {
    const int bits = static_cast<int>(GroupIntBits(type));
    const int g = static_cast<int>(GroupIntGroup(type));
    const int max_code = (1 << bits) - 1;
    for (int64_t n : {int64_t{172}, int64_t{1000}}) {
      const std::vector<float> x = testing::RandomValues(n, &rng, 0.05f);
      const Bytes w = testing::Quantize(type, x, 1, n);
      ASSERT_EQ(w.size(), *RowBytes(type, n));
      const std::vector<float> y = testing::Dequantize(type, w, 1, n);
      const uint8_t* p = w.data();
      for (int64_t start = 0; start < n; start += g) {
        const int len = static_cast<int>(std::min<int64_t>(g, n - start));
        const float d = Fp16ToF32(DecodeU16(p)), m = Fp16ToF32(DecodeU16(p + 2));
        const float bound = d / 2 + (max_code * d + std::fabs(m)) * 1.0f / 1024;
        for (int e = 0; e < len; ++e) {
          ASSERT_LE(std::fabs(x[start + e] - y[start + e]), bound)
              << QTypeName(type) << " n=" << n << " element " << start + e;
        }
        p += GroupBytes(bits, len);
      }
    }
  }
}

struct KernelCase {
  const char* name;
  DotFn dot;
};

std::vector<KernelCase> Kernels(const TypeTraits& t) {
  std::vector<KernelCase> k = {{"portable", t.dot}};
  if (t.dot_avx2 != nullptr && CpuHasAvx2()) k.push_back({"avx2", t.dot_avx2});
  return k;
}

// |kernel - reference| allowed: fp32 accumulation against sum |w a| (as for
// the other types), plus the same relative bound on the offset term m * s,
// whose two parts can cancel.
double Tolerance(uint32_t type, const uint8_t* w, const float* a, int64_t n, const RefDot& r) {
  return testing::kFloatAccumulationBound * (r.abs_sum + testing::OffsetMagnitude(type, w, a, n));
}

TEST(GroupInt, EveryDotMatchesTheDequantizedReference) {
  std::mt19937 rng(1234);
  for (uint32_t type : GroupIntTypes()) {
    const TypeTraits* t = FindTraits(type);
    ASSERT_NE(t, nullptr) << QTypeName(type);
    ASSERT_EQ(t->vec_dot_type, kGroupIntActType);
    for (int64_t n : kRowLengths) {
      SCOPED_TRACE(QTypeName(type) + " n=" + std::to_string(n));
      // Offset weights (mean 0.03): the offset term carries real weight.
      std::vector<float> wf = testing::RandomValues(n, &rng, 0.05f);
      for (float& v : wf) v += 0.03f;
      const Bytes w = testing::Quantize(type, wf, 1, n);
      const std::vector<float> wd = testing::Dequantize(type, w, 1, n);
      const int nt_max = kMaxDotTokens;
      const std::vector<float> xf = testing::RandomValues(n * nt_max, &rng, 3.0f);
      const Bytes a = testing::Quantize(kGroupIntActType, xf, nt_max, n);
      const std::vector<float> ad = testing::Dequantize(kGroupIntActType, a, nt_max, n);
      const size_t a_stride = testing::RowBytesOf(kGroupIntActType, n);
      for (const KernelCase& k : Kernels(*t)) {
        for (int nt = 1; nt <= nt_max; ++nt) {
          const int first = nt_max - nt;
          float out[kMaxDotTokens];
          k.dot(n, w.data(), a.data() + first * a_stride, a_stride, nt, out);
          for (int i = 0; i < nt; ++i) {
            const float* act = &ad[(first + i) * n];
            const RefDot r = DotInDouble(wd.data(), act, n);
            EXPECT_NEAR(out[i], r.value, Tolerance(type, w.data(), act, n, r))
                << k.name << " nt=" << nt << " token " << i;
          }
        }
      }
    }
  }
}

TEST(GroupInt, ExtremeCodesAndActivations) {
  // Codes at 0 and 2^b - 1 against activations at +-127: the int16 pair sums
  // of maddubs are closest to saturation here (8-bit codes most of all).
  for (uint32_t type : GroupIntTypes()) {
    const TypeTraits* t = FindTraits(type);
    const int64_t n = 200;
    std::vector<float> wf(n), xf(n);
    for (int64_t i = 0; i < n; ++i) {
      wf[i] = (i % 3 == 0) ? -1.0f : 1.0f;
      xf[i] = (i % 5 < 2) ? -1.0f : 1.0f;
    }
    const Bytes w = testing::Quantize(type, wf, 1, n);
    const Bytes a = testing::Quantize(kGroupIntActType, xf, 1, n);
    const std::vector<float> wd = testing::Dequantize(type, w, 1, n);
    const std::vector<float> ad = testing::Dequantize(kGroupIntActType, a, 1, n);
    const RefDot r = DotInDouble(wd.data(), ad.data(), n);
    for (const KernelCase& k : Kernels(*t)) {
      float out = 0;
      k.dot(n, w.data(), a.data(), a.size(), 1, &out);
      EXPECT_NEAR(out, r.value, Tolerance(type, w.data(), ad.data(), n, r))
          << QTypeName(type) << " " << k.name;
    }
  }
}

// The AVX-512 decode kernel (decode.h: the activation packed once, then
// rows): several rows per call, stored with a stride longer than a row, of
// quantized values, of raw random code bytes (every code value; only rows
// of whole chunks, where any byte is valid), and of all-maximum and
// all-zero codes, against the double-precision dot with the same bound as
// the other kernels. The row lengths cover a tile of 16 chunks, whole tiles
// followed by whole groups and by a partial group, and model widths.
TEST(GroupInt, DecodeKernelMatchesTheDequantizedReference) {
  if (CpuSimdLevel() < SimdLevel::kAvx512) GTEST_SKIP() << "the CPU lacks AVX-512 + VNNI";
  std::mt19937 rng(4321);
  std::vector<int64_t> lengths = kRowLengths;
  for (int64_t n : {512, 544, 640, 1024 + 96, 2048 + 17, 5632, 8960}) lengths.push_back(n);
  for (uint32_t type : GroupIntTypes()) {
    const TypeTraits* t = FindTraits(type);
    ASSERT_NE(t->decode, nullptr) << QTypeName(type);
    for (int64_t n : lengths) {
      SCOPED_TRACE(QTypeName(type) + " n=" + std::to_string(n));
      const size_t bytes = testing::RowBytesOf(type, n);
      const size_t stride = bytes + 5;
      constexpr int kRows = 5;
      Bytes w(kRows * stride, 0);
      for (int r = 0; r < kRows; ++r) {
        std::vector<float> wf = testing::RandomValues(n, &rng, 0.05f);
        for (int64_t i = 0; i < n; ++i) {
          if (r == 0) wf[i] += 0.03f;                       // offset weights
          if (r == 1) wf[i] = (i % 3 == 0) ? -1.0f : 1.0f;  // codes 0 and max
          if (r == 2) wf[i] = 0.25f;                        // one value: d = 0
        }
        const Bytes q = testing::Quantize(type, wf, 1, n);
        std::copy(q.begin(), q.end(), w.begin() + r * stride);
        if (r == 3 && n % 32 == 0) {
          // Raw code bytes after each group's (valid) header.
          const int g = static_cast<int>(GroupIntGroup(type));
          const int bits = static_cast<int>(GroupIntBits(type));
          uint8_t* p = w.data() + r * stride;
          for (int64_t start = 0; start < n; start += g) {
            const int len = static_cast<int>(std::min<int64_t>(g, n - start));
            for (size_t k = kGroupHeaderBytes; k < GroupBytes(bits, len); ++k)
              p[k] = static_cast<uint8_t>(rng());
            p += GroupBytes(bits, len);
          }
        }
      }
      const Bytes a =
          testing::Quantize(kGroupIntActType, testing::RandomValues(n, &rng, 3.0f), 1, n);
      const std::vector<float> ad = testing::Dequantize(kGroupIntActType, a, 1, n);

      std::vector<uint8_t> storage(t->decode->act_bytes(n) + 64);
      uint8_t* packed =
          storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64;
      t->decode->pack_act(n, a.data(), packed);
      std::vector<float> y(kRows, -12345.0f);
      t->decode->rows(n, w.data(), stride, kRows, packed, y.data());
      for (int r = 0; r < kRows; ++r) {
        const uint8_t* row = w.data() + r * stride;
        std::vector<float> wd(static_cast<size_t>(n));
        t->dequantize(row, wd.data(), n);
        const RefDot ref = DotInDouble(wd.data(), ad.data(), n);
        EXPECT_NEAR(y[r], ref.value, Tolerance(type, row, ad.data(), n, ref)) << "row " << r;
      }
    }
  }
}

TEST(GroupInt, AllZeroActivationsGiveZero) {
  std::mt19937 rng(5);
  for (uint32_t type : GroupIntTypes()) {
    const TypeTraits* t = FindTraits(type);
    const int64_t n = 100;
    const Bytes w = testing::Quantize(type, testing::RandomValues(n, &rng), 1, n);
    const Bytes a = testing::Quantize(kGroupIntActType, std::vector<float>(n, 0.0f), 1, n);
    for (const KernelCase& k : Kernels(*t)) {
      float out = 1;
      k.dot(n, w.data(), a.data(), a.size(), 1, &out);
      EXPECT_EQ(out, 0.0f) << QTypeName(type) << " " << k.name;
    }
  }
}

TEST(GroupInt, ActivationQuantizer) {
  // Per 32: d = amax / 127, q = round(x / d), s = d * sum(q); the block past
  // the row's end is zero-padded.
  std::vector<float> x(40);
  for (int i = 0; i < 40; ++i) x[i] = static_cast<float>(i - 20) * 0.1f;
  x[3] = -12.7f;
  Bytes a(*RowBytes(kGroupIntActType, 40));
  FindTraits(kGroupIntActType)->quantize(x.data(), a.data(), 40);
  const float d0 = std::bit_cast<float>(DecodeU32(a.data()));
  EXPECT_FLOAT_EQ(d0, 0.1f);
  int sum = 0;
  for (int i = 0; i < 32; ++i) {
    const int q = static_cast<int8_t>(a[8 + i]);
    EXPECT_EQ(q, static_cast<int>(std::nearbyint(x[i] / d0))) << i;
    sum += q;
  }
  EXPECT_FLOAT_EQ(std::bit_cast<float>(DecodeU32(a.data() + 4)), d0 * sum);
  for (int i = 8; i < 32; ++i) EXPECT_EQ(a[40 + 8 + i], 0) << "padding " << i;

  if (!CpuHasAvx2()) GTEST_SKIP() << "no AVX2";
  const TypeTraits* t = FindTraits(kGroupIntActType);
  std::mt19937 rng(77);
  for (int64_t n : {int64_t{1}, int64_t{31}, int64_t{32}, int64_t{172}, int64_t{4096}}) {
    std::vector<float> v = testing::RandomValues(n, &rng, 5.0f);
    if (n >= 172) {
      std::fill(v.begin(), v.begin() + 32, 0.0f);  // an all-zero block
      for (int j = 0; j < 32; ++j) v[32 + j] = static_cast<float>(j - 16) + 0.5f;  // ties
      v[32] = 127;
    }
    Bytes scalar(*RowBytes(kGroupIntActType, n)), simd(scalar.size());
    t->quantize(v.data(), scalar.data(), n);
    t->quantize_avx2(v.data(), simd.data(), n);
    EXPECT_EQ(scalar, simd) << "n=" << n;
  }
}

TEST(GroupInt, MatMulRunsEveryTypeOnOddRows) {
  // Through the driver: 172-wide rows (the tail group and partial chunk),
  // one token and a batch, against the dequantized weights in double.
  std::mt19937 rng(9);
  const int64_t cols = 172, rows = 24, tokens = 6;
  for (uint32_t type : GroupIntTypes()) {
    const std::vector<float> wf = testing::RandomValues(rows * cols, &rng, 0.05f);
    const Bytes w = testing::Quantize(type, wf, rows, cols);
    const std::vector<float> wd = testing::Dequantize(type, w, rows, cols);
    const WeightView view{type, cols, rows, w.data(), testing::RowBytesOf(type, cols)};
    ASSERT_TRUE(CheckWeight(view, "w").ok()) << QTypeName(type);
    const std::vector<float> x = testing::RandomValues(tokens * cols, &rng);
    for (int64_t nt : {int64_t{1}, tokens}) {
      std::vector<float> y(nt * rows);
      MatMul(view, x.data(), nt, y.data(), nullptr);
      for (int64_t t = 0; t < nt; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          const RefDot ref = DotInDouble(&wd[r * cols], &x[t * cols], cols);
          // int8 activations: about 1/254 of each |w a| at worst, far less on
          // average.
          EXPECT_NEAR(y[t * rows + r], ref.value, 0.01 * ref.abs_sum)
              << QTypeName(type) << " token " << t << " row " << r;
        }
      }
    }
  }
}

}  // namespace
}  // namespace fqpack::runtime::quant
