// The quant type table: one row per tensor type the runtime handles, and the
// only per-type list of the runtime and of `fqpack quantize`. A row holds
// - the layout facts, taken from schema's row (schema/quant_types.h: id,
//   name, block elements and bytes) and checked at compile time against the
//   block struct (runtime/quant/blocks.h), plus bits per weight and whether
//   a GGUF file can hold the type;
// - the scalar reference dequantizer and quantizer of a row, the activation
//   ("vec_dot") type its dot products take, the dot kernels (portable,
//   AVX2, AVX-512) and the kAvx512 tier's GEMM and decode ops;
// - the write side's facts: the grid `fqpack quantize` fits a block to
//   (CodecShape, read by quantize/codec.h), the encoder that packs a fitted
//   block into the struct, and the type a row falls back to when it is not
//   a whole number of blocks.
// MatMul and GetRows (runtime/matmul.h), the codecs and the quantize pipeline
// look everything up here, so a new type is a block struct, one row in
// kTypeTraits (traits.cc), its kernels and its byte table in
// schema/quant_types.md. The driver never assumes a row is a whole number of
// fixed-size blocks; it sizes rows with RowBytes() (schema/quant_types.h).
//
// Thread-safety: the table is immutable; every function is reentrant.
// SetSimdCap and SetSimdEnabled are test and benchmark switches, not for
// concurrent use with running kernels.
#ifndef FQPACK_RUNTIME_QUANT_QUANT_H_
#define FQPACK_RUNTIME_QUANT_QUANT_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "schema/quant_types.h"

