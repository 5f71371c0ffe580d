// AVX-512 + VNNI dots of the group-int types against int8-act
// activations.
//
// Two 32-element chunks of codes (the two halves of a group of 64, or of
// two consecutive groups of 32) are decoded together into one zmm in
// element order, each bit plane of schema/quant_types.md by a copy into
// the lanes that need it, a shift and a mask: the 4-bit plane fills
// 16-byte lanes shifted by 0 or 4, the 2-bit plane 8-byte qwords shifted by
// 0, 2, 4 or 6, and the 1-bit plane is a byte mask under which the bit's
// weight is added (AVX-512 BW; no VBMI, which the tier does not require).
// Codes are
// unsigned, as vpdpbusd wants them (8-bit codes included: no offset trick),
// and every int32 lane is an exact sum of four products. A chunk's eight
// lanes are scaled by d * d_a in fp32; the offset adds m * s per chunk.
// Chunks at the end of a row that do not pair up go through the scalar
// unpacker (only partial groups and an odd count of 32-groups).
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "runtime/quant/avx512_util.h"
#include "runtime/quant/decode.h"
#include "runtime/quant/group_int.h"
#include "runtime/quant/kernels.h"
#include "schema/coding.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::Load256;
using avx512::DispatchTokens;
using avx512::Half;
using avx512::LoadWords;
using avx512::Words;

// The 64 codes of two whole chunks, the first at p, the second kOff1 bytes
// after it, one per byte in element order. The planes of a chunk
// (schema/quant_types.md) come in this order: 4-bit, 2-bit, 1-bit.
template <int kBits, int kOff1>
inline __m512i DecodePair(const uint8_t* p) {
  if constexpr (kBits == 8) {
    return _mm512_inserti64x4(_mm512_zextsi256_si512(Load256(p)), Load256(p + kOff1), 1);
  } else {
    constexpr bool kHas4 = kBits == 4 || kBits == 5 || kBits == 6;
    constexpr bool kHas2 = kBits == 2 || kBits == 3 || kBits == 6;
    constexpr bool kHas1 = kBits == 3 || kBits == 5;
    __m512i q = _mm512_setzero_si512();
    int shift = 0;  // bits below the next plane's
    const uint8_t* plane = p;
    if constexpr (kHas4) {
      // 16-byte lanes: chunk 0 twice, chunk 1 twice; the second copy of
      // each gives the high nibbles.
      const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(avx2::Load128(plane)),
                                                   avx2::Load128(plane + kOff1), 1);
      const __m512i lanes = _mm512_shuffle_i64x2(
          _mm512_zextsi256_si512(both), _mm512_zextsi256_si512(both), _MM_SHUFFLE(1, 1, 0, 0));
      q = _mm512_and_si512(_mm512_srlv_epi64(lanes, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0)),
                           _mm512_set1_epi8(0x0F));
      shift = 4;
      plane += 16;
    }
    if constexpr (kHas2) {
      // Each chunk's 8 bytes in its four qwords, qword k shifted by 2k.
      uint64_t c0, c1;
      std::memcpy(&c0, plane, 8);
      std::memcpy(&c1, plane + kOff1, 8);
      const __m512i both = _mm512_zextsi128_si512(
          _mm_set_epi64x(static_cast<int64_t>(c1), static_cast<int64_t>(c0)));
      const __m512i spread =
          _mm512_permutexvar_epi64(_mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0), both);
      __m512i crumbs = _mm512_and_si512(
          _mm512_srlv_epi64(spread, _mm512_set_epi64(6, 4, 2, 0, 6, 4, 2, 0)), _mm512_set1_epi8(3));
      // Crumbs are <= 3, so a 16-bit shift by 4 never carries across bytes.
      if (shift != 0) crumbs = _mm512_slli_epi16(crumbs, shift);
      q = _mm512_or_si512(q, crumbs);
      shift += 2;
      plane += 8;
    }
    if constexpr (kHas1) {
      // Bit e of the plane is element e's: the two planes are a byte mask.
      uint32_t b0, b1;
      std::memcpy(&b0, plane, 4);
      std::memcpy(&b1, plane + kOff1, 4);
      const __mmask64 set = _cvtu64_mask64(uint64_t{b0} | uint64_t{b1} << 32);
      q = _mm512_mask_add_epi8(q, set, q, _mm512_set1_epi8(static_cast<char>(1 << shift)));
    }
    return q;
  }
}

