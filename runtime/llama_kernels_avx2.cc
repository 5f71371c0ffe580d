// AVX2 + FMA + F16C versions of the attention kernels (runtime/llama_kernels.h).
// Compiled with -mavx2 -mfma -mf16c; reached only through llama_kernels::Best()
// after a CPU check. F16C's conversions are IEEE round-to-nearest-even, the
// same as the portable F32ToFp16.
#include <immintrin.h>

#include <cmath>

#include "runtime/llama_kernels.h"

namespace fqpack::runtime::llama_kernels {
namespace {

inline float HorizontalMax(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// e^x for eight x in [-87, 88], the algorithm of the portable SoftmaxExp
// (llama_kernels.cc) with fused multiply-adds: n = round(x / ln 2),
// r = x - n ln 2 in two steps, a degree-6 Taylor polynomial, times 2^n
// (2^n built in the exponent bits, so n must stay in [-126, 127]).
inline __m256 ExpInRange8(__m256 x) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// e^x for x <= 0; below -87 (and -inf, NaN) counts as -87, by the same
// unsigned compare of bit patterns as the portable code.
inline __m256 Exp8(__m256 x) {
  return ExpInRange8(_mm256_castsi256_ps(
      _mm256_min_epu32(_mm256_castps_si256(x), _mm256_set1_epi32(static_cast<int>(0xC2AE0000u)))));
}

inline __m256 LoadHalf8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

void AttendAvx2(const float* q, const uint16_t* kt, int64_t kt_stride, const uint16_t* v,
                int64_t v_stride, int64_t hd, int64_t first, int64_t len, float scale,
                float softcap, float* s, float* out) {
  // Scores for whole blocks of 8 positions, 32 at a time where possible so
  // each broadcast of q[d] feeds four FMAs; blocks start at the block that
  // holds `first`.
  const int64_t len8 = (len + 7) & ~int64_t{7};
  const int64_t first8 = first & ~int64_t{7};
  int64_t j = first8;
  for (; j + 32 <= len8; j += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t d = 0; d < hd; ++d) {
      const __m256 qd = _mm256_set1_ps(q[d]);
      const uint16_t* k = kt + d * kt_stride + j;
      a0 = _mm256_fmadd_ps(qd, LoadHalf8(k), a0);
      a1 = _mm256_fmadd_ps(qd, LoadHalf8(k + 8), a1);
      a2 = _mm256_fmadd_ps(qd, LoadHalf8(k + 16), a2);
      a3 = _mm256_fmadd_ps(qd, LoadHalf8(k + 24), a3);
    }
    _mm256_storeu_ps(s + j, a0);
    _mm256_storeu_ps(s + j + 8, a1);
    _mm256_storeu_ps(s + j + 16, a2);
    _mm256_storeu_ps(s + j + 24, a3);
  }
  for (; j < len8; j += 8) {
    __m256 a = _mm256_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
      a = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), LoadHalf8(kt + d * kt_stride + j), a);
    }
    _mm256_storeu_ps(s + j, a);
  }
  SoftmaxAvx2(s, first, len, scale, softcap);

  // out = sum_j p[j] v_j, along the rows of V, 32 dimensions at a time.
  int64_t d = 0;
  for (; d + 32 <= hd; d += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (j = first; j < len; ++j) {
      const __m256 p = _mm256_set1_ps(s[j]);
      const uint16_t* vj = v + j * v_stride + d;
      a0 = _mm256_fmadd_ps(p, LoadHalf8(vj), a0);
      a1 = _mm256_fmadd_ps(p, LoadHalf8(vj + 8), a1);
      a2 = _mm256_fmadd_ps(p, LoadHalf8(vj + 16), a2);
      a3 = _mm256_fmadd_ps(p, LoadHalf8(vj + 24), a3);
    }
    _mm256_storeu_ps(out + d, a0);
    _mm256_storeu_ps(out + d + 8, a1);
    _mm256_storeu_ps(out + d + 16, a2);
    _mm256_storeu_ps(out + d + 24, a3);
  }
  for (; d + 8 <= hd; d += 8) {
    __m256 a = _mm256_setzero_ps();
    for (j = first; j < len; ++j)
      a = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), LoadHalf8(v + j * v_stride + d), a);
    _mm256_storeu_ps(out + d, a);
  }
  for (; d < hd; ++d) {
    float a = 0;
    for (j = first; j < len; ++j) a = std::fma(s[j], _cvtsh_ss(v[j * v_stride + d]), a);
    out[d] = a;
  }
}

void SwiGluAvx2(float* gate, const float* up, int64_t n) {
  // e^-x clamped to [e^-87, e^88]: beyond, silu(x) is x or -0 to float
  // precision anyway.
  const __m256 lo = _mm256_set1_ps(-87.0f), hi = _mm256_set1_ps(88.0f), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256 e =
        ExpInRange8(_mm256_min_ps(_mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), x), lo), hi));
    _mm256_storeu_ps(
        gate + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void ToHalfAvx2(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

void RoundToHalfAvx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(
        x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
  }
  for (; i < n; ++i) x[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

}  // namespace

void SoftmaxAvx2(float* s, int64_t first, int64_t len, float scale, float softcap) {
  const int64_t len8 = (len + 7) & ~int64_t{7};
  const int64_t first8 = first & ~int64_t{7};
  int64_t j;
  // Lanes past len and before first (whatever the cache holds there) take
  // no part.
  for (j = len; j < len8; ++j) s[j] = -INFINITY;
  for (j = first8; j < first; ++j) s[j] = -INFINITY;

  const __m256 vscale = _mm256_set1_ps(scale);
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (j = first8; j < len8; j += 8) {
    __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + j), vscale);
    if (softcap > 0) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, x);
      for (float& l : lanes) l = softcap * std::tanh(l * (1.0f / softcap));
      x = _mm256_load_ps(lanes);
    }
    vmax = _mm256_max_ps(vmax, x);
    _mm256_storeu_ps(s + j, x);
  }
  const __m256 max = _mm256_set1_ps(HorizontalMax(vmax));

  // Exponentials and their sum in double; lanes outside [first, len) are
  // set to zero.
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256d sum0 = _mm256_setzero_pd(), sum1 = sum0;
  for (j = first8; j < len8; j += 8) {
    __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), max));
    if (j + 8 > len) {
      const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(len - j)), lane);
      e = _mm256_and_ps(e, _mm256_castsi256_ps(live));
    }
    if (j < first) {
      const __m256i live =
          _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(static_cast<int>(first - j) - 1));
      e = _mm256_and_ps(e, _mm256_castsi256_ps(live));
    }
    _mm256_storeu_ps(s + j, e);
    sum0 = _mm256_add_pd(sum0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    sum1 = _mm256_add_pd(sum1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(sum0, sum1));
  const double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / sum));
  for (j = first8; j < len8; j += 8)
    _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), inv));
}

const Kernels& Avx2() {
  static const Kernels k = {AttendAvx2, AttendEachHead<AttendAvx2>, ToHalfAvx2, RoundToHalfAvx2,
                            SwiGluAvx2};
  return k;
}

}  // namespace fqpack::runtime::llama_kernels
