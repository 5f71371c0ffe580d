// AVX2 dots of the float types: F32 x F32, F16 x F16 and BF16 x BF16 (the
// activations already rounded to the weight's type, as llama.cpp does). Both
// operands are widened to fp32 and multiplied with FMA in fp32; the tail of a
// row that is not a multiple of 16 is done in scalar fp32.
#include "runtime/quant/avx2_util.h"
#include "runtime/quant/kernels.h"

namespace fqpack::runtime::quant {
namespace {

using avx2::DispatchTokens;
using avx2::HsumPs;

inline __m256 LoadF32(const uint8_t* p, int64_t k) {
  return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + k);
}
inline __m256 LoadF16(const uint8_t* p, int64_t k) {
  return _mm256_cvtph_ps(avx2::Load128(p + 2 * k));
}
inline __m256 LoadBF16(const uint8_t* p, int64_t k) {
  const __m256i wide = _mm256_cvtepu16_epi32(avx2::Load128(p + 2 * k));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

inline float ScalarF32(const uint8_t* p, int64_t k) { return reinterpret_cast<const float*>(p)[k]; }
inline float ScalarF16(const uint8_t* p, int64_t k) {
  uint16_t h;
  std::memcpy(&h, p + 2 * k, 2);
  return avx2::Half(h);
}
inline float ScalarBF16(const uint8_t* p, int64_t k) {
  uint16_t h;
  std::memcpy(&h, p + 2 * k, 2);
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Two independent accumulators per token hide the FMA latency.
template <int NT, typename Load, typename Scalar>
void DotFloat(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out, Load load,
              Scalar scalar) {
  __m256 acc0[NT], acc1[NT];
  for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m256 w0 = load(w, k);
    const __m256 w1 = load(w, k + 8);
    for (int t = 0; t < NT; ++t) {
      const uint8_t* y = a + t * a_stride;
      acc0[t] = _mm256_fmadd_ps(w0, load(y, k), acc0[t]);
      acc1[t] = _mm256_fmadd_ps(w1, load(y, k + 8), acc1[t]);
    }
  }
  for (int t = 0; t < NT; ++t) {
    const uint8_t* y = a + t * a_stride;
    float sum = HsumPs(_mm256_add_ps(acc0[t], acc1[t]));
    for (int64_t j = k; j < n; ++j) sum += scalar(w, j) * scalar(y, j);
    out[t] = sum;
  }
}

}  // namespace

void DotF32Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotFloat<decltype(k)::value>(n, w, a, a_stride, out, LoadF32, ScalarF32);
  });
}

void DotF16Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotFloat<decltype(k)::value>(n, w, a, a_stride, out, LoadF16, ScalarF16);
  });
}

void DotBF16Avx2(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  DispatchTokens(nt, [&](auto k) {
    DotFloat<decltype(k)::value>(n, w, a, a_stride, out, LoadBF16, ScalarBF16);
  });
}

}  // namespace fqpack::runtime::quant
