// Damage for tests of a .fqpack's row checks: every byte of the index is
// covered by the footer's checksum, so a flipped byte never reaches the
// reader's validation of rows. These helpers change the index the way a
// crafted file would, and re-seal the file so that it passes the checksums.
#ifndef FQPACK_TESTS_SUPPORT_PACK_UTIL_H_
#define FQPACK_TESTS_SUPPORT_PACK_UTIL_H_

#include <functional>
#include <string>

#include "schema/coding.h"
#include "schema/status.h"

struct sqlite3;

namespace fqpack::testing {

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
