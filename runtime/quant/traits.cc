#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <string_view>

#include "runtime/quant/blocks.h"
#include "runtime/quant/decode.h"
#include "runtime/quant/gemm.h"
#include "runtime/quant/group_int.h"
#include "runtime/quant/kernels.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"

namespace fqpack::runtime::quant {
namespace {

constexpr uint32_t Id(QType t) { return ToId(t); }

using Kind = CodecShape::Kind;

// A GGUF type's row: the layout facts from schema's row for kType, checked
// against its block struct, completed by `row` (kernels and write side).
template <QType kType, typename Block>
constexpr TypeTraits Gguf(TypeTraits row) {
  constexpr uint32_t kId = ToId(kType);
  static_assert(GgmlBlockBytes(kId) != 0, "not a ggml type");
  static_assert(sizeof(Block) == GgmlBlockBytes(kId), "block struct and schema's table disagree");
  row.type = kId;
  for (const QTypeInfo& t : kGgmlTypeTable) {
    if (t.id == kId) row.name = t.name;
  }
  row.block_elems = GgmlBlockElems(kId);
  row.block_bytes = GgmlBlockBytes(kId);
  row.bits_per_weight = 8.0 * row.block_bytes / row.block_elems;
  row.gguf = true;
  return row;
}

// A group-int type's row: groups of kGroup codes of kBits bits with an fp16
// scale and offset (schema/quant_types.md), fitted as an affine grid.
template <int kBits, int kGroup>
constexpr TypeTraits GroupInt(const char* name) {
  TypeTraits row;
  row.type = GroupIntId(kBits, kGroup);
  row.name = name;
  row.block_elems = kGroup;
  row.block_bytes = static_cast<uint32_t>(GroupBytes(kBits, kGroup));
  row.bits_per_weight = 8.0 * row.block_bytes / row.block_elems;
  row.vec_dot_type = kGroupIntActType;
  row.dequantize = DequantizeRowGroupInt<kBits, kGroup>;
  row.quantize = QuantizeRowGroupInt<kBits, kGroup>;
  row.dot = DotGroupInt<kBits, kGroup>;
  row.dot_avx2 = DotGroupIntAvx2<kBits, kGroup>;
  row.dot_avx512 = DotGroupIntAvx512<kBits, kGroup>;
  row.codec = {.kind = Kind::kAffine, .qmax = (1 << kBits) - 1};
  row.encode = EncodeBlockGroupInt<kBits>;
  row.gemm = &GemmGroupInt<kBits, kGroup>::ops;
  row.decode = &GroupIntDecode<kBits, kGroup>::ops;
  if constexpr (kBits != 8) row.decode_gfni = &GroupIntDecodeGfni<kBits, kGroup>::ops;
  return row;
}

// One row per type the runtime handles: the only list of types in the
// runtime and in `fqpack quantize`. The activation types (Q8_1, Q8_K,
// int8-act) are here for their quantizers and dequantizers only; they have
// no dot and are never weights.
constexpr TypeTraits kTypeTraits[] = {
    Gguf<QType::kF32, float>({.vec_dot_type = Id(QType::kF32),
                              .dequantize = DequantizeRowF32,
                              .quantize = QuantizeRowF32,
                              .dot = DotF32,
                              .dot_avx2 = DotF32Avx2}),
    Gguf<QType::kF16, uint16_t>({.vec_dot_type = Id(QType::kF16),
                                 .dequantize = DequantizeRowF16,
                                 .quantize = QuantizeRowF16,
                                 .dot = DotF16,
                                 .dot_avx2 = DotF16Avx2,
                                 .quantize_avx2 = QuantizeRowF16Avx2}),
    Gguf<QType::kBF16, uint16_t>({.vec_dot_type = Id(QType::kBF16),
                                  .dequantize = DequantizeRowBF16,
                                  .quantize = QuantizeRowBF16,
                                  .dot = DotBF16,
                                  .dot_avx2 = DotBF16Avx2}),
    Gguf<QType::kQ4_0, BlockQ4_0>({.vec_dot_type = Id(QType::kQ8_0),
                                   .dequantize = DequantizeRowQ4_0,
                                   .quantize = QuantizeRowQ4_0,
                                   .dot = DotQ4_0Q8_0,
                                   .dot_avx2 = DotQ4_0Q8_0Avx2,
                                   .dot_avx512 = DotQ4_0Q8_0Avx512,
                                   .codec = {.kind = Kind::kSymmetric, .qmin = -8, .qmax = 7},
                                   .encode = EncodeBlockQ4_0,
                                   .gemm = &kGemmQ4_0,
                                   .decode = &kDecodeQ4_0}),
    Gguf<QType::kQ4_1, BlockQ4_1>({.vec_dot_type = Id(QType::kQ8_1),
                                   .dequantize = DequantizeRowQ4_1,
                                   .quantize = QuantizeRowQ4_1,
                                   .dot = DotQ4_1Q8_1,
                                   .dot_avx2 = DotQ4_1Q8_1Avx2,
                                   .codec = {.kind = Kind::kAffine, .qmax = 15},
                                   .encode = EncodeBlockQ4_1}),
    Gguf<QType::kQ5_0, BlockQ5_0>({.vec_dot_type = Id(QType::kQ8_0),
                                   .dequantize = DequantizeRowQ5_0,
                                   .quantize = QuantizeRowQ5_0,
                                   .dot = DotQ5_0Q8_0,
                                   .dot_avx2 = DotQ5_0Q8_0Avx2,
                                   .codec = {.kind = Kind::kSymmetric, .qmin = -16, .qmax = 15},
                                   .encode = EncodeBlockQ5_0}),
    Gguf<QType::kQ5_1, BlockQ5_1>({.vec_dot_type = Id(QType::kQ8_1),
                                   .dequantize = DequantizeRowQ5_1,
                                   .quantize = QuantizeRowQ5_1,
                                   .dot = DotQ5_1Q8_1,
                                   .dot_avx2 = DotQ5_1Q8_1Avx2,
                                   .codec = {.kind = Kind::kAffine, .qmax = 31},
                                   .encode = EncodeBlockQ5_1}),
    Gguf<QType::kQ8_0, BlockQ8_0>({.vec_dot_type = Id(QType::kQ8_0),
                                   .dequantize = DequantizeRowQ8_0,
                                   .quantize = QuantizeRowQ8_0,
                                   .dot = DotQ8_0Q8_0,
                                   .dot_avx2 = DotQ8_0Q8_0Avx2,
                                   .dot_avx512 = DotQ8_0Q8_0Avx512,
                                   .quantize_avx2 = QuantizeRowQ8_0Avx2,
                                   .codec = {.kind = Kind::kSymmetric, .qmin = -127, .qmax = 127},
                                   .encode = EncodeBlockQ8_0,
                                   .embed_bits = 8,
                                   .gemm = &kGemmQ8_0,
                                   .decode = &kDecodeQ8_0}),
    Gguf<QType::kQ8_1, BlockQ8_1>({.vec_dot_type = Id(QType::kQ8_1),
                                   .dequantize = DequantizeRowQ8_1,
                                   .quantize = QuantizeRowQ8_1,
                                   .quantize_avx2 = QuantizeRowQ8_1Avx2}),
    Gguf<QType::kIQ4_NL, BlockIQ4_NL>(
        {.vec_dot_type = Id(QType::kQ8_0),
         .dequantize = DequantizeRowIQ4_NL,
         .quantize = QuantizeRowIQ4_NL,
         .dot = DotIQ4_NLQ8_0,
         .dot_avx2 = DotIQ4_NLQ8_0Avx2,
         .dot_avx512 = DotIQ4_NLQ8_0Avx512,
         .codec = {.kind = Kind::kLevels, .qmin = 0, .qmax = 15, .levels = kIq4nlValues},
         .encode = EncodeBlockIQ4_NL,
         .gemm = &kGemmIQ4_NL,
         .decode = &kDecodeIQ4_NL}),
    Gguf<QType::kQ2_K, BlockQ2_K>(
        {.vec_dot_type = Id(QType::kQ8_K),
         .dequantize = DequantizeRowQ2_K,
         .quantize = QuantizeRowQ2_K,
         .dot = DotQ2_KQ8_K,
         .dot_avx2 = DotQ2_KQ8_KAvx2,
         .dot_avx512 = DotQ2_KQ8_KAvx512,
         .codec = {.kind = Kind::kSubAffine, .sub_len = 16, .qmax = 3, .smax = 15},
         .encode = EncodeBlockQ2_K,
         .fallback = Id(QType::kIQ4_NL),
         .embed_bits = 2,
         .gemm = &kGemmQ2_K,
         .decode = &kDecodeQ2_K,
         .decode_gfni = &kDecodeQ2_KGfni}),
    Gguf<QType::kQ3_K, BlockQ3_K>({.vec_dot_type = Id(QType::kQ8_K),
                                   .dequantize = DequantizeRowQ3_K,
                                   .quantize = QuantizeRowQ3_K,
                                   .dot = DotQ3_KQ8_K,
                                   .dot_avx2 = DotQ3_KQ8_KAvx2,
                                   .dot_avx512 = DotQ3_KQ8_KAvx512,
                                   .codec = {.kind = Kind::kSubSymmetric,
                                             .sub_len = 16,
                                             .qmin = -4,
                                             .qmax = 3,
                                             .smin = -32,
                                             .smax = 31},
                                   .encode = EncodeBlockQ3_K,
                                   .fallback = Id(QType::kIQ4_NL),
                                   .embed_bits = 3,
                                   .gemm = &kGemmQ3_K,
                                   .decode = &kDecodeQ3_K,
                                   .decode_gfni = &kDecodeQ3_KGfni}),
    Gguf<QType::kQ4_K, BlockQ4_K>(
        {.vec_dot_type = Id(QType::kQ8_K),
         .dequantize = DequantizeRowQ4_K,
         .quantize = QuantizeRowQ4_K,
         .dot = DotQ4_KQ8_K,
         .dot_avx2 = DotQ4_KQ8_KAvx2,
         .dot_avx512 = DotQ4_KQ8_KAvx512,
         .codec = {.kind = Kind::kSubAffine, .sub_len = 32, .qmax = 15, .smax = 63},
         .encode = EncodeBlockQ4_K,
         .fallback = Id(QType::kQ5_0),
         .embed_bits = 4,
         .gemm = &kGemmQ4_K,
         .decode = &kDecodeQ4_K}),
    Gguf<QType::kQ5_K, BlockQ5_K>(
        {.vec_dot_type = Id(QType::kQ8_K),
         .dequantize = DequantizeRowQ5_K,
         .quantize = QuantizeRowQ5_K,
         .dot = DotQ5_KQ8_K,
         .dot_avx2 = DotQ5_KQ8_KAvx2,
         .dot_avx512 = DotQ5_KQ8_KAvx512,
         .codec = {.kind = Kind::kSubAffine, .sub_len = 32, .qmax = 31, .smax = 63},
         .encode = EncodeBlockQ5_K,
         .fallback = Id(QType::kQ5_1),
         .embed_bits = 5,
         .gemm = &kGemmQ5_K,
         .decode = &kDecodeQ5_K}),
    Gguf<QType::kQ6_K, BlockQ6_K>({.vec_dot_type = Id(QType::kQ8_K),
                                   .dequantize = DequantizeRowQ6_K,
                                   .quantize = QuantizeRowQ6_K,
                                   .dot = DotQ6_KQ8_K,
                                   .dot_avx2 = DotQ6_KQ8_KAvx2,
                                   .dot_avx512 = DotQ6_KQ8_KAvx512,
                                   .codec = {.kind = Kind::kSubSymmetric,
                                             .sub_len = 16,
                                             .qmin = -32,
                                             .qmax = 31,
                                             .smin = -128,
                                             .smax = 127},
                                   .encode = EncodeBlockQ6_K,
                                   .fallback = Id(QType::kQ8_0),
                                   .embed_bits = 6,
                                   .gemm = &kGemmQ6_K,
                                   .decode = &kDecodeQ6_K}),
    Gguf<QType::kQ8_K, BlockQ8_K>({.vec_dot_type = Id(QType::kQ8_K),
                                   .dequantize = DequantizeRowQ8_K,
                                   .quantize = QuantizeRowQ8_K,
                                   .quantize_avx2 = QuantizeRowQ8_KAvx2}),
    // fqpack's group-int types: int8 activations in blocks of 32 with their
    // sums (int8-act), since a group's offset needs the activation sum.
    {.type = kGroupIntActType,
     .name = "int8-act",
     .block_elems = 32,
     .block_bytes = kGroupActBlockBytes,
     .bits_per_weight = 8.0 * kGroupActBlockBytes / 32,
     .vec_dot_type = kGroupIntActType,
     .dequantize = DequantizeRowGroupIntAct,
     .quantize = QuantizeRowGroupIntAct,
     .quantize_avx2 = QuantizeRowGroupIntActAvx2},
#define FQ_GROUP_INT_TRAITS(B, G) GroupInt<B, G>("int" #B "-g" #G),
    FQ_GROUP_INT_FOR_EACH(FQ_GROUP_INT_TRAITS)
#undef FQ_GROUP_INT_TRAITS
};

constexpr bool SameName(const char* a, const char* b) {
  return std::string_view(a) == std::string_view(b);
}

// Every activation type a row names must itself be in the table with a
// quantizer, and every row with a dot needs both conversions. A GGUF row
// carries schema's facts; a row fqpack can quantize to has an encoder and a
// code range, and its fallback is in the table.
constexpr bool TableIsConsistent() {
  for (const TypeTraits& t : kTypeTraits) {
    if (t.dequantize == nullptr || t.quantize == nullptr) return false;
    bool found = false;
    for (const TypeTraits& u : kTypeTraits) found = found || u.type == t.vec_dot_type;
    if (!found) return false;
    if (t.dot_avx2 != nullptr && t.dot == nullptr) return false;
    // The decode ops replace the AVX-512 dot for one token; below that tier
    // MatMul falls back to the dots.
    if (t.decode != nullptr && t.dot_avx512 == nullptr) return false;
    if (t.decode_gfni != nullptr && t.decode == nullptr) return false;
    if (t.gguf != (GgmlBlockBytes(t.type) != 0)) return false;
    if (t.gguf) {
      if (t.block_bytes != GgmlBlockBytes(t.type) || t.block_elems != GgmlBlockElems(t.type)) {
        return false;
      }
      bool named = false;
      for (const QTypeInfo& s : kGgmlTypeTable) {
        named = named || (s.id == t.type && SameName(s.name, t.name));
      }
      if (!named) return false;
    }
    if ((t.codec.kind == Kind::kNone) != (t.encode == nullptr)) return false;
    if (t.codec.kind != Kind::kNone && !(t.codec.qmin < t.codec.qmax)) return false;
    bool fallback = false;
    for (const TypeTraits& u : kTypeTraits) fallback = fallback || u.type == t.fallback;
    if (!fallback) return false;
  }
  // Type ids are unique.
  for (size_t i = 0; i < std::size(kTypeTraits); ++i) {
    for (size_t j = i + 1; j < std::size(kTypeTraits); ++j) {
      if (kTypeTraits[i].type == kTypeTraits[j].type) return false;
    }
  }
  return true;
}
static_assert(TableIsConsistent());

std::atomic<SimdLevel> g_simd_cap{kWidestSimd};

}  // namespace

std::span<const TypeTraits> AllTraits() { return kTypeTraits; }

const TypeTraits* FindTraits(uint32_t type) {
  for (const TypeTraits& t : kTypeTraits) {
    if (t.type == type) return &t;
  }
  return nullptr;
}

bool IsExecutable(uint32_t type) {
  const TypeTraits* t = FindTraits(type);
  return t != nullptr && t->dot != nullptr;
}

bool CpuHasAvx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    // F16C from CPUID leaf 1 (ECX bit 29): clang before 15 has no "f16c"
    // for __builtin_cpu_supports, and the sanitizer build uses clang 14.
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  }();
  return has;
}

