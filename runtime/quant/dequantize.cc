// Scalar reference dequantizers: one element at a time, straight from the
// formulas in blocks.h. The products are evaluated in the same order as
// ggml's dequantize_row_* so that GetRows gives the embeddings llama.cpp
// gives.
#include <cassert>
#include <cstring>

#include "runtime/quant/blocks.h"
#include "runtime/quant/kernels.h"
#include "schema/coding.h"
#include "schema/half.h"

namespace fqpack::runtime::quant {

void DequantizeRowF32(const uint8_t* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void DequantizeRowF16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToF32(DecodeU16(src + 2 * i));
}

void DequantizeRowBF16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(DecodeU16(src + 2 * i));
}

void DequantizeRowQ4_0(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQK32 == 0);
  const auto* b = reinterpret_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK32; ++i, dst += kQK32) {
    const float d = Fp16ToF32(b[i].d);
    for (int j = 0; j < kQK32 / 2; ++j) {
      dst[j] = ((b[i].qs[j] & 0xF) - 8) * d;
      dst[j + 16] = ((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantizeRowQ4_1(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQK32 == 0);
  const auto* b = reinterpret_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK32; ++i, dst += kQK32) {
    const float d = Fp16ToF32(b[i].d);
    const float m = Fp16ToF32(b[i].m);
    for (int j = 0; j < kQK32 / 2; ++j) {
      dst[j] = (b[i].qs[j] & 0xF) * d + m;
      dst[j + 16] = (b[i].qs[j] >> 4) * d + m;
    }
  }
}

void DequantizeRowQ5_0(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQK32 == 0);
  const auto* b = reinterpret_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK32; ++i, dst += kQK32) {
    const float d = Fp16ToF32(b[i].d);
    const uint32_t qh = DecodeU32(b[i].qh);
    for (int j = 0; j < kQK32 / 2; ++j) {
      const int q0 = (b[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4);
      const int q1 = (b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      dst[j] = (q0 - 16) * d;
      dst[j + 16] = (q1 - 16) * d;
    }
  }
}

void DequantizeRowQ5_1(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQK32 == 0);
  const auto* b = reinterpret_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQK32; ++i, dst += kQK32) {
    const float d = Fp16ToF32(b[i].d);
    const float m = Fp16ToF32(b[i].m);
    const uint32_t qh = DecodeU32(b[i].qh);
    for (int j = 0; j < kQK32 / 2; ++j) {
      const int q0 = (b[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4);
      const int q1 = (b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      dst[j] = q0 * d + m;
      dst[j + 16] = q1 * d + m;
    }
  }
}

void DequantizeRowQ8_0(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQK32 == 0);
  const auto* b = reinterpret_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK32; ++i, dst += kQK32) {
    const float d = Fp16ToF32(b[i].d);
    for (int j = 0; j < kQK32; ++j) dst[j] = b[i].qs[j] * d;
  }
}

void DequantizeRowQ8_1(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQK32 == 0);
  const auto* b = reinterpret_cast<const BlockQ8_1*>(src);
  for (int64_t i = 0; i < n / kQK32; ++i, dst += kQK32) {
    const float d = Fp16ToF32(b[i].d);
    for (int j = 0; j < kQK32; ++j) dst[j] = b[i].qs[j] * d;
  }
}

void DequantizeRowIQ4_NL(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQK32 == 0);
  const auto* b = reinterpret_cast<const BlockIQ4_NL*>(src);
  for (int64_t i = 0; i < n / kQK32; ++i, dst += kQK32) {
    const float d = Fp16ToF32(b[i].d);
    for (int j = 0; j < kQK32 / 2; ++j) {
      dst[j] = d * kIq4nlValues[b[i].qs[j] & 0xF];
      dst[j + 16] = d * kIq4nlValues[b[i].qs[j] >> 4];
    }
  }
}

void DequantizeRowQ2_K(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQKK == 0);
  const auto* b = reinterpret_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i, dst += kQKK) {
    const float d = Fp16ToF32(b[i].d);
    const float dmin = Fp16ToF32(b[i].dmin);
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, r = e % 128;
      const int q = (b[i].qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const uint8_t sc = b[i].scales[e / 16];
      const float dl = d * (sc & 0xF);
      const float ml = dmin * (sc >> 4);
      dst[e] = dl * q - ml;
    }
  }
}

void DequantizeRowQ3_K(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQKK == 0);
  const auto* b = reinterpret_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i, dst += kQKK) {
    const float d = Fp16ToF32(b[i].d);
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, r = e % 128, l = r % 32, j = r / 32;
      const int low2 = (b[i].qs[32 * h + l] >> (2 * j)) & 3;
      const int hbit = (b[i].hmask[l] >> (4 * h + j)) & 1;
      const int q = low2 - (hbit ? 0 : 4);
      const float dl = d * Q3KScale(b[i].scales, e / 16);
      dst[e] = dl * q;
    }
  }
}

void DequantizeRowQ4_K(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQKK == 0);
  const auto* b = reinterpret_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i, dst += kQKK) {
    const float d = Fp16ToF32(b[i].d);
    const float dmin = Fp16ToF32(b[i].dmin);
    for (int e = 0; e < kQKK; ++e) {
      const int c = e / 64, l = e % 32;
      const uint8_t byte = b[i].qs[32 * c + l];
      const int q = (e % 64) < 32 ? (byte & 0xF) : (byte >> 4);
      uint8_t sc, mn;
      K4ScaleMin(b[i].scales, e / 32, &sc, &mn);
      const float dl = d * sc;
      const float ml = dmin * mn;
      dst[e] = dl * q - ml;
    }
  }
}

void DequantizeRowQ5_K(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQKK == 0);
  const auto* b = reinterpret_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i, dst += kQKK) {
    const float d = Fp16ToF32(b[i].d);
    const float dmin = Fp16ToF32(b[i].dmin);
    for (int e = 0; e < kQKK; ++e) {
      const int c = e / 64, l = e % 32;
      const bool upper = (e % 64) >= 32;
      const uint8_t byte = b[i].qs[32 * c + l];
      const int low4 = upper ? (byte >> 4) : (byte & 0xF);
      const int high = (b[i].qh[l] >> (2 * c + (upper ? 1 : 0))) & 1;
      const int q = low4 + 16 * high;
      uint8_t sc, mn;
      K4ScaleMin(b[i].scales, e / 32, &sc, &mn);
      const float dl = d * sc;
      const float ml = dmin * mn;
      dst[e] = dl * q - ml;
    }
  }
}

void DequantizeRowQ6_K(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQKK == 0);
  const auto* b = reinterpret_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i, dst += kQKK) {
    const float d = Fp16ToF32(b[i].d);
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, r = e % 128, u = r / 32, l = r % 32;
      const int low4 = (b[i].ql[64 * h + 32 * (u & 1) + l] >> (4 * (u >> 1))) & 0xF;
      const int high2 = (b[i].qh[32 * h + l] >> (2 * u)) & 3;
      const int q = (low4 | (high2 << 4)) - 32, sub = e / 16;
      dst[e] = d * b[i].scales[sub] * q;
    }
  }
}

void DequantizeRowQ8_K(const uint8_t* src, float* dst, int64_t n) {
  assert(n % kQKK == 0);
  const auto* b = reinterpret_cast<const BlockQ8_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i, dst += kQKK) {
    for (int e = 0; e < kQKK; ++e) dst[e] = b[i].d * b[i].qs[e];
  }
}

}  // namespace fqpack::runtime::quant
