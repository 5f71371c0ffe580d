// AVX-512 + VNNI dots of the k-quants against Q8_K activations. A
// super-block of 256 is four quarters of 64 elements; each quarter's codes
// are unpacked into one zmm in element order (a broadcast of the packed
// bytes, a shift per half, a mask), so the activation codes are one plain
// 64-byte load. vpdpbusd gives int32 partial sums of four products (a
// sub-block of 16 is four lanes, one of 32 eight lanes) and vpdpwssd scales
// them by the integer sub-block scales, placed lane by lane with one
// vpermd; the integer total of a super-block is exact, as in the AVX2 and
// scalar kernels. Offsets and mins use the activation block sums (bsums).
// The weight side of a quarter is done once for all activation rows.
#include <cstddef>
#include <cstring>

#include "runtime/quant/avx512_util.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/kernels.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::Load128;
using avx2::Load256;
using avx2::Q3KScales;
using avx512::AddScaled;
using avx512::Broadcast256;
using avx512::DispatchTokens;
using avx512::Dot4;
using avx512::Half;
using avx512::K4ScalesMins;
using avx512::Load512;

// vpermd controls that place the int32 scale of each lane's sub-block:
// avx512::kQuadScale[k] for quarter k of 16-element sub-blocks (lane j:
// 4k + j / 4), kQuarter32[k] for 32-element sub-blocks (lane j: 2k + j / 8).
alignas(64) constexpr int32_t kQuarter32[4][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
    {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
};

inline __m512i Place(const int32_t (&idx)[16], __m512i scales32) {
  return _mm512_permutexvar_epi32(_mm512_load_si512(idx), scales32);
}

// Per-16-bit-word shift counts: `lo` for the low 32 bytes, `hi` for the
// high 32 bytes of a zmm.
inline __m512i HalfShifts(int lo, int hi) {
  return _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(lo)),
                            _mm256_set1_epi16(static_cast<int16_t>(hi)), 1);
}

// The bit k of every byte in the low 32 bytes of a zmm and bit k + 1 in the
// high 32 (a vptestmb operand: the bits of two consecutive 32-element
// sub-blocks, both stored at byte l for element l of each).
inline __m512i HalfBits(int k) {
  return _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << k)),
                            _mm256_set1_epi8(static_cast<char>(1 << (k + 1))), 1);
}

// (v >> shift) & mask per byte, the shift chosen per half as HalfShifts
// says. Shifting 16-bit words is exact for the low byte and brings only
// zeros or masked-off bits into the high one.
inline __m512i Field(__m512i v, __m512i shifts, int mask) {
  return _mm512_and_si512(_mm512_srlv_epi16(v, shifts), _mm512_set1_epi8(static_cast<char>(mask)));
}

// Signed int8 scales as int32 lanes with the high int16 zero (AddScaled's
// operand).
inline __m512i SignedScales32(__m128i sc8) {
  return _mm512_and_si512(_mm512_cvtepi8_epi32(sc8), _mm512_set1_epi32(0xFFFF));
}

