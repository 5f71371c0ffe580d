// The functions behind the traits table (quant.h), one set per type. Callers
// outside runtime/quant go through the table; this header exists so that
// traits.cc can name the functions that live in several files.
//
// dequantize.cc: scalar reference dequantizers.
// encode.cc:     block encoders: a block from the fields and codes
//                `fqpack quantize` fitted (the inverse of dequantize.cc).
// quantize.cc:   reference weight quantizers and llama.cpp's activation
//                quantizers (quantize_avx2.cc: the same, vectorized).
// dot.cc:        portable dots.
// *_avx2.cc:     AVX2 + FMA + F16C dots; call them only when CpuHasAvx2().
// *_avx512.cc:   AVX-512 (F, BW, VL, DQ) + VNNI dots; call them only when
//                ActiveSimdLevel() >= SimdLevel::kAvx512.
// *_gfni_avx512.cc: the same with GFNI; only at SimdLevel::kAvx512Gfni.
//
// Thread-safety: all functions are reentrant.
#ifndef FQPACK_RUNTIME_QUANT_KERNELS_H_
#define FQPACK_RUNTIME_QUANT_KERNELS_H_

#include <bit>
#include <cstddef>
#include <cstdint>

#include "runtime/quant/quant.h"

namespace fqpack::runtime::quant {

// The entry points of one GGUF weight type T whose dot takes activations in
// its vec_dot type: DequantizeRowT, QuantizeRowT, EncodeBlockT (a fitted
// block, for `fqpack quantize`), DOT and DOT##Avx2; each weight type below is
// one such line.
#define FQ_QUANT_CONVERT(T)                                         \
  void DequantizeRow##T(const uint8_t* src, float* dst, int64_t n); \
  void QuantizeRow##T(const float* src, uint8_t* dst, int64_t n);
#define FQ_QUANT_DOT(NAME)                                                                       \
  void NAME(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt, float* out); \
  void NAME##Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,        \
                  float* out);
#define FQ_QUANT_WEIGHT_TYPE(T, DOT)                                     \
  FQ_QUANT_CONVERT(T)                                                    \
  void EncodeBlock##T(const BlockFields& f, const int* q, uint8_t* out); \
  FQ_QUANT_DOT(DOT)

// Float types: no encoder (`fqpack quantize` converts them directly).
FQ_QUANT_CONVERT(F32)
FQ_QUANT_CONVERT(F16)
FQ_QUANT_CONVERT(BF16)
FQ_QUANT_DOT(DotF32)
FQ_QUANT_DOT(DotF16)
FQ_QUANT_DOT(DotBF16)

// Activation-only types: no dot.
FQ_QUANT_CONVERT(Q8_1)
FQ_QUANT_CONVERT(Q8_K)

FQ_QUANT_WEIGHT_TYPE(Q4_0, DotQ4_0Q8_0)
FQ_QUANT_WEIGHT_TYPE(Q4_1, DotQ4_1Q8_1)
FQ_QUANT_WEIGHT_TYPE(Q5_0, DotQ5_0Q8_0)
FQ_QUANT_WEIGHT_TYPE(Q5_1, DotQ5_1Q8_1)
FQ_QUANT_WEIGHT_TYPE(Q8_0, DotQ8_0Q8_0)
FQ_QUANT_WEIGHT_TYPE(IQ4_NL, DotIQ4_NLQ8_0)
FQ_QUANT_WEIGHT_TYPE(Q2_K, DotQ2_KQ8_K)
FQ_QUANT_WEIGHT_TYPE(Q3_K, DotQ3_KQ8_K)
FQ_QUANT_WEIGHT_TYPE(Q4_K, DotQ4_KQ8_K)
FQ_QUANT_WEIGHT_TYPE(Q5_K, DotQ5_KQ8_K)
FQ_QUANT_WEIGHT_TYPE(Q6_K, DotQ6_KQ8_K)

// AVX-512 + VNNI dots (dot_q32_avx512.cc, dot_kquants_avx512.cc).
#define FQ_QUANT_DOT_AVX512(NAME)                                                           \
  void NAME##Avx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt, \
                    float* out);
