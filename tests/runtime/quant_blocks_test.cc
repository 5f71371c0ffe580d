// The reference dequantizers against values the test computes itself from
// each format's definition (schema/quant_types.md): blocks are assembled
// byte by byte from chosen codes and scales at the documented offsets, and
// the expected floats come from the format's formula in double. Also: the
// activation quantizers' rounding as llama.cpp does it, and the round-trip
// error of the reference weight quantizers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/quant/quant.h"
#include "schema/coding.h"
#include "schema/half.h"
#include "schema/quant_types.h"
#include "tests/runtime/quant_test_util.h"

namespace fqpack::runtime::quant {
namespace {

// The IQ4_NL grid as the format defines it.
constexpr int kGrid[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                           1,    13,   25,  38,  53,  69,  89,  113};

void PutHalf(Bytes* b, size_t offset, float v) {
  const uint16_t h = F32ToFp16(v);
  (*b)[offset] = static_cast<uint8_t>(h);
  (*b)[offset + 1] = static_cast<uint8_t>(h >> 8);
}

std::vector<float> Dequant(QType type, const Bytes& block, int64_t n) {
  std::vector<float> out(n);
  FindTraits(ToId(type))->dequantize(block.data(), out.data(), n);
  return out;
}

void ExpectValues(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_FLOAT_EQ(got[i], static_cast<float>(want[i])) << "element " << i;
  }
}

// Codes 0..(1 << bits) - 1 in a scrambled but fixed order.
std::vector<int> Codes(int n, int bits, int seed) {
  std::vector<int> q(n);
  for (int i = 0; i < n; ++i) q[i] = (i * 7 + seed * 13 + i / 5) % (1 << bits);
  return q;
}

TEST(QuantBlocks, F16AndBF16) {
  // 1.0, -2.0, 1/3 rounded to fp16, the smallest fp16 subnormal.
  Bytes f16 = {0x00, 0x3C, 0x00, 0xC0, 0x55, 0x35, 0x01, 0x00};
  ExpectValues(Dequant(QType::kF16, f16, 4), {1.0, -2.0, 0.333251953125, std::ldexp(1.0, -24)});
  // 1.0, 3.140625, -0.5.
  Bytes bf16 = {0x80, 0x3F, 0x49, 0x40, 0x00, 0xBF};
  ExpectValues(Dequant(QType::kBF16, bf16, 3), {1.0, 3.140625, -0.5});
}

TEST(QuantBlocks, Q4_0) {
  Bytes b(18, 0);
  PutHalf(&b, 0, 0.75f);
  const std::vector<int> q = Codes(32, 4, 1);
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  std::vector<double> want(32);
  for (int j = 0; j < 32; ++j) want[j] = 0.75 * (q[j] - 8);
  ExpectValues(Dequant(QType::kQ4_0, b, 32), want);
}

TEST(QuantBlocks, Q4_1) {
  Bytes b(20, 0);
  PutHalf(&b, 0, 0.5f);
  PutHalf(&b, 2, -3.25f);
  const std::vector<int> q = Codes(32, 4, 2);
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  std::vector<double> want(32);
  for (int j = 0; j < 32; ++j) want[j] = 0.5 * q[j] - 3.25;
  ExpectValues(Dequant(QType::kQ4_1, b, 32), want);
}

TEST(QuantBlocks, Q5_0) {
  Bytes b(22, 0);
  PutHalf(&b, 0, 0.125f);
  const std::vector<int> q = Codes(32, 5, 3);
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= static_cast<uint32_t>(q[j] >> 4) << j;
  EncodeU32(&b[2], qh);
  for (int j = 0; j < 16; ++j)
    b[6 + j] = static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
  std::vector<double> want(32);
  for (int j = 0; j < 32; ++j) want[j] = 0.125 * (q[j] - 16);
  ExpectValues(Dequant(QType::kQ5_0, b, 32), want);
}

TEST(QuantBlocks, Q5_1) {
  Bytes b(24, 0);
  PutHalf(&b, 0, 0.25f);
  PutHalf(&b, 2, 1.5f);
  const std::vector<int> q = Codes(32, 5, 4);
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= static_cast<uint32_t>(q[j] >> 4) << j;
  EncodeU32(&b[4], qh);
  for (int j = 0; j < 16; ++j)
    b[8 + j] = static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
  std::vector<double> want(32);
  for (int j = 0; j < 32; ++j) want[j] = 0.25 * q[j] + 1.5;
  ExpectValues(Dequant(QType::kQ5_1, b, 32), want);
}

TEST(QuantBlocks, Q8_0) {
  Bytes b(34, 0);
  PutHalf(&b, 0, -0.0625f);
  std::vector<double> want(32);
  for (int j = 0; j < 32; ++j) {
    const int8_t v = static_cast<int8_t>((j * 37) % 256 - 128);  // -128 .. 127
    b[2 + j] = static_cast<uint8_t>(v);
    want[j] = -0.0625 * v;
  }
  ExpectValues(Dequant(QType::kQ8_0, b, 32), want);
}

TEST(QuantBlocks, IQ4_NL) {
  Bytes b(18, 0);
  PutHalf(&b, 0, 0.01f);
  const double d = Fp16ToF32(F32ToFp16(0.01f));
  const std::vector<int> q = Codes(32, 4, 5);
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  std::vector<double> want(32);
  for (int j = 0; j < 32; ++j) want[j] = d * kGrid[q[j]];
  ExpectValues(Dequant(QType::kIQ4_NL, b, 32), want);
}

TEST(QuantBlocks, Q2_K) {
  // scales[16] @0, qs[64] @16, d @80, dmin @82.
  Bytes b(84, 0);
  const double d = 0.5, dmin = 0.25;
  PutHalf(&b, 80, 0.5f);
  PutHalf(&b, 82, 0.25f);
  int sc[16], mn[16];
  for (int s = 0; s < 16; ++s) {
    sc[s] = (s * 5 + 3) % 16;
    mn[s] = (s * 11 + 1) % 16;
    b[s] = static_cast<uint8_t>(sc[s] | (mn[s] << 4));
  }
  const std::vector<int> q = Codes(256, 2, 6);
  // Byte 16 + 32h + l holds, from its low bits up, the codes of elements
  // 128h + l, 128h + 32 + l, 128h + 64 + l and 128h + 96 + l.
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int base = 128 * h + l;
      b[16 + 32 * h + l] = static_cast<uint8_t>(q[base] | (q[base + 32] << 2) |
                                                (q[base + 64] << 4) | (q[base + 96] << 6));
    }
  }
  std::vector<double> want(256);
  for (int e = 0; e < 256; ++e) want[e] = d * sc[e / 16] * q[e] - dmin * mn[e / 16];
  ExpectValues(Dequant(QType::kQ2_K, b, 256), want);
}

