// Every reader of the index's JSON columns (ensemble.library and .params,
// qm.params, model.hparams, dynamic_model.params) on arbitrary text: the
// codec in schema/json.h. ParseJsonStringArray reads the library column
// (`fqpack ls --ensembles`, report, gc --prune), JsonMember the params
// (ls, report, the prune repair); the other columns are only copied into
// --json output. To fuzz another reader, add it to kReaders.

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "schema/json.h"
#include "tests/fuzz/fuzz_target.h"

namespace fqpack::fuzz {
namespace {

void ReadStringArray(std::string_view json) {
  Result<std::vector<std::string>> labels = ParseJsonStringArray(json, "fuzz");
  if (!labels.ok()) {
    FQ_FUZZ_CHECK(labels.status().IsCorruption(), labels.status().ToString());
    return;
  }
  // What parses must survive being written back (JsonWriter, as
  // ensemble.library is written) and read again.
  JsonWriter w;
  w.BeginArray();
  for (const std::string& l : *labels) w.String(l);
  w.EndArray();
  Result<std::vector<std::string>> again = ParseJsonStringArray(w.str(), "fuzz again");
  FQ_FUZZ_CHECK(again.ok() && *again == *labels, "labels do not survive JsonWriter: " + w.str());
}

// The keys the code looks up.
const char* const kKeys[] = {"metric", "include_embed", "tokens", "n_ctx",
                             "stem",   "branch",        "method", ""};

void ReadObject(std::string_view json) {
  Result<std::map<std::string, std::string>> members = ParseJsonObject(json, "fuzz");
  if (!members.ok()) {
    FQ_FUZZ_CHECK(members.status().IsCorruption(), members.status().ToString());
    for (const char* key : kKeys) FQ_FUZZ_CHECK(JsonMember(json, key).empty(), key);
    return;
  }
  // A few members are enough: each look-up parses the whole text again.
  size_t n = 0;
  for (const auto& [key, value] : *members) {
    if (++n > 8) break;
    FQ_FUZZ_CHECK(JsonMember(json, key) == value,
                  "JsonMember('" + key + "') differs from ParseJsonObject");
  }
  for (const char* key : kKeys) {
    auto it = members->find(key);
    FQ_FUZZ_CHECK(JsonMember(json, key) == (it == members->end() ? "" : it->second), key);
  }
}

struct JsonReader {
  const char* name;
  void (*read)(std::string_view json);
};

const JsonReader kReaders[] = {
    {"ParseJsonStringArray", ReadStringArray},
    {"ParseJsonObject and JsonMember", ReadObject},
};

}  // namespace
}  // namespace fqpack::fuzz

FQ_FUZZ_ENTRY(fuzz_json)(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  for (const fqpack::fuzz::JsonReader& r : fqpack::fuzz::kReaders) r.read(json);
  return 0;
}
