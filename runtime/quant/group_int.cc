// The group-int types' code packing, scalar reference dequantizer, reference
// quantizer, portable dot, and their activation type int8-act (layouts in
// schema/quant_types.md).
//
// The dot of a weight group with int8-act activations (per 32-element chunk
// c of the group: activation scale da_c, sum s_c = da_c * sum(qa), codes qa):
//   sum_e (d q_e + m) (da_c qa_e) = d * sum_c da_c * sum_e q_e qa_e + m * sum_c s_c,
// so integer products are exact per chunk and the offset costs one multiply
// per group.
#include "runtime/quant/group_int.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>

#include "runtime/quant/kernels.h"
#include "runtime/quant/quant.h"
#include "schema/coding.h"
#include "schema/half.h"

namespace fqpack::runtime::quant {

// ---- Code packing.

void PackChunk(int bits, const uint8_t* q, uint8_t* out) {
  // The low plane (4 or 2 bits) first, then the plane of the high bits.
  const auto plane4 = [&](int shift, uint8_t* p) {
    for (int j = 0; j < 16; ++j) {
      p[j] = static_cast<uint8_t>(((q[j] >> shift) & 0xF) | (((q[j + 16] >> shift) & 0xF) << 4));
    }
  };
  const auto plane2 = [&](int shift, uint8_t* p) {
    for (int j = 0; j < 8; ++j) {
      uint8_t v = 0;
      for (int k = 0; k < 4; ++k)
        v |= static_cast<uint8_t>(((q[j + 8 * k] >> shift) & 3) << (2 * k));
      p[j] = v;
    }
  };
  const auto plane1 = [&](int shift, uint8_t* p) {
    uint32_t v = 0;
    for (int j = 0; j < 32; ++j) v |= static_cast<uint32_t>((q[j] >> shift) & 1) << j;
    EncodeU32(p, v);
  };
  switch (bits) {
    case 2:
      plane2(0, out);
      break;
    case 3:
      plane2(0, out);
      plane1(2, out + 8);
      break;
    case 4:
      plane4(0, out);
      break;
    case 5:
      plane4(0, out);
      plane1(4, out + 16);
      break;
    case 6:
      plane4(0, out);
      plane2(4, out + 16);
      break;
    case 8:
      std::memcpy(out, q, 32);
      break;
    default:
      assert(false && "no such group-int bit width");
  }
}

void UnpackChunk(int bits, const uint8_t* in, uint8_t* q) {
  const auto plane4 = [&](const uint8_t* p) {
    for (int j = 0; j < 16; ++j) {
      q[j] = p[j] & 0xF;
      q[j + 16] = p[j] >> 4;
    }
  };
  const auto plane2 = [&](const uint8_t* p, int shift) {
    for (int j = 0; j < 8; ++j) {
      for (int k = 0; k < 4; ++k) {
        q[j + 8 * k] = static_cast<uint8_t>(q[j + 8 * k] | (((p[j] >> (2 * k)) & 3) << shift));
      }
    }
  };
  const auto plane1 = [&](const uint8_t* p, int shift) {
    const uint32_t v = DecodeU32(p);
    for (int j = 0; j < 32; ++j) q[j] = static_cast<uint8_t>(q[j] | (((v >> j) & 1) << shift));
  };
  switch (bits) {
    case 2:
      std::memset(q, 0, 32);
      plane2(in, 0);
      break;
    case 3:
      std::memset(q, 0, 32);
      plane2(in, 0);
      plane1(in + 8, 2);
      break;
    case 4:
      plane4(in);
      break;
    case 5:
      plane4(in);
      plane1(in + 16, 4);
      break;
    case 6:
      plane4(in);
      plane2(in + 16, 4);
      break;
    case 8:
      std::memcpy(q, in, 32);
      break;
    default:
      assert(false && "no such group-int bit width");
  }
}

void PackBitStream(int bits, const uint8_t* q, int r, uint8_t* out) {
  std::memset(out, 0, GroupCodeBytes(bits, r));
  for (int j = 0; j < r; ++j) {
    for (int b = 0; b < bits; ++b) {
      const int k = j * bits + b;
      out[k / 8] = static_cast<uint8_t>(out[k / 8] | (((q[j] >> b) & 1) << (k % 8)));
    }
  }
}

void UnpackBitStream(int bits, const uint8_t* in, int r, uint8_t* q) {
  for (int j = 0; j < r; ++j) {
    int v = 0;
    for (int b = 0; b < bits; ++b) {
      const int k = j * bits + b;
      v |= ((in[k / 8] >> (k % 8)) & 1) << b;
    }
    q[j] = static_cast<uint8_t>(v);
  }
}

// Chunk c of kGroupChunk codes packs into 4 * bits bytes.
void PackGroupCodes(int bits, const uint8_t* q, int len, uint8_t* out) {
  const ptrdiff_t whole = len / kGroupChunk, chunk_bytes = ptrdiff_t{4} * bits;
  for (ptrdiff_t c = 0; c < whole; ++c) PackChunk(bits, q + c * kGroupChunk, out + c * chunk_bytes);
  if (len % kGroupChunk != 0) {
    PackBitStream(bits, q + whole * kGroupChunk, len % kGroupChunk, out + whole * chunk_bytes);
  }
}

void UnpackGroupCodes(int bits, const uint8_t* in, int len, uint8_t* q) {
  const ptrdiff_t whole = len / kGroupChunk, chunk_bytes = ptrdiff_t{4} * bits;
  for (ptrdiff_t c = 0; c < whole; ++c)
    UnpackChunk(bits, in + c * chunk_bytes, q + c * kGroupChunk);
  if (len % kGroupChunk != 0) {
    UnpackBitStream(bits, in + whole * chunk_bytes, len % kGroupChunk, q + whole * kGroupChunk);
  }
}

void EncodeGroup(int bits, uint16_t d, uint16_t m, const uint8_t* q, int len, uint8_t* out) {
  out[0] = static_cast<uint8_t>(d);
  out[1] = static_cast<uint8_t>(d >> 8);
  out[2] = static_cast<uint8_t>(m);
  out[3] = static_cast<uint8_t>(m >> 8);
  PackGroupCodes(bits, q, len, out + kGroupHeaderBytes);
}

// ---- Weight rows.

template <int kBits, int kGroup>
void DequantizeRowGroupInt(const uint8_t* src, float* dst, int64_t n) {
  uint8_t q[kGroup];
  for (int64_t start = 0; start < n; start += kGroup) {
    const int len = static_cast<int>(std::min<int64_t>(kGroup, n - start));
    const float d = Fp16ToF32(DecodeU16(src));
    const float m = Fp16ToF32(DecodeU16(src + 2));
    UnpackGroupCodes(kBits, src + kGroupHeaderBytes, len, q);
    for (int e = 0; e < len; ++e) dst[start + e] = d * static_cast<float>(q[e]) + m;
    src += GroupBytes(kBits, len);
  }
}

// Min/max per group, both ends rounded to fp16 first: a valid row with
// sensible error for tests and benchmarks. `fqpack quantize` searches scale
// and offset instead (quantize/).
template <int kBits, int kGroup>
void QuantizeRowGroupInt(const float* src, uint8_t* dst, int64_t n) {
  constexpr int kMaxCode = (1 << kBits) - 1;
  uint8_t q[kGroup];
  for (int64_t start = 0; start < n; start += kGroup) {
    const int len = static_cast<int>(std::min<int64_t>(kGroup, n - start));
    const float* x = src + start;
    const float lo = *std::min_element(x, x + len);
    const float hi = *std::max_element(x, x + len);
    const uint16_t m16 = F32ToFp16(lo);
    const uint16_t d16 = F32ToFp16((hi - lo) / kMaxCode);
    const float d = Fp16ToF32(d16), m = Fp16ToF32(m16);
    for (int e = 0; e < len; ++e) {
      const float v = d > 0 ? std::nearbyint((x[e] - m) / d) : 0.0f;
      q[e] = static_cast<uint8_t>(std::clamp(v, 0.0f, static_cast<float>(kMaxCode)));
    }
    EncodeGroup(kBits, d16, m16, q, len, dst);
    dst += GroupBytes(kBits, len);
  }
}

template <int kBits, int kGroup>
void DotGroupInt(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, int nt,
                 float* out) {
  assert(nt >= 1 && nt <= kMaxDotTokens);
  float sum[kMaxDotTokens] = {};
  uint8_t q[kGroup];
  int64_t block = 0;  // the activation block of the group's first chunk
  for (int64_t start = 0; start < n; start += kGroup) {
    const int len = static_cast<int>(std::min<int64_t>(kGroup, n - start));
    const float d = Fp16ToF32(DecodeU16(w));
    const float m = Fp16ToF32(DecodeU16(w + 2));
    UnpackGroupCodes(kBits, w + kGroupHeaderBytes, len, q);
    const int chunks = (len + kGroupChunk - 1) / kGroupChunk;
    for (int t = 0; t < nt; ++t) {
      const uint8_t* act = a + t * a_stride + block * kGroupActBlockBytes;
      float scaled = 0, offset = 0;
      for (int c = 0; c < chunks; ++c, act += kGroupActBlockBytes) {
        const float da = std::bit_cast<float>(DecodeU32(act));
        const float s = std::bit_cast<float>(DecodeU32(act + 4));
        const auto* qa = reinterpret_cast<const int8_t*>(act + 8);
        const int r = std::min(kGroupChunk, len - c * kGroupChunk);
        int isum = 0;
        for (int e = 0; e < r; ++e) isum += q[c * kGroupChunk + e] * qa[e];
        scaled += da * static_cast<float>(isum);
        offset += s;
      }
      sum[t] += d * scaled + m * offset;
    }
    block += chunks;
    w += GroupBytes(kBits, len);
  }
  for (int t = 0; t < nt; ++t) out[t] = sum[t];
}

// ---- int8-act.

// Per 32: amax, d = amax / 127, codes round(x * 127 / amax) (ties to even),
// s = d * sum(q) in fp32; the block past the row's end is zeros.
void QuantizeRowGroupIntAct(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t start = 0; start < n; start += kGroupChunk, dst += kGroupActBlockBytes) {
    const int len = static_cast<int>(std::min<int64_t>(kGroupChunk, n - start));
    float amax = 0;
    for (int e = 0; e < len; ++e) amax = std::max(amax, std::fabs(src[start + e]));
    const float d = amax / 127.f;
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    auto* qs = reinterpret_cast<int8_t*>(dst + 8);
    int sum = 0;
    for (int e = 0; e < kGroupChunk; ++e) {
      const int q = e < len ? NearestInt(src[start + e] * id) : 0;
      qs[e] = static_cast<int8_t>(q);
      sum += q;
    }
    EncodeU32(dst, std::bit_cast<uint32_t>(d));
    EncodeU32(dst + 4, std::bit_cast<uint32_t>(d * static_cast<float>(sum)));
  }
}

void DequantizeRowGroupIntAct(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t start = 0; start < n; start += kGroupChunk, src += kGroupActBlockBytes) {
    const float d = std::bit_cast<float>(DecodeU32(src));
    const auto* qs = reinterpret_cast<const int8_t*>(src + 8);
    const int len = static_cast<int>(std::min<int64_t>(kGroupChunk, n - start));
    for (int e = 0; e < len; ++e) dst[start + e] = d * static_cast<float>(qs[e]);
  }
}

#define FQ_GROUP_INT_INSTANTIATE(B, G)                                        \
  template void DequantizeRowGroupInt<B, G>(const uint8_t*, float*, int64_t); \
  template void QuantizeRowGroupInt<B, G>(const float*, uint8_t*, int64_t);   \
  template void DotGroupInt<B, G>(int64_t, const uint8_t*, const uint8_t*, size_t, int, float*);
FQ_GROUP_INT_FOR_EACH(FQ_GROUP_INT_INSTANTIATE)
#undef FQ_GROUP_INT_INSTANTIATE

}  // namespace fqpack::runtime::quant
