#include "schema/quant_types.h"

#include <cctype>
#include <charconv>

#include "schema/coding.h"

namespace fqpack {
namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

constexpr bool ValidGroupBits(uint32_t b) { return b >= 2 && b <= 8 && b != 7; }
constexpr bool ValidGroupSize(uint32_t g) { return g == 32 || g == 64 || g == 128; }

}  // namespace

std::span<const QTypeInfo> GgmlTypes() { return kGgmlTypeTable; }

const QTypeInfo* FindGgmlType(uint32_t id) {
  for (const QTypeInfo& t : kGgmlTypeTable) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

const QTypeInfo* FindGgmlTypeByName(std::string_view name) {
  for (const QTypeInfo& t : kGgmlTypeTable) {
    if (EqualsIgnoreCase(t.name, name)) return &t;
  }
  return nullptr;
}

bool IsGroupIntType(uint32_t id) {
  if (id < kGroupIntBase) return false;
  uint32_t rest = id - kGroupIntBase;
  return ValidGroupBits(rest / 1000) && ValidGroupSize(rest % 1000);
}
uint32_t GroupIntBits(uint32_t id) { return (id - kGroupIntBase) / 1000; }
uint32_t GroupIntGroup(uint32_t id) { return (id - kGroupIntBase) % 1000; }

bool IsKnownType(uint32_t id) {
  return FindGgmlType(id) != nullptr || IsGroupIntType(id) || id == kGroupIntActType;
}

std::string QTypeName(uint32_t id) {
  if (const QTypeInfo* t = FindGgmlType(id)) return t->name;
  if (IsGroupIntType(id)) {
    return "int" + std::to_string(GroupIntBits(id)) + "-g" + std::to_string(GroupIntGroup(id));
  }
  if (id == kGroupIntActType) return "int8-act";
  return "type#" + std::to_string(id);
}

Result<uint32_t> ParseQTypeName(std::string_view name) {
  if (const QTypeInfo* t = FindGgmlTypeByName(name)) return t->id;
  // int<b>-g<g>
  if (name.size() >= 6 && EqualsIgnoreCase(name.substr(0, 3), "int")) {
    size_t dash = name.find("-g");
    if (dash != std::string_view::npos) {
      std::string bits(name.substr(3, dash - 3));
      std::string group(name.substr(dash + 2));
      bool digits = !bits.empty() && !group.empty();
      for (char c : bits + group) digits = digits && std::isdigit(static_cast<unsigned char>(c));
      uint32_t b = 0, g = 0;
      if (digits && bits.size() <= 2 && group.size() <= 4 &&
          std::from_chars(bits.data(), bits.data() + bits.size(), b).ec == std::errc() &&
          std::from_chars(group.data(), group.data() + group.size(), g).ec == std::errc()) {
        uint32_t id = GroupIntId(b, g);
        if (IsGroupIntType(id)) return id;
      }
    }
  }
  return Status::NotFound("unknown tensor type name '" + std::string(name) + "'");
}

Result<uint64_t> RowBytes(uint32_t type, uint64_t ne0) {
  if (const QTypeInfo* t = FindGgmlType(type)) {
    if (ne0 % t->block_elems != 0) {
      return Status::InvalidArgument(
          "row of " + std::to_string(ne0) + " elements is not a multiple of " +
          std::to_string(t->block_elems) + " (block size of " + t->name + ")");
    }
    uint64_t bytes;
    if (!CheckedMul(ne0 / t->block_elems, t->block_bytes, &bytes)) {
      return Status::InvalidArgument("row size overflows");
    }
    return bytes;
  }
  if (IsGroupIntType(type)) {
    // Each group: fp16 scale, fp16 offset, then ceil(len*bits/8) bytes of
    // packed codes; the last group of a row may be shorter than g.
    const uint64_t bits = GroupIntBits(type), g = GroupIntGroup(type);
    if (ne0 > (UINT64_MAX >> 8)) return Status::InvalidArgument("row size overflows");
    const uint64_t full = ne0 / g, tail = ne0 % g;
    uint64_t bytes = full * (4 + g * bits / 8);
    if (tail != 0) bytes += 4 + (tail * bits + 7) / 8;
    return bytes;
  }
  if (type == kGroupIntActType) {
    // Per 32 elements (the last block zero-padded): f32 d, f32 s, i8[32].
    if (ne0 > (UINT64_MAX >> 8)) return Status::InvalidArgument("row size overflows");
    return (ne0 + 31) / 32 * 40;
  }
  return Status::NotSupported("unknown tensor type " + QTypeName(type));
}

Result<uint64_t> TensorBytes(uint32_t type, std::span<const uint64_t> ne) {
  if (ne.empty()) return Status::InvalidArgument("tensor with no dimensions");
  FQ_ASSIGN_OR_RETURN(uint64_t row, RowBytes(type, ne[0]));
  uint64_t total = row;
  for (size_t i = 1; i < ne.size(); ++i) {
    if (!CheckedMul(total, ne[i], &total)) return Status::InvalidArgument("tensor size overflows");
  }
  return total;
}

}  // namespace fqpack
