// The kAvx512 GEMM of the batched matmul (gemm.h has the math). Compiled with
// AVX-512 F/BW/VL/DQ + VNNI: everything here is entered only after
// ActiveSimdLevel() >= kAvx512. The file calls no inline library functions
// (std::min, Fp16ToF32, ...): an out-of-line copy compiled here could be
// picked by the linker for the other files and run on a CPU without AVX-512.
#include <immintrin.h>

// GCC 12's gather and int-to-float intrinsics start from an undefined vector
// and trip -Wmaybe-uninitialized inside the header; the values are set.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "runtime/quant/blocks.h"
#include "runtime/quant/gemm.h"
#include "runtime/quant/group_int.h"
#include "runtime/quant/kernels.h"
#include "runtime/quant/quant.h"

namespace fqpack::runtime::quant {
namespace {

constexpr int kRows = kGemmRows;
constexpr int kTokens = kGemmTokens;

inline float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
inline float F32At(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

// The shape of one type's GEMM (see gemm.h for the formula):
//   kUnit   elements per activation block (32 or 256);
//   kSub    sub-blocks per unit, each with its integer scale when kScale;
//   kMin    integer sub-block mins with a float dmin (Q2_K, Q4_K, Q5_K);
//   kOffset a float offset m per row and unit (group-int), times the
//           activation block's s = da * sum(qa);
//   kZero   the zero point subtracted from the unsigned weight codes.
//
// A panel is, per unit, one record of
//   codes  [kUnit / 4][16 rows][4] u8: one zmm holds 4 consecutive k of all
//          16 rows, which is what vpdpbusd multiplies by a broadcast of one
//          token's 4 activation bytes;
//   d      [16] f32, d2 [16] f32 (dmin or m);
//   sc     [kSub][16] i32 (kScale);
//   mn     [kSub / 2][16][2] i16 (kMin): pairs of sub-blocks for vpdpwssd.
// A tile is, per unit, one record of
//   codes  [kUnit / 4][8 tokens][4] i8: the 8 broadcasts of one step are
//          adjacent, at constant offsets from one pointer;
//   da     [8] f32, sa [8] f32 (group-int's s);
//   init   [kSub][8] i32: -kZero * bsum, the accumulators' start, which
//          removes the zero point at no cost in the inner loop;
//   bs     [kSub / 2][8] i32, two i16 bsums each (kMin).
template <int kUnit_, int kSub_, bool kScale_, bool kMin_, bool kOffset_, int kZero_>
struct Shape {
  static constexpr int kUnit = kUnit_;
  static constexpr int kSub = kSub_;
  static constexpr int kSubLen = kUnit / kSub;
  static constexpr bool kScale = kScale_;
  static constexpr bool kMin = kMin_;
  static constexpr bool kOffset = kOffset_;
  static constexpr int kZero = kZero_;
  static_assert(kScale || kSub == 1);
  static_assert(!kMin || kSub % 2 == 0);

  static constexpr size_t kPanelD = size_t{kUnit} * kRows;
  static constexpr size_t kPanelD2 = kPanelD + size_t{4} * kRows;
  static constexpr size_t kPanelSc = kPanelD2 + size_t{4} * kRows;
  static constexpr size_t kPanelMn = kPanelSc + (kScale ? 4 * kRows * kSub : 0);
  static constexpr size_t kPanelRecord = kPanelMn + (kMin ? 2 * kRows * kSub : 0);

  static constexpr size_t kTileDa = size_t{kUnit} * kTokens;
  static constexpr size_t kTileSa = kTileDa + size_t{4} * kTokens;
  static constexpr size_t kTileInit = kTileSa + size_t{4} * kTokens;
  static constexpr size_t kTileBs = kTileInit + size_t{4} * kTokens * kSub;
  static constexpr size_t kTileRecord = kTileBs + (kMin ? 2 * kTokens * kSub : 0);
};

// One unit of one weight row, unpacked: unsigned codes and scales.
struct RowUnit {
  uint8_t codes[256];
  float d, d2;
  int32_t sc[kMaxSubBlocks];
  int16_t mn[kMaxSubBlocks];
};

template <class S>
size_t PanelBytes(int64_t cols) {
  return static_cast<size_t>(cols / S::kUnit) * S::kPanelRecord;
}
template <class S>
size_t TileBytes(int64_t cols) {
  return static_cast<size_t>(cols / S::kUnit) * S::kTileRecord;
}

// Unpacks every row into RowUnit form with the type's `unpack`, then
// interleaves 16 rows with gathers: one gather collects dword kg of the 16
// rows' codes.
template <class S, void (*kUnpack)(const uint8_t* row, int64_t u, RowUnit* out)>
void PackWeights(const uint8_t* w, size_t row_bytes, int nrows, int64_t cols, uint8_t* panel) {
  RowUnit rows[kRows];
  const __m512i index =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(sizeof(RowUnit))));
  const int64_t n_units = cols / S::kUnit;
  for (int64_t u = 0; u < n_units; ++u) {
    uint8_t* rec = panel + u * S::kPanelRecord;
    for (int r = 0; r < kRows; ++r) {
      if (r < nrows) {
        kUnpack(w + r * row_bytes, u, &rows[r]);
      } else {
        // A zero scale makes the padding rows' results 0 whatever the codes.
        std::memset(&rows[r], 0, sizeof(RowUnit));
      }
    }
    for (int kg = 0; kg < S::kUnit / 4; ++kg) {
      const __m512i v = _mm512_i32gather_epi32(index, rows[0].codes + ptrdiff_t{4} * kg, 1);
      _mm512_storeu_si512(rec + ptrdiff_t{64} * kg, v);
    }
    auto* d = reinterpret_cast<float*>(rec + S::kPanelD);
    auto* d2 = reinterpret_cast<float*>(rec + S::kPanelD2);
    for (int r = 0; r < kRows; ++r) {
      d[r] = rows[r].d;
      d2[r] = rows[r].d2;
    }
    if constexpr (S::kScale) {
      auto* sc = reinterpret_cast<int32_t*>(rec + S::kPanelSc);
      for (int s = 0; s < S::kSub; ++s) {
        for (int r = 0; r < kRows; ++r) sc[s * kRows + r] = rows[r].sc[s];
      }
    }
    if constexpr (S::kMin) {
      auto* mn = reinterpret_cast<int16_t*>(rec + S::kPanelMn);
      for (int p = 0; p < S::kSub / 2; ++p) {
        for (int r = 0; r < kRows; ++r) {
          mn[ptrdiff_t{2} * (p * kRows + r)] = rows[r].mn[ptrdiff_t{2} * p];
          mn[(p * kRows + r) * 2 + 1] = rows[r].mn[2 * p + 1];
        }
      }
    }
  }
}

// ---- Activations.

// Writes the codes of one token's unit into its lane of the tile record.
template <class S>
void PutActCodes(const int8_t* qa, int t, uint8_t* rec) {
  for (int kg = 0; kg < S::kUnit / 4; ++kg)
    std::memcpy(rec + ptrdiff_t{4} * (kg * kTokens + t), qa + ptrdiff_t{4} * kg, 4);
}

template <class S>
void PackActsQ8_0(const uint8_t* a, size_t a_stride, int nt, int64_t cols, uint8_t* tile) {
  static_assert(S::kUnit == kQK32 && S::kSub == 1);
  const int64_t n_units = cols / kQK32;
  std::memset(tile, 0, TileBytes<S>(cols));
  for (int t = 0; t < nt; ++t) {
    const uint8_t* row = a + t * a_stride;
    for (int64_t u = 0; u < n_units; ++u) {
      const uint8_t* blk = row + u * sizeof(BlockQ8_0);
      const auto* qa = reinterpret_cast<const int8_t*>(blk + 2);
      uint8_t* rec = tile + u * S::kTileRecord;
      PutActCodes<S>(qa, t, rec);
      int sum = 0;
      for (int i = 0; i < kQK32; ++i) sum += qa[i];
      reinterpret_cast<float*>(rec + S::kTileDa)[t] = Half(blk);
      reinterpret_cast<int32_t*>(rec + S::kTileInit)[t] = -S::kZero * sum;
    }
  }
}

template <class S>
void PackActsQ8_K(const uint8_t* a, size_t a_stride, int nt, int64_t cols, uint8_t* tile) {
  static_assert(S::kUnit == kQKK && (S::kSub == 16 || S::kSub == 8));
  const int64_t n_units = cols / kQKK;
  std::memset(tile, 0, TileBytes<S>(cols));
  for (int t = 0; t < nt; ++t) {
    const uint8_t* row = a + t * a_stride;
    for (int64_t u = 0; u < n_units; ++u) {
      BlockQ8_K blk;
      std::memcpy(&blk, row + u * sizeof(BlockQ8_K), sizeof(BlockQ8_K));
      uint8_t* rec = tile + u * S::kTileRecord;
      PutActCodes<S>(blk.qs, t, rec);
      reinterpret_cast<float*>(rec + S::kTileDa)[t] = blk.d;
      // Sums over sub-blocks of 32 stay within int16: |sum| <= 32 * 128.
      int16_t bsum[16];
      constexpr int kPer = 16 / S::kSub;
      for (int s = 0; s < S::kSub; ++s) {
        int v = 0;
        for (int i = 0; i < kPer; ++i) v += blk.bsums[s * kPer + i];
        bsum[s] = static_cast<int16_t>(v);
        reinterpret_cast<int32_t*>(rec + S::kTileInit)[s * kTokens + t] = -S::kZero * v;
      }
      if constexpr (S::kMin) {
        auto* bs = reinterpret_cast<int16_t*>(rec + S::kTileBs);
        for (int p = 0; p < S::kSub / 2; ++p) {
          bs[ptrdiff_t{2} * (p * kTokens + t)] = bsum[ptrdiff_t{2} * p];
          bs[(p * kTokens + t) * 2 + 1] = bsum[2 * p + 1];
        }
      }
    }
  }
}

template <class S>
void PackActsGroupInt(const uint8_t* a, size_t a_stride, int nt, int64_t cols, uint8_t* tile) {
  static_assert(S::kUnit == kGroupChunk && S::kSub == 1 && S::kZero == 0);
  const int64_t n_units = cols / kGroupChunk;
  std::memset(tile, 0, TileBytes<S>(cols));
  for (int t = 0; t < nt; ++t) {
    const uint8_t* row = a + t * a_stride;
    for (int64_t u = 0; u < n_units; ++u) {
      const uint8_t* blk = row + u * kGroupActBlockBytes;
      uint8_t* rec = tile + u * S::kTileRecord;
      PutActCodes<S>(reinterpret_cast<const int8_t*>(blk + 8), t, rec);
      reinterpret_cast<float*>(rec + S::kTileDa)[t] = F32At(blk);
      reinterpret_cast<float*>(rec + S::kTileSa)[t] = F32At(blk + 4);
    }
  }
}

// ---- The micro-kernel: 16 rows x 8 tokens.

template <class S>
void Kernel(const uint8_t* panel, const uint8_t* tile, int64_t cols, int nrows, int nt, float* y,
            size_t y_stride) {
  constexpr int kSteps = S::kSubLen / 4;  // vpdpbusd steps per sub-block
  const int64_t n_units = cols / S::kUnit;
  __m512 out[kTokens];
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) out[t] = _mm512_setzero_ps();
  for (int64_t u = 0; u < n_units; ++u) {
    const uint8_t* pw = panel + u * S::kPanelRecord;
    const uint8_t* pa = tile + u * S::kTileRecord;
    const auto* init = reinterpret_cast<const int32_t*>(pa + S::kTileInit);
    __m512i tot[kTokens];
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) tot[t] = _mm512_setzero_si512();
    for (int s = 0; s < S::kSub; ++s) {
      __m512i acc[kTokens];
#pragma GCC unroll 8
      for (int t = 0; t < kTokens; ++t) {
        acc[t] = S::kZero != 0 ? _mm512_set1_epi32(init[s * kTokens + t]) : _mm512_setzero_si512();
      }
#pragma GCC unroll 8
      for (int j = 0; j < kSteps; ++j) {
        const int step = s * kSteps + j;
        const __m512i w = _mm512_loadu_si512(pw + ptrdiff_t{64} * step);
        const auto* a4 = reinterpret_cast<const int32_t*>(pa + ptrdiff_t{4} * step * kTokens);
#pragma GCC unroll 8
        for (int t = 0; t < kTokens; ++t) {
          acc[t] = _mm512_dpbusd_epi32(acc[t], w, _mm512_set1_epi32(a4[t]));
        }
      }
      if constexpr (S::kScale) {
        const __m512i sc = _mm512_loadu_si512(pw + S::kPanelSc + 64 * s);
#pragma GCC unroll 8
        for (int t = 0; t < kTokens; ++t) {
          tot[t] = _mm512_add_epi32(tot[t], _mm512_mullo_epi32(acc[t], sc));
        }
      } else {
#pragma GCC unroll 8
        for (int t = 0; t < kTokens; ++t) tot[t] = acc[t];
      }
    }
    const __m512 d = _mm512_loadu_ps(pw + S::kPanelD);
    const auto* da = reinterpret_cast<const float*>(pa + S::kTileDa);
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) {
      const __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(da[t]));
      out[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[t]), scale, out[t]);
    }
    if constexpr (S::kMin) {
      const __m512 dmin = _mm512_loadu_ps(pw + S::kPanelD2);
      const auto* bs = reinterpret_cast<const int32_t*>(pa + S::kTileBs);
#pragma GCC unroll 8
      for (int t = 0; t < kTokens; ++t) {
        __m512i m = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int p = 0; p < S::kSub / 2; ++p) {
          m = _mm512_dpwssd_epi32(m, _mm512_loadu_si512(pw + S::kPanelMn + 64 * p),
                                  _mm512_set1_epi32(bs[p * kTokens + t]));
        }
        const __m512 scale = _mm512_mul_ps(dmin, _mm512_set1_ps(da[t]));
        out[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), scale, out[t]);
      }
    }
    if constexpr (S::kOffset) {
      const __m512 m = _mm512_loadu_ps(pw + S::kPanelD2);
      const auto* sa = reinterpret_cast<const float*>(pa + S::kTileSa);
#pragma GCC unroll 8
      for (int t = 0; t < kTokens; ++t) out[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(sa[t]), out[t]);
    }
  }
  const __mmask16 mask = static_cast<__mmask16>((1u << nrows) - 1);
  for (int t = 0; t < nt; ++t) _mm512_mask_storeu_ps(y + t * y_stride, mask, out[t]);
}

