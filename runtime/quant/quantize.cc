// Quantizers of a float row.
//
// Activation types (F32, F16, BF16, Q8_0, Q8_1, Q8_K): exactly what
// llama.cpp's CPU backend does to activations before a dot on an x86 CPU with
// AVX2, including the rounding (to nearest, ties to even) and which scale is
// rounded to fp16 when, so that fqpack's matmuls see the same integers.
//
// Weight types: simple reference quantizers (absmax or min/max per block,
// scales of scales rounded to the nearest code). They make valid blocks with
// sensible error for tests and benchmarks; the high-quality quantizers of
// `fqpack quantize` live elsewhere.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "runtime/quant/blocks.h"
#include "runtime/quant/kernels.h"
#include "schema/coding.h"
#include "schema/half.h"

namespace fqpack::runtime::quant {
namespace {

// The element with the largest magnitude (the first one on ties), sign kept.
float SignedAbsMax(const float* x, int n) {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// The nearest integer to v within [lo, hi]. Clamping before rounding keeps
// NearestInt inside its exact range whatever the ratio of value to scale.
int RoundClamped(float v, int lo, int hi) {
  return NearestInt(std::clamp(v, static_cast<float>(lo), static_cast<float>(hi)));
}

// Round-trips a float through fp16: the scale the dequantizer will see.
float HalfRound(float v, uint16_t* out) {
  *out = F32ToFp16(v);
  return Fp16ToF32(*out);
}

// Scale and non-negative min of a sub-block for unsigned codes 0..max_code:
// x ~ scale * q - min, with min = -min(x, 0) so the grid always covers 0.
void ScaleMin(const float* x, int n, int max_code, float* scale, float* min) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < n; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  lo = std::min(lo, 0.0f);
  *min = -lo;
  *scale = (hi - lo) / max_code;
}

int CodeOf(float x, float scale, float min, int max_code) {
  if (scale == 0) return 0;
  return RoundClamped((x + min) / scale, 0, max_code);
}

// Q3_K and Q6_K: the scale of each 16-weight sub-block maps its largest
// magnitude to `code_min`, and the block's fp16 super-scale d (returned,
// stored in *d_out) maps the largest of those scales to `sub_min`; the
// sub-scales are then RoundClamped(*iscale * scale[s]).
float SignedSubScales(const float* src, float code_min, float sub_min, float scale[16],
                      float* iscale, uint16_t* d_out) {
  for (size_t s = 0; s < 16; ++s) scale[s] = SignedAbsMax(src + 16 * s, 16) / code_min;
  const float max_scale = SignedAbsMax(scale, 16);
  *iscale = max_scale != 0 ? sub_min / max_scale : 0;
  return HalfRound(*iscale != 0 ? 1 / *iscale : 0, d_out);
}

}  // namespace

// ---- Activation types.

void QuantizeRowF32(const float* src, uint8_t* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void QuantizeRowF16(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = F32ToFp16(src[i]);
    dst[2 * i] = static_cast<uint8_t>(h);
    dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
}

void QuantizeRowBF16(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = F32ToBf16(src[i]);
    dst[2 * i] = static_cast<uint8_t>(h);
    dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
}

// llama.cpp (x86): d = amax / 127 stored as fp16, but the codes use the fp32
// reciprocal 127 / amax, rounded to nearest even.
void QuantizeRowQ8_0(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    float amax = 0;
    for (int j = 0; j < kQK32; ++j) amax = std::max(amax, std::fabs(src[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    y[i].d = F32ToFp16(d);
    for (int j = 0; j < kQK32; ++j) y[i].qs[j] = static_cast<int8_t>(NearestInt(src[j] * id));
  }
}

// As Q8_0, plus s = fp16(d * sum(qs)) with the unrounded fp32 d.
void QuantizeRowQ8_1(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    float amax = 0;
    for (int j = 0; j < kQK32; ++j) amax = std::max(amax, std::fabs(src[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    y[i].d = F32ToFp16(d);
    int sum = 0;
    for (int j = 0; j < kQK32; ++j) {
      const int q = NearestInt(src[j] * id);
      y[i].qs[j] = static_cast<int8_t>(q);
      sum += q;
    }
    y[i].s = F32ToFp16(d * static_cast<float>(sum));
  }
}

// llama.cpp's quantize_row_q8_K: the element of largest magnitude maps to
// -127 (iscale = -127 / max), codes capped at 127, d = 1 / iscale in fp32.
void QuantizeRowQ8_K(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQKK == 0);
  auto* y = reinterpret_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    const float max = SignedAbsMax(src, kQKK);
    if (max == 0) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < kQKK; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::min(127, NearestInt(iscale * src[j])));
    }
    for (int s = 0; s < kQKK / 16; ++s) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y[i].qs[16 * s + j];
      y[i].bsums[s] = static_cast<int16_t>(sum);
    }
    y[i].d = 1 / iscale;
  }
}

// ---- Weight types (reference quality).

void QuantizeRowQ4_0(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    // The largest magnitude maps to code 0 (-8), the one end with no twin.
    const float d = HalfRound(SignedAbsMax(src, kQK32) / -8, &y[i].d);
    const float id = d != 0 ? 1 / d : 0;
    for (int j = 0; j < kQK32 / 2; ++j) {
      const int q0 = RoundClamped(src[j] * id, -8, 7) + 8;
      const int q1 = RoundClamped(src[j + 16] * id, -8, 7) + 8;
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void QuantizeRowQ4_1(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockQ4_1*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    const float lo = *std::min_element(src, src + kQK32);
    const float hi = *std::max_element(src, src + kQK32);
    const float d = HalfRound((hi - lo) / 15, &y[i].d);
    const float m = HalfRound(lo, &y[i].m);
    for (int j = 0; j < kQK32 / 2; ++j) {
      const int q0 = CodeOf(src[j], d, -m, 15);
      const int q1 = CodeOf(src[j + 16], d, -m, 15);
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void QuantizeRowQ5_0(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockQ5_0*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    const float d = HalfRound(SignedAbsMax(src, kQK32) / -16, &y[i].d);
    const float id = d != 0 ? 1 / d : 0;
    uint32_t qh = 0;
    for (int j = 0; j < kQK32 / 2; ++j) {
      const int q0 = RoundClamped(src[j] * id, -16, 15) + 16;
      const int q1 = RoundClamped(src[j + 16] * id, -16, 15) + 16;
      y[i].qs[j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
      qh |= static_cast<uint32_t>(q0 >> 4) << j;
      qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
    }
    EncodeU32(y[i].qh, qh);
  }
}

void QuantizeRowQ5_1(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockQ5_1*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    const float lo = *std::min_element(src, src + kQK32);
    const float hi = *std::max_element(src, src + kQK32);
    const float d = HalfRound((hi - lo) / 31, &y[i].d);
    const float m = HalfRound(lo, &y[i].m);
    uint32_t qh = 0;
    for (int j = 0; j < kQK32 / 2; ++j) {
      const int q0 = CodeOf(src[j], d, -m, 31);
      const int q1 = CodeOf(src[j + 16], d, -m, 31);
      y[i].qs[j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
      qh |= static_cast<uint32_t>(q0 >> 4) << j;
      qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
    }
    EncodeU32(y[i].qh, qh);
  }
}

void QuantizeRowIQ4_NL(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockIQ4_NL*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    // The largest magnitude maps onto the grid's end -127.
    const float d = HalfRound(SignedAbsMax(src, kQK32) / kIq4nlValues[0], &y[i].d);
    const float id = d != 0 ? 1 / d : 0;
    uint8_t codes[kQK32];
    for (int j = 0; j < kQK32; ++j) {
      const float v = src[j] * id;
      int best = 0;
      for (int k = 1; k < 16; ++k) {
        if (std::fabs(kIq4nlValues[k] - v) < std::fabs(kIq4nlValues[best] - v)) best = k;
      }
      codes[j] = static_cast<uint8_t>(best);
    }
    for (int j = 0; j < kQK32 / 2; ++j) {
      y[i].qs[j] = static_cast<uint8_t>(codes[j] | (codes[j + 16] << 4));
    }
  }
}

void QuantizeRowQ2_K(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQKK == 0);
  auto* y = reinterpret_cast<BlockQ2_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    std::memset(&y[i], 0, sizeof(BlockQ2_K));
    float scale[16], min[16], max_scale = 0, max_min = 0;
    for (size_t s = 0; s < 16; ++s) {
      ScaleMin(src + 16 * s, 16, 3, &scale[s], &min[s]);
      max_scale = std::max(max_scale, scale[s]);
      max_min = std::max(max_min, min[s]);
    }
    const float d = HalfRound(max_scale / 15, &y[i].d);
    const float dmin = HalfRound(max_min / 15, &y[i].dmin);
    for (int s = 0; s < 16; ++s) {
      const int sc = d > 0 ? RoundClamped(scale[s] / d, 0, 15) : 0;
      const int mn = dmin > 0 ? RoundClamped(min[s] / dmin, 0, 15) : 0;
      y[i].scales[s] = static_cast<uint8_t>(sc | (mn << 4));
      for (int j = 0; j < 16; ++j) {
        const int e = 16 * s + j, h = e / 128, r = e % 128;
        const int q = CodeOf(src[e], d * sc, dmin * mn, 3);
        y[i].qs[32 * h + r % 32] |= static_cast<uint8_t>(q << (2 * (r / 32)));
      }
    }
  }
}

void QuantizeRowQ3_K(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQKK == 0);
  auto* y = reinterpret_cast<BlockQ3_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    std::memset(&y[i], 0, sizeof(BlockQ3_K));
    float scale[16], iscale;
    const float d = SignedSubScales(src, -4, -32, scale, &iscale, &y[i].d);
    for (int s = 0; s < 16; ++s) {
      const int l = RoundClamped(iscale * scale[s], -32, 31);
      const int v = l + 32;
      if (s < 8) {
        y[i].scales[s] |= static_cast<uint8_t>(v & 0xF);
      } else {
        y[i].scales[s - 8] |= static_cast<uint8_t>((v & 0xF) << 4);
      }
      y[i].scales[8 + s % 4] |= static_cast<uint8_t>((v >> 4) << (2 * (s / 4)));
      const float dl = d * l;
      for (int j = 0; j < 16; ++j) {
        const int e = 16 * s + j, h = e / 128, r = e % 128, l32 = r % 32, k = r / 32;
        const int q = dl != 0 ? RoundClamped(src[e] / dl, -4, 3) : 0;
        const int stored = q + 4;  // low2 = stored & 3, hbit set when stored >= 4
        y[i].qs[32 * h + l32] |= static_cast<uint8_t>((stored & 3) << (2 * k));
        if (stored >= 4) y[i].hmask[l32] |= static_cast<uint8_t>(1 << (4 * h + k));
      }
    }
  }
}