TEST(QuantBlocks, Q3_K) {
  // hmask[32] @0, qs[64] @32, scales[12] @96, d @108.
  Bytes b(110, 0);
  const double d = 0.125;
  PutHalf(&b, 108, 0.125f);
  int sc[16];
  for (int s = 0; s < 16; ++s) {
    sc[s] = (s * 9) % 64 - 32;  // -32 .. 31
    const int v = sc[s] + 32;
    // Low nibbles: scales 0..7 in the low halves of bytes 0..7, scales 8..15
    // in their high halves; top two bits: byte 8 + s % 4, bit pair s / 4.
    b[96 + s % 8] |= static_cast<uint8_t>((v & 15) << (s < 8 ? 0 : 4));
    b[96 + 8 + s % 4] |= static_cast<uint8_t>((v >> 4) << (2 * (s / 4)));
  }
  std::vector<int> q(256);
  const std::vector<int> raw = Codes(256, 3, 7);
  for (int e = 0; e < 256; ++e) q[e] = raw[e] - 4;  // -4 .. 3
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, j = (e % 128) / 32, l = e % 32;
    const int stored = q[e] + 4;
    b[32 + 32 * h + l] |= static_cast<uint8_t>((stored & 3) << (2 * j));
    if (stored & 4) b[l] |= static_cast<uint8_t>(1 << (4 * h + j));
  }
  std::vector<double> want(256);
  for (int e = 0; e < 256; ++e) want[e] = d * sc[e / 16] * q[e];
  ExpectValues(Dequant(QType::kQ3_K, b, 256), want);
}