template <class S, void (*kPackWeights)(const uint8_t*, size_t, int, int64_t, uint8_t*),
          void (*kPackActs)(const uint8_t*, size_t, int, int64_t, uint8_t*)>
constexpr GemmOps MakeOps(int cols_multiple) {
  return {.cols_multiple = cols_multiple,
          .panel_bytes = PanelBytes<S>,
          .tile_bytes = TileBytes<S>,
          .pack_weights = kPackWeights,
          .pack_acts = kPackActs,
          .kernel = Kernel<S>};
}

// ---- The 32-element block types, with Q8_0 activations.

using Shape32 = Shape<kQK32, 1, false, false, false, 128>;
using Shape32Q4 = Shape<kQK32, 1, false, false, false, 8>;

// The panel of the 32-element block types straight from the weight rows:
// per unit, dword kg of the 16 rows' codes is one gather of the 16 blocks'
// bytes (the 4-bit types gather each byte pair of nibbles once, for the
// dwords kg and kg + 4), and the 16 fp16 scales one more. Going through
// RowUnit instead (byte stores, then gathers of what was just stored) cost
// more than the micro-kernel's work on the panel. Rows past nrows are masked
// off: zero codes and a zero scale.
enum class Codes32 { kQ8_0, kQ4_0, kIQ4_NL };

