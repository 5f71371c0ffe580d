// Small AVX-512 building blocks shared by the *_avx512.cc kernels. Include
// this only from files compiled with the AVX-512 tier's flags (named
// *_avx512.cc), whose functions run only when ActiveSimdLevel() >= kAvx512.
//
// The kernels that read one row at a time issue no software prefetch: the
// weight stream is sequential, the hardware prefetchers follow it, and
// explicit prefetches 512 bytes ahead made Q6_K and Q4_K matvecs from
// memory slower in decode_bench. The k-quant kernels that read eight rows
// side by side (decode_kquants_avx512.inc) prefetch the next eight in
// order, which the prefetchers do not foresee.
//
// The kernels multiply unsigned weight codes with signed activation codes by
// vpdpbusd (four u8 x s8 products summed into each int32 lane, no
// saturation) and apply integer sub-block scales with vpdpwssd: an int32
// lane holding a partial sum p with |p| < 2^15 is, read as two int16, (p, p's
// sign), so dpwssd(acc, p, s) with s a scale in the low int16 and 0 in the
// high one adds exactly p * s.
//
// Thread-safety: pure functions.
#ifndef FQPACK_RUNTIME_QUANT_AVX512_UTIL_H_
#define FQPACK_RUNTIME_QUANT_AVX512_UTIL_H_

#include <immintrin.h>

#include <cstdint>

// GCC 12's unmasked AVX-512 intrinsics pass _mm512_undefined_*() as the
// merge source of their masked builtins, which -Wmaybe-uninitialized reports
// at every inlined use (GCC bug 105593, fixed in 13); the value is never
// read. Silenced for the translation units of the AVX-512 kernels only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "runtime/quant/avx2_util.h"

namespace fqpack::runtime::quant::avx512 {

// vpermps controls giving the scale of block (or chunk) 2k in lanes 0..7 and
// of 2k + 1 in lanes 8..15.
alignas(64) inline constexpr int32_t kPairScale[8][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
    {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},
    {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13},
    {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

// vpermps/vpermd controls giving entry 4q + k in 128-bit lane k (lanes
// 4k..4k+3): a quad of four blocks or sub-blocks, one per 128-bit lane.
alignas(64) inline constexpr int32_t kQuadScale[4][16] = {
    {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
    {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
    {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
    {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15},
};

using avx2::DispatchTokens;
using avx2::Half;

// u8 x s8 products of u and s summed in fours into int32 lanes.
inline __m512i Dot4(__m512i u, __m512i s) {
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
}

// acc + p * scale lane by lane, for |p| < 2^15 and scale in [-2^15, 2^15)
// held in the low int16 of its lane (high int16 zero).
inline __m512i AddScaled(__m512i acc, __m512i p, __m512i scale) {
  return _mm512_dpwssd_epi32(acc, p, scale);
}

// 32 bytes at p copied into both halves of a zmm.
inline __m512i Broadcast256(const void* p) {
  return _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
}

inline __m512i Load512(const void* p) { return _mm512_loadu_si512(p); }

// The vgf2p8affineqb matrix (GFNI; the *_gfni_avx512.cc kernels) moving
// bits [first, first + count) of a byte to bits [to, to + count), every
// other bit zero: output bit i is the parity of the input under matrix byte
// 7 - i, here the one input bit it names.
constexpr int64_t BitMove(int first, int count, int to) {
  uint64_t m = 0;
  for (int j = 0; j < count; ++j) m |= (uint64_t{1} << (first + j)) << (8 * (7 - (to + j)));
  return static_cast<int64_t>(m);
}

// Bits [kFirst, kFirst + kCount) of every byte of v, moved to bits [kTo,
// kTo + kCount), the rest zero: with kGfni one vgf2p8affineqb (instantiate
// it so only in the *_gfni_avx512.cc files), else a shift, a mask and a
// shift (a field moved up by at most 8 - kCount stays within its byte).
template <bool kGfni, int kFirst, int kCount, int kTo = 0>
inline __m512i MoveBits(__m512i v) {
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << kCount) - 1));
  if constexpr (kFirst == 0 && kTo == 0) {
    return _mm512_and_si512(v, mask);
  } else if constexpr (kGfni) {
    return _mm512_gf2p8affine_epi64_epi8(v, _mm512_set1_epi64(BitMove(kFirst, kCount, kTo)), 0);
  } else {
    const __m512i f = _mm512_and_si512(kFirst == 0 ? v : _mm512_srli_epi16(v, kFirst), mask);
    return kTo == 0 ? f : _mm512_slli_epi16(f, kTo);
  }
}

// A word-index table built at compile time: a vpermw or vpermt2w control
// (or a vpshufb control's low bytes).
struct Words {
  int16_t w[32];
};
inline __m512i LoadWords(const Words& t) { return _mm512_loadu_si512(t.w); }

// The eight 6-bit scales and mins of a Q4_K/Q5_K block, one block per
// 128-bit lane of `v` (each lane its block's 12 scale bytes and 4 ignored
// ones): bytes 0..7 of a lane become the scales, 8..15 the mins. With u0,
// u1, u2 a lane's three 32-bit words, scales 0..3 are u0 & 0x3f.., mins
// 0..3 u1 & 0x3f.., scales 4..7 the low nibbles of u2 under the top two
// bits of u0's bytes, mins 4..7 the high nibbles of u2 under u1's.
inline __m512i K4ScalesMins(__m512i v) {
  const __m512i low6 = _mm512_and_si512(v, _mm512_set1_epi8(0x3f));  // [sc_lo, mn_lo, ..]
  const __m512i u2 = _mm512_shuffle_epi32(v, _MM_PERM_CCCC);
  const __m512i nib = _mm512_and_si512(_mm512_srlv_epi32(u2, _mm512_set4_epi32(4, 0, 4, 0)),
                                       _mm512_set1_epi8(0x0F));
  const __m512i top2 =
      _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(v, 6), _mm512_set1_epi8(3)), 4);
  const __m512i high = _mm512_or_si512(nib, top2);  // [sc_hi, mn_hi, ..]
  return _mm512_unpacklo_epi32(low6, high);         // [sc_lo, sc_hi, mn_lo, mn_hi] per lane
}
inline __m256i K4ScalesMins(__m256i v) {
  return _mm512_castsi512_si256(K4ScalesMins(_mm512_castsi256_si512(v)));
}

}  // namespace fqpack::runtime::quant::avx512

#endif  // FQPACK_RUNTIME_QUANT_AVX512_UTIL_H_
