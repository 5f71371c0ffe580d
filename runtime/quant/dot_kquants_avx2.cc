// AVX2 dots of the k-quants against Q8_K activations. Per super-block of 256:
// the codes are made unsigned (adding the grid's offset where it has one), a
// 32-byte group of codes is multiplied with the activation codes by maddubs
// (int16 pairs), and madd with a vector of sub-block scales sums them into
// int32 lanes. Offsets and mins need only the per-16 activation sums
// (bsums): sum_s scale_s * offset * bsums_s is one madd per super-block.
// The weight side of a group (unpacking, scale vectors) is done once for all
// activation rows of the call.
#include <cstddef>

#include "runtime/quant/avx2_util.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/kernels.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::DispatchTokens;
using avx2::Half;
using avx2::HsumPs;
using avx2::Load128;
using avx2::Load256;
using avx2::Q3KScales;

// Controls for _mm256_shuffle_epi8 over a register holding eight int16
// scales in each 128-bit lane: kPairScale[j] puts scale 2j in every int16 of
// the low lane and scale 2j+1 in the high lane (a 32-byte group spanning two
// sub-blocks of 16); kOneScale[k] puts scale k everywhere (one sub-block of
// 32).
alignas(32) constexpr uint8_t kPairScale[4][32] = {
    {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
     2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
    {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5,
     6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
    {8,  9,  8,  9,  8,  9,  8,  9,  8,  9,  8,  9,  8,  9,  8,  9,
     10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
    {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13,
     14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15},
};

inline __m256i PairScale(__m256i scales16, int j) {
  return _mm256_shuffle_epi8(scales16, Load256(kPairScale[j]));
}
inline __m256i OneScale(__m256i scales16, int k) {
  return _mm256_shuffle_epi8(scales16,
                             _mm256_set1_epi16(static_cast<int16_t>(0x0100 * (2 * k + 1) + 2 * k)));
}

// Eight int16 scales (an xmm) copied into both lanes.
inline __m256i Broadcast(__m128i scales16) { return _mm256_broadcastsi128_si256(scales16); }

// Scaled group sum: madd(maddubs(codes, act), scales) -> int32 lanes.
inline __m256i Group(__m256i codes, const int8_t* act, __m256i scales) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, Load256(act)), scales);
}

inline __m256i LowBits(__m256i v, int shift, int mask) {
  return _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8(static_cast<char>(mask)));
}

template <int NT>
struct Acts {
  const BlockQ8_K* y[NT];
  Acts(const uint8_t* a, size_t a_stride) {
    for (int t = 0; t < NT; ++t) y[t] = reinterpret_cast<const BlockQ8_K*>(a + t * a_stride);
  }
};

// Q2_K: x = d * sc * q - dmin * mn, q in [0, 3].
template <int NT>
void DotQ2K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  const auto* x = reinterpret_cast<const BlockQ2_K*>(w);
  const Acts<NT> act(a, a_stride);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m128i packed = Load128(x[i].scales);
    const __m128i sc8 = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
    const __m256i mins16 =
        _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
    const __m256i sc_half[2] = {Broadcast(_mm_cvtepu8_epi16(sc8)),
                                Broadcast(_mm_cvtepu8_epi16(_mm_srli_si128(sc8, 8)))};
    __m256i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i bits = Load256(x[i].qs + ptrdiff_t{32} * h);
      for (int j = 0; j < 4; ++j) {
        const __m256i codes = LowBits(bits, 2 * j, 3);
        const __m256i scales = PairScale(sc_half[h], j);
        for (int t = 0; t < NT; ++t) {
          sum[t] =
              _mm256_add_epi32(sum[t], Group(codes, act.y[t][i].qs + 128 * h + 32 * j, scales));
        }
      }
    }
    const float dw = Half(x[i].d), dmin = Half(x[i].dmin);
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = act.y[t][i];
      const __m256i msum = _mm256_madd_epi16(mins16, Load256(y.bsums));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(sum[t]), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * y.d), _mm256_cvtepi32_ps(msum), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = HsumPs(acc[t]);
}

// Q3_K: x = d * sc * q, q = q' - 4 with q' = low2 + 4 * hbit in [0, 7].
template <int NT>
void DotQ3K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  const auto* x = reinterpret_cast<const BlockQ3_K*>(w);
  const Acts<NT> act(a, a_stride);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m128i sc8 = Q3KScales(x[i].scales);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const __m256i sc_half[2] = {Broadcast(_mm_cvtepi8_epi16(sc8)),
                                Broadcast(_mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8)))};
    const __m256i hmask = Load256(x[i].hmask);
    __m256i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i bits = Load256(x[i].qs + ptrdiff_t{32} * h);
      for (int j = 0; j < 4; ++j) {
        const __m256i high = _mm256_slli_epi16(LowBits(hmask, 4 * h + j, 1), 2);
        const __m256i codes = _mm256_or_si256(LowBits(bits, 2 * j, 3), high);
        const __m256i scales = PairScale(sc_half[h], j);
        for (int t = 0; t < NT; ++t) {
          sum[t] =
              _mm256_add_epi32(sum[t], Group(codes, act.y[t][i].qs + 128 * h + 32 * j, scales));
        }
      }
    }
    const float dw = Half(x[i].d);
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = act.y[t][i];
      // Undo the +4 of q': sum_s sc_s * 4 * bsums_s.
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, Load256(y.bsums)), 2);
      const __m256i total = _mm256_sub_epi32(sum[t], offset);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(total), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = HsumPs(acc[t]);
}

