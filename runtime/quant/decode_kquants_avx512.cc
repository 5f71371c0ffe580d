// The decode kernels of decode.h for the k-quants (Q2_K, Q3_K, Q4_K, Q5_K,
// Q6_K) against Q8_K activations.
//
// A super-block's codes are read 64 bytes at a time and unpacked into four
// vectors of 64 codes ("code vectors") by masks and shifts alone; which
// elements each vector holds follows from the type's bit layout, and the
// packed activation stores its codes in that order, so no code is moved:
//   type        code vector k holds elements
//   Q4_K, Q5_K  [32 F(k), +32) and [32 F(k) + 64, +32), F(k) = 4(k/2) + k%2
//               (the low nibbles of qs[64j..] for even k, high for odd)
//   Q2_K, Q3_K  [32 k, +32) and [128 + 32 k, +32) (bits 2k..2k+1 of qs)
//   Q6_K        [64 k, +64) (nibbles of ql[64(k/2)..] under bits of qh)
// vpdpbusd gives int32 lanes of four products. Two such vectors are packed
// to int16 words by vpackssdw (every sum is below 2^15 in magnitude: at
// most 4 * 63 * 128 = 32256, for Q6_K), four words of one
// sub-block per vector and 128-bit lane, and one vpdpwssd multiplies them by
// the sub-blocks' integer scales, placed per word (vpshufb or vpermw), and
// sums. So the integer total of each sub-block's scaled sum is exact, as in
// the per-row dots; offsets and mins use the activation's 16-element sums.
//
// Blocks go in pairs, so the scale unpack, the fp16 conversion of d (and
// dmin) and the fp32 scaling are done once per two blocks; a row with an odd
// number of blocks ends in a pair whose second block is absent (its
// registers zero, its packed activation zero).
//
// Packed activation: one kPairBytes record per pair of super-blocks:
//   offset  bytes  contents
//   0       256    block 0's codes, code vector k at 64 k
//   256     256    block 1's codes
//   512     64     int16 sums of the 16 sub-blocks of 16 (Q8_K's bsums),
//                  block 0 then block 1
//   576     16     fp32 d_a of block 0 twice, then of block 1 twice
//   592     48     zero
// A missing second block is all zero.
//
// Result: per row, the sum over blocks of d*d_a*S - dmin*d_a*M, S and M the
// exact integer scaled and min sums; only the order of the fp32 additions
// differs from the per-row dots.
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "runtime/quant/avx512_util.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/decode.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::Load128;
using avx2::Q3KScalesLanes;
using avx512::Broadcast256;
using avx512::Dot4;
using avx512::K4ScalesMins;
using avx512::LoadWords;
using avx512::Words;

constexpr size_t kCodesBytes = kQKK;
constexpr size_t kSumsOffset = 2 * kCodesBytes;
constexpr size_t kScaleOffset = kSumsOffset + 64;
constexpr size_t kPairBytes = kScaleOffset + 64;
static_assert(kPairBytes % 64 == 0);

// The first element of 32-element half `half` of code vector k.
constexpr int K4Start(int k, int half) { return 32 * (4 * (k / 2) + k % 2) + 64 * half; }
constexpr int Q2Start(int k, int half) { return 32 * k + 128 * half; }
constexpr int Q6Start(int k, int half) { return 64 * k + 32 * half; }

// The sub-block (of kSubLen elements) that 128-bit lane g of code vector k
// falls in: a lane holds 16 consecutive elements of one half.
template <int (*kStart)(int, int), int kSubLen>
constexpr int SubOfLane(int k, int g) {
  return (kStart(k, g / 2) + 16 * (g % 2)) / kSubLen;
}

size_t PackedBytes(int64_t cols) { return static_cast<size_t>((cols / kQKK + 1) / 2) * kPairBytes; }

template <int (*kStart)(int, int)>
void PackAct(int64_t cols, const uint8_t* act, uint8_t* out) {
  const auto* a = reinterpret_cast<const BlockQ8_K*>(act);
  const int64_t nb = cols / kQKK;
  std::memset(out, 0, PackedBytes(cols));
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* pair = out + static_cast<size_t>(b / 2) * kPairBytes;
    const int h = static_cast<int>(b % 2);
    uint8_t* codes = pair + kCodesBytes * h;
    for (int k = 0; k < 4; ++k) {
      for (int half = 0; half < 2; ++half) {
        std::memcpy(codes + ptrdiff_t{64} * k + ptrdiff_t{32} * half, a[b].qs + kStart(k, half),
                    32);
      }
    }
    std::memcpy(pair + kSumsOffset + ptrdiff_t{32} * h, a[b].bsums, 32);
    for (int i = 0; i < 2; ++i) {
      std::memcpy(pair + kScaleOffset + ptrdiff_t{8} * h + ptrdiff_t{4} * i, &a[b].d, 4);
    }
  }
}

