#include "store/module_key.h"

#include <xxhash.h>

#include "schema/quant_types.h"

namespace fqpack::store {

Result<uint64_t> ModuleDesc::nbytes() const {
  return TensorBytes(qtype, std::span(ne.data(), n_dims));
}

ModuleDesc ModuleDescFromRow(int64_t qtype, int64_t n_dims, const int64_t ne[4]) {
  ModuleDesc d;
  d.qtype = qtype >= 0 && qtype <= UINT32_MAX ? static_cast<uint32_t>(qtype) : UINT32_MAX;
  d.n_dims = n_dims >= 1 && n_dims <= 4 ? static_cast<uint32_t>(n_dims) : 0;
  for (int i = 0; i < 4; ++i) d.ne[i] = ne[i] >= 1 ? static_cast<uint64_t>(ne[i]) : 0;
  return d;
}

Status CheckModuleRow(const ModuleDesc& desc, int64_t raw_bytes, const std::string& what) {
  if (desc.n_dims < 1 || desc.n_dims > 4)
    return Status::Corruption(what + ": bad number of dimensions");
  for (uint32_t i = 0; i < 4; ++i) {
    if (desc.ne[i] < 1 || desc.ne[i] > kMaxTensorExtent || (i >= desc.n_dims && desc.ne[i] != 1)) {
      return Status::Corruption(what + ": bad shape");
    }
  }
  Result<uint64_t> expect = desc.nbytes();
  if (!expect.ok()) return Status::Corruption(what + ": " + expect.status().message());
  if (raw_bytes < 0 || static_cast<uint64_t>(raw_bytes) != *expect) {
    return Status::Corruption(what + ": size " + std::to_string(raw_bytes) +
                              " does not match its type " + QTypeName(desc.qtype) + " and shape " +
                              desc.ShapeString());
  }
  return Status::OK();
}

std::string ModuleDesc::ShapeString() const {
  std::string s;
  for (uint32_t d = 0; d < n_dims; ++d) {
    if (d > 0) s += "x";
    s += std::to_string(ne[d]);
  }
  return s;
}

std::string ModuleKey::Hex() const {
  static const char kHex[] = "0123456789abcdef";
  std::string s(32, '0');
  for (size_t i = 0; i < 16; ++i) {
    s[2 * i] = kHex[bytes[i] >> 4];
    s[2 * i + 1] = kHex[bytes[i] & 15];
  }
  return s;
}

Result<ModuleKey> ModuleKey::FromHex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  ModuleKey k;
  if (hex.size() != 32)
    return Status::InvalidArgument("module key '" + std::string(hex) + "' is not 32 hex digits");
  for (size_t i = 0; i < 16; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return Status::InvalidArgument("module key '" + std::string(hex) + "' is not hex");
    k.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return k;
}

ModuleKey ComputeModuleKey(const ModuleDesc& desc, ByteSpan data) {
  Bytes prefix;
  PutU32(&prefix, desc.qtype);
  PutU32(&prefix, desc.n_dims);
  for (uint64_t n : desc.ne) PutU64(&prefix, n);
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  XXH3_128bits_update(state, prefix.data(), prefix.size());
  XXH3_128bits_update(state, data.data(), data.size());
  XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, h);
  ModuleKey k;
  std::memcpy(k.bytes.data(), canon.digest, 16);
  return k;
}

}  // namespace fqpack::store
