#include "schema/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <unordered_set>

#include "schema/quant_types.h"

namespace fqpack::gguf {
namespace {

// Smallest encoded size of one value of each type: a guard that lets the
// parser reject an absurd count before reserving memory for it.
uint64_t MinEncodedSize(ValueType t) {
  switch (t) {
    case ValueType::kString:  // the u64 length
      return 8;
    case ValueType::kArray:  // elem type + count
      return 12;
    default:
      return ScalarSize(t);
  }
}

bool ValidValueType(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kF64); }

// Decodes one little-endian scalar of type t at p into a Value.
Value DecodeScalar(ValueType t, const uint8_t* p) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kBool:
      return Value::Uint(t, p[0]);
    case ValueType::kI8:
      return Value::Int(t, static_cast<int8_t>(p[0]));
    case ValueType::kU16:
      return Value::Uint(t, DecodeU16(p));
    case ValueType::kI16:
      return Value::Int(t, static_cast<int16_t>(DecodeU16(p)));
    case ValueType::kU32:
      return Value::Uint(t, DecodeU32(p));
    case ValueType::kI32:
      return Value::Int(t, static_cast<int32_t>(DecodeU32(p)));
    case ValueType::kU64:
      return Value::Uint(t, DecodeU64(p));
    case ValueType::kI64:
      return Value::Int(t, static_cast<int64_t>(DecodeU64(p)));
    case ValueType::kF32:
    case ValueType::kF64: {
      // The bits as stored, beside the value: converting a signalling NaN
      // quiets it, and encoding must give back the bytes that were read.
      Value v;
      v.type = t;
      v.u = t == ValueType::kF32 ? DecodeU32(p) : DecodeU64(p);
      v.f = t == ValueType::kF32
                ? static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(v.u)))
                : std::bit_cast<double>(v.u);
      return v;
    }
    case ValueType::kString:
    case ValueType::kArray:
      break;
  }
  return Value();
}

// Appends the little-endian bytes of scalar v (of type t).
void EncodeScalar(ValueType t, const Value& v, Bytes* out) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kBool:
      PutU8(out, static_cast<uint8_t>(v.u));
      break;
    case ValueType::kI8:
      PutU8(out, static_cast<uint8_t>(v.i));
      break;
    case ValueType::kU16:
      PutU16(out, static_cast<uint16_t>(v.u));
      break;
    case ValueType::kI16:
      PutU16(out, static_cast<uint16_t>(v.i));
      break;
    case ValueType::kU32:
      PutU32(out, static_cast<uint32_t>(v.u));
      break;
    case ValueType::kI32:
      PutU32(out, static_cast<uint32_t>(v.i));
      break;
    case ValueType::kU64:
      PutU64(out, v.u);
      break;
    case ValueType::kI64:
      PutU64(out, static_cast<uint64_t>(v.i));
      break;
    case ValueType::kF32:
      PutU32(out, static_cast<uint32_t>(v.u));
      break;
    case ValueType::kF64:
      PutU64(out, v.u);
      break;
    case ValueType::kString:
    case ValueType::kArray:
      break;
  }
}

class Parser {
 public:
  Parser(ByteSpan bytes, std::string_view name)
      : r_(bytes), name_(name), limit_(bytes.size() * kParseBytesPerInputByte + kParseSlackBytes) {}

  ByteReader& reader() { return r_; }

  Status Error(std::string_view what) const {
    return Status::Corruption(std::string(name_) + ": offset " + std::to_string(r_.pos()) + ": " +
                              std::string(what));
  }

  // Charges an allocation of count * elem_bytes against the parse's limit
  // (kParseBytesPerInputByte per byte of input).
  Status Charge(uint64_t count, uint64_t elem_bytes, std::string_view what) {
    if (limit_.Charge(count, elem_bytes)) return Status::OK();
    return Error(std::string(what) + " would need more memory than a file of " +
                 std::to_string(r_.size()) + " bytes may ask for");
  }

  Status ReadString(std::string* out, std::string_view what) {
    uint64_t len;
    if (!r_.ReadU64(&len)) return Error(std::string("truncated length of ") + std::string(what));
    if (len > r_.remaining()) {
      return Error(std::string(what) + " length " + std::to_string(len) + " exceeds the " +
                   std::to_string(r_.remaining()) + " bytes left");
    }
    FQ_RETURN_IF_ERROR(Charge(len, 1, what));
    if (!r_.ReadString(static_cast<size_t>(len), out))
      return Error(std::string("truncated ") + std::string(what));
    return Status::OK();
  }

