// The decode kernels of decode.h for Q4_K and Q5_K against Q8_K activations.
//
// A super-block's 128 code bytes are read as two zmm, z0 = qs[0..64) and
// z1 = qs[64..128); the low and the high nibbles of each are one vector of
// 64 codes, two 32-element sub-blocks apiece:
//   z0 low: sub-blocks 0 and 2   z0 high: 1 and 3
//   z1 low: 4 and 6              z1 high: 5 and 7
// (byte l of chunk c = qs[32c + l] holds element 64c + l in its low nibble
// and 64c + 32 + l in its high one). The packed activation stores its codes
// in that order, so unpacking is a mask and a shift per 128 codes, with no
// broadcast. vpdpbusd gives int32 lanes of four products, eight lanes per
// sub-block; vpackssdw packs two such vectors to int16 words (|sum| <= 4 *
// 31 * 128 < 2^15, exact), four words per sub-block per 128-bit lane, and
// one vpdpwssd multiplies them by the sub-blocks' 6-bit scales (placed per
// word by vpshufb) and sums. The integer total of each sub-block's scaled
// sum is exact, as in the per-row dots; the mins use the activation's
// 32-element sums.
//
// Blocks go in pairs, so the scale unpack (K4ScalesMins, one block per
// 128-bit lane), the fp16 d/dmin conversion and the fp32 scaling are done
// once per two blocks; a row with an odd number of blocks ends in a pair
// whose second block is absent (its registers zero, its activation zero).
//
// Packed activation: one kPairBytes record per pair of super-blocks:
//   offset  bytes  contents
//   0       256    block 0's codes, in the order of the vectors above
//   256     256    block 1's codes
//   512     32     int16 sums of the eight 32-element sub-blocks, block 0
//                  then block 1
//   544     16     fp32 d_a of block 0 twice, then of block 1 twice
//   560     16     zero
// A missing second block is all zero.
//
// Result: per row, sum over blocks of d*d_a*S - dmin*d_a*M, S and M the
// exact integer scaled and min sums; only the order of the fp32 additions
// differs from the per-row dots.
#include <cstring>

#include "runtime/quant/avx512_util.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/decode.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::Load128;
using avx512::Broadcast256;
using avx512::Dot4;
using avx512::K4ScalesMins;

constexpr size_t kCodesBytes = kQKK;
constexpr size_t kSumsOffset = 2 * kCodesBytes;
constexpr size_t kScaleOffset = kSumsOffset + 32;
constexpr size_t kPairBytes = kScaleOffset + 32;
static_assert(kPairBytes % 64 == 0);

// Code vector k of a block holds sub-blocks First(k) and First(k) + 2.
constexpr int First(int k) { return 4 * (k / 2) + k % 2; }

size_t PackedBytes(int64_t cols) { return static_cast<size_t>((cols / kQKK + 1) / 2) * kPairBytes; }

void PackAct(int64_t cols, const uint8_t* act, uint8_t* out) {
  const auto* a = reinterpret_cast<const BlockQ8_K*>(act);
  const int64_t nb = cols / kQKK;
  std::memset(out, 0, PackedBytes(cols));
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* pair = out + static_cast<size_t>(b / 2) * kPairBytes;
    const int h = static_cast<int>(b % 2);
    uint8_t* codes = pair + kCodesBytes * h;
    for (int k = 0; k < 4; ++k) {
      std::memcpy(codes + ptrdiff_t{64} * k, a[b].qs + ptrdiff_t{32} * First(k), 32);
      std::memcpy(codes + ptrdiff_t{64} * k + 32, a[b].qs + ptrdiff_t{32} * (First(k) + 2), 32);
    }
    for (int s = 0; s < 8; ++s) {
      // Two 16-element sums of at most 16 * 128 each: an exact int16.
      const auto sum = static_cast<int16_t>(a[b].bsums[2 * s] + a[b].bsums[2 * s + 1]);
      std::memcpy(pair + kSumsOffset + ptrdiff_t{16} * h + ptrdiff_t{2} * s, &sum, 2);
    }
    for (int i = 0; i < 2; ++i) {
      std::memcpy(pair + kScaleOffset + ptrdiff_t{8} * h + ptrdiff_t{4} * i, &a[b].d, 4);
    }
  }
}

// Register constants of the row loop.
struct Consts {
  // vpshufb controls: the int16 scale of each word of the packed sums of
  // code vectors (0, 1) and (2, 3), from a lane holding K4ScalesMins' bytes.
  __m512i scales01;
  __m512i scales23;
  // The eight mins as int16, per 128-bit lane.
  __m256i mins;
  // Q5_K: the qh bit of each code vector's bytes, per 32-byte half.
  __m512i high_bit[4];
  // vpermps controls spreading [d0, dmin0, d1, dmin1].
  __m512i d_lanes;
  __m256i dmin_lanes;

  Consts() {
    alignas(64) uint8_t s01[64], s23[64], m[32];
    for (int w = 0; w < 32; ++w) {
      // Word w of vpackssdw(p_a, p_b): 128-bit lane w / 8, from p_a for
      // w % 8 < 4; lanes 0-1 of a code vector hold its first sub-block.
      const int sub = (w / 8 < 2 ? 0 : 2) + (w % 8 < 4 ? 0 : 1);
      s01[2 * w] = static_cast<uint8_t>(sub);
      s23[2 * w] = static_cast<uint8_t>(sub + 4);
      s01[2 * w + 1] = s23[2 * w + 1] = 0x80;  // high byte zero
    }
    for (int w = 0; w < 16; ++w) {
      m[2 * w] = static_cast<uint8_t>(8 + w % 8);
      m[2 * w + 1] = 0x80;
    }
    scales01 = _mm512_load_si512(s01);
    scales23 = _mm512_load_si512(s23);
    mins = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
    for (int k = 0; k < 4; ++k) {
      // Bit 4 of element 64c + 32j + l is bit 2c + j of qh[l].
      high_bit[k] = _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << First(k))),
                                       _mm256_set1_epi8(static_cast<char>(1 << (First(k) + 2))), 1);
    }
    d_lanes = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(2), 1);
    dmin_lanes = _mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3);
  }
};

