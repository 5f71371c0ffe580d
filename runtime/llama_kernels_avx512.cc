// The AVX-512 attention of a group of query heads that share one KV head
// (llama_kernels.h, AttendGroupFn). Compiled with the AVX-512 tier's flags;
// reached only through llama_kernels::Best() after a CPU check.
//
// Each F16 block of K (16 positions of one dimension) and of V (16
// dimensions of one position) is converted once and used by every head of
// the group, where the per-head kernel converts it once per head; up to
// kMaxHeads heads share a pass. The arithmetic of every lane is the AVX2
// kernel's: a score is the FMA chain over d = 0, 1, ... from zero, the
// softmax is the AVX2 one (SoftmaxAvx2), an output dimension is the FMA
// chain over j = first, first + 1, ... from zero. So the results are the
// AVX2 kernel's bit for bit, which tests/runtime/llama_test.cc checks.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "runtime/llama_kernels.h"
// For its silencing of GCC 12's false -Wmaybe-uninitialized on AVX-512
// intrinsics.
#include "runtime/quant/avx512_util.h"

namespace fqpack::runtime::llama_kernels {
namespace {

constexpr int kMaxHeads = 8;

inline __m512 LoadHalf16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

inline __m256 LoadHalf8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Blocks of 16 positions (or dimensions) taken per pass: enough independent
// FMA chains (kHeads * kBlocks) to cover the FMA latency.
template <int kHeads>
constexpr int kBlocks = kHeads == 1   ? 4
                        : kHeads <= 3 ? 2
                                      : 1;

// Raw scores s_i[j] = q_i . k_j of kHeads heads (q_i at q + i * hd, s_i at
// s + i * s_stride) for the positions [first8, len8), whole blocks of 8.
template <int kHeads>
void Scores(const float* q, int64_t hd, const uint16_t* kt, int64_t kt_stride, int64_t first8,
            int64_t len8, float* s, int64_t s_stride) {
  constexpr int kB = kBlocks<kHeads>;
  int64_t j = first8;
  constexpr int64_t kStep = int64_t{16} * kB;
  for (; j + kStep <= len8; j += kStep) {
    __m512 acc[kHeads][kB];
    for (auto& h : acc) {
      for (__m512& a : h) a = _mm512_setzero_ps();
    }
    for (int64_t d = 0; d < hd; ++d) {
      const uint16_t* k = kt + d * kt_stride + j;
      __m512 kv[kB];
      for (int b = 0; b < kB; ++b) kv[b] = LoadHalf16(k + ptrdiff_t{16} * b);
      for (int i = 0; i < kHeads; ++i) {
        const __m512 qd = _mm512_set1_ps(q[i * hd + d]);
        for (int b = 0; b < kB; ++b) acc[i][b] = _mm512_fmadd_ps(qd, kv[b], acc[i][b]);
      }
    }
    for (int i = 0; i < kHeads; ++i) {
      for (int b = 0; b < kB; ++b)
        _mm512_storeu_ps(s + i * s_stride + j + ptrdiff_t{16} * b, acc[i][b]);
    }
  }
  // What is left, 8 positions at a time (len8 is a multiple of 8, and no
  // row may be read past it in blocks of 16).
  for (; j < len8; j += 8) {
    __m256 acc[kHeads];
    for (__m256& a : acc) a = _mm256_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
      const __m256 kv = LoadHalf8(kt + d * kt_stride + j);
      for (int i = 0; i < kHeads; ++i) {
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(q[i * hd + d]), kv, acc[i]);
      }
    }
    for (int i = 0; i < kHeads; ++i) _mm256_storeu_ps(s + i * s_stride + j, acc[i]);
  }
}

