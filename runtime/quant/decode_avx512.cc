// The decode kernels of decode.h for the 32-element block types against
// Q8_0 activations: Q8_0, Q4_0, IQ4_NL.
//
// Packed activation: tiles of 16 blocks, the last one padded with zero
// blocks (zero codes, sum and scale, so padding adds exactly 0), each
// kPackedTileBytes long:
//   offset  bytes  contents
//   0       512    codes; quad j (blocks 4j .. 4j+3) at 128 j: the first 16
//                  codes of its four blocks (64 bytes), then their last 16
//   512     64     int32 -K * (sum of the block's 32 codes), in lane order
//   576     64     fp32 d_a, in lane order
// Lane order: lane L = 4 g + j holds block 4 j + g, the order in which
// BlockSums leaves the block sums of a tile.
//
// Per weight tile of 16 blocks: the row's bytes are loaded 64 at a time
// (Load64) and vpermt2w (all code and scale fields start at even offsets) gathers, per
// quad, the same 4 x 16 layout as the activation, so one vpdpbusd serves
// four blocks and every int32 lane belongs to one block; the 16 fp16 scales
// are gathered the same way from the same registers. The four quads' lanes
// are summed per block by one integer transpose-add, so the fp32 work is one
// conversion and one FMA per 16 blocks. A row's last, partial tile reads its
// bytes with masked loads (zeros past the row's end, and no fault there).
#include <algorithm>
#include <array>
#include <cstring>

#include "runtime/quant/avx512_util.h"
#include "runtime/quant/blocks.h"
#include "runtime/quant/decode.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::Half;
using avx2::Load256;

constexpr int kTileBlocks = 16;
constexpr size_t kPackedCodeBytes = 512;
constexpr size_t kPackedTileBytes = kPackedCodeBytes + 64 + 64;

// The tile block held by lane `lane` of the tile's block vectors.
constexpr int BlockOfLane(int lane) { return 4 * (lane % 4) + lane / 4; }

// vpermw / vpermt2w controls: f(p) is the source word of result word p.
using WordIndex = std::array<int16_t, 32>;
template <typename F>
constexpr WordIndex MakeIndex(F f) {
  WordIndex v{};
  for (int p = 0; p < 32; ++p) v[p] = static_cast<int16_t>(f(p));
  return v;
}
inline __m512i Load(const WordIndex& v) { return _mm512_loadu_si512(v.data()); }

// The lanes L < 16 whose block satisfies `pred`, as a word mask.
template <typename Pred>
constexpr __mmask32 LaneMask(Pred pred) {
  uint32_t m = 0;
  for (int lane = 0; lane < 16; ++lane) {
    if (pred(BlockOfLane(lane))) m |= 1u << lane;
  }
  return m;
}

// 64 bytes at p + offset; with kTail only those before p + len (the rest
// zero), so a row's last tile reads nothing past the row. Whole tiles load
// two 32-byte halves: the loads are mostly not line-aligned, and with
// single 64-byte loads the kernels streamed weights from memory at half the
// speed (13 against 26 GB/s for Q8_0 on one thread, 13 against 24 for Q4_0)
// though they ran as fast from L2.
template <bool kTail>
inline __m512i Load64(const uint8_t* p, int offset, int len) {
  if constexpr (kTail) {
    const int n = std::min(std::max(len - offset, 0), 64);
    const __mmask64 m = n == 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
    return _mm512_maskz_loadu_epi8(m, p + offset);
  } else {
    return _mm512_inserti64x4(_mm512_castsi256_si512(Load256(p + offset)), Load256(p + offset + 32),
                              1);
  }
}

// p[j] holds, per 128-bit lane g, four partial sums of block 4 j + g; the
// result holds the sum of block 4 j + g in lane 4 g + j (lane order).
inline __m512i BlockSums(const __m512i p[4]) {
  const __m512i t01 =
      _mm512_add_epi32(_mm512_unpacklo_epi32(p[0], p[1]), _mm512_unpackhi_epi32(p[0], p[1]));
  const __m512i t23 =
      _mm512_add_epi32(_mm512_unpacklo_epi32(p[2], p[3]), _mm512_unpackhi_epi32(p[2], p[3]));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
}

// Four blocks' codes u (as 64 unsigned bytes in the quad layout) against
// the quad's activation codes: four int32 partial sums per block.
inline __m512i QuadDot(__m512i first, __m512i last, const uint8_t* act) {
  const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), first, _mm512_load_si512(act));
  return _mm512_dpbusd_epi32(s, last, _mm512_load_si512(act + 64));
}

// Q4_0 and IQ4_NL: 18-byte blocks {fp16 d; 16 bytes of nibbles}, element e
// < 16 in the low nibble of byte e, element e + 16 in its high nibble. Tile
// bytes [0, 288) are loaded as z[0..3] and the 32 bytes of z[4]; quad j's
// 72 bytes start 8 j bytes into z[j] and end in z[j + 1].
template <bool kIq4>
struct Nibble4Format {
  static constexpr int kBlockBytes = 18;