SimdLevel CpuSimdLevel() {
  static const SimdLevel level = [] {
    if (!CpuHasAvx2()) return SimdLevel::kPortable;
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512vnni");
    if (!avx512) return SimdLevel::kAvx2;
    return __builtin_cpu_supports("gfni") ? SimdLevel::kAvx512Gfni : SimdLevel::kAvx512;
  }();
  return level;
}

SimdLevel ActiveSimdLevel() {
  return std::min(CpuSimdLevel(), g_simd_cap.load(std::memory_order_relaxed));
}

void SetSimdCap(SimdLevel cap) { g_simd_cap.store(cap, std::memory_order_relaxed); }

DotFn BestDot(const TypeTraits& traits) {
  const SimdLevel level = ActiveSimdLevel();
  if (traits.dot_avx512 != nullptr && level >= SimdLevel::kAvx512) return traits.dot_avx512;
  if (traits.dot_avx2 != nullptr && level >= SimdLevel::kAvx2) return traits.dot_avx2;
  return traits.dot;
}

const DecodeOps* BestDecode(const TypeTraits& traits) {
  const SimdLevel level = ActiveSimdLevel();
  if (traits.decode_gfni != nullptr && level >= SimdLevel::kAvx512Gfni) return traits.decode_gfni;
  return level >= SimdLevel::kAvx512 ? traits.decode : nullptr;
}

QuantizeRowFn BestQuantize(const TypeTraits& traits) {
  return traits.quantize_avx2 != nullptr && ActiveSimdLevel() >= SimdLevel::kAvx2
             ? traits.quantize_avx2
             : traits.quantize;
}

void SetSimdEnabled(bool enabled) { SetSimdCap(enabled ? kWidestSimd : SimdLevel::kPortable); }
bool SimdEnabled() { return g_simd_cap.load(std::memory_order_relaxed) != SimdLevel::kPortable; }

}  // namespace fqpack::runtime::quant