// The 12-byte 6-bit scale/min packing of Q4_K and Q5_K.
void PutK4Scales(Bytes* b, size_t offset, const int* sc, const int* mn) {
  for (int j = 0; j < 4; ++j) {
    (*b)[offset + j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    (*b)[offset + 4 + j] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    (*b)[offset + 8 + j] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
}

TEST(QuantBlocks, Q4_K) {
  // d @0, dmin @2, scales[12] @4, qs[128] @16.
  Bytes b(144, 0);
  const double d = 0.0625, dmin = 0.03125;
  PutHalf(&b, 0, 0.0625f);
  PutHalf(&b, 2, 0.03125f);
  const int sc[8] = {1, 63, 17, 32, 45, 60, 7, 33};
  const int mn[8] = {62, 0, 21, 48, 19, 63, 34, 5};
  PutK4Scales(&b, 4, sc, mn);
  const std::vector<int> q = Codes(256, 4, 8);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b[16 + 32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
  }
  std::vector<double> want(256);
  for (int e = 0; e < 256; ++e) want[e] = d * sc[e / 32] * q[e] - dmin * mn[e / 32];
  ExpectValues(Dequant(QType::kQ4_K, b, 256), want);
}

TEST(QuantBlocks, Q5_K) {
  // d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48.
  Bytes b(176, 0);
  const double d = 0.0625, dmin = 0.5;
  PutHalf(&b, 0, 0.0625f);
  PutHalf(&b, 2, 0.5f);
  const int sc[8] = {40, 3, 63, 16, 0, 31, 48, 9};
  const int mn[8] = {2, 59, 30, 63, 15, 44, 1, 27};
  PutK4Scales(&b, 4, sc, mn);
  const std::vector<int> q = Codes(256, 5, 9);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      b[48 + 32 * c + l] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
      b[16 + l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
  std::vector<double> want(256);
  for (int e = 0; e < 256; ++e) want[e] = d * sc[e / 32] * q[e] - dmin * mn[e / 32];
  ExpectValues(Dequant(QType::kQ5_K, b, 256), want);
}

TEST(QuantBlocks, Q6_K) {
  // ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208.
  Bytes b(210, 0);
  const double d = 0.015625;
  PutHalf(&b, 208, 0.015625f);
  int sc[16];
  for (int s = 0; s < 16; ++s) {
    sc[s] = (s * 37) % 256 - 128;
    b[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(sc[s]));
  }
  const std::vector<int> q = Codes(256, 6, 10);  // stored codes 0..63
  // Each half of 128: quarter 0 = low nibbles of ql[0..32), quarter 1 = low
  // nibbles of ql[32..64), quarters 2 and 3 = their high nibbles; the top
  // two bits of quarter u are bits 2u, 2u+1 of qh[l].
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int e = 128 * h + l;
      b[64 * h + l] = static_cast<uint8_t>((q[e] & 15) | ((q[e + 64] & 15) << 4));
      b[64 * h + 32 + l] = static_cast<uint8_t>((q[e + 32] & 15) | ((q[e + 96] & 15) << 4));
      b[128 + 32 * h + l] = static_cast<uint8_t>((q[e] >> 4) | ((q[e + 32] >> 4) << 2) |
                                                 ((q[e + 64] >> 4) << 4) | ((q[e + 96] >> 4) << 6));
    }
  }
  std::vector<double> want(256);
  for (int e = 0; e < 256; ++e) want[e] = d * sc[e / 16] * (q[e] - 32);
  ExpectValues(Dequant(QType::kQ6_K, b, 256), want);
}

TEST(QuantBlocks, Q8_K) {
  // d (f32) @0, qs[256] @4, bsums[16] (int16) @260.
  Bytes b(292, 0);
  const float d = 0.0123f;
  std::memcpy(&b[0], &d, 4);
  std::vector<double> want(256);
  for (int e = 0; e < 256; ++e) {
    const int8_t v = static_cast<int8_t>((e * 29) % 255 - 127);
    b[4 + e] = static_cast<uint8_t>(v);
    want[e] = static_cast<double>(d) * v;
  }
  ExpectValues(Dequant(QType::kQ8_K, b, 256), want);
}

TEST(QuantBlocks, RowsOfSeveralBlocks) {
  // Two Q4_0 blocks back to back: the second starts at byte 18.
  Bytes b(36, 0);
  PutHalf(&b, 0, 1.0f);
  PutHalf(&b, 18, 2.0f);
  for (int j = 0; j < 16; ++j) {
    b[2 + j] = 0x98;   // codes 8 (low) and 9 (high): 0 and 1
    b[20 + j] = 0x07;  // codes 7 and 0: -1 and -8
  }
  const std::vector<float> got = Dequant(QType::kQ4_0, b, 64);
  EXPECT_EQ(got[0], 0.0f);
  EXPECT_EQ(got[16], 1.0f);
  EXPECT_EQ(got[32], -2.0f);
  EXPECT_EQ(got[48], -16.0f);
}

// ---- Activation quantizers (llama.cpp parity).

TEST(ActivationQuantizers, Q8_0RoundsHalfToEvenWithTheFp32Reciprocal) {
  // amax = 127 makes id = 1 exactly, so the codes are the values rounded:
  // 2.5 -> 2 and -3.5 -> -4 (ties to even), 126.5 -> 126.
  std::vector<float> x(32, 0.0f);
  x[0] = 127;
  x[1] = 2.5f;
  x[2] = -3.5f;
  x[3] = 126.5f;
  x[4] = 0.49f;
  Bytes out(34);
  FindTraits(ToId(QType::kQ8_0))->quantize(x.data(), out.data(), 32);
  EXPECT_EQ(Fp16ToF32(DecodeU16(&out[0])), 1.0f);
  const auto* qs = reinterpret_cast<const int8_t*>(&out[2]);
  EXPECT_EQ(qs[0], 127);
  EXPECT_EQ(qs[1], 2);
  EXPECT_EQ(qs[2], -4);
  EXPECT_EQ(qs[3], 126);
  EXPECT_EQ(qs[4], 0);
}

TEST(ActivationQuantizers, Q8_1StoresTheScaledSumOfCodes) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 10) * 0.1f;
  Bytes out(36);
  FindTraits(ToId(QType::kQ8_1))->quantize(x.data(), out.data(), 32);
  const float amax = x[31];
  const float d = amax / 127.f;
  const auto* qs = reinterpret_cast<const int8_t*>(&out[4]);
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(qs[j], static_cast<int>(std::nearbyint(x[j] * (127.f / amax)))) << j;
    sum += qs[j];
  }
  EXPECT_EQ(DecodeU16(&out[0]), F32ToFp16(d));
  EXPECT_EQ(DecodeU16(&out[2]), F32ToFp16(d * static_cast<float>(sum)));
}

