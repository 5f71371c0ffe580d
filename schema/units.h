// Sizes for people: "1.5 MiB" out, "300MB" / "600KiB" / "2G" in.
//
// Parsing: B; KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB and the
// bare K, M, G, T are powers of 1024 (as `head -c 1K` reads them). Case does
// not matter; a decimal fraction is allowed ("1.5GB").
#ifndef FQPACK_SCHEMA_UNITS_H_
#define FQPACK_SCHEMA_UNITS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "schema/status.h"

namespace fqpack {

// Binary units with three significant digits: "512 B", "1.18 MiB", "21.4 GiB".
std::string FormatBytes(uint64_t bytes);
// Signed variant for differences: "-1.18 MiB".
std::string FormatBytesSigned(int64_t bytes);
Result<uint64_t> ParseBytes(std::string_view text);

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_UNITS_H_