// Word w of vpackssdw(p_a, p_b) comes from 128-bit lane w / 8 of p_a (w % 8
// < 4) or of p_b: the vector and lane whose sub-block scales it.
constexpr int PackedVector(int w, int a) { return a + (w % 8 < 4 ? 0 : 1); }
constexpr int PackedLane(int w) { return w / 8; }

// The int16 scales placed for vpackssdw(p_a, p_b) of block `block` of a
// pair, as a vpermw control over 32 words: block 0's 16 sub-block scales,
// then block 1's. sub(k, g) names the sub-block of lane g of code vector k.
template <typename Sub>
constexpr Words PlaceScales(int a, int block, Sub sub) {
  Words t{};
  for (int w = 0; w < 32; ++w) {
    t.w[w] = static_cast<int16_t>(16 * block + sub(PackedVector(w, a), PackedLane(w)));
  }
  return t;
}

// Each block's 16 lanes summed to 8: block 0 in lanes 0..7, block 1 in 8..15.
inline __m512i Fold(__m512i s0, __m512i s1) {
  return _mm512_add_epi32(_mm512_shuffle_i64x2(s0, s1, 0x44), _mm512_shuffle_i64x2(s0, s1, 0xEE));
}

// Adds `value` to the codes q[k] whose byte of `bits` has a bit of
// which_bit[k] set (Q3_K's and Q5_K's high bits).
inline void AddHighBits(__m512i bits, const __m512i which_bit[4], char value, __m512i q[4]) {
  for (int k = 0; k < 4; ++k) {
    q[k] = _mm512_mask_add_epi8(q[k], _mm512_test_epi8_mask(bits, which_bit[k]), q[k],
                                _mm512_set1_epi8(value));
  }
}

// A block's four code vectors q against its activation codes (act), each
// vpdpbusd lane scaled by its sub-block's scale and summed: 16 int32 lanes.
// s01 and s23 hold the scales of vectors 0-1 and 2-3, placed per word of
// their vpackssdw.
inline __m512i ScaledDot(const __m512i q[4], const uint8_t* act, __m512i s01, __m512i s23) {
  __m512i p[4];
  for (int k = 0; k < 4; ++k) p[k] = Dot4(q[k], _mm512_load_si512(act + ptrdiff_t{64} * k));
  const __m512i s =
      _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_packs_epi32(p[0], p[1]), s01);
  return _mm512_dpwssd_epi32(s, _mm512_packs_epi32(p[2], p[3]), s23);
}

// The vpermw controls placing a pair's 32 int16 sub-block scales (block
// 0's 16, then block 1's) for ScaledDot: [block][vectors 0-1 or 2-3], with
// sub(k, g) the sub-block of lane g of code vector k.
struct Placement16 {
  __m512i v[2][2];
  template <typename Sub>
  explicit Placement16(Sub sub) {
    for (int b = 0; b < 2; ++b) {
      for (int k = 0; k < 2; ++k) v[b][k] = LoadWords(PlaceScales(2 * k, b, sub));
    }
  }
  __m512i Dot(const __m512i q[4], const uint8_t* act, __m512i scales, int b) const {
    return ScaledDot(q, act, _mm512_permutexvar_epi16(v[b][0], scales),
                     _mm512_permutexvar_epi16(v[b][1], scales));
  }
};

