// The one codec of the index's JSON columns (keys and types per column:
// schema/store.md). Text is read with nlohmann-json (no exceptions escape:
// anything unexpected is Corruption naming `what`, the row and column) and
// written in JsonWriter's compact form, which is what every fqpack version
// has stored: a column read and written again keeps its exact text, so a
// pack copies a store's rows byte for byte.
//
// Internal to store/: the catalog is the only caller.
#ifndef FQPACK_STORE_CATALOG_CODEC_H_
#define FQPACK_STORE_CATALOG_CODEC_H_

#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"
#include "store/catalog.h"

namespace fqpack::store {

// A JSON object whose members are scalars or arrays of strings. "" decodes
// as no members (a NULL column).
Result<JsonFields> DecodeJsonFields(std::string_view text, const std::string& what);
std::string EncodeJsonFields(const JsonFields& fields);

// A JSON array of strings.
Result<std::vector<std::string>> DecodeJsonLabels(std::string_view text, const std::string& what);
std::string EncodeJsonLabels(const std::vector<std::string>& labels);

}  // namespace fqpack::store

#endif  // FQPACK_STORE_CATALOG_CODEC_H_
