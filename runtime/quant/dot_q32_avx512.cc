// AVX-512 + VNNI dots of the 32-element block types with signed codes
// against Q8_0 activations: Q4_0, Q8_0, IQ4_NL. Two weight blocks are
// decoded into one zmm of 64 int8 codes; vpdpbusd takes |code| as the
// unsigned operand and the activation with the code's sign (one masked
// negate per activation row), so each int32 lane is an exact sum of four
// products. The eight lanes of a block are scaled by d_w * d_a in fp32 and
// accumulated with FMA, as the AVX2 kernels do.
#include <cstring>

#include "runtime/quant/avx512_util.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/kernels.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::Load128;
using avx2::Load256;
using avx512::DispatchTokens;
using avx512::Half;

// The 32 bytes at p and q as the two halves of a zmm.
inline __m512i Join256(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}

// The packed nibbles of two 32-blocks -> 64 bytes: each block's 16 low
// nibbles then its 16 high nibbles (the 32-blocks' element order).
inline __m512i Nibbles64(const uint8_t* p0, const uint8_t* p1) {
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(Load128(p0)), Load128(p1), 1);
  const __m512i lanes = _mm512_shuffle_i64x2(_mm512_zextsi256_si512(both),
                                             _mm512_zextsi256_si512(both), _MM_SHUFFLE(1, 1, 0, 0));
  const __m512i shifts = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
  return _mm512_and_si512(_mm512_srlv_epi64(lanes, shifts), _mm512_set1_epi8(0x0F));
}

// The fp16 field at byte 0 of 16 consecutive blocks of `stride` bytes, as
// floats: sixteen 16-bit loads and one vector conversion (faster here than
// sixteen scalar conversions, and than a gather: 42.9 against 28.1 GB/s for
// Q8_0 in decode_bench's DotInCache).
inline __m512 LoadHalves(const uint8_t* base, int stride) {
  alignas(32) uint16_t h[16];
  for (int k = 0; k < 16; ++k) std::memcpy(&h[k], base + static_cast<ptrdiff_t>(k) * stride, 2);
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(h)));
}

// Signed-code blocks against Q8_0. codes(b0, b1) gives the 64 int8 codes of
// two blocks. Rows run in tiles of 16 blocks whose 16 products d_w * d_a
// are computed in one vector; the blocks past the last whole tile take
// their scales one pair at a time, and a row with an odd number of blocks
// passes its last block twice and masks the second half off.
template <int NT, typename Block, typename Codes>
void DotSigned(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out,
               Codes codes) {
  const auto* x = reinterpret_cast<const Block*>(w);
  const BlockQ8_0* y[NT];
  // Four accumulators per row, taken in turn by the pairs of a tile, so
  // consecutive FMAs do not wait for each other.
  constexpr int kAccs = 4;
  __m512 accs[kAccs][NT];
  for (int t = 0; t < NT; ++t) {
    y[t] = reinterpret_cast<const BlockQ8_0*>(a + t * a_stride);
    for (int k = 0; k < kAccs; ++k) accs[k][t] = _mm512_setzero_ps();
  }
  // Blocks i and j (j == i + 1, or j == i with the high half masked off)
  // with the scales scale[t].
  const auto pair = [&](int64_t i, int64_t j, bool two, const __m512* scale, __m512* acc) {
    __m512i q = codes(x[i], x[j]);
    if (!two) q = _mm512_maskz_mov_epi8(0xFFFFFFFFull, q);
    const __m512i q_abs = _mm512_abs_epi8(q);
    const __mmask64 neg = _mm512_movepi8_mask(q);
    for (int t = 0; t < NT; ++t) {
      const __m512i ya = Join256(Load256(y[t][i].qs), Load256(y[t][j].qs));
      const __m512i ys = _mm512_mask_sub_epi8(ya, neg, _mm512_setzero_si512(), ya);
      const __m512 p = _mm512_cvtepi32_ps(avx512::Dot4(q_abs, ys));
      acc[t] = _mm512_fmadd_ps(scale[t], p, acc[t]);
    }
  };
  const int64_t nb = n / kQK32;
  int64_t i = 0;
  for (; i + 16 <= nb; i += 16) {
    const __m512 dw = LoadHalves(reinterpret_cast<const uint8_t*>(&x[i]), sizeof(Block));
    __m512 s16[NT];
    for (int t = 0; t < NT; ++t)
      s16[t] = _mm512_mul_ps(
          dw, LoadHalves(reinterpret_cast<const uint8_t*>(&y[t][i]), sizeof(BlockQ8_0)));
    for (int k = 0; k < 8; ++k) {
      __m512 scale[NT];
      const __m512i idx = _mm512_load_si512(avx512::kPairScale[k]);
      for (int t = 0; t < NT; ++t) scale[t] = _mm512_permutexvar_ps(idx, s16[t]);
      pair(i + int64_t{2} * k, i + int64_t{2} * k + 1, true, scale, accs[k % kAccs]);
    }
  }
  for (; i < nb; i += 2) {
    const bool two = i + 1 < nb;
    const int64_t j = two ? i + 1 : i;
    const float dw0 = Half(x[i].d), dw1 = two ? Half(x[j].d) : 0.0f;
    __m512 scale[NT];
    for (int t = 0; t < NT; ++t) {
      scale[t] = _mm512_insertf32x8(_mm512_zextps256_ps512(_mm256_set1_ps(dw0 * Half(y[t][i].d))),
                                    _mm256_set1_ps(dw1 * Half(y[t][j].d)), 1);
    }
    pair(i, j, two, scale, accs[0]);
  }
  for (int t = 0; t < NT; ++t) {
    out[t] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(accs[0][t], accs[1][t]),
                                                _mm512_add_ps(accs[2][t], accs[3][t])));
  }
}

}  // namespace

void DotQ4_0Q8_0Avx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotSigned<decltype(k)::value, BlockQ4_0>(
        n, w, a, a_stride, out, [](const BlockQ4_0& b0, const BlockQ4_0& b1) {
          return _mm512_sub_epi8(Nibbles64(b0.qs, b1.qs), _mm512_set1_epi8(8));
        });
  });
}

void DotQ8_0Q8_0Avx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotSigned<decltype(k)::value, BlockQ8_0>(n, w, a, a_stride, out,
                                             [](const BlockQ8_0& b0, const BlockQ8_0& b1) {
                                               return Join256(Load256(b0.qs), Load256(b1.qs));
                                             });
  });
}

void DotIQ4_NLQ8_0Avx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                         float* out) {
  const __m512i grid = _mm512_broadcast_i32x4(Load128(kIq4nlValues));
  DispatchTokens(nt, [&](auto k) {
    DotSigned<decltype(k)::value, BlockIQ4_NL>(
        n, w, a, a_stride, out, [grid](const BlockIQ4_NL& b0, const BlockIQ4_NL& b1) {
          return _mm512_shuffle_epi8(grid, Nibbles64(b0.qs, b1.qs));
        });
  });
}

}  // namespace fqpack::runtime::quant