// The eight int32 lanes of a zmm's two halves added, for the final fp32
// scaling per super-block.
inline __m256i FoldHalves(__m512i v) {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

inline float Hsum256(__m256 v) { return avx2::HsumPs(v); }

// The types with a scale and a min per super-block (Q2_K, Q4_K, Q5_K) keep,
// per activation row, the scaled sums in 16 lanes (no folding per block)
// and the mins in 8, subtracted once at the end.
struct ScaleMinAcc {
  __m512 sum = _mm512_setzero_ps();
  __m256 min = _mm256_setzero_ps();

  // d_dmin: the block's adjacent fp16 d and dmin; yd the activation's
  // scale; p the integer sub-block sums (scaled), msum the mins times the
  // activation block sums.
  void Add(const uint16_t* d_dmin, float yd, __m512i p, __m256i msum) {
    uint32_t bits;
    std::memcpy(&bits, d_dmin, 4);
    // [d * yd, dmin * yd]: one conversion for both halves.
    const __m128 scaled =
        _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits))), _mm_set1_ps(yd));
    sum = _mm512_fmadd_ps(_mm512_broadcastss_ps(scaled), _mm512_cvtepi32_ps(p), sum);
    min = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(scaled)), _mm256_cvtepi32_ps(msum),
                          min);
  }
  float Total() const { return _mm512_reduce_add_ps(sum) - Hsum256(min); }
};

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
  ScaleMinAcc acc[NT];
  const __m512i shifts[2] = {HalfShifts(0, 2), HalfShifts(4, 6)};
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m128i packed = Load128(x[i].scales);
    const __m512i sc32 = _mm512_cvtepu8_epi32(_mm_and_si128(packed, _mm_set1_epi8(0x0F)));
    const __m256i mins16 =
        _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
    __m512i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i bits = Broadcast256(x[i].qs + ptrdiff_t{32} * h);
      for (int v = 0; v < 2; ++v) {
        const __m512i codes = Field(bits, shifts[v], 3);
        const __m512i scales = Place(avx512::kQuadScale[2 * h + v], sc32);
        for (int t = 0; t < NT; ++t) {
          sum[t] =
              AddScaled(sum[t], Dot4(codes, Load512(act.y[t][i].qs + 128 * h + 64 * v)), scales);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = act.y[t][i];
      acc[t].Add(&x[i].d, y.d, sum[t], _mm256_madd_epi16(mins16, Load256(y.bsums)));
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = acc[t].Total();
}

// Q3_K: x = d * sc * q, q = q' - 4 with q' = low2 + 4 * hbit in [0, 7].
template <int NT>
void DotQ3K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  const auto* x = reinterpret_cast<const BlockQ3_K*>(w);
  const Acts<NT> act(a, a_stride);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  const __m512i low_shifts[2] = {HalfShifts(0, 2), HalfShifts(4, 6)};
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m128i sc8 = Q3KScales(x[i].scales);
    const __m512i sc32 = SignedScales32(sc8);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const __m512i hmask = Broadcast256(x[i].hmask);
    __m512i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i bits = Broadcast256(x[i].qs + ptrdiff_t{32} * h);
      for (int v = 0; v < 2; ++v) {
        // Element 32k + l has its high bit at bit k of hmask[l]: one test
        // gives the quarter's 64 high bits as a mask, under which 4 is added.
        const __mmask64 high = _mm512_test_epi8_mask(hmask, HalfBits(4 * h + 2 * v));
        const __m512i low = Field(bits, low_shifts[v], 3);
        const __m512i codes = _mm512_mask_add_epi8(low, high, low, _mm512_set1_epi8(4));
        const __m512i scales = Place(avx512::kQuadScale[2 * h + v], sc32);
        for (int t = 0; t < NT; ++t) {
          sum[t] =
              AddScaled(sum[t], Dot4(codes, Load512(act.y[t][i].qs + 128 * h + 64 * v)), scales);
        }
      }
    }
    const float dw = Half(x[i].d);
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = act.y[t][i];
      // Undo the +4 of q': sum_s sc_s * 4 * bsums_s.
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, Load256(y.bsums)), 2);
      const __m256i total = _mm256_sub_epi32(FoldHalves(sum[t]), offset);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(total), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = Hsum256(acc[t]);
}