// One block's integer sum of scale * (codes . activation) in 16 int32
// lanes; `sm` holds its K4ScalesMins bytes in every 128-bit lane.
template <typename Block, bool kFiveBits>
inline __m512i BlockSum(const Consts& c, const Block& x, const uint8_t* act, __m512i sm) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i z0 = _mm512_loadu_si512(x.qs);
  const __m512i z1 = _mm512_loadu_si512(x.qs + 64);
  __m512i q[4] = {_mm512_and_si512(z0, low4), _mm512_and_si512(_mm512_srli_epi16(z0, 4), low4),
                  _mm512_and_si512(z1, low4), _mm512_and_si512(_mm512_srli_epi16(z1, 4), low4)};
  if constexpr (kFiveBits) {
    const __m512i qh = Broadcast256(x.qh);
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm512_mask_add_epi8(q[k], _mm512_test_epi8_mask(qh, c.high_bit[k]), q[k],
                                  _mm512_set1_epi8(16));
    }
  }
  __m512i p[4];
  for (int k = 0; k < 4; ++k) p[k] = Dot4(q[k], _mm512_load_si512(act + ptrdiff_t{64} * k));
  const __m512i s = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_packs_epi32(p[0], p[1]),
                                        _mm512_shuffle_epi8(sm, c.scales01));
  return _mm512_dpwssd_epi32(s, _mm512_packs_epi32(p[2], p[3]),
                             _mm512_shuffle_epi8(sm, c.scales23));
}

// Adds blocks x[0] and (kTwo) x[1] against the activation pair record
// `act` to acc (scaled sums) and acc_min (min sums).
template <typename Block, bool kFiveBits, bool kTwo>
inline void Pair(const Consts& c, const Block* x, const uint8_t* act, __m512* acc,
                 __m256* acc_min) {
  __m256i raw = _mm256_castsi128_si256(Load128(x[0].scales));
  if constexpr (kTwo) raw = _mm256_inserti128_si256(raw, Load128(x[1].scales), 1);
  const __m512i sm = _mm512_castsi256_si512(K4ScalesMins(raw));
  const __m512i s0 = BlockSum<Block, kFiveBits>(c, x[0], act, _mm512_shuffle_i64x2(sm, sm, 0x00));
  __m512i s1 = _mm512_setzero_si512();
  if constexpr (kTwo) {
    s1 = BlockSum<Block, kFiveBits>(c, x[1], act + kCodesBytes, _mm512_shuffle_i64x2(sm, sm, 0x55));
  }
  // Mins times the 32-element sums, four int32 lanes per block; without a
  // second block its lanes multiply zero sums.
  const __m256i min_sums =
      _mm256_madd_epi16(_mm256_shuffle_epi8(_mm512_castsi512_si256(sm), c.mins),
                        _mm256_load_si256(reinterpret_cast<const __m256i*>(act + kSumsOffset)));
  uint32_t d0, d1 = 0;
  std::memcpy(&d0, &x[0].d, 4);
  if constexpr (kTwo) std::memcpy(&d1, &x[1].d, 4);
  // [d0, dmin0, d1, dmin1] * d_a.
  const __m128 d = _mm_mul_ps(_mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128(static_cast<int>(d0)),
                                                            static_cast<int>(d1), 1)),
                              _mm_load_ps(reinterpret_cast<const float*>(act + kScaleOffset)));
  // Each block's 16 lanes folded to 8: block 0 in lanes 0..7, block 1 in 8..15.
  const __m512i folded =
      _mm512_add_epi32(_mm512_shuffle_i64x2(s0, s1, 0x44), _mm512_shuffle_i64x2(s0, s1, 0xEE));
  *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(folded),
                         _mm512_permutexvar_ps(c.d_lanes, _mm512_castps128_ps512(d)), *acc);
  *acc_min =
      _mm256_fmadd_ps(_mm256_cvtepi32_ps(min_sums),
                      _mm256_permutexvar_ps(c.dmin_lanes, _mm256_castps128_ps256(d)), *acc_min);
}

template <typename Block, bool kFiveBits>
void Rows(int64_t cols, const uint8_t* w, size_t row_bytes, int64_t nrows, const uint8_t* packed,
          float* y) {
  const Consts c;
  const int64_t nb = cols / kQKK;
  for (int64_t r = 0; r < nrows; ++r) {
    const auto* x = reinterpret_cast<const Block*>(w + static_cast<size_t>(r) * row_bytes);
    const uint8_t* act = packed;
    __m512 acc = _mm512_setzero_ps();
    __m256 acc_min = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2, act += kPairBytes) {
      Pair<Block, kFiveBits, true>(c, x + b, act, &acc, &acc_min);
    }
    if (b < nb) Pair<Block, kFiveBits, false>(c, x + b, act, &acc, &acc_min);
    y[r] = _mm512_reduce_add_ps(acc) - avx2::HsumPs(acc_min);
  }
}

}  // namespace

const DecodeOps kDecodeQ4_K = {PackedBytes, PackAct, Rows<BlockQ4_K, false>};
const DecodeOps kDecodeQ5_K = {PackedBytes, PackAct, Rows<BlockQ5_K, true>};

}  // namespace fqpack::runtime::quant
