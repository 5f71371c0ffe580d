// Damage for tests and fuzz targets of a .fqpack's row checks: every byte
// of the index is covered by the footer's checksum, so a flipped byte never
// reaches the reader's validation of rows. These helpers take a pack apart,
// change the index the way a crafted file would, and re-seal the file so that
// it passes the checksums. No GoogleTest here: the fuzz targets link it too.
#ifndef FQPACK_TESTS_SUPPORT_PACK_UTIL_H_
#define FQPACK_TESTS_SUPPORT_PACK_UTIL_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "schema/coding.h"
#include "schema/status.h"

struct sqlite3;

namespace fqpack::testing {

// The parts of a pack between its header and its footer, as the footer
// places them; no checksum is looked at. nullopt when the footer's offsets
// do not describe a layout of this file.
struct PackParts {
  ByteSpan payloads;  // [64, payload_end)
  ByteSpan gap;       // [payload_end, index_offset)
  ByteSpan index;     // [index_offset, file_size - 64)
};
std::optional<PackParts> SplitPack(ByteSpan file);

// A pack made of the parts: a fresh header, the payload area, the gap, the
// index, and a footer with the right offsets and checksums. `payload_end`
// replaces the footer's end of the payload area when given.
Bytes JoinPack(ByteSpan payloads, ByteSpan gap, ByteSpan index,
               std::optional<uint64_t> payload_end = std::nullopt);

// Opens `pack`'s index image as a writable in-memory database, calls `edit`
// on it, and returns the pack with the edited index in place of the old one
// and a footer (offsets, sizes, checksum) that matches it.
Result<Bytes> EditPackIndex(ByteSpan pack, const std::function<Status(sqlite3*)>& edit);

// The same with SQL statements as the edit.
Result<Bytes> RewritePackIndex(ByteSpan pack, const std::string& sql);

// Recomputes the footer of a pack whose index or payloads were changed in
// place (payload_end and index_offset kept, checksums and size fixed).
Bytes ResealPack(Bytes pack);

}  // namespace fqpack::testing

#endif  // FQPACK_TESTS_SUPPORT_PACK_UTIL_H_
