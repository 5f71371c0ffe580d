// Portable dots, the fallback when the CPU has no AVX2. Each block's integer
// codes are decoded once and multiplied with the integer codes of every
// activation row; scales are applied per block (or sub-block) as llama.cpp's
// generic kernels do, so integer sums are exact and only the float
// accumulation differs from the SIMD kernels.
#include <cassert>

#include "runtime/quant/blocks.h"
#include "runtime/quant/kernels.h"
#include "runtime/quant/quant.h"
#include "schema/coding.h"
#include "schema/half.h"

namespace fqpack::runtime::quant {
namespace {

template <typename ActBlock>
const ActBlock* ActRow(const uint8_t* a, size_t a_stride, int t) {
  return reinterpret_cast<const ActBlock*>(a + t * a_stride);
}

int DotCodes(const int8_t* q, const int8_t* a, int n) {
  int sum = 0;
  for (int j = 0; j < n; ++j) sum += q[j] * a[j];
  return sum;
}

// Codes of a 32-element block with a signed grid: Q4_0, Q5_0, Q8_0, IQ4_NL
// against Q8_0 activations. out[t] += d_w * d_a * sum(q * a).
template <typename Block, typename Decode>
void DotBlocks32Q8_0(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out, Decode decode) {
  assert(n % kQK32 == 0 && nt >= 1 && nt <= kMaxDotTokens);
  const auto* x = reinterpret_cast<const Block*>(w);
  float sum[kMaxDotTokens] = {};
  int8_t q[kQK32];
  for (int64_t i = 0; i < n / kQK32; ++i) {
    decode(x[i], q);
    const float dw = Fp16ToF32(x[i].d);
    for (int t = 0; t < nt; ++t) {
      const BlockQ8_0& y = ActRow<BlockQ8_0>(a, a_stride, t)[i];
      sum[t] += DotCodes(q, y.qs, kQK32) * (dw * Fp16ToF32(y.d));
    }
  }
  for (int t = 0; t < nt; ++t) out[t] = sum[t];
}

// Unsigned codes with an offset m: Q4_1, Q5_1 against Q8_1 activations.
// out[t] += d_w * d_a * sum(q * a) + m * s_a.
template <typename Block, typename Decode>
void DotBlocks32Q8_1(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out, Decode decode) {
  assert(n % kQK32 == 0 && nt >= 1 && nt <= kMaxDotTokens);
  const auto* x = reinterpret_cast<const Block*>(w);
  float sum[kMaxDotTokens] = {};
  int8_t q[kQK32];
  for (int64_t i = 0; i < n / kQK32; ++i) {
    decode(x[i], q);
    const float dw = Fp16ToF32(x[i].d);
    const float m = Fp16ToF32(x[i].m);
    for (int t = 0; t < nt; ++t) {
      const BlockQ8_1& y = ActRow<BlockQ8_1>(a, a_stride, t)[i];
      sum[t] += DotCodes(q, y.qs, kQK32) * (dw * Fp16ToF32(y.d)) + m * Fp16ToF32(y.s);
    }
  }
  for (int t = 0; t < nt; ++t) out[t] = sum[t];
}

template <typename Block>
void Nibbles(const Block& b, int8_t* q, int offset) {
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>((b.qs[j] & 0xF) - offset);
    q[j + 16] = static_cast<int8_t>((b.qs[j] >> 4) - offset);
  }
}

template <typename Block>
void FiveBits(const Block& b, int8_t* q, int offset) {
  const uint32_t qh = DecodeU32(b.qh);
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>(((b.qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - offset);
    q[j + 16] = static_cast<int8_t>(((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset);
  }
}

// The k-quants: per super-block, codes q[256] and per-sub-block integer
// scales; the activation Q8_K block supplies d and bsums.
template <typename Block, typename Decode>
void DotKQuant(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt, float* out,
               Decode decode) {
  assert(n % kQKK == 0 && nt >= 1 && nt <= kMaxDotTokens);
  const auto* x = reinterpret_cast<const Block*>(w);
  float sum[kMaxDotTokens] = {};
  int8_t q[kQKK];
  for (int64_t i = 0; i < n / kQKK; ++i) {
    for (int t = 0; t < nt; ++t) {
      const BlockQ8_K& y = ActRow<BlockQ8_K>(a, a_stride, t)[i];
      // decode() writes the codes (once per block) and returns the block's
      // contribution for this activation block.
      sum[t] += decode(x[i], q, y, t == 0);
    }
  }
  for (int t = 0; t < nt; ++t) out[t] = sum[t];
}

}  // namespace

void DotF32(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt, float* out) {
  const auto* x = reinterpret_cast<const float*>(w);
  for (int t = 0; t < nt; ++t) {
    const auto* y = reinterpret_cast<const float*>(a + t * a_stride);
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += static_cast<double>(x[k] * y[k]);
    out[t] = static_cast<float>(sum);
  }
}

void DotF16(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt, float* out) {
  for (int t = 0; t < nt; ++t) {
    const uint8_t* y = a + t * a_stride;
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) {
      sum += static_cast<double>(Fp16ToF32(DecodeU16(w + 2 * k)) * Fp16ToF32(DecodeU16(y + 2 * k)));
    }
    out[t] = static_cast<float>(sum);
  }
}

void DotBF16(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt, float* out) {
  for (int t = 0; t < nt; ++t) {
    const uint8_t* y = a + t * a_stride;
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) {
      sum += static_cast<double>(Bf16ToF32(DecodeU16(w + 2 * k)) * Bf16ToF32(DecodeU16(y + 2 * k)));
    }
    out[t] = static_cast<float>(sum);
  }
}

void DotQ4_0Q8_0(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotBlocks32Q8_0<BlockQ4_0>(n, w, a, a_stride, nt, out,
                             [](const BlockQ4_0& b, int8_t* q) { Nibbles(b, q, 8); });
}

void DotQ5_0Q8_0(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotBlocks32Q8_0<BlockQ5_0>(n, w, a, a_stride, nt, out,
                             [](const BlockQ5_0& b, int8_t* q) { FiveBits(b, q, 16); });
}

void DotQ8_0Q8_0(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotBlocks32Q8_0<BlockQ8_0>(n, w, a, a_stride, nt, out, [](const BlockQ8_0& b, int8_t* q) {
    for (int j = 0; j < kQK32; ++j) q[j] = b.qs[j];
  });
}

void DotIQ4_NLQ8_0(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                   float* out) {
  DotBlocks32Q8_0<BlockIQ4_NL>(n, w, a, a_stride, nt, out, [](const BlockIQ4_NL& b, int8_t* q) {
    for (int j = 0; j < 16; ++j) {
      q[j] = kIq4nlValues[b.qs[j] & 0xF];
      q[j + 16] = kIq4nlValues[b.qs[j] >> 4];
    }
  });
}

void DotQ4_1Q8_1(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotBlocks32Q8_1<BlockQ4_1>(n, w, a, a_stride, nt, out,
                             [](const BlockQ4_1& b, int8_t* q) { Nibbles(b, q, 0); });
}

void DotQ5_1Q8_1(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotBlocks32Q8_1<BlockQ5_1>(n, w, a, a_stride, nt, out,
                             [](const BlockQ5_1& b, int8_t* q) { FiveBits(b, q, 0); });
}

// Q2_K: d_a * (d * sum_s sc_s * sum(q * a) - dmin * sum_s mn_s * bsums_s).
void DotQ2_KQ8_K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotKQuant<BlockQ2_K>(n, w, a, a_stride, nt, out,
                       [](const BlockQ2_K& b, int8_t* q, const BlockQ8_K& y, bool decode) {
                         if (decode) {
                           for (int e = 0; e < kQKK; ++e) {
                             const int h = e / 128, r = e % 128;
                             q[e] =
                                 static_cast<int8_t>((b.qs[32 * h + r % 32] >> (2 * (r / 32))) & 3);
                           }
                         }
                         int isum = 0, msum = 0;
                         for (size_t s = 0; s < 16; ++s) {
                           isum += (b.scales[s] & 0xF) * DotCodes(q + 16 * s, y.qs + 16 * s, 16);
                           msum += (b.scales[s] >> 4) * y.bsums[s];
                         }
                         return y.d * Fp16ToF32(b.d) * isum - y.d * Fp16ToF32(b.dmin) * msum;
                       });
}