template <class S, Codes32 kCodes>
void PackWeights32(const uint8_t* w, size_t row_bytes, int nrows, int64_t cols, uint8_t* panel) {
  constexpr size_t kBlock = kCodes == Codes32::kQ8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  static_assert(sizeof(BlockQ4_0) == sizeof(BlockIQ4_NL));
  const auto mask = static_cast<__mmask16>((1u << nrows) - 1);
  const __m512i index =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(row_bytes)));
  const __m512i zero = _mm512_setzero_si512();
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i grid = _mm512_add_epi8(
      _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues))),
      _mm512_set1_epi8(static_cast<char>(128)));
  const int64_t n_units = cols / kQK32;
  for (int64_t u = 0; u < n_units; ++u) {
    const uint8_t* blk = w + u * kBlock;
    uint8_t* rec = panel + u * S::kPanelRecord;
    if constexpr (kCodes == Codes32::kQ8_0) {
      for (int kg = 0; kg < 8; ++kg) {
        const __m512i v =
            _mm512_mask_i32gather_epi32(zero, mask, index, blk + 2 + ptrdiff_t{4} * kg, 1);
        // u = q + 128: the sign bit flipped (padding rows' codes too; their
        // scale is 0).
        _mm512_storeu_si512(rec + ptrdiff_t{64} * kg,
                            _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80))));
      }
    } else {
      for (int kg = 0; kg < 4; ++kg) {
        const __m512i v =
            _mm512_mask_i32gather_epi32(zero, mask, index, blk + 2 + ptrdiff_t{4} * kg, 1);
        __m512i lo = _mm512_and_si512(v, low4);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        if constexpr (kCodes == Codes32::kIQ4_NL) {
          lo = _mm512_shuffle_epi8(grid, lo);
          hi = _mm512_shuffle_epi8(grid, hi);
        }
        _mm512_storeu_si512(rec + ptrdiff_t{64} * kg, lo);
        _mm512_storeu_si512(rec + ptrdiff_t{64} * (kg + 4), hi);
      }
    }
    // The fp16 scale is each block's first two bytes: the low half of the
    // gathered dword.
    const __m512i d = _mm512_mask_i32gather_epi32(zero, mask, index, blk, 1);
    _mm512_storeu_ps(rec + S::kPanelD, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d)));
    _mm512_storeu_ps(rec + S::kPanelD2, _mm512_setzero_ps());
  }
}

