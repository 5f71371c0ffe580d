// The functions behind the traits table (quant.h), one set per type. Callers
// outside runtime/quant go through the table; this header exists so that
// traits.cc can name the functions that live in several files.
//
// dequantize.cc: scalar reference dequantizers.
// quantize.cc:   reference weight quantizers and llama.cpp's activation
//                quantizers (quantize_avx2.cc: the same, vectorized).
// dot.cc:        portable dots.
// *_avx2.cc:     AVX2 + FMA + F16C dots; call them only when CpuHasAvx2().
//
// Thread-safety: all functions are reentrant.
#ifndef FQPACK_RUNTIME_QUANT_KERNELS_H_
#define FQPACK_RUNTIME_QUANT_KERNELS_H_

#include <bit>
#include <cstddef>
#include <cstdint>

namespace fqpack::runtime::quant {

#define FQ_QUANT_DEQUANTIZE(T) void DequantizeRow##T(const uint8_t* src, float* dst, int64_t n);
#define FQ_QUANT_QUANTIZE(T) void QuantizeRow##T(const float* src, uint8_t* dst, int64_t n);
#define FQ_QUANT_DOT(NAME)                                                                       \
  void NAME(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt, float* out); \
  void NAME##Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,        \
                  float* out);

FQ_QUANT_DEQUANTIZE(F32)
FQ_QUANT_DEQUANTIZE(F16)
FQ_QUANT_DEQUANTIZE(BF16)
FQ_QUANT_DEQUANTIZE(Q4_0)
FQ_QUANT_DEQUANTIZE(Q4_1)
FQ_QUANT_DEQUANTIZE(Q5_0)
FQ_QUANT_DEQUANTIZE(Q5_1)
FQ_QUANT_DEQUANTIZE(Q8_0)
FQ_QUANT_DEQUANTIZE(Q8_1)
FQ_QUANT_DEQUANTIZE(IQ4_NL)
FQ_QUANT_DEQUANTIZE(Q2_K)
FQ_QUANT_DEQUANTIZE(Q3_K)
FQ_QUANT_DEQUANTIZE(Q4_K)
FQ_QUANT_DEQUANTIZE(Q5_K)
FQ_QUANT_DEQUANTIZE(Q6_K)
FQ_QUANT_DEQUANTIZE(Q8_K)

FQ_QUANT_QUANTIZE(F32)
FQ_QUANT_QUANTIZE(F16)
FQ_QUANT_QUANTIZE(BF16)
FQ_QUANT_QUANTIZE(Q4_0)
FQ_QUANT_QUANTIZE(Q4_1)
FQ_QUANT_QUANTIZE(Q5_0)
FQ_QUANT_QUANTIZE(Q5_1)
FQ_QUANT_QUANTIZE(Q8_0)
FQ_QUANT_QUANTIZE(Q8_1)
FQ_QUANT_QUANTIZE(IQ4_NL)
FQ_QUANT_QUANTIZE(Q2_K)
FQ_QUANT_QUANTIZE(Q3_K)
FQ_QUANT_QUANTIZE(Q4_K)
FQ_QUANT_QUANTIZE(Q5_K)
FQ_QUANT_QUANTIZE(Q6_K)
FQ_QUANT_QUANTIZE(Q8_K)

// AVX2 activation quantizers: the same bytes as their scalar counterparts.
void QuantizeRowF16Avx2(const float* src, uint8_t* dst, int64_t n);
void QuantizeRowQ8_0Avx2(const float* src, uint8_t* dst, int64_t n);
void QuantizeRowQ8_1Avx2(const float* src, uint8_t* dst, int64_t n);
void QuantizeRowQ8_KAvx2(const float* src, uint8_t* dst, int64_t n);

FQ_QUANT_DOT(DotF32)
FQ_QUANT_DOT(DotF16)
FQ_QUANT_DOT(DotBF16)
FQ_QUANT_DOT(DotQ4_0Q8_0)
FQ_QUANT_DOT(DotQ4_1Q8_1)
FQ_QUANT_DOT(DotQ5_0Q8_0)
FQ_QUANT_DOT(DotQ5_1Q8_1)
FQ_QUANT_DOT(DotQ8_0Q8_0)
FQ_QUANT_DOT(DotIQ4_NLQ8_0)
FQ_QUANT_DOT(DotQ2_KQ8_K)
FQ_QUANT_DOT(DotQ3_KQ8_K)
FQ_QUANT_DOT(DotQ4_KQ8_K)
FQ_QUANT_DOT(DotQ5_KQ8_K)
FQ_QUANT_DOT(DotQ6_KQ8_K)

#undef FQ_QUANT_DEQUANTIZE
#undef FQ_QUANT_QUANTIZE
#undef FQ_QUANT_DOT

// fqpack's group-int types (group_int.cc, group_int_avx2.cc). The entry
// points take no type id, so every (bits, group) is its own instance.
// FQ_GROUP_INT_FOR_EACH(X) expands X(bits, group) for every valid pair.
#define FQ_GROUP_INT_FOR_GROUP(X, B) X(B, 32) X(B, 64) X(B, 128)
#define FQ_GROUP_INT_FOR_EACH(X)                                                          \
  FQ_GROUP_INT_FOR_GROUP(X, 2) FQ_GROUP_INT_FOR_GROUP(X, 3) FQ_GROUP_INT_FOR_GROUP(X, 4) \
  FQ_GROUP_INT_FOR_GROUP(X, 5) FQ_GROUP_INT_FOR_GROUP(X, 6) FQ_GROUP_INT_FOR_GROUP(X, 8)

template <int kBits, int kGroup>
void DequantizeRowGroupInt(const uint8_t* src, float* dst, int64_t n);
template <int kBits, int kGroup>
void QuantizeRowGroupInt(const float* src, uint8_t* dst, int64_t n);
template <int kBits, int kGroup>
void DotGroupInt(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out);
template <int kBits, int kGroup>
void DotGroupIntAvx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out);

#define FQ_GROUP_INT_DECLARE(B, G)                                                          \
  extern template void DequantizeRowGroupInt<B, G>(const uint8_t*, float*, int64_t);        \
  extern template void QuantizeRowGroupInt<B, G>(const float*, uint8_t*, int64_t);          \
  extern template void DotGroupInt<B, G>(int64_t, const uint8_t*, const uint8_t*, size_t,   \
                                         int, float*);                                      \
  extern template void DotGroupIntAvx2<B, G>(int64_t, const uint8_t*, const uint8_t*, size_t, \
                                             int, float*);
FQ_GROUP_INT_FOR_EACH(FQ_GROUP_INT_DECLARE)
#undef FQ_GROUP_INT_DECLARE

// The activation type of group-int dots (int8-act).
void QuantizeRowGroupIntAct(const float* src, uint8_t* dst, int64_t n);
void QuantizeRowGroupIntActAvx2(const float* src, uint8_t* dst, int64_t n);
void DequantizeRowGroupIntAct(const uint8_t* src, float* dst, int64_t n);

// Rounds to the nearest integer, ties to even, as the activation quantizers of
// llama.cpp do (its nearest_int and _mm256_round_ps). Valid for |v| < 2^22.
inline int NearestInt(float v) {
  // Adding 1.5 * 2^23 leaves the integer part in the low mantissa bits,
  // rounded by the FPU's default mode (to nearest, ties to even).
  const uint32_t bits = std::bit_cast<uint32_t>(v + 12582912.0f);
  return static_cast<int>(bits & 0x007fffff) - 0x00400000;
}

}  // namespace fqpack::runtime::quant

#endif  // FQPACK_RUNTIME_QUANT_KERNELS_H_