  Status ReadArray(Value* out, int depth, const std::string& key) {
    if (depth >= kMaxArrayDepth) return Error("key '" + key + "': arrays nested too deeply");
    uint32_t et;
    uint64_t n;
    if (!r_.ReadU32(&et) || !r_.ReadU64(&n))
      return Error("key '" + key + "': truncated array header");
    if (!ValidValueType(et)) {
      return Error("key '" + key + "': unknown array element type " + std::to_string(et));
    }
    out->elem_type = static_cast<ValueType>(et);
    uint64_t min_bytes;
    if (!CheckedMul(n, MinEncodedSize(out->elem_type), &min_bytes) || min_bytes > r_.remaining()) {
      return Error("key '" + key + "': array of " + std::to_string(n) +
                   " elements cannot fit in the " + std::to_string(r_.remaining()) + " bytes left");
    }
    // From here n elements are known to fit in the bytes left, so each
    // reservation below is bounded by the input, not by the count.
    const size_t count = static_cast<size_t>(n);
    switch (out->elem_type) {
      case ValueType::kString: {
        FQ_RETURN_IF_ERROR(Charge(n, sizeof(uint64_t), "key '" + key + "': string array"));
        out->ends.reserve(count);
        for (size_t k = 0; k < count; ++k) {
          uint64_t len;
          if (!r_.ReadU64(&len)) return Error("key '" + key + "': truncated string array");
          ByteSpan s;
          if (len > r_.remaining() || !r_.ReadSpan(static_cast<size_t>(len), &s)) {
            return Error("key '" + key + "': string #" + std::to_string(k) + " of length " +
                         std::to_string(len) + " exceeds the " + std::to_string(r_.remaining()) +
                         " bytes left");
          }
          FQ_RETURN_IF_ERROR(Charge(s.size(), 1, "key '" + key + "': string array"));
          out->chars.append(reinterpret_cast<const char*>(s.data()), s.size());
          out->ends.push_back(out->chars.size());
        }
        return Status::OK();
      }
      case ValueType::kArray: {
        FQ_RETURN_IF_ERROR(Charge(n, sizeof(Value), "key '" + key + "': array of arrays"));
        out->arrays.resize(count);
        for (Value& a : out->arrays) {
          a.type = ValueType::kArray;
          FQ_RETURN_IF_ERROR(ReadArray(&a, depth + 1, key));
        }
        return Status::OK();
      }
      default: {
        ByteSpan raw;
        if (!r_.ReadSpan(count * ScalarSize(out->elem_type), &raw)) {
          return Error("key '" + key + "': truncated array");
        }
        FQ_RETURN_IF_ERROR(Charge(raw.size(), 1, "key '" + key + "': array"));
        if (out->elem_type == ValueType::kBool) {
          for (size_t k = 0; k < raw.size(); ++k) {
            if (raw[k] > 1) {
              return Error("key '" + key + "': bool element #" + std::to_string(k) + " is " +
                           std::to_string(raw[k]) + ", not 0 or 1");
            }
          }
        }
        out->scalars.assign(raw.begin(), raw.end());
        return Status::OK();
      }
    }
  }

  Status ReadValue(ValueType type, Value* out, const std::string& key) {
    out->type = type;
    if (type == ValueType::kString)
      return ReadString(&out->str, "string value of key '" + key + "'");
    if (type == ValueType::kArray) return ReadArray(out, 0, key);
    ByteSpan raw;
    if (!r_.ReadSpan(ScalarSize(type), &raw)) {
      return Error("key '" + key + "': truncated " + ValueTypeName(type) + " value");
    }
    *out = DecodeScalar(type, raw.data());
    if (type == ValueType::kBool && out->u > 1) {
      return Error("key '" + key + "': bool value " + std::to_string(out->u) + " is not 0 or 1");
    }
    return Status::OK();
  }

