// AVX2 dots of the 32-element block types. Each weight block is decoded once
// into 32 int8 codes in one register and multiplied (maddubs) with the int8
// codes of every activation row of the call; the int32 block sums are scaled
// by d_w * d_a in fp32 and accumulated with FMA, as llama.cpp's kernels do.
//   Q4_0, Q5_0, Q8_0, IQ4_NL x Q8_0: signed codes.
//   Q4_1, Q5_1 x Q8_1: unsigned codes, plus m * s per block for the offset.
#include "runtime/quant/avx2_util.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/kernels.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::DispatchTokens;
using avx2::Half;
using avx2::HsumPs;
using avx2::Load256;

// Signed-code blocks against Q8_0. codes(block) gives the 32 int8 codes.
// Even and odd blocks use separate accumulators to hide the FMA latency.
template <int NT, typename Block, typename Codes>
void DotSigned(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out,
               Codes codes) {
  const auto* x = reinterpret_cast<const Block*>(w);
  const BlockQ8_0* y[NT];
  __m256 acc[2][NT];
  for (int t = 0; t < NT; ++t) {
    y[t] = reinterpret_cast<const BlockQ8_0*>(a + t * a_stride);
    acc[0][t] = acc[1][t] = _mm256_setzero_ps();
  }
  const auto step = [&](int64_t i, __m256* acc_i) {
    const __m256i q = codes(x[i]);
    const __m256i q_abs = _mm256_sign_epi8(q, q);
    const float dw = Half(x[i].d);
    for (int t = 0; t < NT; ++t) {
      const __m256i ys = _mm256_sign_epi8(Load256(y[t][i].qs), q);
      const __m256 p = _mm256_cvtepi32_ps(avx2::DotU8I8(q_abs, ys));
      acc_i[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * Half(y[t][i].d)), p, acc_i[t]);
    }
  };
  const int64_t nb = n / kQK32;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    step(i, acc[0]);
    step(i + 1, acc[1]);
  }
  if (i < nb) step(i, acc[0]);
  for (int t = 0; t < NT; ++t) out[t] = HsumPs(_mm256_add_ps(acc[0][t], acc[1][t]));
}

// Unsigned-code blocks with offset m against Q8_1.
template <int NT, typename Block, typename Codes>
void DotOffset(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out,
               Codes codes) {
  const auto* x = reinterpret_cast<const Block*>(w);
  const BlockQ8_1* y[NT];
  __m256 acc[2][NT];
  float offset_sum[NT];
  for (int t = 0; t < NT; ++t) {
    y[t] = reinterpret_cast<const BlockQ8_1*>(a + t * a_stride);
    acc[0][t] = acc[1][t] = _mm256_setzero_ps();
    offset_sum[t] = 0;
  }
  const auto step = [&](int64_t i, __m256* acc_i) {
    const __m256i q = codes(x[i]);
    const float dw = Half(x[i].d);
    const float m = Half(x[i].m);
    for (int t = 0; t < NT; ++t) {
      const __m256 p = _mm256_cvtepi32_ps(avx2::DotU8I8(q, Load256(y[t][i].qs)));
      acc_i[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * Half(y[t][i].d)), p, acc_i[t]);
      offset_sum[t] += m * Half(y[t][i].s);
    }
  };
  const int64_t nb = n / kQK32;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    step(i, acc[0]);
    step(i + 1, acc[1]);
  }
  if (i < nb) step(i, acc[0]);
  for (int t = 0; t < NT; ++t) {
    out[t] = HsumPs(_mm256_add_ps(acc[0][t], acc[1][t])) + offset_sum[t];
  }
}

}  // namespace

void DotQ4_0Q8_0Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotSigned<decltype(k)::value, BlockQ4_0>(n, w, a, a_stride, out, [](const BlockQ4_0& b) {
      return _mm256_sub_epi8(avx2::Nibbles32(b.qs), _mm256_set1_epi8(8));
    });
  });
}

void DotQ5_0Q8_0Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotSigned<decltype(k)::value, BlockQ5_0>(n, w, a, a_stride, out, [](const BlockQ5_0& b) {
      // q - 16 = nibble when bit 4 is set, else nibble - 16 = nibble | 0xF0.
      const __m256i no_high = _mm256_andnot_si256(avx2::BitsToBytes(b.qh), _mm256_set1_epi8(-16));
      return _mm256_or_si256(avx2::Nibbles32(b.qs), no_high);
    });
  });
}

void DotQ8_0Q8_0Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotSigned<decltype(k)::value, BlockQ8_0>(n, w, a, a_stride, out,
                                             [](const BlockQ8_0& b) { return Load256(b.qs); });
  });
}

void DotIQ4_NLQ8_0Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  const __m256i grid = _mm256_broadcastsi128_si256(avx2::Load128(kIq4nlValues));
  DispatchTokens(nt, [&](auto k) {
    DotSigned<decltype(k)::value, BlockIQ4_NL>(
        n, w, a, a_stride, out,
        [grid](const BlockIQ4_NL& b) { return _mm256_shuffle_epi8(grid, avx2::Nibbles32(b.qs)); });
  });
}

void DotQ4_1Q8_1Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotOffset<decltype(k)::value, BlockQ4_1>(
        n, w, a, a_stride, out, [](const BlockQ4_1& b) { return avx2::Nibbles32(b.qs); });
  });
}

void DotQ5_1Q8_1Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotOffset<decltype(k)::value, BlockQ5_1>(n, w, a, a_stride, out, [](const BlockQ5_1& b) {
      const __m256i high = _mm256_and_si256(avx2::BitsToBytes(b.qh), _mm256_set1_epi8(0x10));
      return _mm256_or_si256(avx2::Nibbles32(b.qs), high);
    });
  });
}

}  // namespace fqpack::runtime::quant
