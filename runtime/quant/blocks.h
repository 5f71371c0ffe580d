// The block layouts of every tensor type the runtime executes, byte for byte
// those of ggml (ggml-common.h), so that blocks are read in place from a
// mapped GGUF file or pack. The byte tables, formulas and bits per weight are
// written down in schema/quant_types.md; each struct below repeats its formula
// and checks its size against schema's table. The type's row in the traits
// table (runtime/quant/quant.h, traits.cc) names the struct once more and
// checks it again.
//
// Conventions of the formulas: a block holds `QK` weights x[0..QK); "fp16"
// fields are IEEE binary16 bit patterns (uint16_t, converted with
// Fp16ToF32); a weight's integer code is q. Blocks are plain bytes with no
// padding, so they may be overlaid on file bytes; the kernels require a
// little-endian host (checked below) because multi-byte fields are read in
// place.
//
// Thread-safety: types and constants only.
#ifndef FQPACK_RUNTIME_QUANT_BLOCKS_H_
#define FQPACK_RUNTIME_QUANT_BLOCKS_H_

#include <bit>
#include <cstdint>

#include "schema/quant_types.h"

namespace fqpack::runtime::quant {

static_assert(std::endian::native == std::endian::little,
              "quant blocks are read in place and assume a little-endian host");

constexpr int kQK32 = 32;         // elements of a Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q8_1/IQ4_NL block
constexpr int kQKK = 256;         // elements of a k-quant super-block (QK_K)
constexpr int kKScaleBytes = 12;  // packed 6-bit scales of Q3_K/Q4_K/Q5_K

// Q4_0, 4.5 bits/weight. x[j] = d * (q[j] - 8), q in [0, 15];
// q[j] = qs[j] & 0xF and q[j + 16] = qs[j] >> 4 for j < 16.
struct BlockQ4_0 {
  uint16_t d;  // fp16
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockQ4_0) == GgmlBlockBytes(ToId(QType::kQ4_0)) &&
              GgmlBlockElems(ToId(QType::kQ4_0)) == kQK32);

// Q4_1, 5.0 bits/weight. x[j] = d * q[j] + m, q in [0, 15]; nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d;  // fp16
  uint16_t m;  // fp16
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockQ4_1) == GgmlBlockBytes(ToId(QType::kQ4_1)) &&
              GgmlBlockElems(ToId(QType::kQ4_1)) == kQK32);

// Q5_0, 5.5 bits/weight. x[j] = d * (q[j] - 16), q in [0, 31]; the low four
// bits of q as Q4_0, bit 4 of q[j] is bit j of the little-endian u32 qh.
struct BlockQ5_0 {
  uint16_t d;  // fp16
  uint8_t qh[4];
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockQ5_0) == GgmlBlockBytes(ToId(QType::kQ5_0)) &&
              GgmlBlockElems(ToId(QType::kQ5_0)) == kQK32);

// Q5_1, 6.0 bits/weight. x[j] = d * q[j] + m, q in [0, 31]; bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d;  // fp16
  uint16_t m;  // fp16
  uint8_t qh[4];
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockQ5_1) == GgmlBlockBytes(ToId(QType::kQ5_1)) &&
              GgmlBlockElems(ToId(QType::kQ5_1)) == kQK32);

// Q8_0, 8.5 bits/weight. x[j] = d * qs[j]. Also the activation type of
// Q4_0, Q5_0, Q8_0 and IQ4_NL weights.
struct BlockQ8_0 {
  uint16_t d;  // fp16
  int8_t qs[kQK32];
};
static_assert(sizeof(BlockQ8_0) == GgmlBlockBytes(ToId(QType::kQ8_0)) &&
              GgmlBlockElems(ToId(QType::kQ8_0)) == kQK32);

// Q8_1, 9.0 bits/weight, activations only (of Q4_1 and Q5_1 weights).
// x[j] = d * qs[j]; s = fp16(d * sum(qs)) with d the unrounded fp32 scale,
// which lets a dot fold a weight block's offset m in as m * s.
struct BlockQ8_1 {
  uint16_t d;  // fp16
  uint16_t s;  // fp16
  int8_t qs[kQK32];
};
static_assert(sizeof(BlockQ8_1) == GgmlBlockBytes(ToId(QType::kQ8_1)) &&
              GgmlBlockElems(ToId(QType::kQ8_1)) == kQK32);

// IQ4_NL, 4.5 bits/weight. x[j] = d * kIq4nlValues[q[j]], q in [0, 15],
// nibbles as Q4_0: a non-linear 4-bit grid.
struct BlockIQ4_NL {
  uint16_t d;  // fp16
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockIQ4_NL) == GgmlBlockBytes(ToId(QType::kIQ4_NL)) &&
              GgmlBlockElems(ToId(QType::kIQ4_NL)) == kQK32);

inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// Q2_K, 2.625 bits/weight. 16 sub-blocks of 16 weights; sub-block s = e / 16
// has a 4-bit scale sc = scales[s] & 0xF and 4-bit min mn = scales[s] >> 4:
//   x[e] = d * sc * q[e] - dmin * mn,  q in [0, 3].
// Codes: with h = e / 128, r = e % 128: q[e] = (qs[32h + r % 32] >> (2 * (r / 32))) & 3.
struct BlockQ2_K {
  uint8_t scales[kQKK / 16];
  uint8_t qs[kQKK / 4];
  uint16_t d;     // fp16, scale of the scales
  uint16_t dmin;  // fp16, scale of the mins
};
static_assert(sizeof(BlockQ2_K) == GgmlBlockBytes(ToId(QType::kQ2_K)) &&
              GgmlBlockElems(ToId(QType::kQ2_K)) == kQKK);

// Q3_K, 3.4375 bits/weight. 16 sub-blocks of 16 weights with signed 6-bit
// scales sc[s] in [-32, 31] (packed in 12 bytes, see Q3KScale):
//   x[e] = d * sc[e / 16] * q[e],  q in [-4, 3].
// Codes: with h = e / 128, r = e % 128, l = r % 32, j = r / 32:
//   low2 = (qs[32h + l] >> 2j) & 3, hbit = (hmask[l] >> (4h + j)) & 1,
//   q[e] = low2 - (hbit ? 0 : 4).
struct BlockQ3_K {
  uint8_t hmask[kQKK / 8];
  uint8_t qs[kQKK / 4];
  uint8_t scales[kKScaleBytes];
  uint16_t d;  // fp16
};
static_assert(sizeof(BlockQ3_K) == GgmlBlockBytes(ToId(QType::kQ3_K)) &&
              GgmlBlockElems(ToId(QType::kQ3_K)) == kQKK);

// Q4_K, 4.5 bits/weight. 8 sub-blocks of 32 weights with 6-bit scales and
// mins (packed in 12 bytes, see K4ScaleMin):
//   x[e] = d * sc[e / 32] * q[e] - dmin * mn[e / 32],  q in [0, 15].
// Codes: chunk c = e / 64 holds qs[32c .. 32c + 32): q[64c + l] = qs[32c + l] & 0xF,
// q[64c + 32 + l] = qs[32c + l] >> 4.
struct BlockQ4_K {
  uint16_t d;     // fp16
  uint16_t dmin;  // fp16
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ4_K) == GgmlBlockBytes(ToId(QType::kQ4_K)) &&
              GgmlBlockElems(ToId(QType::kQ4_K)) == kQKK);

// Q5_K, 5.5 bits/weight. As Q4_K with q in [0, 31]: the low four bits as
// Q4_K, bit 4 of q[64c + l] is bit 2c of qh[l], of q[64c + 32 + l] bit 2c+1.
struct BlockQ5_K {
  uint16_t d;     // fp16
  uint16_t dmin;  // fp16
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ5_K) == GgmlBlockBytes(ToId(QType::kQ5_K)) &&
              GgmlBlockElems(ToId(QType::kQ5_K)) == kQKK);

// Q6_K, 6.5625 bits/weight. 16 sub-blocks of 16 weights, int8 scales:
//   x[e] = d * scales[e / 16] * (q[e] - 32),  q in [0, 63].
// Codes: with h = e / 128, r = e % 128, quarter u = r / 32, l = r % 32:
//   low4 = (ql[64h + 32(u & 1) + l] >> 4(u >> 1)) & 0xF,
//   high2 = (qh[32h + l] >> 2u) & 3,  q[e] = low4 | high2 << 4.
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;  // fp16
};
static_assert(sizeof(BlockQ6_K) == GgmlBlockBytes(ToId(QType::kQ6_K)) &&
              GgmlBlockElems(ToId(QType::kQ6_K)) == kQKK);

// Q8_K, 9.125 bits/weight, activations only (of the k-quants). x[e] = d * qs[e]
// with a float d; bsums[s] = sum of qs over sub-block s of 16, which folds
// the k-quants' mins and offsets into one multiply per sub-block.
struct BlockQ8_K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};
static_assert(sizeof(BlockQ8_K) == GgmlBlockBytes(ToId(QType::kQ8_K)) &&
              GgmlBlockElems(ToId(QType::kQ8_K)) == kQKK);

// The plain float types are one element per "block".
static_assert(GgmlBlockBytes(ToId(QType::kF32)) == 4 && GgmlBlockBytes(ToId(QType::kF16)) == 2 &&
              GgmlBlockBytes(ToId(QType::kBF16)) == 2);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block: j < 4
// keeps them in the low six bits of bytes j and j + 4; j >= 4 keeps the low
// four bits in byte j + 4 (scale low nibble, min high nibble) and the top two
// bits in the spare high bits of bytes j - 4 (scale) and j (min).
inline void K4ScaleMin(const uint8_t* scales, int j, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *mn = scales[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
    *mn = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// The signed scale of sub-block s (0..15) of a Q3_K block, in [-32, 31]: the
// low four bits are the low nibble of byte s (s < 8) or the high nibble of
// byte s - 8, the top two bits are bits 2(s/4)..2(s/4)+1 of byte 8 + s % 4;
// the stored 6-bit value is offset by 32.
inline int Q3KScale(const uint8_t* scales, int s) {
  const int low = s < 8 ? (scales[s] & 0xF) : (scales[s - 8] >> 4);
  const int high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
  return (low | (high << 4)) - 32;
}

}  // namespace fqpack::runtime::quant

#endif  // FQPACK_RUNTIME_QUANT_BLOCKS_H_
