// The decode matmul (one token) on the kAvx512 tier: the activation row,
// already converted to the weight type's vec_dot_type, is repacked once per
// matmul into a layout made for the type's per-row kernel, and every weight
// row of the matrix (thousands of them) then runs against that one packed
// row. Nothing stored changes: the packed row lives in the caller's buffer.
//
// The math of the 32-element block types (Q8_0, Q4_0, IQ4_NL against Q8_0
// activations): each weight code is read as an unsigned byte u = q + K
// (Q4_0's nibbles as they are, K = 8; Q8_0's codes with the sign bit
// flipped, K = 128; IQ4_NL's grid values plus 128), so vpdpbusd multiplies
// it with the signed activation code directly, and per block
//   sum_e q a = sum_e u a - K * sum_e a,
// K * sum_e a being a per-block integer of the packed activation. The block
// sums are exact int32 as in the per-row dots; each is scaled by d_w * d_a
// in fp32 exactly as there, and only the order of the float additions
// across blocks differs.
//
// The group-int types (group_int_avx512.cc) keep their unsigned codes and
// int8-act's per-block sums; their packed row puts the activation codes in
// the order the weight planes unpack to (int4 and int6: quads of chunks
// split by nibble; int2: octets of chunks split by crumb; the others element
// order) beside the blocks' da and s as float vectors. The k-quants
// (decode_kquants_avx512.cc) pack Q8_K rows in pairs of super-blocks, codes
// in the order their bits unpack to.
//
// Thread-safety: the functions are reentrant; the buffers are the caller's.
#ifndef FQPACK_RUNTIME_QUANT_DECODE_H_
#define FQPACK_RUNTIME_QUANT_DECODE_H_

#include <cstddef>
#include <cstdint>

#include "runtime/quant/kernels.h"

namespace fqpack::runtime::quant {

// How one weight type runs a decode matmul on the kAvx512 tier; a row of the
// traits table points to its DecodeOps (TypeTraits::decode, and
// TypeTraits::decode_gfni for the kAvx512Gfni tier; BestDecode picks). Every
// function must only be called when ActiveSimdLevel() is at least its tier.
// `cols` is a whole number of the weight type's blocks (any length for the
// group-int types, whose rows may end in a partial group).
struct DecodeOps {
  // Bytes of the packed activation of a `cols`-element row.
  size_t (*act_bytes)(int64_t cols) = nullptr;
  // Packs one activation row `act` (vec_dot_type, RowBytes(vec_dot_type,
  // cols) bytes) into `out`, act_bytes(cols) bytes at a 64-byte boundary.
  void (*pack_act)(int64_t cols, const uint8_t* act, uint8_t* out) = nullptr;
  // y[r] = row r . activation for r < nrows, row r at w + r * row_bytes;
  // `packed` is what pack_act wrote. Reads no byte past a row's end
  // (prefetches, which never fault, aside).
  void (*rows)(int64_t cols, const uint8_t* w, size_t row_bytes, int64_t nrows,
               const uint8_t* packed, float* y) = nullptr;
  // `rows` runs rows in groups of this many (Q4_K, Q5_K, Q6_K: 8), so a caller
  // splitting a matrix does best to start each run of rows at a multiple
  // of it. Any split gives the same bits.
  int64_t row_group = 1;
};

extern const DecodeOps kDecodeQ8_0;
extern const DecodeOps kDecodeQ4_0;
extern const DecodeOps kDecodeIQ4_NL;
// decode_kquants_avx512.cc
extern const DecodeOps kDecodeQ2_K;
extern const DecodeOps kDecodeQ3_K;
extern const DecodeOps kDecodeQ4_K;
extern const DecodeOps kDecodeQ5_K;
extern const DecodeOps kDecodeQ6_K;
// decode_kquants_gfni_avx512.cc: the same results, on the kAvx512Gfni tier
// only.
extern const DecodeOps kDecodeQ2_KGfni;
extern const DecodeOps kDecodeQ3_KGfni;

// The ops of group-int type int<kBits>-g<kGroup> (group_int_avx512.cc).
template <int kBits, int kGroup>
struct GroupIntDecode {
  static const DecodeOps ops;
};
// The same on the kAvx512Gfni tier (group_int_gfni_avx512.cc).
template <int kBits, int kGroup>
struct GroupIntDecodeGfni {
  static const DecodeOps ops;
};
#define FQ_DECODE_GROUP_INT_DECLARE(B, G)      \
  extern template struct GroupIntDecode<B, G>; \
  extern template struct GroupIntDecodeGfni<B, G>;
FQ_GROUP_INT_FOR_EACH(FQ_DECODE_GROUP_INT_DECLARE)
#undef FQ_DECODE_GROUP_INT_DECLARE

}  // namespace fqpack::runtime::quant

#endif  // FQPACK_RUNTIME_QUANT_DECODE_H_