  Status ReadMetadata(uint64_t n_kv, Metadata* md) {
    // A key/value is at least an 8-byte key length, a 4-byte type and a
    // 1-byte value.
    uint64_t min_bytes;
    if (!CheckedMul(n_kv, 13, &min_bytes) || min_bytes > r_.remaining()) {
      return Error("metadata count " + std::to_string(n_kv) + " cannot fit in the " +
                   std::to_string(r_.remaining()) + " bytes left");
    }
    FQ_RETURN_IF_ERROR(Charge(n_kv, sizeof(KeyValue), "metadata"));
    md->entries.reserve(static_cast<size_t>(n_kv));
    std::unordered_set<std::string> seen;
    for (uint64_t k = 0; k < n_kv; ++k) {
      KeyValue kv;
      FQ_RETURN_IF_ERROR(ReadString(&kv.key, "metadata key #" + std::to_string(k)));
      if (!seen.insert(kv.key).second) return Error("duplicate metadata key '" + kv.key + "'");
      uint32_t t;
      if (!r_.ReadU32(&t)) return Error("key '" + kv.key + "': truncated value type");
      if (!ValidValueType(t)) {
        return Error("key '" + kv.key + "': unknown value type " + std::to_string(t));
      }
      FQ_RETURN_IF_ERROR(ReadValue(static_cast<ValueType>(t), &kv.value, kv.key));
      md->entries.push_back(std::move(kv));
    }
    return Status::OK();
  }

 private:
  ByteReader r_;
  std::string_view name_;
  AllocationLimit limit_;
};

void EncodeArrayBody(const Value& v, Bytes* out) {
  PutU32(out, static_cast<uint32_t>(v.elem_type));
  PutU64(out, v.size());
  switch (v.elem_type) {
    case ValueType::kString:
      for (size_t k = 0; k < v.ends.size(); ++k) {
        const std::string_view s = v.StringAt(k);
        PutU64(out, s.size());
        PutString(out, s);
      }
      break;
    case ValueType::kArray:
      for (const Value& a : v.arrays) EncodeArrayBody(a, out);
      break;
    default:
      PutRaw(out, v.scalars.data(), v.scalars.size());
      break;
  }
}

void EncodeValue(const Value& v, Bytes* out) {
  switch (v.type) {
    case ValueType::kString:
      PutU64(out, v.str.size());
      PutString(out, v.str);
      break;
    case ValueType::kArray:
      EncodeArrayBody(v, out);
      break;
    default:
      EncodeScalar(v.type, v, out);
      break;
  }
}

Status WrongType(std::string_view key, const Value& v, std::string_view want) {
  return Status::InvalidArgument("metadata key '" + std::string(key) + "' holds " +
                                 ValueTypeName(v.type) + ", expected " + std::string(want));
}

Status Missing(std::string_view key) {
  return Status::NotFound("metadata key '" + std::string(key) + "' is missing");
}

}  // namespace

const char* ValueTypeName(ValueType t) {
  switch (t) {
    case ValueType::kU8:
      return "uint8";
    case ValueType::kI8:
      return "int8";
    case ValueType::kU16:
      return "uint16";
    case ValueType::kI16:
      return "int16";
    case ValueType::kU32:
      return "uint32";
    case ValueType::kI32:
      return "int32";
    case ValueType::kF32:
      return "float32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kU64:
      return "uint64";
    case ValueType::kI64:
      return "int64";
    case ValueType::kF64:
      return "float64";
  }
  return "unknown";
}

Value Value::Uint(ValueType t, uint64_t v) {
  Value x;
  x.type = t;
  x.u = v;
  return x;
}
Value Value::Int(ValueType t, int64_t v) {
  Value x;
  x.type = t;
  x.i = v;
  return x;
}
Value Value::Float(ValueType t, double v) {
  Value x;
  x.type = t;
  x.f = t == ValueType::kF32 ? static_cast<double>(static_cast<float>(v)) : v;
  x.u = t == ValueType::kF32 ? std::bit_cast<uint32_t>(static_cast<float>(v))
                             : std::bit_cast<uint64_t>(v);
  return x;
}
Value Value::Bool(bool v) { return Uint(ValueType::kBool, v ? 1 : 0); }
Value Value::String(std::string v) {
  Value x;
  x.type = ValueType::kString;
  x.str = std::move(v);
  return x;
}
Value Value::Array(ValueType elem_type, const std::vector<Value>& items) {
  Value x;
  x.type = ValueType::kArray;
  x.elem_type = elem_type;
  for (const Value& e : items) x.Push(e);
  return x;
}