TEST(ActivationQuantizers, Q8_KMapsTheLargestMagnitudeToMinus127) {
  std::vector<float> x(256);
  for (int e = 0; e < 256; ++e) x[e] = std::sin(0.37f * e) * (e % 16 + 1);
  x[100] = 40.0f;  // largest magnitude, positive: becomes -127 with d < 0
  Bytes out(292);
  FindTraits(ToId(QType::kQ8_K))->quantize(x.data(), out.data(), 256);
  float d;
  std::memcpy(&d, &out[0], 4);
  const float iscale = -127.f / 40.0f;
  EXPECT_EQ(d, 1 / iscale);
  const auto* qs = reinterpret_cast<const int8_t*>(&out[4]);
  EXPECT_EQ(qs[100], -127);
  for (int s = 0; s < 16; ++s) {
    int sum = 0;
    for (int j = 0; j < 16; ++j) {
      const int e = 16 * s + j;
      const int want = std::min(127, static_cast<int>(std::nearbyint(iscale * x[e])));
      EXPECT_EQ(qs[e], want) << e;
      sum += want;
    }
    int16_t bsum;
    std::memcpy(&bsum, &out[260 + 2 * s], 2);
    EXPECT_EQ(bsum, sum) << "sub-block " << s;
  }
}

TEST(ActivationQuantizers, FloatTypesRoundToNearestEven) {
  // 1 + 2^-11 is halfway between two fp16 values: rounds to the even 1.0;
  // 1 + 3 * 2^-11 rounds up to 1 + 2^-9.
  const std::vector<float> x = {1.0f + std::ldexp(1.0f, -11), 1.0f + 3 * std::ldexp(1.0f, -11)};
  Bytes f16(4), bf16(4);
  FindTraits(ToId(QType::kF16))->quantize(x.data(), f16.data(), 2);
  EXPECT_EQ(DecodeU16(&f16[0]), 0x3C00);
  EXPECT_EQ(DecodeU16(&f16[2]), 0x3C02);
  const std::vector<float> y = {1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8)};
  FindTraits(ToId(QType::kBF16))->quantize(y.data(), bf16.data(), 2);
  EXPECT_EQ(DecodeU16(&bf16[0]), 0x3F80);
  EXPECT_EQ(DecodeU16(&bf16[2]), 0x3F82);
}