// The fp32 accumulation of a pair: acc += sums * d_i * d_a per block (sums
// as Fold leaves them) and, with mins, acc_min += min_sums * dmin_i * d_a
// (eight lanes per block). `scales` holds the fp16 [d0, dmin0, d1, dmin1].
struct PairAcc {
  __m512 acc = _mm512_setzero_ps();
  __m512 acc_min = _mm512_setzero_ps();
  const __m512i d_lanes = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(2), 1);
  const __m512i dmin_lanes = _mm512_inserti64x4(_mm512_set1_epi32(1), _mm256_set1_epi32(3), 1);

  static __m128 Scales(uint64_t fp16, const uint8_t* act) {
    return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<int64_t>(fp16))),
                      _mm_load_ps(reinterpret_cast<const float*>(act + kScaleOffset)));
  }
  void Add(__m128 scales, __m512i sums) {
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums),
                          _mm512_permutexvar_ps(d_lanes, _mm512_castps128_ps512(scales)), acc);
  }
  void AddMins(__m128 scales, __m512i min_sums) {
    acc_min =
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(min_sums),
                        _mm512_permutexvar_ps(dmin_lanes, _mm512_castps128_ps512(scales)), acc_min);
  }
  float Total() const { return _mm512_reduce_add_ps(_mm512_sub_ps(acc, acc_min)); }
};

// kBytes (2: d; 4: d and dmin) of fp16 fields from each block of a pair,
// as [x0's, x1's] in one word (zero for a missing second block).
template <int kBytes, bool kTwo>
inline uint64_t Fp16Pair(const void* x0, const void* x1) {
  uint32_t f0 = 0, f1 = 0;
  std::memcpy(&f0, x0, kBytes);
  if constexpr (kTwo) std::memcpy(&f1, x1, kBytes);
  return f0 | uint64_t{f1} << 32;
}

// 16 bytes of each block of the pair, one per 128-bit lane (zero for a
// missing second block).
template <bool kTwo>
inline __m256i Pair128(const void* x0, const void* x1) {
  __m256i v = _mm256_zextsi128_si256(Load128(x0));
  if constexpr (kTwo) v = _mm256_inserti128_si256(v, Load128(x1), 1);
  return v;
}

// Q4_K and Q5_K (8 sub-blocks of 32 with 6-bit scales and mins).
template <typename BlockT, bool kFiveBits>
struct K4 {
  using Block = BlockT;
  static constexpr auto kPack = PackAct<K4Start>;

  // vpshufb controls placing the scale of each word of vpackssdw(p0, p1)
  // and (p2, p3) from a lane of K4ScalesMins' bytes (high bytes zero).
  __m512i scales01, scales23;
  // vpshufb control: the mins, each twice (for the 16-element sums), from
  // a lane of K4ScalesMins' bytes; lane 0 mins 0..3, lane 1 mins 4..7.
  __m512i mins_twice;
  // Q5_K: the qh bit of each code vector's bytes, per 32-byte half (bit 4
  // of element 64c + 32j + l is bit 2c + j of qh[l]).
  __m512i high_bit[4];

  K4() {
    constexpr auto kSub = SubOfLane<K4Start, 32>;
    constexpr Words kPlace01 = PlaceScales(0, 0, kSub), kPlace23 = PlaceScales(2, 0, kSub);
    alignas(64) uint8_t s01[64], s23[64], m[64];
    for (size_t w = 0; w < 32; ++w) {
      s01[2 * w] = static_cast<uint8_t>(kPlace01.w[w]);
      s23[2 * w] = static_cast<uint8_t>(kPlace23.w[w]);
      m[2 * w] = static_cast<uint8_t>(8 + 4 * (w / 8 % 2) + w % 8 / 2);
      s01[2 * w + 1] = s23[2 * w + 1] = m[2 * w + 1] = 0x80;
    }
    scales01 = _mm512_load_si512(s01);
    scales23 = _mm512_load_si512(s23);
    mins_twice = _mm512_load_si512(m);
    for (int k = 0; k < 4; ++k) {
      const int first = K4Start(k, 0) / 32;
      high_bit[k] = _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << first)),
                                       _mm256_set1_epi8(static_cast<char>(1 << (first + 2))), 1);
    }
  }

  // One block's scaled sum in 16 int32 lanes; `sm` holds its K4ScalesMins
  // bytes in every 128-bit lane.
  __m512i BlockSum(const Block& x, const uint8_t* act, __m512i sm) const {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i z0 = _mm512_loadu_si512(x.qs);
    const __m512i z1 = _mm512_loadu_si512(x.qs + 64);
    __m512i q[4] = {_mm512_and_si512(z0, low4), _mm512_and_si512(_mm512_srli_epi16(z0, 4), low4),
                    _mm512_and_si512(z1, low4), _mm512_and_si512(_mm512_srli_epi16(z1, 4), low4)};
    if constexpr (kFiveBits) AddHighBits(Broadcast256(x.qh), high_bit, 16, q);
    return ScaledDot(q, act, _mm512_shuffle_epi8(sm, scales01), _mm512_shuffle_epi8(sm, scales23));
  }

  template <bool kTwo>
  void Pair(const Block* x, const uint8_t* act, PairAcc* acc) const {
    const __m512i sm =
        _mm512_castsi256_si512(K4ScalesMins(Pair128<kTwo>(x[0].scales, x[kTwo].scales)));
    const __m512i s0 = BlockSum(x[0], act, _mm512_shuffle_i64x2(sm, sm, 0x00));
    __m512i s1 = _mm512_setzero_si512();
    if constexpr (kTwo) s1 = BlockSum(x[1], act + kCodesBytes, _mm512_shuffle_i64x2(sm, sm, 0x55));
    // Lanes 0-1 from block 0's bytes, 2-3 from block 1's.
    const __m512i mins = _mm512_shuffle_epi8(_mm512_shuffle_i64x2(sm, sm, 0x50), mins_twice);
    const __m128 scales = PairAcc::Scales(Fp16Pair<4, kTwo>(&x[0].d, &x[kTwo].d), act);
    acc->Add(scales, Fold(s0, s1));
    acc->AddMins(scales, _mm512_madd_epi16(mins, _mm512_load_si512(act + kSumsOffset)));
  }
};

