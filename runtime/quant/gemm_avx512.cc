// The kAvx512 GEMM of the batched matmul (gemm.h has the math). Compiled with
// AVX-512 F/BW/VL/DQ + VNNI: everything here is entered only after
// ActiveSimdLevel() >= kAvx512. The file calls no inline library functions
// (std::min, Fp16ToF32, ...): an out-of-line copy compiled here could be
// picked by the linker for the other files and run on a CPU without AVX-512.
#include <immintrin.h>

#include <cstring>

#include "runtime/quant/blocks.h"
#include "runtime/quant/gemm.h"
#include "runtime/quant/group_int.h"
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
  static constexpr size_t kPanelD2 = kPanelD + 4 * kRows;
  static constexpr size_t kPanelSc = kPanelD2 + 4 * kRows;
  static constexpr size_t kPanelMn = kPanelSc + (kScale ? 4 * kRows * kSub : 0);
  static constexpr size_t kPanelRecord = kPanelMn + (kMin ? 2 * kRows * kSub : 0);

  static constexpr size_t kTileDa = size_t{kUnit} * kTokens;
  static constexpr size_t kTileSa = kTileDa + 4 * kTokens;
  static constexpr size_t kTileInit = kTileSa + 4 * kTokens;
  static constexpr size_t kTileBs = kTileInit + 4 * kTokens * kSub;
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
      const __m512i v = _mm512_i32gather_epi32(index, rows[0].codes + 4 * kg, 1);
      _mm512_storeu_si512(rec + 64 * kg, v);
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
          mn[(p * kRows + r) * 2] = rows[r].mn[2 * p];
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
    std::memcpy(rec + (kg * kTokens + t) * 4, qa + 4 * kg, 4);
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
          bs[(p * kTokens + t) * 2] = bsum[2 * p];
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
        const __m512i w = _mm512_loadu_si512(pw + 64 * step);
        const auto* a4 = reinterpret_cast<const int32_t*>(pa + step * kTokens * 4);
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

template <class S, void (*kUnpack)(const uint8_t*, int64_t, RowUnit*),
          void (*kPackActs)(const uint8_t*, size_t, int, int64_t, uint8_t*)>
constexpr GemmOps MakeOps(int cols_multiple) {
  return {.cols_multiple = cols_multiple,
          .panel_bytes = PanelBytes<S>,
          .tile_bytes = TileBytes<S>,
          .pack_weights = PackWeights<S, kUnpack>,
          .pack_acts = kPackActs,
          .kernel = Kernel<S>};
}

// ---- The 32-element block types, with Q8_0 activations.

using Shape32 = Shape<kQK32, 1, false, false, false, 128>;
using Shape32Q4 = Shape<kQK32, 1, false, false, false, 8>;

// Q8_0: u = q + 128 (the sign bit flipped), zero point 128.
void UnpackQ8_0(const uint8_t* row, int64_t u, RowUnit* out) {
  const uint8_t* blk = row + u * sizeof(BlockQ8_0);
  out->d = Half(blk);
  for (int i = 0; i < kQK32; ++i) out->codes[i] = blk[2 + i] ^ 0x80;
}

// Q4_0: the nibbles themselves, zero point 8.
void UnpackQ4_0(const uint8_t* row, int64_t u, RowUnit* out) {
  const uint8_t* blk = row + u * sizeof(BlockQ4_0);
  out->d = Half(blk);
  for (int j = 0; j < kQK32 / 2; ++j) {
    out->codes[j] = blk[2 + j] & 0xF;
    out->codes[j + 16] = blk[2 + j] >> 4;
  }
}

// IQ4_NL: the grid value + 128, zero point 128.
void UnpackIQ4_NL(const uint8_t* row, int64_t u, RowUnit* out) {
  const uint8_t* blk = row + u * sizeof(BlockIQ4_NL);
  out->d = Half(blk);
  for (int j = 0; j < kQK32 / 2; ++j) {
    out->codes[j] = static_cast<uint8_t>(kIq4nlValues[blk[2 + j] & 0xF] + 128);
    out->codes[j + 16] = static_cast<uint8_t>(kIq4nlValues[blk[2 + j] >> 4] + 128);
  }
}

}  // namespace

const GemmOps kGemmQ8_0 = MakeOps<Shape32, UnpackQ8_0, PackActsQ8_0<Shape32>>(kQK32);
const GemmOps kGemmQ4_0 = MakeOps<Shape32Q4, UnpackQ4_0, PackActsQ8_0<Shape32Q4>>(kQK32);
const GemmOps kGemmIQ4_NL = MakeOps<Shape32, UnpackIQ4_NL, PackActsQ8_0<Shape32>>(kQK32);

}  // namespace fqpack::runtime::quant