FQ_QUANT_DOT_AVX512(DotQ4_0Q8_0)
FQ_QUANT_DOT_AVX512(DotQ8_0Q8_0)
FQ_QUANT_DOT_AVX512(DotIQ4_NLQ8_0)
FQ_QUANT_DOT_AVX512(DotQ2_KQ8_K)
FQ_QUANT_DOT_AVX512(DotQ3_KQ8_K)
FQ_QUANT_DOT_AVX512(DotQ4_KQ8_K)
FQ_QUANT_DOT_AVX512(DotQ5_KQ8_K)
FQ_QUANT_DOT_AVX512(DotQ6_KQ8_K)
#undef FQ_QUANT_DOT_AVX512

// AVX2 activation quantizers: the same bytes as their scalar counterparts.
void QuantizeRowF16Avx2(const float* src, uint8_t* dst, int64_t n);
void QuantizeRowQ8_0Avx2(const float* src, uint8_t* dst, int64_t n);
void QuantizeRowQ8_1Avx2(const float* src, uint8_t* dst, int64_t n);
void QuantizeRowQ8_KAvx2(const float* src, uint8_t* dst, int64_t n);

#undef FQ_QUANT_CONVERT
#undef FQ_QUANT_DOT
#undef FQ_QUANT_WEIGHT_TYPE

// fqpack's group-int types (group_int.cc, group_int_avx2.cc,
// group_int_avx512.cc). The entry
// points take no type id, so every (bits, group) is its own instance.
// FQ_GROUP_INT_FOR_EACH(X) expands X(bits, group) for every valid pair.
#define FQ_GROUP_INT_FOR_GROUP(X, B) X(B, 32) X(B, 64) X(B, 128)
// clang-format off
#define FQ_GROUP_INT_FOR_EACH(X) \
  FQ_GROUP_INT_FOR_GROUP(X, 2)   \
  FQ_GROUP_INT_FOR_GROUP(X, 3)   \
  FQ_GROUP_INT_FOR_GROUP(X, 4)   \
  FQ_GROUP_INT_FOR_GROUP(X, 5)   \
  FQ_GROUP_INT_FOR_GROUP(X, 6)   \
  FQ_GROUP_INT_FOR_GROUP(X, 8)
// clang-format on

template <int kBits, int kGroup>
void DequantizeRowGroupInt(const uint8_t* src, float* dst, int64_t n);
template <int kBits, int kGroup>
void QuantizeRowGroupInt(const float* src, uint8_t* dst, int64_t n);
template <int kBits>
void EncodeBlockGroupInt(const BlockFields& f, const int* q, uint8_t* out);
template <int kBits, int kGroup>
void DotGroupInt(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out);
template <int kBits, int kGroup>
void DotGroupIntAvx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                     float* out);
template <int kBits, int kGroup>
void DotGroupIntAvx512(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                       float* out);

#define FQ_GROUP_INT_DECLARE(B, G)                                                                 \
  extern template void DequantizeRowGroupInt<B, G>(const uint8_t*, float*, int64_t);               \
  extern template void QuantizeRowGroupInt<B, G>(const float*, uint8_t*, int64_t);                 \
  extern template void DotGroupInt<B, G>(int64_t, const uint8_t*, const uint8_t*, size_t, int,     \
                                         float*);                                                  \
  extern template void DotGroupIntAvx2<B, G>(int64_t, const uint8_t*, const uint8_t*, size_t, int, \
                                             float*);                                              \
  extern template void DotGroupIntAvx512<B, G>(int64_t, const uint8_t*, const uint8_t*, size_t,    \
                                               int, float*);
FQ_GROUP_INT_FOR_EACH(FQ_GROUP_INT_DECLARE)
#undef FQ_GROUP_INT_DECLARE
extern template void EncodeBlockGroupInt<2>(const BlockFields&, const int*, uint8_t*);
extern template void EncodeBlockGroupInt<3>(const BlockFields&, const int*, uint8_t*);
extern template void EncodeBlockGroupInt<4>(const BlockFields&, const int*, uint8_t*);
extern template void EncodeBlockGroupInt<5>(const BlockFields&, const int*, uint8_t*);
extern template void EncodeBlockGroupInt<6>(const BlockFields&, const int*, uint8_t*);
extern template void EncodeBlockGroupInt<8>(const BlockFields&, const int*, uint8_t*);

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
