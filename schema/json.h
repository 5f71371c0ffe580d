// JSON for `--json` output and the JSON columns of the store index: a small
// streaming writer (commas and nesting tracked, strings escaped per RFC 8259,
// non-finite doubles written as null), and the readers of what was written.
//
// The readers take text from a file (an index column of a store or of a
// .fqpack from anywhere): they never throw and never recurse on the input's
// nesting; anything that is not what they expect is Corruption naming `what`.
#ifndef FQPACK_SCHEMA_JSON_H_
#define FQPACK_SCHEMA_JSON_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"

namespace fqpack {

class JsonWriter {
 public:
  explicit JsonWriter(bool pretty = false) : pretty_(pretty) {}

  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view s);
  JsonWriter& Int(int64_t v);
  JsonWriter& Uint(uint64_t v);
  JsonWriter& Double(double v);
  JsonWriter& Bool(bool v);
  JsonWriter& Null();
  // Inserts already-encoded JSON as one value.
  JsonWriter& Raw(std::string_view json);

  const std::string& str() const { return out_; }

  static std::string Escape(std::string_view s);

 private:
  void BeforeValue();
  void Newline();

  std::string out_;
  // One entry per open container: how many items it holds so far.
  std::vector<int> counts_;
  bool pretty_;
  bool after_key_ = false;
};

// Deeper nesting than this is refused before parsing.
constexpr int kMaxJsonDepth = 64;

// `text` as a JSON array of strings.
// False when `text` nests arrays/objects deeper than kMaxJsonDepth (checked
// in one pass before parsing: printing or destroying a deep value recurses).
bool JsonNestingWithinLimit(std::string_view text);

Result<std::vector<std::string>> ParseJsonStringArray(std::string_view text, std::string_view what);

// The members of a JSON object: a string member as its value, any other
// member as compact JSON (a number as written, true, false, null, or a
// nested array or object).
Result<std::map<std::string, std::string>> ParseJsonObject(std::string_view text,
                                                           std::string_view what);

// Member `key` of the object `text` as ParseJsonObject gives it; "" when the
// text is not an object or has no such member.
std::string JsonMember(std::string_view text, const std::string& key);

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_JSON_H_