size_t ScalarSize(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

size_t Value::size() const {
  switch (elem_type) {
    case ValueType::kString:
      return ends.size();
    case ValueType::kArray:
      return arrays.size();
    default:
      return scalars.size() / ScalarSize(elem_type);
  }
}

std::string_view Value::StringAt(size_t k) const {
  const size_t begin = k == 0 ? 0 : static_cast<size_t>(ends[k - 1]);
  return std::string_view{chars}.substr(begin, static_cast<size_t>(ends[k]) - begin);
}

Value Value::At(size_t k) const {
  switch (elem_type) {
    case ValueType::kString:
      return String(std::string(StringAt(k)));
    case ValueType::kArray:
      return arrays[k];
    default:
      return DecodeScalar(elem_type, scalars.data() + k * ScalarSize(elem_type));
  }
}

void Value::Push(const Value& element) {
  switch (elem_type) {
    case ValueType::kString:
      chars += element.str;
      ends.push_back(chars.size());
      break;
    case ValueType::kArray:
      arrays.push_back(element);
      break;
    default:
      EncodeScalar(elem_type, element, &scalars);
      break;
  }
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kU16:
    case ValueType::kI16:
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kU64:
    case ValueType::kI64:
      return true;
    default:
      return false;
  }
}

bool Value::is_number() const {
  return is_integer() || type == ValueType::kF32 || type == ValueType::kF64;
}

bool Value::AsUint(uint64_t* out) const {
  switch (type) {
    case ValueType::kU8:
    case ValueType::kU16:
    case ValueType::kU32:
    case ValueType::kU64:
      *out = u;
      return true;
    case ValueType::kI8:
    case ValueType::kI16:
    case ValueType::kI32:
    case ValueType::kI64:
      if (i < 0) return false;
      *out = static_cast<uint64_t>(i);
      return true;
    default:
      return false;
  }
}

bool Value::AsInt(int64_t* out) const {
  uint64_t x;
  switch (type) {
    case ValueType::kI8:
    case ValueType::kI16:
    case ValueType::kI32:
    case ValueType::kI64:
      *out = i;
      return true;
    default:
      if (!AsUint(&x) || x > static_cast<uint64_t>(INT64_MAX)) return false;
      *out = static_cast<int64_t>(x);
      return true;
  }
}

bool Value::AsDouble(double* out) const {
  if (type == ValueType::kF32 || type == ValueType::kF64) {
    *out = f;
    return true;
  }
  int64_t x;
  if (AsInt(&x)) {
    *out = static_cast<double>(x);
    return true;
  }
  uint64_t y;
  if (AsUint(&y)) {
    *out = static_cast<double>(y);
    return true;
  }
  return false;
}

const Value* Metadata::Find(std::string_view key) const {
  for (const KeyValue& kv : entries) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

Result<std::string> Metadata::GetString(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kString) return WrongType(key, *v, "string");
  return v->str;
}

Result<uint64_t> Metadata::GetUint(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  uint64_t x;
  if (!v->AsUint(&x)) return WrongType(key, *v, "an unsigned integer");
  return x;
}

Result<int64_t> Metadata::GetInt(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  int64_t x;
  if (!v->AsInt(&x)) return WrongType(key, *v, "an integer");
  return x;
}

Result<double> Metadata::GetFloat(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  double x;
  if (!v->AsDouble(&x)) return WrongType(key, *v, "a number");
  return x;
}

Result<bool> Metadata::GetBool(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kBool) return WrongType(key, *v, "bool");
  return v->u != 0;
}

Result<std::vector<std::string>> Metadata::GetStringArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kArray || v->elem_type != ValueType::kString) {
    return WrongType(key, *v, "an array of strings");
  }
  std::vector<std::string> out;
  out.reserve(v->size());
  for (size_t k = 0; k < v->size(); ++k) out.emplace_back(v->StringAt(k));
  return out;
}

Result<std::vector<float>> Metadata::GetFloatArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kArray || ScalarSize(v->elem_type) == 0 ||
      v->elem_type == ValueType::kBool) {
    return WrongType(key, *v, "an array of numbers");
  }
  std::vector<float> out;
  out.reserve(v->size());
  for (size_t k = 0; k < v->size(); ++k) {
    double d = 0;
    if (!v->At(k).AsDouble(&d)) return WrongType(key, *v, "an array of numbers");
    out.push_back(static_cast<float>(d));
  }
  return out;
}