// One chunk's codes through the scalar unpacker (r < 32: a partial chunk's
// bit stream), in the low half; the high half zero.
template <int kBits>
inline __m512i DecodeOne(const uint8_t* p, int r) {
  alignas(64) uint8_t q[64] = {};
  if (r == kGroupChunk) {
    UnpackChunk(kBits, p, q);
  } else {
    UnpackBitStream(kBits, p, r, q);
  }
  return _mm512_load_si512(q);
}

// Chunks a tile of the row takes at once: their 16 scales and offsets are
// converted and multiplied as one vector each.
constexpr int kTileChunks = 16;
constexpr int kAccs = 4;

// The codes of chunk `chunk` of a run of whole groups starting at `w`.
template <int kBits, int kGroup>
inline const uint8_t* ChunkCodes(const uint8_t* w, ptrdiff_t chunk) {
  constexpr int kChunksPerGroup = kGroup / kGroupChunk;
  return w + (chunk / kChunksPerGroup) * static_cast<ptrdiff_t>(GroupBytes(kBits, kGroup)) +
         kGroupHeaderBytes + (chunk % kChunksPerGroup) * ptrdiff_t{4} * kBits;
}

// The d and m of the groups of the kTileChunks chunks from `w` (whole
// groups), one lane per chunk: the fp16 pairs gathered, then converted.
template <int kBits, int kGroup>
inline void TileScales(const uint8_t* w, __m512* d16, __m512* m16) {
  constexpr int kChunksPerGroup = kGroup / kGroupChunk;
  alignas(64) uint32_t dm[kTileChunks];
  for (int j = 0; j < kTileChunks; ++j) {
    std::memcpy(&dm[j], w + (j / kChunksPerGroup) * GroupBytes(kBits, kGroup), 4);
  }
  const __m512i dm16 = _mm512_load_si512(dm);
  *d16 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm16));
  *m16 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm16, 16)));
}