// out_i = sum over j in [first, len) of p_i[j] v_j for kHeads heads (p_i at
// s + i * s_stride, out_i at out + i * hd).
template <int kHeads>
void Weighted(const float* s, int64_t s_stride, const uint16_t* v, int64_t v_stride, int64_t hd,
              int64_t first, int64_t len, float* out) {
  constexpr int kB = kBlocks<kHeads>;
  int64_t d = 0;
  constexpr int64_t kStep = int64_t{16} * kB;
  for (; d + kStep <= hd; d += kStep) {
    __m512 acc[kHeads][kB];
    for (auto& h : acc) {
      for (__m512& a : h) a = _mm512_setzero_ps();
    }
    for (int64_t j = first; j < len; ++j) {
      const uint16_t* vj = v + j * v_stride + d;
      __m512 vv[kB];
      for (int b = 0; b < kB; ++b) vv[b] = LoadHalf16(vj + ptrdiff_t{16} * b);
      for (int i = 0; i < kHeads; ++i) {
        const __m512 p = _mm512_set1_ps(s[i * s_stride + j]);
        for (int b = 0; b < kB; ++b) acc[i][b] = _mm512_fmadd_ps(p, vv[b], acc[i][b]);
      }
    }
    for (int i = 0; i < kHeads; ++i) {
      for (int b = 0; b < kB; ++b)
        _mm512_storeu_ps(out + i * hd + d + ptrdiff_t{16} * b, acc[i][b]);
    }
  }
  for (; d + 16 <= hd; d += 16) {
    __m512 acc[kHeads];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    for (int64_t j = first; j < len; ++j) {
      const __m512 vv = LoadHalf16(v + j * v_stride + d);
      for (int i = 0; i < kHeads; ++i) {
        acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(s[i * s_stride + j]), vv, acc[i]);
      }
    }
    for (int i = 0; i < kHeads; ++i) _mm512_storeu_ps(out + i * hd + d, acc[i]);
  }
  for (; d + 8 <= hd; d += 8) {
    __m256 acc[kHeads];
    for (__m256& a : acc) a = _mm256_setzero_ps();
    for (int64_t j = first; j < len; ++j) {
      const __m256 vv = LoadHalf8(v + j * v_stride + d);
      for (int i = 0; i < kHeads; ++i) {
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(s[i * s_stride + j]), vv, acc[i]);
      }
    }
    for (int i = 0; i < kHeads; ++i) _mm256_storeu_ps(out + i * hd + d, acc[i]);
  }
  for (; d < hd; ++d) {
    for (int i = 0; i < kHeads; ++i) {
      float a = 0;
      for (int64_t j = first; j < len; ++j) {
        a = std::fma(s[i * s_stride + j], _cvtsh_ss(v[j * v_stride + d]), a);
      }
      out[i * hd + d] = a;
    }
  }
}

template <int kHeads>
void Heads(const float* q, const uint16_t* kt, int64_t kt_stride, const uint16_t* v,
           int64_t v_stride, int64_t hd, int64_t first, int64_t len, float scale, float softcap,
           float* s, float* out) {
  const int64_t len8 = (len + 7) & ~int64_t{7};
  Scores<kHeads>(q, hd, kt, kt_stride, first & ~int64_t{7}, len8, s, len8);
  for (int i = 0; i < kHeads; ++i) SoftmaxAvx2(s + i * len8, first, len, scale, softcap);
  Weighted<kHeads>(s, len8, v, v_stride, hd, first, len, out);
}

using HeadsFn = void (*)(const float*, const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t,
                         int64_t, int64_t, float, float, float*, float*);
constexpr HeadsFn kHeadsFns[kMaxHeads] = {Heads<1>, Heads<2>, Heads<3>, Heads<4>,
                                          Heads<5>, Heads<6>, Heads<7>, Heads<8>};

}  // namespace

void AttendGroupAvx512(const float* q, int64_t nq, const uint16_t* kt, int64_t kt_stride,
                       const uint16_t* v, int64_t v_stride, int64_t hd, int64_t first, int64_t len,
                       float scale, float softcap, float* s, float* out) {
  for (int64_t h = 0; h < nq; h += kMaxHeads) {
    const int64_t n = std::min<int64_t>(kMaxHeads, nq - h);
    kHeadsFns[n - 1](q + h * hd, kt, kt_stride, v, v_stride, hd, first, len, scale, softcap, s,
                     out + h * hd);
  }
}

}  // namespace fqpack::runtime::llama_kernels