// ---- The k-quants, with Q8_K activations: one unit is a super-block.

using ShapeQ6_K = Shape<kQKK, 16, true, false, false, 32>;
using ShapeQ3_K = Shape<kQKK, 16, true, false, false, 4>;
using ShapeQ2_K = Shape<kQKK, 16, true, true, false, 0>;
using ShapeQ4_K = Shape<kQKK, 8, true, true, false, 0>;

// Q6_K: the 6-bit code, zero point 32; int8 sub-block scales.
void UnpackQ6_K(const uint8_t* row, int64_t u, RowUnit* out) {
  const uint8_t* blk = row + u * sizeof(BlockQ6_K);
  const uint8_t* ql = blk + offsetof(BlockQ6_K, ql);
  const uint8_t* qh = blk + offsetof(BlockQ6_K, qh);
  const uint8_t* scales = blk + offsetof(BlockQ6_K, scales);
  out->d = Half(blk + offsetof(BlockQ6_K, d));
  // Signed bytes: the two's-complement value of each scale byte.
  for (int s = 0; s < 16; ++s) out->sc[s] = static_cast<int>(scales[s]) - (scales[s] & 0x80) * 2;
  for (int h = 0; h < 2; ++h) {
    for (int q = 0; q < 4; ++q) {
      for (int l = 0; l < 32; ++l) {
        const int low4 = (ql[64 * h + 32 * (q & 1) + l] >> (4 * (q >> 1))) & 0xF;
        const int high2 = (qh[32 * h + l] >> (2 * q)) & 3;
        out->codes[128 * h + 32 * q + l] = static_cast<uint8_t>(low4 | (high2 << 4));
      }
    }
  }
}