template <int kBits, int kGroup, int NT>
void DotRow(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out) {
  constexpr ptrdiff_t kChunkBytes = ptrdiff_t{4} * kBits;
  constexpr ptrdiff_t kWholeGroupBytes = static_cast<ptrdiff_t>(GroupBytes(kBits, kGroup));
  // Offset of a pair's second chunk: the next group (32-groups) or the next
  // chunk of the same group.
  constexpr int kOff1 = static_cast<int>(kGroup == kGroupChunk ? kWholeGroupBytes : kChunkBytes);
  const uint8_t* act[NT];
  // Four accumulators per row, taken in turn by the pairs of a tile, so
  // consecutive FMAs do not wait for each other.
  __m512 accs[kAccs][NT];
  float offset[NT];
  for (int t = 0; t < NT; ++t) {
    act[t] = a + t * a_stride;
    for (int k = 0; k < kAccs; ++k) accs[k][t] = _mm512_setzero_ps();
    offset[t] = 0;
  }
  __m512* acc = accs[0];
  // Codes q of chunk c (and c + 1 when `pair`) against activation blocks c
  // (and c + 1), with scales d0, d1 and offsets m0, m1.
  const auto step = [&](__m512i q, int64_t c, bool pair, float d0, float m0, float d1, float m1) {
    for (int t = 0; t < NT; ++t) {
      const uint8_t* b0 = act[t] + c * kGroupActBlockBytes;
      const uint8_t* b1 = pair ? b0 + kGroupActBlockBytes : b0;
      float da0, s0, da1 = 0, s1 = 0;
      std::memcpy(&da0, b0, 4);
      std::memcpy(&s0, b0 + 4, 4);
      if (pair) {
        std::memcpy(&da1, b1, 4);
        std::memcpy(&s1, b1 + 4, 4);
      }
      const __m512i ya = _mm512_inserti64x4(_mm512_zextsi256_si512(Load256(b0 + 8)),
                                            pair ? Load256(b1 + 8) : _mm256_setzero_si256(), 1);
      const __m512 p = _mm512_cvtepi32_ps(avx512::Dot4(q, ya));
      const __m512 scale = _mm512_insertf32x8(_mm512_zextps256_ps512(_mm256_set1_ps(d0 * da0)),
                                              _mm256_set1_ps(d1 * da1), 1);
      acc[t] = _mm512_fmadd_ps(scale, p, acc[t]);
      offset[t] += m0 * s0;
      if (pair) offset[t] += m1 * s1;
    }
  };
  const auto header = [](const uint8_t* g, float* d, float* m) {
    *d = Half(DecodeU16(g));
    *m = Half(DecodeU16(g + 2));
  };

  const int64_t full = n / kGroup;
  int64_t c = 0;  // activation block (chunk) index
  // Whole tiles: 16 chunks of whole groups.
  constexpr int kChunksPerGroup = kGroup / kGroupChunk;
  constexpr int kTileGroups = kTileChunks / kChunksPerGroup;
  __m512 moff[NT];
  for (int t = 0; t < NT; ++t) moff[t] = _mm512_setzero_ps();
  int64_t g = 0;
  for (; g + kTileGroups <= full; g += kTileGroups, c += kTileChunks) {
    __m512 d16, m16;
    TileScales<kBits, kGroup>(w, &d16, &m16);
    __m512 scale16[NT];
    for (int t = 0; t < NT; ++t) {
      alignas(64) float da[kTileChunks], s16[kTileChunks];
      const uint8_t* blk = act[t] + c * kGroupActBlockBytes;
      for (int j = 0; j < kTileChunks; ++j) {
        std::memcpy(&da[j], blk + ptrdiff_t{kGroupActBlockBytes} * j, 4);
        std::memcpy(&s16[j], blk + ptrdiff_t{kGroupActBlockBytes} * j + 4, 4);
      }
      scale16[t] = _mm512_mul_ps(d16, _mm512_load_ps(da));
      moff[t] = _mm512_fmadd_ps(m16, _mm512_load_ps(s16), moff[t]);
    }
    for (int k = 0; k < kTileChunks / 2; ++k) {
      const int chunk = 2 * k;  // within the tile
      const __m512i q = DecodePair<kBits, kOff1>(ChunkCodes<kBits, kGroup>(w, chunk));
      const __m512i idx = _mm512_load_si512(avx512::kPairScale[k]);
      for (int t = 0; t < NT; ++t) {
        const uint8_t* b0 = act[t] + (c + chunk) * kGroupActBlockBytes;
        const __m512i ya = _mm512_inserti64x4(_mm512_zextsi256_si512(Load256(b0 + 8)),
                                              Load256(b0 + kGroupActBlockBytes + 8), 1);
        const __m512 p = _mm512_cvtepi32_ps(avx512::Dot4(q, ya));
        accs[k % kAccs][t] =
            _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, scale16[t]), p, accs[k % kAccs][t]);
      }
    }
    w += kTileGroups * kWholeGroupBytes;
  }
  for (int t = 0; t < NT; ++t) offset[t] = _mm512_reduce_add_ps(moff[t]);
  if constexpr (kGroup == kGroupChunk) {
    for (; g + 2 <= full; g += 2, c += 2) {
      float d0, m0, d1, m1;
      header(w, &d0, &m0);
      header(w + kWholeGroupBytes, &d1, &m1);
      step(DecodePair<kBits, kOff1>(w + kGroupHeaderBytes), c, true, d0, m0, d1, m1);
      w += 2 * kWholeGroupBytes;
    }
    if (g < full) {
      float d, m;
      header(w, &d, &m);
      step(DecodeOne<kBits>(w + kGroupHeaderBytes, kGroupChunk), c, false, d, m, 0, 0);
      w += kWholeGroupBytes;
      ++c;
    }
  } else {
    for (; g < full; ++g) {
      float d, m;
      header(w, &d, &m);
      const uint8_t* codes = w + kGroupHeaderBytes;
      for (int k = 0; k < kGroup / kGroupChunk; k += 2, c += 2) {
        step(DecodePair<kBits, kOff1>(codes + k * kChunkBytes), c, true, d, m, d, m);
      }
      w += kWholeGroupBytes;
    }
  }
  if (const int len = static_cast<int>(n % kGroup); len != 0) {
    float d, m;
    header(w, &d, &m);
    const uint8_t* codes = w + kGroupHeaderBytes;
    for (int k = 0; k * kGroupChunk < len; ++k, ++c) {
      const int r = std::min(kGroupChunk, len - k * kGroupChunk);
      step(DecodeOne<kBits>(codes + k * kChunkBytes, r), c, false, d, m, 0, 0);
    }
  }
  for (int t = 0; t < NT; ++t) {
    const __m512 sum =
        _mm512_add_ps(_mm512_add_ps(accs[0][t], accs[1][t]), _mm512_add_ps(accs[2][t], accs[3][t]));
    out[t] = _mm512_reduce_add_ps(sum) + offset[t];
  }
}