namespace {

// Packs eight 6-bit scales and mins the way K4ScaleMin reads them.
void PackK4Scales(const int* sc, const int* mn, uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
}

// Shared by Q4_K and Q5_K: 8 sub-blocks of 32, codes 0..max_code. Fills the
// fp16 d/dmin, the packed scales and codes[256].
void QuantizeK4Block(const float* x, int max_code, uint16_t* d_out, uint16_t* dmin_out,
                     uint8_t* scales_out, int* codes) {
  float scale[8], min[8], max_scale = 0, max_min = 0;
  for (size_t s = 0; s < 8; ++s) {
    ScaleMin(x + 32 * s, 32, max_code, &scale[s], &min[s]);
    max_scale = std::max(max_scale, scale[s]);
    max_min = std::max(max_min, min[s]);
  }
  const float d = HalfRound(max_scale / 63, d_out);
  const float dmin = HalfRound(max_min / 63, dmin_out);
  int sc[8], mn[8];
  for (int s = 0; s < 8; ++s) {
    sc[s] = d > 0 ? RoundClamped(scale[s] / d, 0, 63) : 0;
    mn[s] = dmin > 0 ? RoundClamped(min[s] / dmin, 0, 63) : 0;
    for (int j = 0; j < 32; ++j) {
      codes[32 * s + j] = CodeOf(x[32 * s + j], d * sc[s], dmin * mn[s], max_code);
    }
  }
  PackK4Scales(sc, mn, scales_out);
}

}  // namespace