Result<std::vector<int64_t>> Metadata::GetIntArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kArray || ScalarSize(v->elem_type) == 0) {
    return WrongType(key, *v, "an array of integers");
  }
  std::vector<int64_t> out;
  out.reserve(v->size());
  for (size_t k = 0; k < v->size(); ++k) {
    int64_t d = 0;
    if (!v->At(k).AsInt(&d)) return WrongType(key, *v, "an array of integers");
    out.push_back(d);
  }
  return out;
}

void Metadata::Set(std::string key, Value value) {
  for (KeyValue& kv : entries) {
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  }
  entries.push_back({std::move(key), std::move(value)});
}

std::string TensorInfo::ShapeString() const {
  std::string s;
  for (uint32_t d = 0; d < n_dims; ++d) {
    if (d > 0) s += "x";
    s += std::to_string(ne[d]);
  }
  return s;
}

Result<uint64_t> AlignmentOf(const Metadata& md) {
  const Value* a = md.Find("general.alignment");
  if (a == nullptr) return kDefaultAlignment;
  uint64_t align;
  if (!a->AsUint(&align) || a->type != ValueType::kU32) {
    return Status::Corruption("general.alignment must be a uint32");
  }
  if (align == 0 || (align & (align - 1)) != 0) {
    return Status::Corruption("general.alignment " + std::to_string(align) +
                              " is not a power of two");
  }
  return align;
}

Result<Metadata> ParseMetadata(ByteSpan kv, uint64_t n_kv, std::string_view name) {
  Parser p(kv, name);
  Metadata md;
  FQ_RETURN_IF_ERROR(p.ReadMetadata(n_kv, &md));
  if (p.reader().remaining() != 0) {
    return p.Error(std::to_string(p.reader().remaining()) + " bytes left after the metadata");
  }
  return md;
}