// ---------------------------------------------------------------------------
// Decode: one activation row against many weight rows.
//
// The activation row is rearranged once per matmul (PackDecodeAct) so that
// each weight row's codes need the fewest instructions: its blocks' int8
// codes, tile by tile of 16 chunks, in the order the type's cheapest unpack
// produces its codes (Arrangement), then the tiles' da and s as float
// vectors (no per-row gathering of block fields), then a copy of the
// int8-act row for the part of a row past the last whole tile (a partial
// group, or fewer than 16 chunks of whole groups), which goes through the
// dot above.

// The order of a tile's activation codes.
//   kElement (int5, int8): chunk by chunk in element order; codes of
//     two chunks come from DecodePair. (int5 in quads, its P1 bits turned
//     into two 64-bit masks, measured no faster.)
//   kNibble4 (int4, int6): quads of 4 chunks; one zmm holds the four
//     chunks' 16-byte P4 planes, whose low nibbles are elements 0..15 of
//     each chunk and high nibbles elements 16..31: the activation quad is
//     those elements in that order, 64 bytes each. int6's P2 crumbs are
//     brought into the same order (QuadCodes).
//   kCrumb8 (int2): octets of 8 chunks; one zmm holds the eight chunks'
//     8-byte P2 planes, and its bits 2k..2k+1 of byte j of chunk c are
//     element j + 8k: the activation octet is four 64-byte vectors, vector k
//     holding elements j + 8k (j = 0..7) of each chunk. int3 adds its P1
//     bits in the same order (Int3Octet).
enum class Arrangement { kElement, kNibble4, kCrumb8 };

template <int kBits>
constexpr Arrangement ArrangementOf() {
  return kBits == 4 || kBits == 6   ? Arrangement::kNibble4
         : kBits == 2 || kBits == 3 ? Arrangement::kCrumb8
                                    : Arrangement::kElement;
}

// Where the parts of a packed activation row of n elements lie.
template <int kGroup>
struct PackedActLayout {
  int64_t tiles;             // whole tiles of kTileChunks chunks of whole groups
  int64_t act_chunks;        // int8-act blocks of the row
  size_t da, s, act, bytes;  // byte offsets; the codes start at 0
  explicit PackedActLayout(int64_t n)
      : tiles((n / kGroup) * (kGroup / kGroupChunk) / kTileChunks),
        act_chunks((n + kGroupChunk - 1) / kGroupChunk),
        da(static_cast<size_t>(tiles) * kTileChunks * kGroupChunk),
        s(da + static_cast<size_t>(tiles) * kTileChunks * sizeof(float)),
        act(s + static_cast<size_t>(tiles) * kTileChunks * sizeof(float)),
        bytes(act + static_cast<size_t>(act_chunks) * kGroupActBlockBytes) {}
};

// Byte position, within its tile's 512 codes, of element e of the tile's
// chunk j under arrangement A.
template <Arrangement A>
constexpr int TilePosition(int j, int e) {
  if constexpr (A == Arrangement::kNibble4) {
    return (j / 4) * 128 + (e / 16) * 64 + (j % 4) * 16 + e % 16;
  } else if constexpr (A == Arrangement::kCrumb8) {
    return (j / 8) * 256 + (e / 8) * 64 + (j % 8) * 8 + e % 8;
  } else {
    return j * kGroupChunk + e;
  }
}

