// Block encoders: one block from the fields and codes `fqpack quantize`
// fitted (quantize/codec.h), in the layout of blocks.h. The inverse of
// dequantize.cc; the codes arrive in the range of the type's CodecShape and
// are biased here the way the dequantizer unbiases them.
#include <cstring>

#include "runtime/quant/blocks.h"
#include "runtime/quant/group_int.h"
#include "runtime/quant/kernels.h"
#include "schema/coding.h"

namespace fqpack::runtime::quant {
namespace {

// The 32 codes of a Q4_0/Q4_1 block: code j in the low nibble of byte j,
// code j + 16 in its high nibble.
template <typename Code>
void PackNibbles(const Code* q, uint8_t (&qs)[kQK32 / 2]) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}

// The 32 codes of a Q5_0/Q5_1 block: low four bits as PackNibbles, the fifth
// bit of code j in bit j of the little-endian qh word.
template <typename Code>
void PackFiveBits(const Code* q, uint8_t (&qs)[kQK32 / 2], uint8_t (&qh_bytes)[4]) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    qh |= static_cast<uint32_t>(q[j] >> 4) << j;
    qh |= static_cast<uint32_t>(q[j + 16] >> 4) << (j + 16);
  }
  EncodeU32(qh_bytes, qh);
}

// Codes q in [qmin, qmax] stored biased by -qmin (Q4_0, Q5_0).
void Unsigned32(const int* q, int qmin, uint8_t (&u)[kQK32]) {
  for (int j = 0; j < kQK32; ++j) u[j] = static_cast<uint8_t>(q[j] - qmin);
}

// The 12 bytes of eight 6-bit scales and mins of Q4_K/Q5_K (K4ScaleMin
// reads them back).
void PackK4Scales(const BlockFields& f, uint8_t (&scales)[kKScaleBytes]) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>(f.sc[j] | ((f.sc[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>(f.mn[j] | ((f.mn[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((f.sc[j + 4] & 0xF) | ((f.mn[j + 4] & 0xF) << 4));
  }
}

}  // namespace

void EncodeBlockQ8_0(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockQ8_0*>(out);
  b->d = f.d;
  for (int j = 0; j < 32; ++j) b->qs[j] = static_cast<int8_t>(q[j]);
}

void EncodeBlockQ4_0(const BlockFields& f, const int* q, uint8_t* out) {
  uint8_t u[kQK32];
  Unsigned32(q, -8, u);
  auto* b = reinterpret_cast<BlockQ4_0*>(out);
  b->d = f.d;
  PackNibbles(u, b->qs);
}

void EncodeBlockQ5_0(const BlockFields& f, const int* q, uint8_t* out) {
  uint8_t u[kQK32];
  Unsigned32(q, -16, u);
  auto* b = reinterpret_cast<BlockQ5_0*>(out);
  b->d = f.d;
  PackFiveBits(u, b->qs, b->qh);
}

void EncodeBlockQ4_1(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockQ4_1*>(out);
  b->d = f.d;
  b->m = f.m;
  PackNibbles(q, b->qs);
}

void EncodeBlockQ5_1(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockQ5_1*>(out);
  b->d = f.d;
  b->m = f.m;
  PackFiveBits(q, b->qs, b->qh);
}

void EncodeBlockIQ4_NL(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockIQ4_NL*>(out);
  b->d = f.d;
  for (int j = 0; j < 16; ++j) b->qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}

void EncodeBlockQ2_K(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockQ2_K*>(out);
  std::memset(b, 0, sizeof(*b));
  b->d = f.d;
  b->dmin = f.m;
  for (int s = 0; s < 16; ++s) b->scales[s] = static_cast<uint8_t>(f.sc[s] | (f.mn[s] << 4));
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, r = e % 128;
    b->qs[32 * h + r % 32] |= static_cast<uint8_t>(q[e] << (2 * (r / 32)));
  }
}

void EncodeBlockQ3_K(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockQ3_K*>(out);
  std::memset(b, 0, sizeof(*b));
  b->d = f.d;
  for (int s = 0; s < 16; ++s) {
    const int v = f.sc[s] + 32;
    if (s < 8) {
      b->scales[s] |= static_cast<uint8_t>(v & 0xF);
    } else {
      b->scales[s - 8] |= static_cast<uint8_t>((v & 0xF) << 4);
    }
    b->scales[8 + s % 4] |= static_cast<uint8_t>((v >> 4) << (2 * (s / 4)));
  }
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, r = e % 128, l = r % 32, j = r / 32;
    const int stored = q[e] + 4;
    b->qs[32 * h + l] |= static_cast<uint8_t>((stored & 3) << (2 * j));
    if (stored >= 4) b->hmask[l] |= static_cast<uint8_t>(1 << (4 * h + j));
  }
}

void EncodeBlockQ4_K(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockQ4_K*>(out);
  b->d = f.d;
  b->dmin = f.m;
  PackK4Scales(f, b->scales);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b->qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
  }
}

void EncodeBlockQ5_K(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockQ5_K*>(out);
  b->d = f.d;
  b->dmin = f.m;
  PackK4Scales(f, b->scales);
  std::memset(b->qh, 0, sizeof(b->qh));
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      b->qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
      b->qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
}

void EncodeBlockQ6_K(const BlockFields& f, const int* q, uint8_t* out) {
  auto* b = reinterpret_cast<BlockQ6_K*>(out);
  std::memset(b, 0, sizeof(*b));
  b->d = f.d;
  for (int s = 0; s < 16; ++s) b->scales[s] = static_cast<int8_t>(f.sc[s]);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, r = e % 128, u = r / 32, l = r % 32;
    const int v = q[e] + 32;
    b->ql[64 * h + 32 * (u & 1) + l] |= static_cast<uint8_t>((v & 0xF) << (4 * (u >> 1)));
    b->qh[32 * h + l] |= static_cast<uint8_t>((v >> 4) << (2 * u));
  }
}

template <int kBits>
void EncodeBlockGroupInt(const BlockFields& f, const int* q, uint8_t* out) {
  uint8_t codes[128];  // the largest group
  for (int e = 0; e < f.n; ++e) codes[e] = static_cast<uint8_t>(q[e]);
  EncodeGroup(kBits, f.d, f.m, codes, f.n, out);
}
template void EncodeBlockGroupInt<2>(const BlockFields&, const int*, uint8_t*);
template void EncodeBlockGroupInt<3>(const BlockFields&, const int*, uint8_t*);
template void EncodeBlockGroupInt<4>(const BlockFields&, const int*, uint8_t*);
template void EncodeBlockGroupInt<5>(const BlockFields&, const int*, uint8_t*);
template void EncodeBlockGroupInt<6>(const BlockFields&, const int*, uint8_t*);
template void EncodeBlockGroupInt<8>(const BlockFields&, const int*, uint8_t*);

}  // namespace fqpack::runtime::quant
