// The identity of a module: its quant type, its shape and its bytes, hashed
// with XXH3-128. The key names the module's blob in the store and in packs.
//
// Key input, in this order (all little-endian): u32 qtype, u32 n_dims,
// u64 ne[0..3] (unused dimensions are 1), then the module bytes. The hex form
// is the 128-bit value, high half first, as `xxh128sum` prints it.
//
// XXH3 is fast, not collision resistant: whoever finds a key already taken
// must compare the bytes before treating two modules as one.
#ifndef FQPACK_STORE_MODULE_KEY_H_
#define FQPACK_STORE_MODULE_KEY_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "schema/coding.h"
#include "schema/status.h"

namespace fqpack::store {

struct ModuleDesc {
  uint32_t qtype = 0;
  uint32_t n_dims = 1;
  std::array<uint64_t, 4> ne = {1, 1, 1, 1};

  uint64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  // Bytes the module must have; an error for an unknown type or bad shape.
  Result<uint64_t> nbytes() const;
  std::string ShapeString() const;  // "64x512"
  bool SameShape(const ModuleDesc& o) const { return n_dims == o.n_dims && ne == o.ne; }
  bool operator==(const ModuleDesc& o) const { return qtype == o.qtype && SameShape(o); }
};

struct ModuleKey {
  std::array<uint8_t, 16> bytes{};  // big-endian 128-bit value

  std::string Hex() const;
  static Result<ModuleKey> FromHex(std::string_view hex);
  bool operator==(const ModuleKey& o) const { return bytes == o.bytes; }
  bool operator!=(const ModuleKey& o) const { return bytes != o.bytes; }
  bool operator<(const ModuleKey& o) const { return bytes < o.bytes; }
};

struct ModuleKeyHash {
  size_t operator()(const ModuleKey& k) const {
    size_t h;
    static_assert(sizeof(h) <= sizeof(k.bytes));
    std::memcpy(&h, k.bytes.data(), sizeof(h));
    return h;
  }
};

ModuleKey ComputeModuleKey(const ModuleDesc& desc, ByteSpan data);

// A module description as read from an index row (a store's or a pack's),
// from SQLite's signed integers: a value out of range becomes one that
// CheckModuleRow rejects instead of being truncated into a valid-looking one.
ModuleDesc ModuleDescFromRow(int64_t qtype, int64_t n_dims, const int64_t ne[4]);

// Checks such a row: 1..4 dimensions, each extent 1..kMaxTensorExtent (unused
// ones 1), a type fqpack knows, and `raw_bytes` equal to what that type and
// shape take. Corruption naming `what` otherwise.
Status CheckModuleRow(const ModuleDesc& desc, int64_t raw_bytes, const std::string& what);

// The key function, replaceable in tests to plant collisions.
using KeyFunction = std::function<ModuleKey(const ModuleDesc&, ByteSpan)>;

}  // namespace fqpack::store

#endif  // FQPACK_STORE_MODULE_KEY_H_
