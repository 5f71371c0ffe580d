// Small AVX2 building blocks shared by the *_avx2.cc kernels. Include this
// only from files compiled with -mavx2 -mfma -mf16c (named *_avx2.cc), whose
// functions run only after CpuHasAvx2().
//
// Thread-safety: pure functions.
#ifndef FQPACK_RUNTIME_QUANT_AVX2_UTIL_H_
#define FQPACK_RUNTIME_QUANT_AVX2_UTIL_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime/quant/quant.h"

namespace fqpack::runtime::quant::avx2 {

inline float Half(uint16_t h) { return _cvtsh_ss(h); }

inline float HsumPs(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// |v| lane by lane.
inline __m256 Abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// The largest of the eight lanes.
inline float HmaxPs(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// The sum of the eight int32 lanes.
inline int HsumEpi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// Sums adjacent int16 pairs into int32 lanes.
inline __m256i SumPairs(__m256i p16) { return _mm256_madd_epi16(p16, _mm256_set1_epi16(1)); }

// Products of unsigned bytes u with signed bytes s, summed in groups of four
// into int32 lanes. Callers keep 2 * u * |s| below 32768 so that maddubs'
// int16 pair sums never saturate (u <= 63 with |s| <= 127 here).
inline __m256i DotU8I8(__m256i u, __m256i s) { return SumPairs(_mm256_maddubs_epi16(u, s)); }

// Products of two signed byte vectors, summed in groups of four. maddubs
// needs an unsigned operand: |x| times y carrying x's sign. |x| <= 128 and
// |y| <= 127 keep each pair below the int16 limit.
inline __m256i DotI8I8(__m256i x, __m256i y) {
  return DotU8I8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i Load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// 16 bytes of packed nibbles -> 32 bytes: byte j < 16 is the low nibble of
// byte j, byte 16 + j its high nibble (the element order of the 32-blocks).
inline __m256i Nibbles32(const uint8_t* p) {
  const __m128i b = Load128(p);
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(b), _mm_srli_epi16(b, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// 32 bits -> 32 bytes, byte j = 0xFF when bit j is set, else 0.
inline __m256i BitsToBytes(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// Runs fn(std::integral_constant<int, NT>) for the runtime nt in
// 1..kMaxDotTokens, so each kernel is compiled once per token count with its
// accumulators in registers.
template <typename Fn>
inline void DispatchTokens(int nt, Fn&& fn) {
  static_assert(kMaxDotTokens == 4);
  switch (nt) {
    case 1:
      fn(std::integral_constant<int, 1>());
      break;
    case 2:
      fn(std::integral_constant<int, 2>());
      break;
    case 3:
      fn(std::integral_constant<int, 3>());
      break;
    default:
      fn(std::integral_constant<int, 4>());
      break;
  }
}

// Sixteen packed 6-bit Q3_K scales -> 16 signed bytes (scale - 32), for the
// block whose 12 scale bytes are bytes 0..11 of each 128-bit lane of `v`
// (bytes 12..15 ignored). Scale j has its low four bits in the low (j < 8)
// or high (j >= 8) nibble of byte j % 8, and its top two bits at bit
// 2 * (j / 4) of byte 8 + j % 4.
inline __m256i Q3KScalesLanes(__m256i v) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  // A 16-bit shift by 4 brings into each byte's low nibble its own high one.
  const __m256i low = _mm256_unpacklo_epi64(_mm256_and_si256(v, low4),
                                            _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
  // Byte 8 + j % 4 into byte j, then each group of four bytes shifted by
  // 0, 2, 4, 6: shifting a 32-bit lane by at most 6 keeps every byte's bits
  // 0-1 its own.
  const __m256i spread = _mm256_shuffle_epi8(
      v, _mm256_setr_epi8(8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8,
                          9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11));
  const __m256i high = _mm256_and_si256(
      _mm256_srlv_epi32(spread, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)), _mm256_set1_epi8(3));
  // high <= 3, so its 16-bit shift by 4 stays within each byte.
  return _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 4)), _mm256_set1_epi8(32));
}

// Q3KScalesLanes of the one block whose 12 scale bytes are at s; reads
// exactly those bytes.
inline __m128i Q3KScales(const uint8_t* s) {
  uint32_t top;
  std::memcpy(&top, s + 8, 4);
  const __m128i v = _mm_insert_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)),
                                     static_cast<int>(top), 2);
  return _mm256_castsi256_si128(Q3KScalesLanes(_mm256_castsi128_si256(v)));
}

}  // namespace fqpack::runtime::quant::avx2

#endif  // FQPACK_RUNTIME_QUANT_AVX2_UTIL_H_