Result<Header> ParseFile(ByteSpan file, std::string_view name) {
  Parser p(file, name);
  ByteReader& r = p.reader();
  Header h;
  h.file_size = file.size();

  uint32_t magic;
  if (!r.ReadU32(&magic)) {
    return Status::Corruption(std::string(name) + ": not a GGUF file (only " +
                              std::to_string(file.size()) + " bytes)");
  }
  if (magic != kMagic) {
    char m[5] = {static_cast<char>(magic & 0xff), static_cast<char>((magic >> 8) & 0xff),
                 static_cast<char>((magic >> 16) & 0xff), static_cast<char>(magic >> 24), 0};
    for (char& c : m) {
      if (c != 0 && (c < 32 || c > 126)) c = '?';
    }
    return Status::Corruption(std::string(name) + ": not a GGUF file (magic \"" + m +
                              "\", expected \"GGUF\")");
  }
  if (!r.ReadU32(&h.version)) return p.Error("truncated header: no version");
  if (h.version != 2 && h.version != 3) {
    if ((h.version & 0xffff) == 0 && h.version != 0) {
      return Status::NotSupported(std::string(name) + ": big-endian GGUF files are not supported");
    }
    return Status::NotSupported(std::string(name) + ": GGUF version " + std::to_string(h.version) +
                                " is not supported (fqpack reads versions 2 and 3)");
  }
  uint64_t n_tensors;
  if (!r.ReadU64(&n_tensors) || !r.ReadU64(&h.n_kv)) return p.Error("truncated header: no counts");
  // A tensor info is at least an 8-byte name length, a 4-byte n_dims, one
  // 8-byte dimension, a 4-byte type and an 8-byte offset.
  uint64_t min_tensor_bytes;
  if (!CheckedMul(n_tensors, 32, &min_tensor_bytes) || min_tensor_bytes > r.remaining()) {
    return p.Error("tensor count " + std::to_string(n_tensors) + " cannot fit in the " +
                   std::to_string(r.remaining()) + " bytes left");
  }

  h.kv_begin = r.pos();
  FQ_RETURN_IF_ERROR(p.ReadMetadata(h.n_kv, &h.metadata));
  h.kv_end = r.pos();

  Result<uint64_t> alignment = AlignmentOf(h.metadata);
  if (!alignment.ok()) return p.Error(alignment.status().message());
  h.alignment = *alignment;

  if (!CheckedMul(n_tensors, 32, &min_tensor_bytes) || min_tensor_bytes > r.remaining()) {
    return p.Error("tensor count " + std::to_string(n_tensors) + " cannot fit in the " +
                   std::to_string(r.remaining()) + " bytes left");
  }
  FQ_RETURN_IF_ERROR(p.Charge(n_tensors, sizeof(TensorInfo), "tensor infos"));
  h.tensors.reserve(static_cast<size_t>(n_tensors));
  std::unordered_set<std::string> names;
  for (uint64_t t = 0; t < n_tensors; ++t) {
    TensorInfo ti;
    FQ_RETURN_IF_ERROR(p.ReadString(&ti.name, "name of tensor #" + std::to_string(t)));
    FQ_RETURN_IF_ERROR(
        p.Charge(ti.name.size(), 2, "tensor names"));  // the name and its copy in `names`
    const std::string where = "tensor '" + ti.name + "'";
    if (!names.insert(ti.name).second) return p.Error("duplicate " + where);
    if (!r.ReadU32(&ti.n_dims)) return p.Error(where + ": truncated n_dims");
    if (ti.n_dims == 0 || ti.n_dims > kMaxDims) {
      return p.Error(where + ": " + std::to_string(ti.n_dims) + " dimensions (1.." +
                     std::to_string(kMaxDims) + " allowed)");
    }
    uint64_t elems = 1;
    for (uint32_t d = 0; d < ti.n_dims; ++d) {
      if (!r.ReadU64(&ti.ne[d])) return p.Error(where + ": truncated shape");
      if (ti.ne[d] > kMaxTensorExtent || !CheckedMul(elems, ti.ne[d], &elems) ||
          elems > static_cast<uint64_t>(INT64_MAX)) {
        return p.Error(where + ": dimension " + std::to_string(d) + " of " +
                       std::to_string(ti.ne[d]) +
                       " elements is beyond any real tensor (at most 2^40)");
      }
      if (ti.ne[d] == 0) {
        return Status::NotSupported(std::string(name) + ": " + where + ": dimension " +
                                    std::to_string(d) +
                                    " is empty; fqpack does not store tensors without elements");
      }
    }
    if (!r.ReadU32(&ti.type)) return p.Error(where + ": truncated type");
    if (FindGgmlType(ti.type) == nullptr) {
      return p.Error(where + ": unknown tensor type " + std::to_string(ti.type));
    }
    if (!r.ReadU64(&ti.offset)) return p.Error(where + ": truncated offset");
    Result<uint64_t> nbytes = TensorBytes(ti.type, std::span(ti.ne.data(), ti.n_dims));
    if (!nbytes.ok()) return p.Error(where + ": " + nbytes.status().message());
    ti.nbytes = *nbytes;
    if (ti.offset % h.alignment != 0) {
      return p.Error(where + ": data offset " + std::to_string(ti.offset) +
                     " is not a multiple of the alignment " + std::to_string(h.alignment));
    }
    h.tensors.push_back(std::move(ti));
  }
  h.header_end = r.pos();
  if (!AlignUp(h.header_end, h.alignment, &h.data_offset)) return p.Error("data offset overflows");

  // Every tensor inside the file, none overlapping another. The data
  // section is [data_offset, file size); each tensor's range is checked
  // against it by subtraction, so no sum of file-supplied numbers can wrap.
  const uint64_t data_size = h.data_offset <= file.size() ? file.size() - h.data_offset : 0;
  std::vector<size_t> order(h.tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return h.tensors[a].offset < h.tensors[b].offset; });
  uint64_t prev_end = 0;
  const TensorInfo* prev = nullptr;
  for (size_t idx : order) {
    const TensorInfo& ti = h.tensors[idx];
    if (h.data_offset > file.size() || !RangeInside(ti.offset, ti.nbytes, data_size)) {
      return Status::Corruption(std::string(name) + ": tensor '" + ti.name + "': data at offset " +
                                std::to_string(ti.offset) + " of the data section, " +
                                std::to_string(ti.nbytes) +
                                " bytes, runs past the end of the file (" +
                                std::to_string(file.size()) + " bytes): truncated?");
    }
    if (prev != nullptr && ti.offset < prev_end) {
      return Status::Corruption(std::string(name) + ": tensor '" + ti.name + "' overlaps tensor '" +
                                prev->name + "'");
    }
    prev_end = ti.offset + ti.nbytes;  // <= data_size: checked just above
    prev = &ti;
  }
  return h;
}