// Q3_K: low2 | hbit << 2 = q + 4, zero point 4; signed 6-bit scales.
void UnpackQ3_K(const uint8_t* row, int64_t u, RowUnit* out) {
  const uint8_t* blk = row + u * sizeof(BlockQ3_K);
  const uint8_t* hmask = blk + offsetof(BlockQ3_K, hmask);
  const uint8_t* qs = blk + offsetof(BlockQ3_K, qs);
  const uint8_t* scales = blk + offsetof(BlockQ3_K, scales);
  out->d = Half(blk + offsetof(BlockQ3_K, d));
  for (int s = 0; s < 16; ++s) out->sc[s] = Q3KScale(scales, s);
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < 32; ++l) {
        const int low2 = (qs[32 * h + l] >> (2 * j)) & 3;
        const int hbit = (hmask[l] >> (4 * h + j)) & 1;
        out->codes[128 * h + 32 * j + l] = static_cast<uint8_t>(low2 | (hbit << 2));
      }
    }
  }
}

// Q2_K: the 2-bit code; 4-bit scales and mins.
void UnpackQ2_K(const uint8_t* row, int64_t u, RowUnit* out) {
  const uint8_t* blk = row + u * sizeof(BlockQ2_K);
  const uint8_t* qs = blk + offsetof(BlockQ2_K, qs);
  const uint8_t* scales = blk + offsetof(BlockQ2_K, scales);
  out->d = Half(blk + offsetof(BlockQ2_K, d));
  out->d2 = Half(blk + offsetof(BlockQ2_K, dmin));
  for (int s = 0; s < 16; ++s) {
    out->sc[s] = scales[s] & 0xF;
    out->mn[s] = static_cast<int16_t>(scales[s] >> 4);
  }
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < 32; ++l) {
        out->codes[128 * h + 32 * j + l] = (qs[32 * h + l] >> (2 * j)) & 3;
      }
    }
  }
}