template <int kBits, int kGroup>
size_t DecodeActBytes(int64_t n) {
  return PackedActLayout<kGroup>(n).bytes;
}

template <int kBits, int kGroup>
void PackDecodeAct(int64_t n, const uint8_t* act, uint8_t* out) {
  constexpr Arrangement kA = ArrangementOf<kBits>();
  const PackedActLayout<kGroup> layout(n);
  auto* da = reinterpret_cast<float*>(out + layout.da);
  auto* s = reinterpret_cast<float*>(out + layout.s);
  for (int64_t t = 0; t < layout.tiles; ++t) {
    uint8_t* codes = out + t * kTileChunks * kGroupChunk;
    for (int j = 0; j < kTileChunks; ++j) {
      const uint8_t* block = act + (t * kTileChunks + j) * kGroupActBlockBytes;
      std::memcpy(&da[t * kTileChunks + j], block, 4);
      std::memcpy(&s[t * kTileChunks + j], block + 4, 4);
      for (int e = 0; e < kGroupChunk; ++e) codes[TilePosition<kA>(j, e)] = block[8 + e];
    }
  }
  std::memcpy(out + layout.act, act, static_cast<size_t>(layout.act_chunks) * kGroupActBlockBytes);
}

// vpermps controls placing chunk scales (avx512::kQuadScale[q] gives chunk
// 4q + k of a tile in 128-bit lane k): kOctetScale[o] gives chunk 8o + k
// in 64-bit lane k.
alignas(64) constexpr int32_t kOctetScale[2][16] = {
    {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7},
    {8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15},
};

// The `bytes`-byte code plane at offset `plane` of each of `count` chunks of
// a tile, back to back in one zmm (count * bytes == 64). Chunk k of the
// tile lies in group k / kChunksPerGroup at code offset (k % ..) * chunk
// bytes; planes of consecutive chunks of one group are contiguous only for
// single-plane types, which are the only ones that call this.
template <int kBits, int kGroup, int kPlaneBytes>
inline __m512i GatherPlanes(const uint8_t* tile_w, int first_chunk) {
  static_assert(kPlaneBytes == 4 * kBits, "a single-plane type");
  constexpr int kChunksPerGroup = kGroup / kGroupChunk;
  constexpr int kCount = 64 / kPlaneBytes;
  // Runs of chunks that are contiguous in memory: a whole group's codes.
  constexpr int kRun = kChunksPerGroup < kCount ? kChunksPerGroup : kCount;
  constexpr int kRunBytes = kRun * kPlaneBytes;
  const auto at = [&](int k) { return ChunkCodes<kBits, kGroup>(tile_w, first_chunk + k); };
  if constexpr (kRunBytes == 64) {
    // Two 32-byte halves: a 64-byte load that crosses a cache line (groups
    // are 68 bytes, so most do) streams at half the speed from memory.
    return _mm512_inserti64x4(_mm512_castsi256_si512(Load256(at(0))), Load256(at(0) + 32), 1);
  } else if constexpr (kRunBytes == 32) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(Load256(at(0))), Load256(at(kRun)), 1);
  } else if constexpr (kRunBytes == 16) {
    const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(avx2::Load128(at(0))),
                                               avx2::Load128(at(kRun)), 1);
    const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(avx2::Load128(at(2 * kRun))),
                                               avx2::Load128(at(3 * kRun)), 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  } else {
    static_assert(kRunBytes == 8);
    uint64_t q[8];
    for (int k = 0; k < 8; ++k) std::memcpy(&q[k], at(k), 8);
    return _mm512_loadu_si512(q);
  }
}