// Q2_K (16 sub-blocks of 16 with 4-bit scales and mins) and Q3_K (signed
// 6-bit scales, codes - 4 from two low bits and a high bit).
template <bool kQ3>
struct Q2Q3 {
  using Block = std::conditional_t<kQ3, BlockQ3_K, BlockQ2_K>;
  static constexpr auto kPack = PackAct<Q2Start>;

  Placement16 place{SubOfLane<Q2Start, 16>};
  __m512i high_bit[4];  // Q3_K: the hmask bit of each code vector, per half

  Q2Q3() {
    for (int k = 0; k < 4; ++k) {
      // The high bit of element 128h + 32k + l is bit 4h + k of hmask[l].
      high_bit[k] = _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << k)),
                                       _mm256_set1_epi8(static_cast<char>(1 << (4 + k))), 1);
    }
  }

  // One block's sum in 16 int32 lanes; `scales` the pair's 32 int16 scales.
  __m512i BlockSum(const Block& x, const uint8_t* act, __m512i scales, int b) const {
    const __m512i z = _mm512_loadu_si512(x.qs);
    const __m512i low2 = _mm512_set1_epi8(3);
    __m512i q[4] = {_mm512_and_si512(z, low2), _mm512_and_si512(_mm512_srli_epi16(z, 2), low2),
                    _mm512_and_si512(_mm512_srli_epi16(z, 4), low2),
                    _mm512_and_si512(_mm512_srli_epi16(z, 6), low2)};
    if constexpr (kQ3) AddHighBits(Broadcast256(x.hmask), high_bit, 4, q);
    return place.Dot(q, act, scales, b);
  }

  template <bool kTwo>
  void Pair(const Block* x, const uint8_t* act, PairAcc* acc) const {
    const __m512i sums16 = _mm512_load_si512(act + kSumsOffset);
    // Q2_K: d and dmin; Q3_K: d alone.
    constexpr int kFp16Bytes = kQ3 ? 2 : 4;
    const __m128 d = PairAcc::Scales(Fp16Pair<kFp16Bytes, kTwo>(&x[0].d, &x[kTwo].d), act);
    __m512i scales;
    if constexpr (kQ3) {
      // The 16 bytes that end with each block's scales (the last 4 of qs,
      // which the scales follow, then the 12 scale bytes; a 16-byte load
      // from the scales would pass the block's end), moved down 4 bytes per
      // lane.
      static_assert(offsetof(BlockQ3_K, scales) == offsetof(BlockQ3_K, qs) + sizeof(x->qs));
      const __m256i raw = _mm256_srli_si256(
          Pair128<kTwo>(x[0].qs + sizeof(x->qs) - 4, x[kTwo].qs + sizeof(x->qs) - 4), 4);
      scales = _mm512_cvtepi8_epi16(Q3KScalesLanes(raw));
    } else {
      const __m256i raw = Pair128<kTwo>(x[0].scales, x[kTwo].scales);
      scales = _mm512_cvtepu8_epi16(_mm256_and_si256(raw, _mm256_set1_epi8(0x0F)));
      const __m512i mins =
          _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F)));
      acc->AddMins(d, _mm512_madd_epi16(mins, sums16));
    }
    const __m512i s0 = BlockSum(x[0], act, scales, 0);
    __m512i s1 = _mm512_setzero_si512();
    if constexpr (kTwo) s1 = BlockSum(x[1], act + kCodesBytes, scales, 1);
    __m512i sums = Fold(s0, s1);
    if constexpr (kQ3) {
      // Undo the +4 of the codes: sum_s sc_s * 4 * bsums_s.
      sums = _mm512_sub_epi32(sums, _mm512_slli_epi32(_mm512_madd_epi16(scales, sums16), 2));
    }
    acc->Add(d, sums);
  }
};