// Q4_K and Q5_K: x = d * sc * q - dmin * mn over 8 sub-blocks of 32; with
// kFiveBits the codes get their bit 4 (0 or 16) from qh. Quarter c is the
// 32 packed bytes qs[32c..): low nibbles then high nibbles.
template <int NT, typename Block, bool kFiveBits>
void DotK4(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  const auto* x = reinterpret_cast<const Block*>(w);
  const Acts<NT> act(a, a_stride);
  ScaleMinAcc acc[NT];
  const __m512i nibble_shifts = HalfShifts(0, 4);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    // The 16-byte load reads 4 bytes after the scales, which are ignored.
    const __m128i sm =
        _mm256_castsi256_si128(K4ScalesMins(_mm256_castsi128_si256(Load128(x[i].scales))));
    const __m512i sc32 = _mm512_cvtepu8_epi32(sm);
    // Each min twice (m0 m0 m1 m1 ...): madd with the 16 bsums then gives
    // mn_j * (bsums_2j + bsums_2j+1) in lane j.
    const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
    const __m256i mins_twice =
        _mm256_set_m128i(_mm_unpackhi_epi16(mins, mins), _mm_unpacklo_epi16(mins, mins));
    __m512i hbits = _mm512_setzero_si512();
    if constexpr (kFiveBits) hbits = Broadcast256(x[i].qh);
    __m512i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      __m512i codes = Field(Broadcast256(x[i].qs + 32 * c), nibble_shifts, 0x0F);
      if constexpr (kFiveBits) {
        // Bit 4 of element 32k + l is bit k of qh[l].
        codes = _mm512_mask_add_epi8(codes, _mm512_test_epi8_mask(hbits, HalfBits(2 * c)), codes,
                                     _mm512_set1_epi8(16));
      }
      const __m512i scales = Place(kQuarter32[c], sc32);
      for (int t = 0; t < NT; ++t) {
        sum[t] = AddScaled(sum[t], Dot4(codes, Load512(act.y[t][i].qs + 64 * c)), scales);
      }
    }
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = act.y[t][i];
      acc[t].Add(&x[i].d, y.d, sum[t], _mm256_madd_epi16(mins_twice, Load256(y.bsums)));
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = acc[t].Total();
}

// Q6_K: x = d * sc * (q - 32), q in [0, 63]. Half h of a block is ql[64h..)
// (quarters 2h and 2h+1 share its bytes: low nibbles, then high nibbles)
// and qh[32h..) (two bits per quarter).
template <int NT>
void DotQ6K(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  const auto* x = reinterpret_cast<const BlockQ6_K*>(w);
  const Acts<NT> act(a, a_stride);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  const __m512i high_shifts[2] = {HalfShifts(0, 2), HalfShifts(4, 6)};
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const __m128i sc8 = Load128(x[i].scales);
    const __m512i sc32 = SignedScales32(sc8);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    __m512i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = Load512(x[i].ql + ptrdiff_t{64} * h);
      const __m512i qh = Broadcast256(x[i].qh + ptrdiff_t{32} * h);
      for (int v = 0; v < 2; ++v) {
        const __m512i low =
            v == 0 ? _mm512_and_si512(ql, _mm512_set1_epi8(0x0F))
                   : _mm512_and_si512(_mm512_srli_epi16(ql, 4), _mm512_set1_epi8(0x0F));
        const __m512i codes =
            _mm512_or_si512(low, _mm512_slli_epi16(Field(qh, high_shifts[v], 3), 4));
        const __m512i scales = Place(avx512::kQuadScale[2 * h + v], sc32);
        for (int t = 0; t < NT; ++t) {
          sum[t] =
              AddScaled(sum[t], Dot4(codes, Load512(act.y[t][i].qs + 128 * h + 64 * v)), scales);
        }
      }
    }
    const float dw = Half(x[i].d);
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = act.y[t][i];
      // Undo the +32 of the stored codes: sum_s sc_s * 32 * bsums_s.
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, Load256(y.bsums)), 5);
      const __m256i total = _mm256_sub_epi32(FoldHalves(sum[t]), offset);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(total), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = Hsum256(acc[t]);
}

}  // namespace

void DotQ2_KQ8_KAvx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  DispatchTokens(nt, [&](auto k) { DotQ2K<decltype(k)::value>(n, w, a, a_stride, out); });
}

void DotQ3_KQ8_KAvx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  DispatchTokens(nt, [&](auto k) { DotQ3K<decltype(k)::value>(n, w, a, a_stride, out); });
}

void DotQ4_KQ8_KAvx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  DispatchTokens(
      nt, [&](auto k) { DotK4<decltype(k)::value, BlockQ4_K, false>(n, w, a, a_stride, out); });
}

void DotQ5_KQ8_KAvx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  DispatchTokens(
      nt, [&](auto k) { DotK4<decltype(k)::value, BlockQ5_K, true>(n, w, a, a_stride, out); });
}

void DotQ6_KQ8_KAvx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  DispatchTokens(nt, [&](auto k) { DotQ6K<decltype(k)::value>(n, w, a, a_stride, out); });
}

}  // namespace fqpack::runtime::quant
