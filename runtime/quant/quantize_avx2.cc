// AVX2 versions of the activation quantizers. Each produces exactly the bytes
// of its scalar counterpart in quantize.cc (same products in fp32, rounding
// to nearest even, same choice of the scaling element), only faster: with
// narrow matrices, converting the activations is a visible share of a
// matmul.
#include <cassert>

#include "runtime/quant/avx2_util.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/kernels.h"
#include "schema/half.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::Abs;
using avx2::HmaxPs;
using avx2::HsumEpi32;

inline uint16_t ToHalf(float v) {
  return static_cast<uint16_t>(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// x * scale rounded to nearest even, as int32 (the default MXCSR rounding).
inline __m256i RoundScaled(const float* x, __m256 scale) {
  return _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), scale));
}

// Four vectors of int32 in [-128, 127] -> 32 int8 in element order.
inline void Store32(__m256i i0, __m256i i1, __m256i i2, __m256i i3, int8_t* out) {
  // The packs work per 128-bit lane, leaving the 4-byte groups in the order
  // 0 2 4 6 1 3 5 7; the permute restores it.
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  const __m256i ordered = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), ordered);
}

// Shared by Q8_0 and Q8_1: codes of one block of 32, its fp32 d and the sum
// of its codes.
inline int QuantizeBlock32(const float* x, int8_t* qs, float* d_out) {
  __m256 amax = Abs(_mm256_loadu_ps(x));
  for (int k = 8; k < 32; k += 8) amax = _mm256_max_ps(amax, Abs(_mm256_loadu_ps(x + k)));
  const float max = HmaxPs(amax);
  *d_out = max / 127.f;
  const __m256 id = _mm256_set1_ps(max != 0.0f ? 127.f / max : 0.0f);
  const __m256i i0 = RoundScaled(x, id), i1 = RoundScaled(x + 8, id);
  const __m256i i2 = RoundScaled(x + 16, id), i3 = RoundScaled(x + 24, id);
  Store32(i0, i1, i2, i3, qs);
  return HsumEpi32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
}

}  // namespace

void QuantizeRowQ8_0Avx2(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    float d;
    QuantizeBlock32(src, y[i].qs, &d);
    y[i].d = ToHalf(d);
  }
}

void QuantizeRowQ8_1Avx2(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQK32 == 0);
  auto* y = reinterpret_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK32; ++i, src += kQK32) {
    float d;
    const int sum = QuantizeBlock32(src, y[i].qs, &d);
    y[i].d = ToHalf(d);
    y[i].s = ToHalf(d * static_cast<float>(sum));
  }
}

void QuantizeRowQ8_KAvx2(const float* src, uint8_t* dst, int64_t n) {
  assert(n % kQKK == 0);
  auto* y = reinterpret_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    __m256 amax_v = _mm256_setzero_ps();
    for (int k = 0; k < kQKK; k += 8) amax_v = _mm256_max_ps(amax_v, Abs(_mm256_loadu_ps(src + k)));
    const float amax = HmaxPs(amax_v);
    if (amax == 0) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    // The scalar quantizer scales by the first element of largest magnitude,
    // sign kept.
    const __m256 target = _mm256_set1_ps(amax);
    int first = 0;
    for (int k = 0; k < kQKK; k += 8) {
      const int mask =
          _mm256_movemask_ps(_mm256_cmp_ps(Abs(_mm256_loadu_ps(src + k)), target, _CMP_EQ_OQ));
      if (mask != 0) {
        first = k + __builtin_ctz(static_cast<unsigned>(mask));
        break;
      }
    }
    const float iscale = -127.f / src[first];
    const __m256 scale = _mm256_set1_ps(iscale);
    const __m256i cap = _mm256_set1_epi32(127);
    for (int k = 0; k < kQKK; k += 32) {
      const __m256i i0 = _mm256_min_epi32(RoundScaled(src + k, scale), cap);
      const __m256i i1 = _mm256_min_epi32(RoundScaled(src + k + 8, scale), cap);
      const __m256i i2 = _mm256_min_epi32(RoundScaled(src + k + 16, scale), cap);
      const __m256i i3 = _mm256_min_epi32(RoundScaled(src + k + 24, scale), cap);
      Store32(i0, i1, i2, i3, y[i].qs + k);
      y[i].bsums[k / 16] = static_cast<int16_t>(HsumEpi32(_mm256_add_epi32(i0, i1)));
      y[i].bsums[k / 16 + 1] = static_cast<int16_t>(HsumEpi32(_mm256_add_epi32(i2, i3)));
    }
    y[i].d = 1 / iscale;
  }
}

void QuantizeRowF16Avx2(const float* src, uint8_t* dst, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + k), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * k), h);
  }
  for (; k < n; ++k) {
    const uint16_t h = F32ToFp16(src[k]);
    dst[2 * k] = static_cast<uint8_t>(h);
    dst[2 * k + 1] = static_cast<uint8_t>(h >> 8);
  }
}

}  // namespace fqpack::runtime::quant
