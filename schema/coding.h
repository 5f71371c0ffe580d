// Little-endian encoding of fixed-width integers and floats, and a bounds-
// checked reader over a byte span. Every on-disk format of fqpack goes through
// these: fields are encoded explicitly, never by copying a struct.
#ifndef FQPACK_SCHEMA_CODING_H_
#define FQPACK_SCHEMA_CODING_H_

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schema/checked.h"

namespace fqpack {

using Bytes = std::vector<uint8_t>;
using ByteSpan = std::span<const uint8_t>;

inline void PutU8(Bytes* out, uint8_t v) { out->push_back(v); }
inline void PutU16(Bytes* out, uint16_t v) {
  out->push_back(static_cast<uint8_t>(v));
  out->push_back(static_cast<uint8_t>(v >> 8));
}
inline void PutU32(Bytes* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline void PutU64(Bytes* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline void PutF32(Bytes* out, float v) { PutU32(out, std::bit_cast<uint32_t>(v)); }
inline void PutF64(Bytes* out, double v) { PutU64(out, std::bit_cast<uint64_t>(v)); }
inline void PutRaw(Bytes* out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out->insert(out->end(), b, b + n);
}
inline void PutString(Bytes* out, std::string_view s) { PutRaw(out, s.data(), s.size()); }

inline uint16_t DecodeU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t DecodeU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t DecodeU64(const uint8_t* p) {
  return static_cast<uint64_t>(DecodeU32(p)) | (static_cast<uint64_t>(DecodeU32(p + 4)) << 32);
}
inline void EncodeU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void EncodeU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// A cursor over bytes that never reads past the end: every Read* returns
// false (and leaves the cursor where it was) when fewer bytes remain than it
// needs. Callers turn false into Corruption with their own context.
class ByteReader {
 public:
  explicit ByteReader(ByteSpan bytes) : data_(bytes) {}

  size_t pos() const { return pos_; }
  size_t size() const { return data_.size(); }
  size_t remaining() const { return data_.size() - pos_; }
  bool Seek(size_t pos) {
    if (pos > data_.size()) return false;
    pos_ = pos;
    return true;
  }
  bool Skip(size_t n) {
    if (n > remaining()) return false;
    pos_ += n;
    return true;
  }

  bool ReadU8(uint8_t* v) {
    if (remaining() < 1) return false;
    *v = data_[pos_++];
    return true;
  }
  bool ReadU16(uint16_t* v) {
    return ReadFixed(v, 2, [](const uint8_t* p) { return DecodeU16(p); });
  }
  bool ReadU32(uint32_t* v) {
    return ReadFixed(v, 4, [](const uint8_t* p) { return DecodeU32(p); });
  }
  bool ReadU64(uint64_t* v) {
    return ReadFixed(v, 8, [](const uint8_t* p) { return DecodeU64(p); });
  }
  bool ReadF32(float* v) {
    uint32_t u;
    if (!ReadU32(&u)) return false;
    *v = std::bit_cast<float>(u);
    return true;
  }
  bool ReadF64(double* v) {
    uint64_t u;
    if (!ReadU64(&u)) return false;
    *v = std::bit_cast<double>(u);
    return true;
  }
  // A view of the next n bytes; false when fewer remain.
  bool ReadSpan(size_t n, ByteSpan* out) {
    if (n > remaining()) return false;
    *out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool ReadString(size_t n, std::string* out) {
    ByteSpan s;
    if (!ReadSpan(n, &s)) return false;
    out->assign(reinterpret_cast<const char*>(s.data()), s.size());
    return true;
  }

 private:
  template <typename T, typename F>
  bool ReadFixed(T* v, size_t n, F decode) {
    if (remaining() < n) return false;
    *v = decode(data_.data() + pos_);
    pos_ += n;
    return true;
  }

  ByteSpan data_;
  size_t pos_ = 0;
};

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_CODING_H_