  // Quad j's 4 x 16 code bytes: block i's at word 4 j + 9 i + 1 of z[j]:z[j+1].
  static constexpr std::array<WordIndex, 4> kCodes = {
      MakeIndex([](int p) { return 0 + 9 * (p / 8) + 1 + p % 8; }),
      MakeIndex([](int p) { return 4 + 9 * (p / 8) + 1 + p % 8; }),
      MakeIndex([](int p) { return 8 + 9 * (p / 8) + 1 + p % 8; }),
      MakeIndex([](int p) { return 12 + 9 * (p / 8) + 1 + p % 8; })};
  // Block b's d is word 9 b of the tile: blocks 0..7 in z[0]:z[1], 8..14 in
  // z[2]:z[3], 15 at word 7 of z[4].
  static constexpr WordIndex kScalesLow =
      MakeIndex([](int p) { return p < 16 && BlockOfLane(p) < 8 ? 9 * BlockOfLane(p) : 0; });
  static constexpr WordIndex kScalesHigh = MakeIndex([](int p) {
    return p < 16 && BlockOfLane(p) >= 8 && BlockOfLane(p) < 15 ? 9 * BlockOfLane(p) - 64 : 0;
  });
  static constexpr WordIndex kScaleLast =
      MakeIndex([](int p) { return p < 16 && BlockOfLane(p) == 15 ? 9 * 15 - 128 : 0; });
  static constexpr __mmask32 kHighLanes = LaneMask([](int b) { return b >= 8 && b < 15; });
  static constexpr __mmask32 kLastLane = LaneMask([](int b) { return b == 15; });

  __m512i codes[4] = {Load(kCodes[0]), Load(kCodes[1]), Load(kCodes[2]), Load(kCodes[3])};
  __m512i scales_low = Load(kScalesLow);
  __m512i scales_high = Load(kScalesHigh);
  __m512i scale_last = Load(kScaleLast);
  __m512i low4 = _mm512_set1_epi8(0x0F);
  // IQ4_NL: grid value + 128 per nibble, so u - 128 is the grid value.
  __m512i grid = _mm512_set1_epi8(0);

  Nibble4Format() {
    if constexpr (kIq4) {
      alignas(16) uint8_t shifted[16];
      for (int i = 0; i < 16; ++i) shifted[i] = static_cast<uint8_t>(kIq4nlValues[i] + 128);
      grid = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(shifted)));
    }
  }

  // The tile's 16 block sums of u * a (lane order) and its 16 fp16 scales.
  template <bool kTail>
  __m512i Sums(const uint8_t* w, int len, const uint8_t* act, __m256i* halves) const {
    __m512i z[5];
    for (int k = 0; k < 4; ++k) z[k] = Load64<kTail>(w, 64 * k, len);
    if constexpr (kTail) {
      z[4] = Load64<true>(w, 256, len);
    } else {
      z[4] = _mm512_zextsi256_si512(Load256(w + 256));
    }
    __m512i p[4];
    for (int j = 0; j < 4; ++j) {
      const __m512i v = _mm512_permutex2var_epi16(z[j], codes[j], z[j + 1]);
      __m512i first = _mm512_and_si512(v, low4);
      __m512i last = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      if constexpr (kIq4) {
        first = _mm512_shuffle_epi8(grid, first);
        last = _mm512_shuffle_epi8(grid, last);
      }
      p[j] = QuadDot(first, last, act + ptrdiff_t{128} * j);
    }
    const __m512i d =
        _mm512_mask_blend_epi16(kHighLanes, _mm512_permutex2var_epi16(z[0], scales_low, z[1]),
                                _mm512_permutex2var_epi16(z[2], scales_high, z[3]));
    *halves = _mm512_castsi512_si256(_mm512_mask_permutexvar_epi16(d, kLastLane, scale_last, z[4]));
    return BlockSums(p);
  }
};

// Q8_0: 34-byte blocks {fp16 d; int8 qs[32]}. Quad j is tile bytes
// [136 j, 136 j + 136): its blocks' first 16 codes and scales lie in the
// 128 bytes from 136 j, their last 16 codes in the 128 bytes from 136 j + 8.
struct Q8Format {
  static constexpr int kBlockBytes = 34;

  static constexpr WordIndex kFirst = MakeIndex([](int p) { return 17 * (p / 8) + 1 + p % 8; });
  static constexpr WordIndex kLast = MakeIndex([](int p) { return 17 * (p / 8) + 5 + p % 8; });
  // Lane 4 g + j takes block g of quad j, at word 17 g of the quad.
  static constexpr WordIndex kScales = MakeIndex([](int p) { return p < 16 ? 17 * (p / 4) : 0; });

