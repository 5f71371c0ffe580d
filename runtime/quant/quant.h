// The traits table of executable tensor types: for each type, the scalar
// reference dequantizer and quantizer of a row, the activation ("vec_dot")
// type its dot products take, and the dot kernels (portable and AVX2).
// MatMul and GetRows (runtime/matmul.h) look everything up here, so a new
// type (fqpack's group-int types) is plugged in by adding one entry to
// kTypeTraits in traits.cc; the driver never assumes a row is a whole number
// of fixed-size blocks, it sizes rows with RowBytes() (schema/quant_types.h).
//
// Thread-safety: the table is immutable; every function is reentrant.
// SetSimdEnabled is a test and benchmark switch, not for concurrent use with
// running kernels.
#ifndef FQPACK_RUNTIME_QUANT_QUANT_H_
#define FQPACK_RUNTIME_QUANT_QUANT_H_

#include <cstddef>
#include <cstdint>

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

struct TypeTraits {
  uint32_t type = 0;
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
  // AVX2 version of `quantize` giving the same bytes, or null (activation
  // types, where conversion speed matters).
  QuantizeRowFn quantize_avx2 = nullptr;
};

// The entry for `type`, or nullptr when the runtime cannot handle it.
const TypeTraits* FindTraits(uint32_t type);

// True when `type` can be a weight of MatMul: it has a dot kernel.
bool IsExecutable(uint32_t type);

// The dot to use on this CPU: dot_avx2 when present, the CPU has AVX2, FMA
// and F16C, and SIMD is enabled; dot otherwise.
DotFn BestDot(const TypeTraits& traits);

// The quantizer to use on this CPU, chosen as BestDot chooses.
QuantizeRowFn BestQuantize(const TypeTraits& traits);

// True when the CPU runs the *_avx2.cc kernels (AVX2, FMA and F16C).
bool CpuHasAvx2();

// Turns the SIMD kernels off (or back on) for the whole process, so tests and
// benchmarks can run the portable kernels on any machine. On by default.
void SetSimdEnabled(bool enabled);
bool SimdEnabled();

}  // namespace fqpack::runtime::quant

#endif  // FQPACK_RUNTIME_QUANT_QUANT_H_