// Q4_K and Q5_K: the 4- or 5-bit code; 6-bit scales and mins.
template <bool kHighBit>
void UnpackQ45_K(const uint8_t* row, int64_t u, RowUnit* out) {
  using Block = std::conditional_t<kHighBit, BlockQ5_K, BlockQ4_K>;
  const uint8_t* blk = row + u * sizeof(Block);
  const uint8_t* qs = blk + offsetof(Block, qs);
  const uint8_t* scales = blk + offsetof(Block, scales);
  out->d = Half(blk + offsetof(Block, d));
  out->d2 = Half(blk + offsetof(Block, dmin));
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, mn;
    K4ScaleMin(scales, s, &sc, &mn);
    out->sc[s] = sc;
    out->mn[s] = mn;
  }
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      out->codes[64 * c + l] = qs[32 * c + l] & 0xF;
      out->codes[64 * c + 32 + l] = qs[32 * c + l] >> 4;
    }
  }
  if constexpr (kHighBit) {
    const uint8_t* qh = blk + offsetof(BlockQ5_K, qh);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        out->codes[64 * c + l] |= static_cast<uint8_t>(((qh[l] >> (2 * c)) & 1) << 4);
        out->codes[64 * c + 32 + l] |= static_cast<uint8_t>(((qh[l] >> (2 * c + 1)) & 1) << 4);
      }
    }
  }
}

// ---- fqpack's group-int types, with int8-act activations: one unit is a
// 32-element chunk; the group's d and m repeat over its chunks.

using ShapeGroupInt = Shape<kGroupChunk, 1, false, false, true, 0>;

