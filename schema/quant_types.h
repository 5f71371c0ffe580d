// The table of tensor types fqpack stores: every ggml type whose block layout
// is fixed (ids and sizes exactly as GGUF files carry them), plus the id range
// reserved for fqpack's own group-wise integer types. Byte layouts, formulas
// and bits per weight are written down in schema/quant_types.md.
//
// This table answers only "how many bytes does a row of n elements take", so
// that store/ and pack/ need no runtime. It is the layout half of the one
// type table: the runtime's rows (runtime/quant/quant.h) take id, name and
// sizes from here and add the block structs, kernels and codecs.
#ifndef FQPACK_SCHEMA_QUANT_TYPES_H_
#define FQPACK_SCHEMA_QUANT_TYPES_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "schema/status.h"

namespace fqpack {

// ggml_type ids as written in GGUF tensor infos. Ids 4, 5 and 31..33, 36..38
// belonged to types ggml removed; files holding them are rejected.
enum class QType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

constexpr uint32_t ToId(QType t) { return static_cast<uint32_t>(t); }

// fqpack's own group-wise integer types (b bits, groups of g along a row)
// have ids kGroupIntBase + 1000*b + g, so int4-g64 is 104064. They are never
// written into a GGUF file.
constexpr uint32_t kGroupIntBase = 100000;

// The activation row type of group-int dots ("int8-act"): per 32 elements an
// f32 scale, an f32 sum and 32 int8 codes, any row length (the last block is
// zero-padded). It lives at the base id itself, which no (bits, group) pair
// can produce. Never stored as a module; see schema/quant_types.md.
constexpr uint32_t kGroupIntActType = kGroupIntBase;

struct QTypeInfo {
  uint32_t id;
  const char* name;      // as ggml spells it: "Q4_K", "F16"
  uint32_t block_elems;  // elements per block (1 for plain scalars)
  uint32_t block_bytes;  // bytes per block
  bool is_float;         // F32/F16/BF16/F64: can be the source of a quantization
};

// All ggml types in id order. Sizes are those of ggml's block structs
// (ggml-common.h); runtime/quant/blocks.h checks each executed type's struct
// against this table at compile time (GgmlBlockBytes).
inline constexpr std::array<QTypeInfo, 32> kGgmlTypeTable = {{
    {0, "F32", 1, 4, true},          {1, "F16", 1, 2, true},
    {2, "Q4_0", 32, 18, false},      {3, "Q4_1", 32, 20, false},
    {6, "Q5_0", 32, 22, false},      {7, "Q5_1", 32, 24, false},
    {8, "Q8_0", 32, 34, false},      {9, "Q8_1", 32, 36, false},
    {10, "Q2_K", 256, 84, false},    {11, "Q3_K", 256, 110, false},
    {12, "Q4_K", 256, 144, false},   {13, "Q5_K", 256, 176, false},
    {14, "Q6_K", 256, 210, false},   {15, "Q8_K", 256, 292, false},
    {16, "IQ2_XXS", 256, 66, false}, {17, "IQ2_XS", 256, 74, false},
    {18, "IQ3_XXS", 256, 98, false}, {19, "IQ1_S", 256, 50, false},
    {20, "IQ4_NL", 32, 18, false},   {21, "IQ3_S", 256, 110, false},
    {22, "IQ2_S", 256, 82, false},   {23, "IQ4_XS", 256, 136, false},
    {24, "I8", 1, 1, false},         {25, "I16", 1, 2, false},
    {26, "I32", 1, 4, false},        {27, "I64", 1, 8, false},
    {28, "F64", 1, 8, true},         {29, "IQ1_M", 256, 56, false},
    {30, "BF16", 1, 2, true},        {34, "TQ1_0", 256, 54, false},
    {35, "TQ2_0", 256, 66, false},   {39, "MXFP4", 32, 17, false},
}};

// Block elements and bytes of a ggml type as compile-time constants; 0 for
// an id that is not in the table.
constexpr uint32_t GgmlBlockElems(uint32_t id) {
  for (const QTypeInfo& t : kGgmlTypeTable) {
    if (t.id == id) return t.block_elems;
  }
  return 0;
}
constexpr uint32_t GgmlBlockBytes(uint32_t id) {
  for (const QTypeInfo& t : kGgmlTypeTable) {
    if (t.id == id) return t.block_bytes;
  }
  return 0;
}

std::span<const QTypeInfo> GgmlTypes();

// The info of a ggml type, or nullptr when `id` is not a known ggml type.
const QTypeInfo* FindGgmlType(uint32_t id);
// By name, case-insensitive ("q4_k" finds Q4_K); nullptr when unknown.
const QTypeInfo* FindGgmlTypeByName(std::string_view name);

// True for ids in fqpack's group-int range with a valid (bits, group).
bool IsGroupIntType(uint32_t id);
uint32_t GroupIntBits(uint32_t id);
uint32_t GroupIntGroup(uint32_t id);
constexpr uint32_t GroupIntId(uint32_t bits, uint32_t group) {
  return kGroupIntBase + 1000 * bits + group;
}

// True when fqpack knows the byte size of rows of this type.
bool IsKnownType(uint32_t id);
// "Q4_K", "int4-g64", or "type#99" for an unknown id.
std::string QTypeName(uint32_t id);
// The id for a name as QTypeName prints it; NotFound otherwise.
Result<uint32_t> ParseQTypeName(std::string_view name);

// Bytes of one row of `ne0` elements. InvalidArgument when ne0 is not a
// multiple of the block size; NotSupported for an unknown type.
Result<uint64_t> RowBytes(uint32_t type, uint64_t ne0);

// The largest extent of one tensor dimension fqpack accepts from a file
// (2^40: a trillion elements; no real weight comes near it). Together with
// "at least 1" it is the one shape rule of GGUF files, store rows and packs.
constexpr uint64_t kMaxTensorExtent = uint64_t{1} << 40;

// Bytes of a whole tensor (rows = ne1*ne2*ne3), with overflow checks.
Result<uint64_t> TensorBytes(uint32_t type, std::span<const uint64_t> ne);

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_QUANT_TYPES_H_