// The codes of chunks first..first+3 of a tile in kNibble4 order: `lo`
// holds elements 0..15 of each chunk in its 128-bit lane, `hi` elements
// 16..31. int4 is the P4 planes alone; int6 adds 16 * crumb, where byte j of P2 holds
// elements j, j + 8, j + 16, j + 24 at bits 0, 2, 4, 6: a lane of lo is P2
// shifted by 0 (elements 0..7) and by 2 (8..15), of hi by 4 and 6.
template <int kBits, int kGroup>
inline void QuadCodes(const uint8_t* tile_w, int first, __m512i* lo, __m512i* hi) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  if constexpr (kBits == 4) {
    const __m512i v = GatherPlanes<kBits, kGroup, 16>(tile_w, first);
    *lo = _mm512_and_si512(v, low4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
  } else {
    static_assert(kBits == 6);
    const uint8_t* p4[4];
    for (int k = 0; k < 4; ++k) p4[k] = ChunkCodes<kBits, kGroup>(tile_w, first + k);
    const __m256i v01 = _mm256_inserti128_si256(_mm256_castsi128_si256(avx2::Load128(p4[0])),
                                                avx2::Load128(p4[1]), 1);
    const __m256i v23 = _mm256_inserti128_si256(_mm256_castsi128_si256(avx2::Load128(p4[2])),
                                                avx2::Load128(p4[3]), 1);
    const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(v01), v23, 1);
    *lo = _mm512_and_si512(v, low4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
    uint64_t c[4];
    for (int k = 0; k < 4; ++k) std::memcpy(&c[k], p4[k] + 16, 8);
    // Each chunk's 8 P2 bytes in both qwords of its lane.
    const __m512i z = _mm512_set_epi64(static_cast<int64_t>(c[3]), static_cast<int64_t>(c[3]),
                                       static_cast<int64_t>(c[2]), static_cast<int64_t>(c[2]),
                                       static_cast<int64_t>(c[1]), static_cast<int64_t>(c[1]),
                                       static_cast<int64_t>(c[0]), static_cast<int64_t>(c[0]));
    const __m512i three = _mm512_set1_epi8(3);
    const __m512i c_lo =
        _mm512_and_si512(_mm512_srlv_epi64(z, _mm512_set_epi64(2, 0, 2, 0, 2, 0, 2, 0)), three);
    const __m512i c_hi =
        _mm512_and_si512(_mm512_srlv_epi64(z, _mm512_set_epi64(6, 4, 6, 4, 6, 4, 6, 4)), three);
    // Crumbs are <= 3: a 16-bit shift by 4 stays within each byte.
    *lo = _mm512_or_si512(*lo, _mm512_slli_epi16(c_lo, 4));
    *hi = _mm512_or_si512(*hi, _mm512_slli_epi16(c_hi, 4));
  }
}

// int3's codes of chunks first..first+7 of a tile in kCrumb8 order, as q[k]
// (k = 0..3). The octet's whole groups span at most 128 bytes from the
// first chunk's codes (g32: 8 groups of 16 bytes, g64: 4 of 28, g128: 2 of
// 52), and every P2 and P1 plane starts at an even offset there, so two
// 64-byte loads and a two-source word permute (vpermt2w) gather the eight
// P2 planes into one zmm, and another the P1 planes, word L of each chunk's
// P1 into 128-bit lane L; a byte shuffle then makes qword k of that vector
// byte k of every chunk's P1, the mask of the elements j + 8k whose third
// bit is set.
template <int kGroup>
struct Int3Octet {
  static constexpr int kChunksPerGroup = kGroup / kGroupChunk;
  static constexpr int kGroupBytes = static_cast<int>(GroupBytes(3, kGroup));
  // Offset of chunk c's codes from chunk 0's (P2 first, then P1 at +8).
  static constexpr int Offset(int c) {
    return (c / kChunksPerGroup) * kGroupBytes + (c % kChunksPerGroup) * 12;
  }
  static constexpr int kSpan = Offset(7) + 12;
  static_assert(kSpan > 64 && kSpan <= 128);
  static constexpr Words P2Words() {
    Words t{};
    for (int w = 0; w < 32; ++w) t.w[w] = static_cast<int16_t>(Offset(w / 4) / 2 + w % 4);
    return t;
  }
  static constexpr Words P1Words() {
    Words t{};
    for (int w = 0; w < 16; ++w) t.w[w] = static_cast<int16_t>((Offset(w % 8) + 8) / 2 + w / 8);
    return t;
  }
  __m512i p2 = LoadWords(P2Words());
  __m512i p1 = LoadWords(P1Words());
  // Per 128-bit lane: the low bytes of the eight words, then the high.
  __m256i bytes_first = _mm256_broadcastsi128_si256(
      _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));

  void Codes(const uint8_t* codes, __m512i q[4]) const {
    const __m512i a = _mm512_loadu_si512(codes);
    const __m512i b = _mm512_maskz_loadu_epi8(~uint64_t{0} >> (128 - kSpan), codes + 64);
    const __m512i crumbs = _mm512_permutex2var_epi16(a, p2, b);
    const __m256i planes = _mm256_shuffle_epi8(
        _mm512_castsi512_si256(_mm512_permutex2var_epi16(a, p1, b)), bytes_first);
    // Through memory: one store and four mask loads, fewer instructions
    // than moving each qword to a mask register by way of a GPR.
    alignas(32) __mmask64 high[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(high), planes);
    const __m512i low2 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
    for (int k = 0; k < 4; ++k) {
      const __m512i c = _mm512_and_si512(k == 0 ? crumbs : _mm512_srli_epi16(crumbs, 2 * k), low2);
      q[k] = _mm512_mask_add_epi8(c, high[k], c, four);
    }
  }
};