// The eight 6-bit scales and mins of a Q4_K/Q5_K block as int16: scales in
// the low lane, mins in the high lane.
inline __m256i K4ScalesMins(const uint8_t* s) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, s, 4);
  std::memcpy(&u1, s + 4, 4);
  std::memcpy(&u2, s + 8, 4);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  const uint32_t sc_lo = u0 & kLow6;
  const uint32_t mn_lo = u1 & kLow6;
  const uint32_t sc_hi = (u2 & kLow4) | (((u0 >> 6) & kLow2) << 4);
  const uint32_t mn_hi = ((u2 >> 4) & kLow4) | (((u1 >> 6) & kLow2) << 4);
  return _mm256_cvtepu8_epi16(_mm_set_epi32(static_cast<int>(mn_hi), static_cast<int>(mn_lo),
                                            static_cast<int>(sc_hi), static_cast<int>(sc_lo)));
}

// Q4_K and Q5_K: x = d * sc * q - dmin * mn over 8 sub-blocks of 32; with
// kFiveBits the codes get their bit 4 (0 or 16) from qh.
template <int NT, typename Block, bool kFiveBits>
void DotK4(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  const auto* x = reinterpret_cast<const Block*>(w);
  const Acts<NT> act(a, a_stride);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m256i sm = K4ScalesMins(x[i].scales);
    const __m256i scales16 = Broadcast(_mm256_castsi256_si128(sm));
    // Each min twice (m0 m0 m1 m1 ...): madd with the 16 bsums then gives
    // mn_j * (bsums_2j + bsums_2j+1) in lane j.
    const __m128i mins = _mm256_extracti128_si256(sm, 1);
    const __m256i mins_twice =
        _mm256_set_m128i(_mm_unpackhi_epi16(mins, mins), _mm_unpacklo_epi16(mins, mins));
    __m256i hbits = _mm256_setzero_si256();
    if constexpr (kFiveBits) hbits = Load256(x[i].qh);
    __m256i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i bits = Load256(x[i].qs + 32 * c);
      __m256i lo = _mm256_and_si256(bits, _mm256_set1_epi8(0x0F));
      __m256i hi = LowBits(bits, 4, 0x0F);
      if constexpr (kFiveBits) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(LowBits(hbits, 2 * c, 1), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(LowBits(hbits, 2 * c + 1, 1), 4));
      }
      const __m256i sc_lo = OneScale(scales16, 2 * c);
      const __m256i sc_hi = OneScale(scales16, 2 * c + 1);
      for (int t = 0; t < NT; ++t) {
        const int8_t* q8 = act.y[t][i].qs + 64 * c;
        sum[t] = _mm256_add_epi32(
            sum[t], _mm256_add_epi32(Group(lo, q8, sc_lo), Group(hi, q8 + 32, sc_hi)));
      }
    }
    const float dw = Half(x[i].d), dmin = Half(x[i].dmin);
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = act.y[t][i];
      const __m256i msum = _mm256_madd_epi16(mins_twice, Load256(y.bsums));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(sum[t]), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * y.d), _mm256_cvtepi32_ps(msum), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = HsumPs(acc[t]);
}

// Q6_K: x = d * sc * (q - 32), q in [0, 63].
template <int NT>
void DotQ6K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  const auto* x = reinterpret_cast<const BlockQ6_K*>(w);
  const Acts<NT> act(a, a_stride);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m128i sc8 = Load128(x[i].scales);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const __m256i sc_half[2] = {Broadcast(_mm_cvtepi8_epi16(sc8)),
                                Broadcast(_mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8)))};
    __m256i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = Load256(x[i].ql + ptrdiff_t{64} * h);
      const __m256i ql1 = Load256(x[i].ql + ptrdiff_t{64} * h + 32);
      const __m256i qh = Load256(x[i].qh + ptrdiff_t{32} * h);
      const __m256i codes[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_slli_epi16(LowBits(qh, 0, 3), 4)),
          _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_slli_epi16(LowBits(qh, 2, 3), 4)),
          _mm256_or_si256(LowBits(ql0, 4, 0x0F), _mm256_slli_epi16(LowBits(qh, 4, 3), 4)),
          _mm256_or_si256(LowBits(ql1, 4, 0x0F), _mm256_slli_epi16(LowBits(qh, 6, 3), 4)),
      };
      for (int u = 0; u < 4; ++u) {
        const __m256i scales = PairScale(sc_half[h], u);
        for (int t = 0; t < NT; ++t) {
          sum[t] =
              _mm256_add_epi32(sum[t], Group(codes[u], act.y[t][i].qs + 128 * h + 32 * u, scales));
        }
      }
    }
    const float dw = Half(x[i].d);
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = act.y[t][i];
      // Undo the +32 of the stored codes: sum_s sc_s * 32 * bsums_s.
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, Load256(y.bsums)), 5);
      const __m256i total = _mm256_sub_epi32(sum[t], offset);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(total), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = HsumPs(acc[t]);
}

}  // namespace

void DotQ2_KQ8_KAvx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto k) { DotQ2K<decltype(k)::value>(n, w, a, a_stride, out); });
}

void DotQ3_KQ8_KAvx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto k) { DotQ3K<decltype(k)::value>(n, w, a, a_stride, out); });
}

void DotQ4_KQ8_KAvx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(
      nt, [&](auto k) { DotK4<decltype(k)::value, BlockQ4_K, false>(n, w, a, a_stride, out); });
}

void DotQ5_KQ8_KAvx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(
      nt, [&](auto k) { DotK4<decltype(k)::value, BlockQ5_K, true>(n, w, a, a_stride, out); });
}

void DotQ6_KQ8_KAvx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto k) { DotQ6K<decltype(k)::value>(n, w, a, a_stride, out); });
}

}  // namespace fqpack::runtime::quant