Bytes EncodeMetadata(const Metadata& metadata) {
  Bytes out;
  for (const KeyValue& kv : metadata.entries) {
    PutU64(&out, kv.key.size());
    PutString(&out, kv.key);
    PutU32(&out, static_cast<uint32_t>(kv.value.type));
    EncodeValue(kv.value, &out);
  }
  return out;
}

Status AssignOffsets(FileSpec* spec) {
  uint64_t offset = 0;
  for (TensorInfo& ti : spec->tensors) {
    FQ_ASSIGN_OR_RETURN(ti.nbytes, TensorBytes(ti.type, std::span(ti.ne.data(), ti.n_dims)));
    ti.offset = offset;
    uint64_t end;
    if (!CheckedAdd(offset, ti.nbytes, &end) || !AlignUp(end, spec->alignment, &offset)) {
      return Status::InvalidArgument("GGUF data section overflows");
    }
  }
  return Status::OK();
}

Bytes EncodeHeader(const FileSpec& spec) {
  Bytes out;
  PutU32(&out, kMagic);
  PutU32(&out, spec.version);
  PutU64(&out, spec.tensors.size());
  PutU64(&out, spec.n_kv);
  PutRaw(&out, spec.kv.data(), spec.kv.size());
  for (const TensorInfo& ti : spec.tensors) {
    PutU64(&out, ti.name.size());
    PutString(&out, ti.name);
    PutU32(&out, ti.n_dims);
    for (uint32_t d = 0; d < ti.n_dims; ++d) PutU64(&out, ti.ne[d]);
    PutU32(&out, ti.type);
    PutU64(&out, ti.offset);
  }
  // The data section starts aligned; a file without tensors has none, and
  // llama.cpp does not pad it.
  if (!spec.tensors.empty()) {
    uint64_t padded = out.size();
    if (AlignUp(out.size(), spec.alignment, &padded)) out.resize(padded, 0);
  }
  return out;
}

Status WriteFile(WritableFile* file, const FileSpec& spec,
                 const std::function<Result<ByteSpan>(size_t index)>& tensor_data) {
  if (spec.alignment == 0 || (spec.alignment & (spec.alignment - 1)) != 0) {
    return Status::InvalidArgument("GGUF alignment " + std::to_string(spec.alignment) +
                                   " is not a power of two");
  }
  Bytes header = EncodeHeader(spec);
  FQ_RETURN_IF_ERROR(file->Append(header));
  std::vector<size_t> order(spec.tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return spec.tensors[a].offset < spec.tensors[b].offset;
  });
  static const Bytes kZeros(4096, 0);
  auto pad = [&](uint64_t n) -> Status {
    while (n > 0) {
      size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, kZeros.size()));
      FQ_RETURN_IF_ERROR(file->Append(ByteSpan(kZeros.data(), chunk)));
      n -= chunk;
    }
    return Status::OK();
  };
  uint64_t pos = 0;  // within the data section
  for (size_t idx : order) {
    const TensorInfo& ti = spec.tensors[idx];
    if (ti.offset < pos) {
      return Status::InvalidArgument("tensor '" + ti.name + "' overlaps the tensor before it");
    }
    FQ_RETURN_IF_ERROR(pad(ti.offset - pos));
    FQ_ASSIGN_OR_RETURN(ByteSpan data, tensor_data(idx));
    if (data.size() != ti.nbytes) {
      return Status::InvalidArgument("tensor '" + ti.name + "': " + std::to_string(data.size()) +
                                     " bytes given, " + std::to_string(ti.nbytes) + " expected");
    }
    FQ_RETURN_IF_ERROR(file->Append(data));
    pos = ti.offset + ti.nbytes;
  }
  uint64_t end = header.size() + pos;
  uint64_t target = spec.file_size;
  if (target == 0) {
    target = end;
    if (!spec.tensors.empty() && !AlignUp(end, spec.alignment, &target)) {
      return Status::InvalidArgument("GGUF file size overflows");
    }
  }
  if (target < end) return Status::InvalidArgument("GGUF file size smaller than its contents");
  return pad(target - end);
}

}  // namespace fqpack::gguf
