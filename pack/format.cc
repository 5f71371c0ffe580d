#include "pack/format.h"

#include <xxhash.h>

#include <cstring>

namespace fqpack::pack {

uint64_t Checksum(ByteSpan bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

Bytes EncodeHeader() {
  Bytes h;
  h.reserve(kHeaderSize);
  PutRaw(&h, kHeaderMagic, sizeof(kHeaderMagic));
  PutU32(&h, kFormatVersion);
  PutU32(&h, kEndianMarker);
  PutU32(&h, kHeaderSize);
  PutU32(&h, 0);  // flags
  h.resize(56, 0);
  PutU64(&h, Checksum(h));
  return h;
}

Bytes EncodeFooter(const Footer& f) {
  Bytes b;
  PutU64(&b, f.index_offset);
  PutU64(&b, f.index_size);
  PutU64(&b, f.index_checksum);
  PutU64(&b, f.payload_end);
  PutU64(&b, f.file_size);
  PutU64(&b, kFormatVersion);
  PutRaw(&b, kFooterMagic, sizeof(kFooterMagic));
  PutU64(&b, Checksum(b));
  return b;
}

Status CheckHeader(ByteSpan file, const std::string& name) {
  if (file.size() < kHeaderSize + kFooterSize) {
    return Status::Corruption(name + ": not an fqpack file (" + std::to_string(file.size()) +
                              " bytes, too short for a header and footer)");
  }
  const uint8_t* h = file.data();
  if (std::memcmp(h, kHeaderMagic, sizeof(kHeaderMagic)) != 0) {
    return Status::Corruption(name + ": not an fqpack file (bad magic in the header)");
  }
  const uint32_t version = DecodeU32(h + 8);
  const uint32_t endian = DecodeU32(h + 12);
  const uint64_t sum = DecodeU64(h + 56);
  if (sum != Checksum(file.subspan(0, 56))) {
    return Status::Corruption(name + ": header checksum mismatch (damaged header)");
  }
  if (endian != kEndianMarker) {
    return Status::NotSupported(name + ": written for another byte order");
  }
  if (version > kFormatVersion) {
    return Status::NotSupported(name + ": fqpack format version " + std::to_string(version) +
                                " is newer than this fqpack reads (" +
                                std::to_string(kFormatVersion) + ")");
  }
  if (version == 0) return Status::Corruption(name + ": format version 0");
  if (DecodeU32(h + 16) != kHeaderSize)
    return Status::Corruption(name + ": unexpected header size");
  if (DecodeU32(h + 20) != 0) {
    return Status::NotSupported(name + ": header flags " + std::to_string(DecodeU32(h + 20)) +
                                " unknown to this fqpack");
  }
  return Status::OK();
}

Result<Footer> ReadFooter(ByteSpan file, const std::string& name) {
  const uint8_t* p = file.data() + file.size() - kFooterSize;
  if (DecodeU64(p + 56) != Checksum(ByteSpan(p, 56))) {
    return Status::Corruption(name + ": footer checksum mismatch (truncated or damaged file)");
  }
  if (std::memcmp(p + 48, kFooterMagic, sizeof(kFooterMagic)) != 0) {
    return Status::Corruption(name + ": bad magic in the footer");
  }
  const uint64_t version = DecodeU64(p + 40);
  if (version > kFormatVersion) {
    return Status::NotSupported(name + ": fqpack format version " + std::to_string(version) +
                                " is newer than this fqpack reads (" +
                                std::to_string(kFormatVersion) + ")");
  }
  Footer f;
  f.index_offset = DecodeU64(p);
  f.index_size = DecodeU64(p + 8);
  f.index_checksum = DecodeU64(p + 16);
  f.payload_end = DecodeU64(p + 24);
  f.file_size = DecodeU64(p + 32);
  if (f.file_size != file.size()) {
    return Status::Corruption(name + ": file is " + std::to_string(file.size()) +
                              " bytes but its footer says " + std::to_string(f.file_size) +
                              " (truncated or extended)");
  }
  const uint64_t index_end = file.size() - kFooterSize;
  if (f.payload_end < kHeaderSize || f.payload_end > f.index_offset || f.index_offset > index_end ||
      f.index_size != index_end - f.index_offset) {
    return Status::Corruption(name + ": footer offsets are inconsistent (payloads end " +
                              std::to_string(f.payload_end) + ", index at " +
                              std::to_string(f.index_offset) + " of " +
                              std::to_string(f.index_size) + " bytes)");
  }
  if (f.index_checksum != Checksum(file.subspan(f.index_offset, f.index_size))) {
    return Status::Corruption(name + ": index checksum mismatch (damaged index)");
  }
  return f;
}

}  // namespace fqpack::pack
