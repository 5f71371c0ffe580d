// The batched matmul (prompt processing, perplexity) as a cache-blocked GEMM
// on the kAvx512 tier: weights are repacked on the fly, 16 rows at a time,
// into a panel laid out for vpdpbusd, activations (already converted to the
// weight type's vec_dot_type, exactly as for the dots) once per call into
// token tiles, and one micro-kernel runs a panel against a tile. Nothing
// stored or held in memory changes: a panel lives in a per-thread buffer.
//
// The math, for every type: a weight row is cut into units (one activation
// block: 32 elements for Q8_0 and int8-act activations, 256 for Q8_K) and a
// unit into S sub-blocks of L = unit / S elements. Within a sub-block each
// weight is an unsigned byte code u with a zero point z of the type,
//   W[e] = d * sc[s] * (u[e] - z) - dmin * mn[s]     (+ m for group-int),
// so that
//   sum_e W A = da * (d * sum_s sc[s] * (sum_e u qa - z * bsum[s])
//                    - dmin * sum_s mn[s] * bsum[s])  (+ m * s_a),
// bsum[s] being the sum of the activation codes over the sub-block. The
// integer part is exact: it is what the reference dots compute, summed in
// int32 over a unit as llama.cpp's k-quant dots do, then scaled once in
// float. Only the order of float additions across units differs from the
// per-row dots.
//
// Thread-safety: the functions are reentrant; the buffers are the caller's.
#ifndef FQPACK_RUNTIME_QUANT_GEMM_H_
#define FQPACK_RUNTIME_QUANT_GEMM_H_

#include <cstddef>
#include <cstdint>

#include "runtime/quant/kernels.h"

namespace fqpack::runtime::quant {

// Rows of a weight panel: one zmm of int32 lanes, one lane per row.
constexpr int kGemmRows = 16;
// Tokens of an activation tile: the micro-kernel keeps an int32 and a float
// accumulator per token (and for the sub-block-scaled types a second int32
// one) in the 32 zmm registers, so 8 tokens leave room for the weight vector,
// the scales and the broadcasts.
constexpr int kGemmTokens = 8;
// The fewest tokens MatMul runs as a GEMM: packing a panel costs about as
// much as running one tile over it, so it pays from two tiles on.
constexpr int kGemmMinTokens = 2 * kGemmTokens;

// How one weight type runs as a GEMM; a row of the traits table points to
// its GemmOps (TypeTraits::gemm). Every function must only be called when
// ActiveSimdLevel() >= kAvx512.
struct GemmOps {
  // cols must be a multiple of this for the GEMM to apply (the activation
  // block; group-int also needs whole 32-element chunks); other shapes take
  // the per-row dots.
  int cols_multiple = 0;
  // Bytes of one packed panel of kGemmRows rows, and of one packed tile of
  // kGemmTokens activation rows, for `cols` elements.
  size_t (*panel_bytes)(int64_t cols) = nullptr;
  size_t (*tile_bytes)(int64_t cols) = nullptr;
  // Packs rows w, w + row_bytes, ... (nrows <= kGemmRows; the missing rows
  // become zeros) into `panel`.
  void (*pack_weights)(const uint8_t* w, size_t row_bytes, int nrows, int64_t cols,
                       uint8_t* panel) = nullptr;
  // Packs nt <= kGemmTokens activation rows (vec_dot_type, a + t * a_stride)
  // into `tile`; the missing tokens become zeros.
  void (*pack_acts)(const uint8_t* a, size_t a_stride, int nt, int64_t cols,
                    uint8_t* tile) = nullptr;
  // y[t * y_stride + r] = row r of the panel . token t of the tile, for
  // r < nrows and t < nt.
  void (*kernel)(const uint8_t* panel, const uint8_t* tile, int64_t cols, int nrows, int nt,
                 float* y, size_t y_stride) = nullptr;
};

extern const GemmOps kGemmQ8_0;
extern const GemmOps kGemmQ4_0;
extern const GemmOps kGemmIQ4_NL;
extern const GemmOps kGemmQ2_K;
extern const GemmOps kGemmQ3_K;
extern const GemmOps kGemmQ4_K;
extern const GemmOps kGemmQ5_K;
extern const GemmOps kGemmQ6_K;

// The ops of group-int type int<kBits>-g<kGroup>.
template <int kBits, int kGroup>
struct GemmGroupInt {
  static const GemmOps ops;
};
#define FQ_GEMM_GROUP_INT_DECLARE(B, G) extern template struct GemmGroupInt<B, G>;
FQ_GROUP_INT_FOR_EACH(FQ_GEMM_GROUP_INT_DECLARE)
#undef FQ_GEMM_GROUP_INT_DECLARE

}  // namespace fqpack::runtime::quant

#endif  // FQPACK_RUNTIME_QUANT_GEMM_H_