namespace fqpack::runtime::quant {

// Converts the `n` elements of one row in its stored type to float.
using DequantizeRowFn = void (*)(const uint8_t* src, float* dst, int64_t n);

// Converts `n` floats into one row of the type (RowBytes(type, n) bytes).
using QuantizeRowFn = void (*)(const float* src, uint8_t* dst, int64_t n);

// The most activation rows one dot call takes. A call reads its weight row
// once for all of them, which is what makes the batched path compute-bound
// instead of weight-load-bound.
constexpr int kMaxDotTokens = 4;

// Dot products of one weight row `w` (n elements, stored type) with `nt`
// activation rows (already in the type's vec_dot_type) at a + t * a_stride:
// out[t] = sum_k W[k] * A_t[k] for t < nt, 1 <= nt <= kMaxDotTokens.
using DotFn = void (*)(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out);

// The most sub-blocks (sub-block scales) of one block: Q2_K, Q3_K, Q6_K.
constexpr int kMaxSubBlocks = 16;

// The stored fields of one block as `fqpack quantize` chose them: what an
// encoder needs besides the codes.
struct BlockFields {
  int n = 0;       // elements in the block (less than block_elems only for a
                   // group-int row's last group)
  uint16_t d = 0;  // fp16 bits of the block scale
  uint16_t m = 0;  // fp16 bits of dmin (k-quants) or of the offset (Q4_1, Q5_1, group-int)
  int sc[kMaxSubBlocks] = {};  // integer sub-block scales (k-quants)
  int mn[kMaxSubBlocks] = {};  // integer sub-block mins (Q2_K, Q4_K, Q5_K)
};

// Writes one block from its fields and codes q[0..f.n), each in the row's
// [codec.qmin, codec.qmax] (an index into codec.levels for a level grid).
using EncodeBlockFn = void (*)(const BlockFields& f, const int* q, uint8_t* out);

// The grid `fqpack quantize` fits a block of the type to (quantize/codec.h
// has the searches): element e's value is
//   scale[s] * level(q) + offset[s],  s = e / sub_len,  q in [qmin, qmax].
struct CodecShape {
  enum class Kind : uint8_t {
    kNone,          // fqpack cannot quantize to the type
    kAffine,        // one fp16 scale d and offset m: x = d q + m (Q4_1, Q5_1, group-int)
    kSymmetric,     // one fp16 scale: x = d q (Q4_0, Q5_0, Q8_0)
    kLevels,        // one fp16 scale on a non-uniform grid: x = d levels[q] (IQ4_NL)
    kSubAffine,     // k-quant: x = (d sc) q - (dmin mn), sc and mn in [0, smax]
    kSubSymmetric,  // k-quant: x = (d sc) q, sc in [smin, smax]
  };
  Kind kind = Kind::kNone;
  int sub_len = 0;  // elements per sub-block (k-quants; one-scale blocks use the block)
  int qmin = 0;
  int qmax = 0;
  int smin = 0;  // integer sub-block scale range (k-quants)
  int smax = 0;
  const int8_t* levels = nullptr;  // kLevels: qmax - qmin + 1 ascending values
};

struct GemmOps;    // runtime/quant/gemm.h
struct DecodeOps;  // runtime/quant/decode.h

struct TypeTraits {
  uint32_t type = 0;
  // Layout facts. For a GGUF type, schema's row (name as ggml spells it,
  // block elements and bytes); for a group-int type its name ("int4-g64"),
  // the group size and the bytes of a whole group.
  const char* name = "";
  uint32_t block_elems = 0;
  uint32_t block_bytes = 0;
  double bits_per_weight = 0;  // of whole blocks: 8 * block_bytes / block_elems
  // True when a GGUF file can hold the type (a ggml type); fqpack's
  // group-int types are never written into one.
  bool gguf = false;
  // The type activations are converted to before a dot (llama.cpp's
  // vec_dot_type; see schema/quant_types.md, "Activations").
  uint32_t vec_dot_type = 0;
  // Scalar reference dequantizer; plain code that the kernels are tested
  // against. Never null.
  DequantizeRowFn dequantize = nullptr;
  // For a weight type: a simple reference quantizer producing valid rows with
  // sensible error (for tests and benchmarks). For an activation type: the
  // quantizer llama.cpp's CPU backend applies to activations, bit for bit.
  QuantizeRowFn quantize = nullptr;
  // Portable dot; null for types that are only ever activations.
  DotFn dot = nullptr;
  // AVX2 + FMA + F16C dot, or null. Only called after a CPU check.
  DotFn dot_avx2 = nullptr;
  // AVX-512 (F, BW, VL, DQ) + VNNI dot, or null: the widest tier; only
  // called after a CPU check.
  DotFn dot_avx512 = nullptr;
  // AVX2 version of `quantize` giving the same bytes, or null (activation
  // types, where conversion speed matters).
  QuantizeRowFn quantize_avx2 = nullptr;
  // The write side: what `fqpack quantize` fits (kind kNone: it cannot make
  // the type) and the encoder of a fitted block (null exactly when kNone).
  CodecShape codec = {};
  EncodeBlockFn encode = nullptr;
  // The type `fqpack quantize` takes instead when a row is not a whole
  // number of blocks: llama.cpp's fallback (Q4_K -> Q5_0 ...). F16 unless
  // said; F16 too when the fallback does not fit either.
  uint32_t fallback = ToId(QType::kF16);
  // The GGUF type `fqpack quantize --embed-bits B` gives a GGUF ladder's
  // embedding and output matrix has embed_bits B; 0 for the others.
  int embed_bits = 0;
  // The batched matmul as a GEMM on the kAvx512 tier (gemm.h), or null:
  // MatMul then runs the per-row dots for n_tokens > 1 too.
  const GemmOps* gemm = nullptr;
  // The decode matmul (one token) on the kAvx512 tier (decode.h): the
  // activation packed once per matmul for a per-row kernel; or null, and
  // MatMul runs the per-row dots.
  const DecodeOps* decode = nullptr;
  // The same on the kAvx512Gfni tier, where it is faster; or null, and
  // that tier uses `decode`.
  const DecodeOps* decode_gfni = nullptr;
};

// Every row of the table, in table order.
std::span<const TypeTraits> AllTraits();

// The entry for `type`, or nullptr when the runtime cannot handle it.
const TypeTraits* FindTraits(uint32_t type);

// True when `type` can be a weight of MatMul: it has a dot kernel.
bool IsExecutable(uint32_t type);

// The kernel tiers, narrowest first. kAvx2 needs AVX2, FMA and F16C;
// kAvx512 needs those and AVX-512 F, BW, VL, DQ and VNNI; kAvx512Gfni needs
// GFNI as well (Ice Lake, Zen 4 and later), for decode kernels that unpack
// bit fields with vgf2p8affineqb. Whatever the tier, the kernels of the
// tiers from kAvx512 up give the same results bit for bit.
enum class SimdLevel : uint8_t { kPortable, kAvx2, kAvx512, kAvx512Gfni };
constexpr SimdLevel kWidestSimd = SimdLevel::kAvx512Gfni;

// The widest tier this CPU runs.
SimdLevel CpuSimdLevel();

// The tier kernels are chosen at: the CPU's, lowered to the cap.
SimdLevel ActiveSimdLevel();

// Caps the tier for the whole process (kWidestSimd, no cap, by default), so
// tests compare tiers and benchmarks measure the narrower tier as a baseline
// in the same run.
void SetSimdCap(SimdLevel cap);

// The dot to use: the widest of dot_avx512, dot_avx2 and dot that is
// present and at most ActiveSimdLevel().
DotFn BestDot(const TypeTraits& traits);

// The quantizer to use on this CPU, chosen as BestDot chooses.
QuantizeRowFn BestQuantize(const TypeTraits& traits);

// The decode ops to use (decode_gfni or decode, the widest present and at
// most ActiveSimdLevel()), or null below kAvx512.
const DecodeOps* BestDecode(const TypeTraits& traits);

// True when the CPU runs the *_avx2.cc kernels (AVX2, FMA and F16C).
bool CpuHasAvx2();

// SetSimdCap(kPortable) or SetSimdCap(kWidestSimd): the portable kernels only, or
// every tier the CPU has. SimdEnabled: the cap is above kPortable.
void SetSimdEnabled(bool enabled);
bool SimdEnabled();

}  // namespace fqpack::runtime::quant

#endif  // FQPACK_RUNTIME_QUANT_QUANT_H_
