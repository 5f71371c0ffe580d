// SHA-256 compression with the x86 SHA extensions (SHA-NI), for CPUs that
// have them; the portable code in sha256.cc is the reference it is tested
// against. Compiled with -msha -msse4.1 (see CMakeLists.txt); entered only
// after a CPUID check.

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace fqpack::internal {

extern const uint32_t kSha256K[64];

void Sha256BlocksShaNi(uint32_t h[8], const uint8_t* p, size_t nblocks) {
  // The instructions want the state as (A,B,E,F) and (C,D,G,H).
  __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&h[0]));     // D C B A
  __m128i state1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&h[4]));  // H G F E
  tmp = _mm_shuffle_epi32(tmp, 0xB1);                                         // C D A B
  state1 = _mm_shuffle_epi32(state1, 0x1B);                                   // E F G H
  __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);                           // A B E F
  state1 = _mm_blend_epi16(state1, tmp, 0xF0);                                // C D G H
  // Message words are big-endian.
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);

  for (size_t b = 0; b < nblocks; ++b, p += 64) {
    const __m128i abef = state0, cdgh = state1;
    __m128i m[4];
    // Sixteen groups of four rounds. Group g consumes schedule words
    // W[4g..4g+3] held in m[g % 4]; msg1/msg2 build the words three and one
    // groups ahead.
#pragma GCC unroll 16
    for (int g = 0; g < 16; ++g) {
      __m128i& cur = m[g & 3];
      if (g < 4) {
        cur = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * g)), bswap);
      }
      __m128i msg = _mm_add_epi32(cur, _mm_loadu_si128(reinterpret_cast<const __m128i*>(&kSha256K[4 * g])));
      state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
      if (g >= 3 && g <= 14) {
        __m128i& next = m[(g + 1) & 3];
        next = _mm_add_epi32(next, _mm_alignr_epi8(cur, m[(g + 3) & 3], 4));
        next = _mm_sha256msg2_epu32(next, cur);
      }
      msg = _mm_shuffle_epi32(msg, 0x0E);
      state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
      if (g >= 1 && g <= 12) {
        __m128i& prev = m[(g + 3) & 3];
        prev = _mm_sha256msg1_epu32(prev, cur);
      }
    }
    state0 = _mm_add_epi32(state0, abef);
    state1 = _mm_add_epi32(state1, cdgh);
  }

  tmp = _mm_shuffle_epi32(state0, 0x1B);        // F E B A
  state1 = _mm_shuffle_epi32(state1, 0xB1);     // D C H G
  state0 = _mm_blend_epi16(tmp, state1, 0xF0);  // D C B A
  state1 = _mm_alignr_epi8(state1, tmp, 8);     // H G F E
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&h[0]), state0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&h[4]), state1);
}

}  // namespace fqpack::internal
