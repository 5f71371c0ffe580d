// The inner loops of the forward pass outside the matmuls (attention, KV-cache
// conversions, SwiGLU, GeGLU), in a portable version, an AVX2 + FMA + F16C one
// (llama_kernels_avx2.cc) and, for the attention of a group of query heads,
// an AVX-512 one (llama_kernels_avx512.cc); the SIMD ones are entered only
// after a CPU check. runtime/llama.cc is the only user; the functions are
// here so the SIMD files can be compiled with their own flags.
//
// Thread-safety: every function is reentrant.
#ifndef FQPACK_RUNTIME_LLAMA_KERNELS_H_
#define FQPACK_RUNTIME_LLAMA_KERNELS_H_

#include <cstdint>

namespace fqpack::runtime::llama_kernels {

// One query row against positions [first, len) of one KV head, read straight
// from the F16 cache:
//   s[j] = scale * (q . k_j), p = softmax(s), out = sum_j p[j] v_j.
// Positions before `first` (a sliding window's start) take no part. With
// softcap > 0 the scores are capped first, s = softcap * tanh(s / softcap)
// (gemma2-style attention logit softcapping).
// K is transposed: kt[d * kt_stride + j] is dimension d of position j, and
// every row can be read in whole blocks of 8 past len (kt_stride is a
// multiple of 8; what lies past len is ignored). V is row-major:
// v[j * v_stride + d]. The softmax subtracts the maximum, takes e^x with a
// vector exponential (within 3 ulp of e^x), sums in double and scales by the
// float reciprocal of the sum. `s` is scratch of len rounded up to 8 floats.
using AttendFn = void (*)(const float* q, const uint16_t* kt, int64_t kt_stride, const uint16_t* v,
                          int64_t v_stride, int64_t hd, int64_t first, int64_t len, float scale,
                          float softcap, float* s, float* out);

// `attend` for the nq query rows q + i * hd (i < nq) that share one KV head,
// each result at out + i * hd exactly as `attend` gives it; `s` is scratch
// of nq times len rounded up to 8 floats. Grouped-query attention has 2 to 8
// query heads per KV head: converting each F16 K and V block once for all of
// them is what a group kernel saves.
using AttendGroupFn = void (*)(const float* q, int64_t nq, const uint16_t* kt, int64_t kt_stride,
                               const uint16_t* v, int64_t v_stride, int64_t hd, int64_t first,
                               int64_t len, float scale, float softcap, float* s, float* out);

// The AttendGroupFn that runs kAttend on each query row in turn.
template <AttendFn kAttend>
void AttendEachHead(const float* q, int64_t nq, const uint16_t* kt, int64_t kt_stride,
                    const uint16_t* v, int64_t v_stride, int64_t hd, int64_t first, int64_t len,
                    float scale, float softcap, float* s, float* out) {
  for (int64_t i = 0; i < nq; ++i) {
    kAttend(q + i * hd, kt, kt_stride, v, v_stride, hd, first, len, scale, softcap, s,
            out + i * hd);
  }
}

// F32 -> F16 bits, rounding to nearest even (IEEE binary16).
using ToHalfFn = void (*)(const float* src, uint16_t* dst, int64_t n);

// x[i] = the F16 value nearest x[i], as a float.
using RoundToHalfFn = void (*)(float* x, int64_t n);

// gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x) (the AVX2
// version with the vector exponential, as ggml's SiLU has its own).
using SwiGluFn = void (*)(float* gate, const float* up, int64_t n);

// gate[i] = gelu(gate[i]) * up[i] as ggml's CPU backend computes it: gelu
// with the tanh approximation, 0.5x(1 + tanh(sqrt(2/pi) x (1 + 0.044715x^2))),
// looked up in a table of its F16-rounded values at the F16-rounded x;
// x <= -10 gives 0 and x >= 10 gives x. One version: it is a table lookup.
void GeGlu(float* gate, const float* up, int64_t n);

struct Kernels {
  AttendFn attend;
  AttendGroupFn attend_group;
  ToHalfFn to_half;
  RoundToHalfFn round_to_half;
  SwiGluFn swiglu;
};

// The plain C++ kernels.
const Kernels& Portable();
// The widest kernels the active SIMD tier allows (runtime/quant/quant.h,
// ActiveSimdLevel): AVX-512's, AVX2's or the portable ones.
const Kernels& Best();

// The AVX2 kernels (llama_kernels_avx2.cc). Only call after a CPU check.
const Kernels& Avx2();
// The AVX2 kernels with the AVX-512 group attention. Only call after a CPU
// check for the kAvx512 tier.
const Kernels& Avx512();

// The softmax step of the AVX2 `attend`, in place over the raw scores s[j]
// (q . k_j) of positions [first, len): scaled, capped, exponentiated and
// normalised, the lanes of [first & ~7, len rounded up to 8) outside
// [first, len) left 0. Shared by the AVX2 and AVX-512 kernels so that both
// give the same bits. Only call after a CPU check for AVX2.
void SoftmaxAvx2(float* s, int64_t first, int64_t len, float scale, float softcap);
// The AVX-512 group attention (llama_kernels_avx512.cc). Only call after a
// CPU check for the kAvx512 tier.
void AttendGroupAvx512(const float* q, int64_t nq, const uint16_t* kt, int64_t kt_stride,
                       const uint16_t* v, int64_t v_stride, int64_t hd, int64_t first, int64_t len,
                       float scale, float softcap, float* s, float* out);

}  // namespace fqpack::runtime::llama_kernels

#endif  // FQPACK_RUNTIME_LLAMA_KERNELS_H_
