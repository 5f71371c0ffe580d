// A small streaming JSON writer for `--json` output and the JSON columns of
// the store index. Commas and nesting are tracked; strings are escaped per
// RFC 8259; non-finite doubles are written as null.
#ifndef FQPACK_SCHEMA_JSON_H_
#define FQPACK_SCHEMA_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_JSON_H_