// The bit planes of one whole chunk (group_int.h) decoded with a few shifts
// and masks; UnpackChunk's portable loops would cost several times the
// micro-kernel's time per panel.
// 8 bytes of 2-bit codes: byte 8k + j of the result is bits 2k..2k+1 of byte j.
inline __m256i ChunkCrumbs(const uint8_t* p) {
  uint64_t bits;
  std::memcpy(&bits, p, 8);
  const __m256i v = _mm256_srlv_epi64(_mm256_set1_epi64x(static_cast<int64_t>(bits)),
                                      _mm256_set_epi64x(6, 4, 2, 0));
  return _mm256_and_si256(v, _mm256_set1_epi8(3));
}
// 16 bytes of nibbles: the low ones are elements 0..15, the high ones 16..31.
inline __m256i ChunkNibbles(const uint8_t* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(0x0F));
}
// 4 bytes of one bit per element: `value` where the bit is set.
inline __m256i ChunkBits(const uint8_t* p, char value) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  return _mm256_maskz_set1_epi8(bits, value);
}
template <int kBits>
inline __m256i DecodeChunk(const uint8_t* p) {
  if constexpr (kBits == 2) {
    return ChunkCrumbs(p);
  } else if constexpr (kBits == 3) {
    return _mm256_or_si256(ChunkCrumbs(p), ChunkBits(p + 8, 4));
  } else if constexpr (kBits == 4) {
    return ChunkNibbles(p);
  } else if constexpr (kBits == 5) {
    return _mm256_or_si256(ChunkNibbles(p), ChunkBits(p + 16, 16));
  } else if constexpr (kBits == 6) {
    // Crumbs are <= 3: shifting 16-bit lanes by 4 never carries across bytes.
    return _mm256_or_si256(ChunkNibbles(p), _mm256_slli_epi16(ChunkCrumbs(p + 16), 4));
  } else {
    static_assert(kBits == 8);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
}

template <int kBits, int kGroup>
void UnpackGroupInt(const uint8_t* row, int64_t u, RowUnit* out) {
  constexpr int kChunks = kGroup / kGroupChunk;
  // Every group before the row's last is whole, and the last one's chunks
  // are whole when cols is a multiple of 32 (cols_multiple).
  const uint8_t* group = row + (u / kChunks) * GroupBytes(kBits, kGroup);
  out->d = Half(group);
  out->d2 = Half(group + 2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out->codes),
                      DecodeChunk<kBits>(group + kGroupHeaderBytes + (u % kChunks) * 4 * kBits));
}

}  // namespace

template <int kBits, int kGroup>
const GemmOps GemmGroupInt<kBits, kGroup>::ops =
    MakeOps<ShapeGroupInt, PackWeights<ShapeGroupInt, UnpackGroupInt<kBits, kGroup>>,
            PackActsGroupInt<ShapeGroupInt>>(kGroupChunk);
#define FQ_GEMM_GROUP_INT_INSTANTIATE(B, G) template struct GemmGroupInt<B, G>;
FQ_GROUP_INT_FOR_EACH(FQ_GEMM_GROUP_INT_INSTANTIATE)
#undef FQ_GEMM_GROUP_INT_INSTANTIATE

const GemmOps kGemmQ6_K =
    MakeOps<ShapeQ6_K, PackWeights<ShapeQ6_K, UnpackQ6_K>, PackActsQ8_K<ShapeQ6_K>>(kQKK);
const GemmOps kGemmQ3_K =
    MakeOps<ShapeQ3_K, PackWeights<ShapeQ3_K, UnpackQ3_K>, PackActsQ8_K<ShapeQ3_K>>(kQKK);
const GemmOps kGemmQ2_K =
    MakeOps<ShapeQ2_K, PackWeights<ShapeQ2_K, UnpackQ2_K>, PackActsQ8_K<ShapeQ2_K>>(kQKK);
const GemmOps kGemmQ4_K =
    MakeOps<ShapeQ4_K, PackWeights<ShapeQ4_K, UnpackQ45_K<false>>, PackActsQ8_K<ShapeQ4_K>>(kQKK);
const GemmOps kGemmQ5_K =
    MakeOps<ShapeQ4_K, PackWeights<ShapeQ4_K, UnpackQ45_K<true>>, PackActsQ8_K<ShapeQ4_K>>(kQKK);

const GemmOps kGemmQ8_0 =
    MakeOps<Shape32, PackWeights32<Shape32, Codes32::kQ8_0>, PackActsQ8_0<Shape32>>(kQK32);
const GemmOps kGemmQ4_0 =
    MakeOps<Shape32Q4, PackWeights32<Shape32Q4, Codes32::kQ4_0>, PackActsQ8_0<Shape32Q4>>(kQK32);
const GemmOps kGemmIQ4_NL =
    MakeOps<Shape32, PackWeights32<Shape32, Codes32::kIQ4_NL>, PackActsQ8_0<Shape32>>(kQK32);

}  // namespace fqpack::runtime::quant