void QuantizeRowQ4_K(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQKK == 0);
  auto* y = reinterpret_cast<BlockQ4_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    int codes[kQKK];
    QuantizeK4Block(src, 15, &y[i].d, &y[i].dmin, y[i].scales, codes);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        y[i].qs[32 * c + l] =
            static_cast<uint8_t>(codes[64 * c + l] | (codes[64 * c + 32 + l] << 4));
      }
    }
  }
}

void QuantizeRowQ5_K(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQKK == 0);
  auto* y = reinterpret_cast<BlockQ5_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    int codes[kQKK];
    QuantizeK4Block(src, 31, &y[i].d, &y[i].dmin, y[i].scales, codes);
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = codes[64 * c + l], hi = codes[64 * c + 32 + l];
        y[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        y[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

void QuantizeRowQ6_K(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQKK == 0);
  auto* y = reinterpret_cast<BlockQ6_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    std::memset(&y[i], 0, sizeof(BlockQ6_K));
    float scale[16], iscale;
    const float d = SignedSubScales(src, -32, -128, scale, &iscale, &y[i].d);
    for (int s = 0; s < 16; ++s) {
      const int l = RoundClamped(iscale * scale[s], -128, 127);
      y[i].scales[s] = static_cast<int8_t>(l);
      const float dl = d * l;
      for (int j = 0; j < 16; ++j) {
        const int e = 16 * s + j, h = e / 128, r = e % 128, u = r / 32, l32 = r % 32;
        const int q = (dl != 0 ? RoundClamped(src[e] / dl, -32, 31) : 0) + 32;
        y[i].ql[64 * h + 32 * (u & 1) + l32] |= static_cast<uint8_t>((q & 0xF) << (4 * (u >> 1)));
        y[i].qh[32 * h + l32] |= static_cast<uint8_t>((q >> 4) << (2 * u));
      }
    }
  }
}

}  // namespace fqpack::runtime::quant