// Q3_K: d_a * d * sum_s sc_s * sum(q * a).
void DotQ3_KQ8_K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotKQuant<BlockQ3_K>(n, w, a, a_stride, nt, out,
                       [](const BlockQ3_K& b, int8_t* q, const BlockQ8_K& y, bool decode) {
                         if (decode) {
                           for (int e = 0; e < kQKK; ++e) {
                             const int h = e / 128, r = e % 128, l = r % 32, j = r / 32;
                             const int low2 = (b.qs[32 * h + l] >> (2 * j)) & 3;
                             const int hbit = (b.hmask[l] >> (4 * h + j)) & 1;
                             q[e] = static_cast<int8_t>(low2 - (hbit ? 0 : 4));
                           }
                         }
                         int isum = 0;
                         for (size_t s = 0; s < 16; ++s) {
                           isum += Q3KScale(b.scales, static_cast<int>(s)) *
                                   DotCodes(q + 16 * s, y.qs + 16 * s, 16);
                         }
                         return y.d * Fp16ToF32(b.d) * isum;
                       });
}

namespace {

// Q4_K and Q5_K after decoding: d_a * (d * sum_j sc_j * sum(q * a) - dmin *
// sum_j mn_j * (bsums_2j + bsums_2j+1)) over the 8 sub-blocks of 32.
float K4Sum(const uint8_t* scales, float d, float dmin, const int8_t* q, const BlockQ8_K& y) {
  int isum = 0, msum = 0;
  for (size_t j = 0; j < 8; ++j) {
    uint8_t sc, mn;
    K4ScaleMin(scales, static_cast<int>(j), &sc, &mn);
    isum += sc * DotCodes(q + 32 * j, y.qs + 32 * j, 32);
    msum += mn * (y.bsums[2 * j] + y.bsums[2 * j + 1]);
  }
  return y.d * d * isum - y.d * dmin * msum;
}

}  // namespace

