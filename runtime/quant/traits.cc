#include <cpuid.h>

#include <atomic>

#include "runtime/quant/kernels.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"

namespace fqpack::runtime::quant {
namespace {

constexpr uint32_t Id(QType t) { return ToId(t); }

// One row per type the runtime handles. The activation types (Q8_1, Q8_K)
// are here for their quantizers and dequantizers only; they have no dot and
// are never weights. fqpack's group-int types are added as further rows with
// their GroupIntId() ids.
constexpr TypeTraits kTypeTraits[] = {
    {Id(QType::kF32), Id(QType::kF32), DequantizeRowF32, QuantizeRowF32, DotF32, DotF32Avx2},
    {Id(QType::kF16), Id(QType::kF16), DequantizeRowF16, QuantizeRowF16, DotF16, DotF16Avx2,
     QuantizeRowF16Avx2},
    {Id(QType::kBF16), Id(QType::kBF16), DequantizeRowBF16, QuantizeRowBF16, DotBF16, DotBF16Avx2},
    {Id(QType::kQ4_0), Id(QType::kQ8_0), DequantizeRowQ4_0, QuantizeRowQ4_0, DotQ4_0Q8_0,
     DotQ4_0Q8_0Avx2},
    {Id(QType::kQ4_1), Id(QType::kQ8_1), DequantizeRowQ4_1, QuantizeRowQ4_1, DotQ4_1Q8_1,
     DotQ4_1Q8_1Avx2},
    {Id(QType::kQ5_0), Id(QType::kQ8_0), DequantizeRowQ5_0, QuantizeRowQ5_0, DotQ5_0Q8_0,
     DotQ5_0Q8_0Avx2},
    {Id(QType::kQ5_1), Id(QType::kQ8_1), DequantizeRowQ5_1, QuantizeRowQ5_1, DotQ5_1Q8_1,
     DotQ5_1Q8_1Avx2},
    {Id(QType::kQ8_0), Id(QType::kQ8_0), DequantizeRowQ8_0, QuantizeRowQ8_0, DotQ8_0Q8_0,
     DotQ8_0Q8_0Avx2, QuantizeRowQ8_0Avx2},
    {Id(QType::kQ8_1), Id(QType::kQ8_1), DequantizeRowQ8_1, QuantizeRowQ8_1, nullptr, nullptr,
     QuantizeRowQ8_1Avx2},
    {Id(QType::kIQ4_NL), Id(QType::kQ8_0), DequantizeRowIQ4_NL, QuantizeRowIQ4_NL, DotIQ4_NLQ8_0,
     DotIQ4_NLQ8_0Avx2},
    {Id(QType::kQ2_K), Id(QType::kQ8_K), DequantizeRowQ2_K, QuantizeRowQ2_K, DotQ2_KQ8_K,
     DotQ2_KQ8_KAvx2},
    {Id(QType::kQ3_K), Id(QType::kQ8_K), DequantizeRowQ3_K, QuantizeRowQ3_K, DotQ3_KQ8_K,
     DotQ3_KQ8_KAvx2},
    {Id(QType::kQ4_K), Id(QType::kQ8_K), DequantizeRowQ4_K, QuantizeRowQ4_K, DotQ4_KQ8_K,
     DotQ4_KQ8_KAvx2},
    {Id(QType::kQ5_K), Id(QType::kQ8_K), DequantizeRowQ5_K, QuantizeRowQ5_K, DotQ5_KQ8_K,
     DotQ5_KQ8_KAvx2},
    {Id(QType::kQ6_K), Id(QType::kQ8_K), DequantizeRowQ6_K, QuantizeRowQ6_K, DotQ6_KQ8_K,
     DotQ6_KQ8_KAvx2},
    {Id(QType::kQ8_K), Id(QType::kQ8_K), DequantizeRowQ8_K, QuantizeRowQ8_K, nullptr, nullptr,
     QuantizeRowQ8_KAvx2},
    // fqpack's group-int types: int8 activations in blocks of 32 with their
    // sums (int8-act), since a group's offset needs the activation sum.
    {kGroupIntActType, kGroupIntActType, DequantizeRowGroupIntAct, QuantizeRowGroupIntAct, nullptr,
     nullptr, QuantizeRowGroupIntActAvx2},
#define FQ_GROUP_INT_TRAITS(B, G)                                                      \
  {GroupIntId(B, G), kGroupIntActType, DequantizeRowGroupInt<B, G>,                    \
   QuantizeRowGroupInt<B, G>, DotGroupInt<B, G>, DotGroupIntAvx2<B, G>},
    FQ_GROUP_INT_FOR_EACH(FQ_GROUP_INT_TRAITS)
#undef FQ_GROUP_INT_TRAITS
};

// Every activation type a row names must itself be in the table with a
// quantizer, and every row with a dot needs both conversions.
constexpr bool TableIsConsistent() {
  for (const TypeTraits& t : kTypeTraits) {
    if (t.dequantize == nullptr || t.quantize == nullptr) return false;
    bool found = false;
    for (const TypeTraits& u : kTypeTraits) found = found || u.type == t.vec_dot_type;
    if (!found) return false;
    if (t.dot_avx2 != nullptr && t.dot == nullptr) return false;
  }
  return true;
}
static_assert(TableIsConsistent());

std::atomic<bool> g_simd_enabled{true};

}  // namespace

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

namespace {
bool UseAvx2() { return g_simd_enabled.load(std::memory_order_relaxed) && CpuHasAvx2(); }
}  // namespace

DotFn BestDot(const TypeTraits& traits) {
  return traits.dot_avx2 != nullptr && UseAvx2() ? traits.dot_avx2 : traits.dot;
}

QuantizeRowFn BestQuantize(const TypeTraits& traits) {
  return traits.quantize_avx2 != nullptr && UseAvx2() ? traits.quantize_avx2 : traits.quantize;
}

void SetSimdEnabled(bool enabled) { g_simd_enabled.store(enabled, std::memory_order_relaxed); }
bool SimdEnabled() { return g_simd_enabled.load(std::memory_order_relaxed); }

}  // namespace fqpack::runtime::quant