// ---- Reference weight quantizers: valid blocks with sensible error.

struct RoundTripBound {
  QType type;
  double max_relative_rmse;  // RMSE / RMS of the data
};

TEST(ReferenceQuantizers, RoundTripErrorIsSensible) {
  // Bounds for Gaussian data with drifting block scales and outliers; each
  // is about 1.5x what the reference quantizer measures, and roughly halves
  // per extra bit.
  const RoundTripBound bounds[] = {
      {QType::kF16, 0.001}, {QType::kBF16, 0.005}, {QType::kQ8_0, 0.01},   {QType::kQ6_K, 0.04},
      {QType::kQ5_0, 0.07}, {QType::kQ5_1, 0.06},  {QType::kQ5_K, 0.06},   {QType::kQ4_0, 0.14},
      {QType::kQ4_1, 0.12}, {QType::kQ4_K, 0.12},  {QType::kIQ4_NL, 0.14}, {QType::kQ3_K, 0.30},
      {QType::kQ2_K, 0.55}};
  std::mt19937 rng(99);
  const int64_t n = 4096;
  const std::vector<float> x = testing::RandomValues(n, &rng, 0.02f);
  for (const RoundTripBound& b : bounds) {
    const uint32_t type = ToId(b.type);
    const Bytes q = testing::Quantize(type, x, 1, n);
    const std::vector<float> y = testing::Dequantize(type, q, 1, n);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; ++i) {
      err += (y[i] - x[i]) * (y[i] - x[i]);
      ref += x[i] * x[i];
    }
    const double rel = std::sqrt(err / ref);
    EXPECT_LT(rel, b.max_relative_rmse) << QTypeName(type);
    EXPECT_GT(rel, 0.0) << QTypeName(type) << " cannot be lossless on this data";
  }
}

}  // namespace
}  // namespace fqpack::runtime::quant