void DotQ4_KQ8_K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotKQuant<BlockQ4_K>(n, w, a, a_stride, nt, out,
                       [](const BlockQ4_K& b, int8_t* q, const BlockQ8_K& y, bool decode) {
                         if (decode) {
                           for (int e = 0; e < kQKK; ++e) {
                             const uint8_t byte = b.qs[32 * (e / 64) + e % 32];
                             q[e] = static_cast<int8_t>((e % 64) < 32 ? (byte & 0xF) : (byte >> 4));
                           }
                         }
                         return K4Sum(b.scales, Fp16ToF32(b.d), Fp16ToF32(b.dmin), q, y);
                       });
}

void DotQ5_KQ8_K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotKQuant<BlockQ5_K>(n, w, a, a_stride, nt, out,
                       [](const BlockQ5_K& b, int8_t* q, const BlockQ8_K& y, bool decode) {
                         if (decode) {
                           for (int e = 0; e < kQKK; ++e) {
                             const int c = e / 64, l = e % 32;
                             const bool upper = (e % 64) >= 32;
                             const uint8_t byte = b.qs[32 * c + l];
                             const int low4 = upper ? (byte >> 4) : (byte & 0xF);
                             const int high = (b.qh[l] >> (2 * c + (upper ? 1 : 0))) & 1;
                             q[e] = static_cast<int8_t>(low4 + 16 * high);
                           }
                         }
                         return K4Sum(b.scales, Fp16ToF32(b.d), Fp16ToF32(b.dmin), q, y);
                       });
}

// Q6_K: d_a * d * sum_s scales_s * sum((q - 32) * a).
void DotQ6_KQ8_K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DotKQuant<BlockQ6_K>(n, w, a, a_stride, nt, out,
                       [](const BlockQ6_K& b, int8_t* q, const BlockQ8_K& y, bool decode) {
                         if (decode) {
                           for (int e = 0; e < kQKK; ++e) {
                             const int h = e / 128, r = e % 128, u = r / 32, l = r % 32;
                             const int low4 =
                                 (b.ql[64 * h + 32 * (u & 1) + l] >> (4 * (u >> 1))) & 0xF;
                             const int high2 = (b.qh[32 * h + l] >> (2 * u)) & 3;
                             q[e] = static_cast<int8_t>((low4 | (high2 << 4)) - 32);
                           }
                         }
                         int isum = 0;
                         for (size_t s = 0; s < 16; ++s) {
                           isum += b.scales[s] * DotCodes(q + 16 * s, y.qs + 16 * s, 16);
                         }
                         return y.d * Fp16ToF32(b.d) * isum;
                       });
}

}  // namespace fqpack::runtime::quant
