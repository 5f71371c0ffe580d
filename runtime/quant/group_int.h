// fqpack's group-wise integer types (int<b>-g<g>: b in {2,3,4,5,6,8}, g in
// {32,64,128}) and their activation type int8-act. The byte layout is
// specified in schema/quant_types.md ("fqpack's group-int types"); this
// header is its one implementation of code packing, shared by the kernels
// (group_int.cc, group_int_avx2.cc) and the quantizers (quantize/).
//
// A row of n weights is ceil(n / g) groups; each group is
//   fp16 d | fp16 m | codes of its len elements (len = g, or less for the
//   row's last group), x[e] = d * q[e] + m, q in 0 .. 2^b - 1.
// The codes of a group are chunks of 32 elements: a whole chunk is 4*b bytes
// of bit planes (PackChunk), a final partial chunk of r < 32 elements a plain
// LSB-first bit stream of ceil(r*b/8) bytes.
//
// Thread-safety: stateless functions, all reentrant.
#ifndef FQPACK_RUNTIME_QUANT_GROUP_INT_H_
#define FQPACK_RUNTIME_QUANT_GROUP_INT_H_

#include <cstddef>
#include <cstdint>

namespace fqpack::runtime::quant {

constexpr int kGroupChunk = 32;          // elements per chunk of codes
constexpr int kGroupHeaderBytes = 4;     // fp16 d, fp16 m
constexpr int kGroupActBlockBytes = 40;  // int8-act: f32 d, f32 s, int8[32]

// Bytes of the codes of `len` elements at `bits` bits: ceil(len * bits / 8).
constexpr size_t GroupCodeBytes(int bits, int64_t len) {
  return static_cast<size_t>((len * bits + 7) / 8);
}
// Bytes of one group of `len` elements, header included.
constexpr size_t GroupBytes(int bits, int64_t len) {
  return kGroupHeaderBytes + GroupCodeBytes(bits, len);
}

// Writes the codes q[0..len) (each < 2^bits) of one group in the layout
// above: GroupCodeBytes(bits, len) bytes at `out`.
void PackGroupCodes(int bits, const uint8_t* q, int len, uint8_t* out);
// Reads them back.
void UnpackGroupCodes(int bits, const uint8_t* in, int len, uint8_t* q);

// One whole chunk of 32 codes <-> its 4*bits bytes of bit planes.
void PackChunk(int bits, const uint8_t* q, uint8_t* out);
void UnpackChunk(int bits, const uint8_t* in, uint8_t* q);
// A partial chunk of r < 32 codes <-> its LSB-first bit stream.
void PackBitStream(int bits, const uint8_t* q, int r, uint8_t* out);
void UnpackBitStream(int bits, const uint8_t* in, int r, uint8_t* q);

// Encodes one group from its fp16 scale and offset bits and codes.
void EncodeGroup(int bits, uint16_t d, uint16_t m, const uint8_t* q, int len, uint8_t* out);

}  // namespace fqpack::runtime::quant

#endif  // FQPACK_RUNTIME_QUANT_GROUP_INT_H_
