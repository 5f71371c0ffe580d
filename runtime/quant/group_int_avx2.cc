// AVX2 dots of the group-int types against int8-act activations, and the
// AVX2 int8-act quantizer (the same bytes as the scalar one).
//
// Each 32-element chunk of codes is decoded once into 32 bytes in element
// order (the bit planes of schema/quant_types.md make that a handful of
// shifts and masks), multiplied with every activation row's int8 codes by
// maddubs, and the int32 sums scaled by d * da in fp32. The offset adds
// m * sum_c s_c per group. 8-bit codes do not fit maddubs' unsigned operand
// with int16 headroom, so they run as q - 128 (signed, |q - 128| <= 128)
// with the offset m + 128 d.
#include <algorithm>
#include <bit>
#include <cstring>

#include "runtime/quant/avx2_util.h"
#include "runtime/quant/group_int.h"
#include "runtime/quant/kernels.h"
#include "schema/coding.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::Abs;
using avx2::DispatchTokens;
using avx2::Half;
using avx2::HmaxPs;
using avx2::HsumEpi32;
using avx2::HsumPs;
using avx2::Load256;

// 8 bytes of 2-bit codes -> 32 bytes: byte 8k + j is bits 2k..2k+1 of byte j.
inline __m256i Crumbs32(const uint8_t* p) {
  uint64_t bits;
  std::memcpy(&bits, p, 8);
  const __m256i v = _mm256_srlv_epi64(_mm256_set1_epi64x(static_cast<int64_t>(bits)),
                                      _mm256_set_epi64x(6, 4, 2, 0));
  return _mm256_and_si256(v, _mm256_set1_epi8(3));
}

// The 32 codes of one whole chunk, one per byte in element order.
template <int kBits>
inline __m256i DecodeChunk(const uint8_t* p) {
  if constexpr (kBits == 2) {
    return Crumbs32(p);
  } else if constexpr (kBits == 3) {
    return _mm256_or_si256(Crumbs32(p),
                           _mm256_and_si256(avx2::BitsToBytes(p + 8), _mm256_set1_epi8(4)));
  } else if constexpr (kBits == 4) {
    return avx2::Nibbles32(p);
  } else if constexpr (kBits == 5) {
    return _mm256_or_si256(avx2::Nibbles32(p),
                           _mm256_and_si256(avx2::BitsToBytes(p + 16), _mm256_set1_epi8(16)));
  } else if constexpr (kBits == 6) {
    // Crumbs are <= 3, so shifting 16-bit lanes by 4 never carries across bytes.
    return _mm256_or_si256(avx2::Nibbles32(p), _mm256_slli_epi16(Crumbs32(p + 16), 4));
  } else {
    static_assert(kBits == 8);
    return Load256(p);
  }
}

// The last chunk of a row when it has r < 32 elements: its bit stream,
// zero-padded (the activation block is zero there too).
template <int kBits>
inline __m256i DecodePartialChunk(const uint8_t* p, int r) {
  alignas(32) uint8_t q[kGroupChunk] = {};
  UnpackBitStream(kBits, p, r, q);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(q));
}

template <int kBits, int kGroup, int NT>
void DotRow(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  constexpr size_t kChunkBytes = size_t{4} * kBits;
  const uint8_t* act[NT];
  __m256 acc[2][NT];
  float offset[NT];
  for (int t = 0; t < NT; ++t) {
    act[t] = a + t * a_stride;
    acc[0][t] = acc[1][t] = _mm256_setzero_ps();
    offset[t] = 0;
  }
  // One group of len elements; `act` advances past its chunks.
  const auto group = [&](int len) {
    const float d = Half(DecodeU16(w));
    float m = Half(DecodeU16(w + 2));
    if constexpr (kBits == 8) m += 128.0f * d;
    const uint8_t* codes = w + kGroupHeaderBytes;
    const int whole = len / kGroupChunk;
    const int chunks = (len + kGroupChunk - 1) / kGroupChunk;
    float s_sum[NT] = {};
    for (int c = 0; c < chunks; ++c) {
      __m256i q = c < whole ? DecodeChunk<kBits>(codes + c * kChunkBytes)
                            : DecodePartialChunk<kBits>(codes + c * kChunkBytes, len % kGroupChunk);
      __m256i q_abs = q;
      if constexpr (kBits == 8) {
        q = _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80)));
        q_abs = _mm256_sign_epi8(q, q);
      }
      for (int t = 0; t < NT; ++t) {
        const uint8_t* blk = act[t] + c * kGroupActBlockBytes;
        float da, s;
        std::memcpy(&da, blk, 4);
        std::memcpy(&s, blk + 4, 4);
        __m256i qa = Load256(blk + 8);
        if constexpr (kBits == 8) qa = _mm256_sign_epi8(qa, q);
        const __m256 p = _mm256_cvtepi32_ps(avx2::DotU8I8(q_abs, qa));
        acc[c & 1][t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da), p, acc[c & 1][t]);
        s_sum[t] += s;
      }
    }
    for (int t = 0; t < NT; ++t) {
      offset[t] += m * s_sum[t];
      act[t] += chunks * kGroupActBlockBytes;
    }
    w += GroupBytes(kBits, len);
  };
  const int64_t full = n / kGroup;
  for (int64_t g = 0; g < full; ++g) group(kGroup);
  if (n % kGroup != 0) group(static_cast<int>(n % kGroup));
  for (int t = 0; t < NT; ++t) out[t] = HsumPs(_mm256_add_ps(acc[0][t], acc[1][t])) + offset[t];
}

}  // namespace

template <int kBits, int kGroup>
void DotGroupIntAvx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out) {
  DispatchTokens(nt, [&](auto tokens) {
    DotRow<kBits, kGroup, decltype(tokens)::value>(n, w, a, a_stride, out);
  });
}

void QuantizeRowGroupIntActAvx2(const float* src, uint8_t* dst, int64_t n) {
  const int64_t whole = n / kGroupChunk;
  for (int64_t b = 0; b < whole; ++b, src += kGroupChunk, dst += kGroupActBlockBytes) {
    __m256 amax = Abs(_mm256_loadu_ps(src));
    for (int k = 8; k < kGroupChunk; k += 8)
      amax = _mm256_max_ps(amax, Abs(_mm256_loadu_ps(src + k)));
    const float max = HmaxPs(amax);
    const float d = max / 127.f;
    const __m256 id = _mm256_set1_ps(max != 0.0f ? 127.f / max : 0.0f);
    __m256i i[4];
    for (size_t k = 0; k < 4; ++k)
      i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + 8 * k), id));
    const int sum =
        HsumEpi32(_mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3])));
    // The packs work per 128-bit lane; the permute restores element order.
    const __m256i p =
        _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    const __m256i ordered =
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), ordered);
    EncodeU32(dst, std::bit_cast<uint32_t>(d));
    EncodeU32(dst + 4, std::bit_cast<uint32_t>(d * static_cast<float>(sum)));
  }
  if (n % kGroupChunk != 0) QuantizeRowGroupIntAct(src, dst, n % kGroupChunk);
}

#define FQ_GROUP_INT_INSTANTIATE(B, G) \
  template void DotGroupIntAvx2<B, G>(int64_t, const uint8_t*, const uint8_t*, size_t, int, float*);
FQ_GROUP_INT_FOR_EACH(FQ_GROUP_INT_INSTANTIATE)
#undef FQ_GROUP_INT_INSTANTIATE

}  // namespace fqpack::runtime::quant