  __m512i first_idx = Load(kFirst);
  __m512i last_idx = Load(kLast);
  __m512i scales_idx = Load(kScales);
  // Flipping the sign bit maps code q to the unsigned byte q + 128.
  __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));

  template <bool kTail>
  __m512i Sums(const uint8_t* w, int len, const uint8_t* act, __m256i* halves) const {
    __m512i p[4];
    __m512i d = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {
      const int base = 136 * j;
      const __m512i l0 = Load64<kTail>(w, base, len), l1 = Load64<kTail>(w, base + 64, len);
      const __m512i m0 = Load64<kTail>(w, base + 8, len), m1 = Load64<kTail>(w, base + 72, len);
      const __m512i first = _mm512_xor_si512(_mm512_permutex2var_epi16(l0, first_idx, l1), flip);
      const __m512i last = _mm512_xor_si512(_mm512_permutex2var_epi16(m0, last_idx, m1), flip);
      p[j] = QuadDot(first, last, act + ptrdiff_t{128} * j);
      const __m512i dj = _mm512_permutex2var_epi16(l0, scales_idx, l1);
      d = j == 0 ? dj : _mm512_mask_blend_epi16(__mmask32{0x1111u} << j, d, dj);
    }
    *halves = _mm512_castsi512_si256(d);
    return BlockSums(p);
  }
};

// acc + the tile's contribution: the exact block sums (u * a sums plus the
// packed -K * sum(a)) scaled by d_w * d_a.
template <bool kTail, typename Format>
inline __m512 Tile(const Format& f, const uint8_t* w, int len, const uint8_t* act, __m512 acc) {
  __m256i halves;
  const __m512i u_sums = f.template Sums<kTail>(w, len, act, &halves);
  const __m512i sums = _mm512_add_epi32(u_sums, _mm512_load_si512(act + kPackedCodeBytes));
  const __m512 scale =
      _mm512_mul_ps(_mm512_cvtph_ps(halves), _mm512_load_ps(act + kPackedCodeBytes + 64));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc);
}

// One row at a time: two rows interleaved, sharing the activation loads,
// ran no faster from L2 and read memory at a third of the speed (the two
// streams are no longer one sequential read).
template <typename Format>
void Rows(int64_t cols, const uint8_t* w, size_t row_bytes, int64_t nrows, const uint8_t* packed,
          float* y) {
  constexpr int kTileWeightBytes = kTileBlocks * Format::kBlockBytes;
  const Format f;
  const int64_t nb = cols / kQK32;
  const int64_t full = nb / kTileBlocks;
  const int tail = static_cast<int>(nb % kTileBlocks) * Format::kBlockBytes;
  for (int64_t r = 0; r < nrows; ++r) {
    const uint8_t* row = w + static_cast<size_t>(r) * row_bytes;
    const uint8_t* act = packed;
    // Two accumulators, so consecutive tiles' FMAs do not wait for each other.
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t t = 0;
    for (; t + 2 <= full; t += 2) {
      acc0 = Tile<false>(f, row, kTileWeightBytes, act, acc0);
      acc1 = Tile<false>(f, row + kTileWeightBytes, kTileWeightBytes, act + kPackedTileBytes, acc1);
      row += ptrdiff_t{2} * kTileWeightBytes;
      act += 2 * kPackedTileBytes;
    }
    if (t < full) {
      acc0 = Tile<false>(f, row, kTileWeightBytes, act, acc0);
      row += kTileWeightBytes;
      act += kPackedTileBytes;
    }
    if (tail > 0) acc1 = Tile<true>(f, row, tail, act, acc1);
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  }
}

size_t PackedBytes(int64_t cols) {
  const int64_t tiles = (cols / kQK32 + kTileBlocks - 1) / kTileBlocks;
  return static_cast<size_t>(tiles) * kPackedTileBytes;
}

// The Q8_0 row `act` in the packed layout, for weight codes read as q + kOffset.
template <int kOffset>
void PackAct(int64_t cols, const uint8_t* act, uint8_t* out) {
  const auto* a = reinterpret_cast<const BlockQ8_0*>(act);
  const int64_t nb = cols / kQK32;
  std::memset(out, 0, PackedBytes(cols));
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* tile = out + static_cast<size_t>(b / kTileBlocks) * kPackedTileBytes;
    const int k = static_cast<int>(b % kTileBlocks);
    const int j = k / 4, g = k % 4;
    std::memcpy(tile + ptrdiff_t{128} * j + ptrdiff_t{16} * g, a[b].qs, 16);
    std::memcpy(tile + ptrdiff_t{128} * j + 64 + ptrdiff_t{16} * g, a[b].qs + 16, 16);
    int32_t sum = 0;
    for (int e = 0; e < kQK32; ++e) sum += a[b].qs[e];
    const int32_t correction = -kOffset * sum;
    const float d = Half(a[b].d);
    const int lane = 4 * g + j;
    std::memcpy(tile + kPackedCodeBytes + ptrdiff_t{4} * lane, &correction, 4);
    std::memcpy(tile + kPackedCodeBytes + 64 + ptrdiff_t{4} * lane, &d, 4);
  }
}

}  // namespace

const DecodeOps kDecodeQ8_0 = {PackedBytes, PackAct<128>, Rows<Q8Format>};
const DecodeOps kDecodeQ4_0 = {PackedBytes, PackAct<8>, Rows<Nibble4Format<false>>};
const DecodeOps kDecodeIQ4_NL = {PackedBytes, PackAct<128>, Rows<Nibble4Format<true>>};

}  // namespace fqpack::runtime::quant
