#include "store/catalog_codec.h"

#include <exception>
#include <limits>
#include <nlohmann/json.hpp>

#include "schema/json.h"

namespace fqpack::store {
namespace {

Result<nlohmann::ordered_json> Parse(std::string_view text, const std::string& what) {
  if (!JsonNestingWithinLimit(text)) {
    return Status::Corruption(what + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth));
  }
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption(what + ": not valid JSON");
  return j;
}

Result<std::vector<std::string>> Strings(const nlohmann::ordered_json& j, const std::string& what) {
  std::vector<std::string> out;
  for (const nlohmann::ordered_json& e : j) {
    if (!e.is_string()) return Status::Corruption(what + ": an element is not a string");
    out.push_back(e.get_ref<const std::string&>());
  }
  return out;
}

void Write(JsonWriter* w, const JsonValue& v) {
  if (std::holds_alternative<std::monostate>(v))
    w->Null();
  else if (const bool* b = std::get_if<bool>(&v))
    w->Bool(*b);
  else if (const int64_t* i = std::get_if<int64_t>(&v))
    w->Int(*i);
  else if (const uint64_t* u = std::get_if<uint64_t>(&v))
    w->Uint(*u);
  else if (const double* d = std::get_if<double>(&v))
    w->Double(*d);
  else if (const std::string* s = std::get_if<std::string>(&v))
    w->String(*s);
  else {
    w->BeginArray();
    for (const std::string& s : std::get<std::vector<std::string>>(v)) w->String(s);
    w->EndArray();
  }
}

}  // namespace

Result<JsonFields> DecodeJsonFields(std::string_view text, const std::string& what) {
  JsonFields out;
  if (text.empty()) return out;
  try {
    FQ_ASSIGN_OR_RETURN(nlohmann::ordered_json j, Parse(text, what));
    if (!j.is_object()) return Status::Corruption(what + ": not a JSON object");
    for (auto it = j.begin(); it != j.end(); ++it) {
      const nlohmann::ordered_json& v = it.value();
      const std::string member = what + ": member '" + it.key() + "'";
      if (v.is_null()) {
        out.Set(it.key(), std::monostate{});
      } else if (v.is_boolean()) {
        out.Set(it.key(), v.get<bool>());
      } else if (v.is_number_unsigned()) {
        const uint64_t u = v.get<uint64_t>();
        if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          out.Set(it.key(), static_cast<int64_t>(u));
        } else {
          out.Set(it.key(), u);
        }
      } else if (v.is_number_integer()) {
        out.Set(it.key(), v.get<int64_t>());
      } else if (v.is_number_float()) {
        out.Set(it.key(), v.get<double>());
      } else if (v.is_string()) {
        out.Set(it.key(), v.get_ref<const std::string&>());
      } else if (v.is_array()) {
        FQ_ASSIGN_OR_RETURN(std::vector<std::string> strings, Strings(v, member));
        out.Set(it.key(), std::move(strings));
      } else {
        return Status::Corruption(member + ": not a scalar or an array of strings");
      }
    }
    return out;
  } catch (const std::exception& e) {  // allocation failure: the only thing left that throws
    return Status::Corruption(what + ": " + e.what());
  }
}

std::string EncodeJsonFields(const JsonFields& fields) {
  JsonWriter w;
  w.BeginObject();
  for (const auto& [key, value] : fields.members()) {
    w.Key(key);
    Write(&w, value);
  }
  w.EndObject();
  return w.str();
}

Result<std::vector<std::string>> DecodeJsonLabels(std::string_view text, const std::string& what) {
  try {
    FQ_ASSIGN_OR_RETURN(nlohmann::ordered_json j, Parse(text, what));
    if (!j.is_array()) return Status::Corruption(what + ": not a JSON array");
    return Strings(j, what);
  } catch (const std::exception& e) {
    return Status::Corruption(what + ": " + e.what());
  }
}

std::string EncodeJsonLabels(const std::vector<std::string>& labels) {
  JsonWriter w;
  w.BeginArray();
  for (const std::string& l : labels) w.String(l);
  w.EndArray();
  return w.str();
}

JsonFields& JsonFields::Set(const std::string& key, JsonValue value) {
  for (auto& [k, v] : members_) {
    if (k == key) {
      v = std::move(value);
      return *this;
    }
  }
  members_.emplace_back(key, std::move(value));
  return *this;
}

const JsonValue* JsonFields::Find(const std::string& key) const {
  for (const auto& [k, v] : members_) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::string JsonFields::String(const std::string& key) const {
  const JsonValue* v = Find(key);
  const std::string* s = v == nullptr ? nullptr : std::get_if<std::string>(v);
  return s == nullptr ? "" : *s;
}

std::optional<int64_t> JsonFields::Int(const std::string& key) const {
  const JsonValue* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (const int64_t* i = std::get_if<int64_t>(v)) return *i;
  return std::nullopt;
}

bool JsonFields::Bool(const std::string& key) const {
  const JsonValue* v = Find(key);
  const bool* b = v == nullptr ? nullptr : std::get_if<bool>(v);
  return b != nullptr && *b;
}

std::string ToJson(const JsonFields& fields) { return EncodeJsonFields(fields); }
std::string ToJson(const std::vector<std::string>& labels) { return EncodeJsonLabels(labels); }

}  // namespace fqpack::store
