#include "runtime/llama_kernels.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "runtime/quant/quant.h"
#include "schema/half.h"

namespace fqpack::runtime::llama_kernels {
namespace {

// F16 bits -> float for every bit pattern.
const float* HalfTable() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = Fp16ToF32(static_cast<uint16_t>(h));
    return t;
  }();
  return table.data();
}

// e^x for x <= 0: Cody-Waite reduction to r in [-ln2/2, ln2/2] and a
// degree-6 Taylor polynomial (within 3 ulp of e^x). Plain arithmetic, so
// loops over it vectorise; ggml's softmax likewise uses a vector exp rather
// than libm's expf. Inputs below -87 (and -inf, NaN) count as -87: e^-87
// vanishes in the sum. The clamp compares bit patterns, because a float
// compare would keep the compiler from vectorising the loop: for x <= 0 the
// unsigned bits grow with |x|, and +0 (bits 0) stays as it is.
inline float SoftmaxExp(float x) {
  x = std::bit_cast<float>(std::min(std::bit_cast<uint32_t>(x), 0xC2AE0000u));  // -87.0f
  const float kLog2e = 1.44269504f;
  const float kLn2Hi = 0.693145752f;  // ln 2 split so n * kLn2Hi is exact
  const float kLn2Lo = 1.42860677e-6f;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * kLog2e + kRound) - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 +
                                          r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  const int32_t e = static_cast<int32_t>(n) + 127;
  return p * std::bit_cast<float>(static_cast<uint32_t>(e) << 23);
}

void AttendPortable(const float* q, const uint16_t* kt, int64_t kt_stride, const uint16_t* v,
                    int64_t v_stride, int64_t hd, int64_t first, int64_t len, float scale,
                    float softcap, float* s, float* out) {
  const float* half = HalfTable();
  std::fill(s + first, s + len, 0.0f);
  for (int64_t d = 0; d < hd; ++d) {
    const float qd = q[d];
    const uint16_t* kd = kt + d * kt_stride;
    for (int64_t j = first; j < len; ++j) s[j] += qd * half[kd[j]];
  }
  float max = -INFINITY;
  for (int64_t j = first; j < len; ++j) {
    s[j] *= scale;
    if (softcap > 0) s[j] = softcap * std::tanh(s[j] * (1.0f / softcap));
    max = std::max(max, s[j]);
  }
  for (int64_t j = first; j < len; ++j) s[j] = SoftmaxExp(s[j] - max);
  double sum = 0;
  for (int64_t j = first; j < len; ++j) sum += s[j];
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = first; j < len; ++j) s[j] *= inv;
  std::fill(out, out + hd, 0.0f);
  for (int64_t j = first; j < len; ++j) {
    const float pj = s[j];
    const uint16_t* vj = v + j * v_stride;
    for (int64_t d = 0; d < hd; ++d) out[d] += pj * half[vj[d]];
  }
}

void ToHalfPortable(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToFp16(src[i]);
}

void RoundToHalfPortable(float* x, int64_t n) {
  const float* half = HalfTable();
  for (int64_t i = 0; i < n; ++i) x[i] = half[F32ToFp16(x[i])];
}

void SwiGluPortable(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// ggml's table: gelu of every F16 value, rounded to F16.
const float* GeluTable() {
  static const std::vector<float> table = [] {
    const float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    const float kCoefA = 0.044715f;
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) {
      const float x = Fp16ToF32(static_cast<uint16_t>(h));
      const float g = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoefA * x * x)));
      t[h] = Fp16ToF32(F32ToFp16(g));
    }
    return t;
  }();
  return table.data();
}

}  // namespace

void GeGlu(float* gate, const float* up, int64_t n) {
  const float* table = GeluTable();
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    if (x <= -10.0f) {
      gate[i] = 0.0f;
    } else if (x >= 10.0f) {
      gate[i] = x * up[i];
    } else {
      gate[i] = table[F32ToFp16(x)] * up[i];
    }
  }
}

const Kernels& Portable() {
  static const Kernels k = {AttendPortable, AttendEachHead<AttendPortable>, ToHalfPortable,
                            RoundToHalfPortable, SwiGluPortable};
  return k;
}

const Kernels& Avx512() {
  static const Kernels k = [] {
    Kernels avx512 = Avx2();
    avx512.attend_group = AttendGroupAvx512;
    return avx512;
  }();
  return k;
}

const Kernels& Best() {
  if (quant::ActiveSimdLevel() >= quant::SimdLevel::kAvx512) return Avx512();
  if (quant::ActiveSimdLevel() >= quant::SimdLevel::kAvx2) return Avx2();
  return Portable();
}

}  // namespace fqpack::runtime::llama_kernels