template <int kBits, int kGroup>
void DecodeRows(int64_t n, const uint8_t* w, size_t row_bytes, int64_t nrows, const uint8_t* packed,
                float* y) {
  constexpr Arrangement kA = ArrangementOf<kBits>();
  constexpr int kChunksPerGroup = kGroup / kGroupChunk;
  constexpr int kTileGroups = kTileChunks / kChunksPerGroup;
  constexpr ptrdiff_t kWholeGroupBytes = static_cast<ptrdiff_t>(GroupBytes(kBits, kGroup));
  constexpr ptrdiff_t kChunkBytes = ptrdiff_t{4} * kBits;
  constexpr int kOff1 = static_cast<int>(kGroup == kGroupChunk ? kWholeGroupBytes : kChunkBytes);
  const PackedActLayout<kGroup> layout(n);
  const auto* da = reinterpret_cast<const float*>(packed + layout.da);
  const auto* s = reinterpret_cast<const float*>(packed + layout.s);
  const int64_t tail_group = layout.tiles * kTileGroups;
  const int64_t tail_n = n - tail_group * kGroup;
  const __m512i low2 = _mm512_set1_epi8(3);
  [[maybe_unused]] const std::conditional_t<kBits == 3, Int3Octet<kGroup>, Arrangement>
      int3_octet{};
  for (int64_t r = 0; r < nrows; ++r) {
    const uint8_t* row = w + static_cast<size_t>(r) * row_bytes;
    __m512 acc[kAccs];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    __m512 moff = _mm512_setzero_ps();
    for (int64_t t = 0; t < layout.tiles; ++t) {
      const uint8_t* tw = row + t * kTileGroups * kWholeGroupBytes;
      const uint8_t* ta = packed + t * kTileChunks * kGroupChunk;
      __m512 d16, m16;
      TileScales<kBits, kGroup>(tw, &d16, &m16);
      const __m512 scale16 = _mm512_mul_ps(d16, _mm512_load_ps(da + t * kTileChunks));
      moff = _mm512_fmadd_ps(m16, _mm512_load_ps(s + t * kTileChunks), moff);
      if constexpr (kA == Arrangement::kNibble4) {
        for (int q = 0; q < 4; ++q) {
          __m512i lo, hi;
          QuadCodes<kBits, kGroup>(tw, 4 * q, &lo, &hi);
          const __m512i p =
              _mm512_dpbusd_epi32(avx512::Dot4(lo, _mm512_load_si512(ta + ptrdiff_t{128} * q)), hi,
                                  _mm512_load_si512(ta + ptrdiff_t{128} * q + 64));
          const __m512 sc =
              _mm512_permutexvar_ps(_mm512_load_si512(avx512::kQuadScale[q]), scale16);
          acc[q] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc[q]);
        }
      } else if constexpr (kA == Arrangement::kCrumb8 && kBits == 3) {
        for (int o = 0; o < 2; ++o) {
          __m512i q[4];
          int3_octet.Codes(ChunkCodes<kBits, kGroup>(tw, 8 * o), q);
          const uint8_t* oa = ta + ptrdiff_t{256} * o;
          __m512i p = avx512::Dot4(q[0], _mm512_load_si512(oa));
          for (int k = 1; k < 4; ++k) {
            p = _mm512_dpbusd_epi32(p, q[k], _mm512_load_si512(oa + ptrdiff_t{64} * k));
          }
          const __m512 sc = _mm512_permutexvar_ps(_mm512_load_si512(kOctetScale[o]), scale16);
          acc[o] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc[o]);
        }
      } else if constexpr (kA == Arrangement::kCrumb8) {
        for (int o = 0; o < 2; ++o) {
          const __m512i v = GatherPlanes<kBits, kGroup, 8>(tw, 8 * o);
          const uint8_t* oa = ta + ptrdiff_t{256} * o;
          __m512i p = avx512::Dot4(_mm512_and_si512(v, low2), _mm512_load_si512(oa));
          p = _mm512_dpbusd_epi32(p, _mm512_and_si512(_mm512_srli_epi16(v, 2), low2),
                                  _mm512_load_si512(oa + 64));
          p = _mm512_dpbusd_epi32(p, _mm512_and_si512(_mm512_srli_epi16(v, 4), low2),
                                  _mm512_load_si512(oa + 128));
          p = _mm512_dpbusd_epi32(p, _mm512_and_si512(_mm512_srli_epi16(v, 6), low2),
                                  _mm512_load_si512(oa + 192));
          const __m512 sc = _mm512_permutexvar_ps(_mm512_load_si512(kOctetScale[o]), scale16);
          acc[o] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc[o]);
        }
      } else {
        for (int k = 0; k < kTileChunks / 2; ++k) {
          const __m512i q = DecodePair<kBits, kOff1>(ChunkCodes<kBits, kGroup>(tw, 2 * k));
          const __m512i p = avx512::Dot4(q, _mm512_load_si512(ta + ptrdiff_t{64} * k));
          const __m512 sc =
              _mm512_permutexvar_ps(_mm512_load_si512(avx512::kPairScale[k]), scale16);
          acc[k % kAccs] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc[k % kAccs]);
        }
      }
    }
    // One horizontal sum per row: the scaled sums and the offsets together.
    float out = _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])), moff));
    if (tail_n > 0) {
      float tail;
      DotRow<kBits, kGroup, 1>(
          tail_n, row + tail_group * kWholeGroupBytes,
          packed + layout.act +
              static_cast<size_t>(tail_group) * kChunksPerGroup * kGroupActBlockBytes,
          0, &tail);
      out += tail;
    }
    y[r] = out;
  }
}

}  // namespace

template <int kBits, int kGroup>
void DotGroupIntAvx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out) {
  DispatchTokens(nt, [&](auto tokens) {
    DotRow<kBits, kGroup, decltype(tokens)::value>(n, w, a, a_stride, out);
  });
}

#define FQ_GROUP_INT_INSTANTIATE(B, G)                                                        \
  template void DotGroupIntAvx512<B, G>(int64_t, const uint8_t*, const uint8_t*, size_t, int, \
                                        float*);
FQ_GROUP_INT_FOR_EACH(FQ_GROUP_INT_INSTANTIATE)
#undef FQ_GROUP_INT_INSTANTIATE

template <int kBits, int kGroup>
const DecodeOps GroupIntDecode<kBits, kGroup>::ops = {
    DecodeActBytes<kBits, kGroup>, PackDecodeAct<kBits, kGroup>, DecodeRows<kBits, kGroup>};
#define FQ_DECODE_GROUP_INT_INSTANTIATE(B, G) template struct GroupIntDecode<B, G>;
FQ_GROUP_INT_FOR_EACH(FQ_DECODE_GROUP_INT_INSTANTIATE)
#undef FQ_DECODE_GROUP_INT_INSTANTIATE

}  // namespace fqpack::runtime::quant