// Q6_K (16 sub-blocks of 16 with int8 scales, codes - 32 from four bits of
// ql and two of qh). Code vector 2h + n holds the nibbles n of
// ql[64h..64h+64) and, from qh[32h + l], bits 4n..4n+1 for its first 32
// bytes and 4n+2..4n+3 for its last 32.
struct Q6 {
  using Block = BlockQ6_K;
  static constexpr auto kPack = PackAct<Q6Start>;

  Placement16 place{SubOfLane<Q6Start, 16>};
  // Per 16-bit word shifts bringing each half's two qh bits to bits 4..5:
  // left by 4 and 2 for n = 0, right by 0 and 2 for n = 1.
  __m512i shift_left = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  __m512i shift_right = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);

  __m512i BlockSum(const Block& x, const uint8_t* act, __m512i scales, int b) const {
    const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
    __m512i q[4];
    for (size_t h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(x.ql + 64 * h);
      const __m512i qh = Broadcast256(x.qh + 32 * h);
      q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, low4),
                                 _mm512_and_si512(_mm512_sllv_epi16(qh, shift_left), bits45));
      q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                     _mm512_and_si512(_mm512_srlv_epi16(qh, shift_right), bits45));
    }
    return place.Dot(q, act, scales, b);
  }

  template <bool kTwo>
  void Pair(const Block* x, const uint8_t* act, PairAcc* acc) const {
    const __m512i scales = _mm512_cvtepi8_epi16(Pair128<kTwo>(x[0].scales, x[kTwo].scales));
    const __m512i s0 = BlockSum(x[0], act, scales, 0);
    __m512i s1 = _mm512_setzero_si512();
    if constexpr (kTwo) s1 = BlockSum(x[1], act + kCodesBytes, scales, 1);
    // Undo the +32 of the codes: sum_s sc_s * 32 * bsums_s.
    const __m512i offset =
        _mm512_slli_epi32(_mm512_madd_epi16(scales, _mm512_load_si512(act + kSumsOffset)), 5);
    acc->Add(PairAcc::Scales(Fp16Pair<2, kTwo>(&x[0].d, &x[kTwo].d), act),
             _mm512_sub_epi32(Fold(s0, s1), offset));
  }
};

template <typename Kernel>
void Rows(int64_t cols, const uint8_t* w, size_t row_bytes, int64_t nrows, const uint8_t* packed,
          float* y) {
  using Block = typename Kernel::Block;
  const Kernel kernel;
  const int64_t nb = cols / kQKK;
  for (int64_t r = 0; r < nrows; ++r) {
    const auto* x = reinterpret_cast<const Block*>(w + static_cast<size_t>(r) * row_bytes);
    const uint8_t* act = packed;
    PairAcc acc;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2, act += kPairBytes) kernel.template Pair<true>(x + b, act, &acc);
    if (b < nb) kernel.template Pair<false>(x + b, act, &acc);
    y[r] = acc.Total();
  }
}

template <typename Kernel>
constexpr DecodeOps Ops() {
  return {PackedBytes, Kernel::kPack, Rows<Kernel>};
}

}  // namespace

const DecodeOps kDecodeQ2_K = Ops<Q2Q3<false>>();
const DecodeOps kDecodeQ3_K = Ops<Q2Q3<true>>();
const DecodeOps kDecodeQ4_K = Ops<K4<BlockQ4_K, false>>();
const DecodeOps kDecodeQ5_K = Ops<K4<BlockQ5_K, true>>();
const DecodeOps kDecodeQ6_K = Ops<Q6>();

}  // namespace fqpack::runtime::quant
