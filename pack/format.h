// The .fqpack file's fixed parts: header and footer. Byte tables and the
// order of checks are in schema/fqpack_format.md.
#ifndef FQPACK_PACK_FORMAT_H_
#define FQPACK_PACK_FORMAT_H_

#include <cstdint>
#include <string>

#include "schema/coding.h"
#include "schema/status.h"

namespace fqpack::pack {

constexpr uint32_t kFormatVersion = 1;
constexpr uint32_t kEndianMarker = 0x0A0B0C0D;
constexpr size_t kHeaderSize = 64;
constexpr size_t kFooterSize = 64;
constexpr uint8_t kHeaderMagic[8] = {0x89, 'F', 'Q', 'P', 'A', 'C', 'K', '\n'};
constexpr uint8_t kFooterMagic[8] = {'F', 'Q', 'P', 'K', 'E', 'N', 'D', 0};
// Payloads of at least kPageAlignFrom bytes start on a page boundary so that
// their pages can be released exactly; smaller ones on a cache line.
constexpr uint64_t kPageAlign = 4096;
constexpr uint64_t kSmallAlign = 64;
constexpr uint64_t kPageAlignFrom = uint64_t{64} << 10;

struct Footer {
  uint64_t index_offset = 0;
  uint64_t index_size = 0;
  uint64_t index_checksum = 0;
  uint64_t payload_end = 0;
  uint64_t file_size = 0;
};

uint64_t Checksum(ByteSpan bytes);  // XXH3-64, seed 0

Bytes EncodeHeader();
Bytes EncodeFooter(const Footer& f);

// Validate the fixed parts of a whole file held in `file`; `name` is used in
// messages. Corruption for damage, NotSupported for a newer version.
Status CheckHeader(ByteSpan file, const std::string& name);
Result<Footer> ReadFooter(ByteSpan file, const std::string& name);

}  // namespace fqpack::pack

#endif  // FQPACK_PACK_FORMAT_H_
