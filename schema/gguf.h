// GGUF (versions 2 and 3, little-endian): the checkpoint format of ggml and
// llama.cpp. fqpack reads it to import checkpoints and writes it to export
// them, byte for byte as they came in. The layout, as fqpack relies on it, is
// written down in schema/gguf.md.
//
// The parser works on bytes already in memory (usually a mapped file) and
// validates every count, length and offset against the bytes left before it
// allocates anything. Bad bytes give Corruption("<file>: <where>: <what>"),
// never a crash; versions and types fqpack does not know give NotSupported.
#ifndef FQPACK_SCHEMA_GGUF_H_
#define FQPACK_SCHEMA_GGUF_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/coding.h"
#include "schema/env.h"
#include "schema/status.h"

namespace fqpack::gguf {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// Arrays may nest; deeper than this is treated as corruption (a guard against
// stack exhaustion on crafted files, not a limit of the format).
constexpr int kMaxArrayDepth = 8;
// What parsing may allocate: at most this many bytes of memory per byte of
// the input, plus kParseSlackBytes. Flat arrays keep real files near 1x;
// the worst case is a file of nothing but tiny key/values (~20x).
constexpr uint64_t kParseBytesPerInputByte = 32;
constexpr uint64_t kParseSlackBytes = 1 << 20;

enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
const char* ValueTypeName(ValueType t);

// One metadata value. Scalars keep their exact stored type so that encoding
// a parsed value gives back the same bytes. Arrays are flat: scalar elements
// stay in the file's little-endian bytes and string elements in one buffer,
// so an array costs about what it takes on disk, whatever its count says.
struct Value {
  ValueType type = ValueType::kU8;
  uint64_t u = 0;   // kU8..kU64, kBool; kF32, kF64: the bits as stored
  int64_t i = 0;    // kI8..kI64
  double f = 0;     // kF32, kF64 (kF32 values are exactly representable)
  std::string str;  // kString

  // kArray: its element type and elements.
  ValueType elem_type = ValueType::kU8;
  Bytes scalars;               // scalar elements, ScalarSize(elem_type) bytes each
  std::string chars;           // string elements, concatenated
  std::vector<uint64_t> ends;  // string elements: end of each in `chars`
  std::vector<Value> arrays;   // elements that are arrays themselves

  static Value Uint(ValueType t, uint64_t v);
  static Value Int(ValueType t, int64_t v);
  static Value Float(ValueType t, double v);
  static Value Bool(bool v);
  static Value String(std::string v);
  static Value Array(ValueType elem_type, const std::vector<Value>& items);

  bool is_integer() const;
  bool is_number() const;
  // Numeric views; false when the value is not a number of a fitting kind.
  bool AsUint(uint64_t* out) const;
  bool AsInt(int64_t* out) const;
  bool AsDouble(double* out) const;

  // kArray only: the number of elements, element `k` as a Value, a string
  // element without copying it, and appending an element of elem_type.
  size_t size() const;
  Value At(size_t k) const;
  std::string_view StringAt(size_t k) const;
  void Push(const Value& element);
};

// Bytes of one scalar of type `t` in a file; 0 for strings and arrays.
size_t ScalarSize(ValueType t);

struct KeyValue {
  std::string key;
  Value value;
};

// The key/value section in file order, with typed look-ups. Get* give
// NotFound when the key is missing and InvalidArgument when it holds the
// wrong type, both naming the key.
class Metadata {
 public:
  std::vector<KeyValue> entries;

  const Value* Find(std::string_view key) const;
  bool Has(std::string_view key) const { return Find(key) != nullptr; }
  Result<std::string> GetString(std::string_view key) const;
  Result<uint64_t> GetUint(std::string_view key) const;
  Result<int64_t> GetInt(std::string_view key) const;
  Result<double> GetFloat(std::string_view key) const;
  Result<bool> GetBool(std::string_view key) const;
  Result<std::vector<std::string>> GetStringArray(std::string_view key) const;
  Result<std::vector<float>> GetFloatArray(std::string_view key) const;
  Result<std::vector<int64_t>> GetIntArray(std::string_view key) const;

  // Adds or replaces a key (replacing keeps the key's position).
  void Set(std::string key, Value value);
};

struct TensorInfo {
  std::string name;
  uint32_t n_dims = 0;
  std::array<uint64_t, kMaxDims> ne = {1, 1, 1, 1};
  uint32_t type = 0;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;  // computed from type and shape

  uint64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  std::string ShapeString() const;  // "64x512"
};

struct Header {
  uint32_t version = 3;
  Metadata metadata;
  std::vector<TensorInfo> tensors;  // in file order
  uint64_t alignment = kDefaultAlignment;
  uint64_t n_kv = 0;
  uint64_t kv_begin = 0;  // the key/value section is [kv_begin, kv_end)
  uint64_t kv_end = 0;
  uint64_t header_end = 0;   // end of the tensor infos
  uint64_t data_offset = 0;  // start of the data section (aligned)
  uint64_t file_size = 0;

  ByteSpan KvBytes(ByteSpan file) const { return file.subspan(kv_begin, kv_end - kv_begin); }
  ByteSpan TensorBytes(ByteSpan file, size_t i) const {
    return file.subspan(data_offset + tensors[i].offset, tensors[i].nbytes);
  }
};

// Parses and validates a whole GGUF file held in `file`: header, metadata,
// tensor infos, alignment, and that every tensor's data lies inside the file
// without overlapping another. `name` is used in error messages.
Result<Header> ParseFile(ByteSpan file, std::string_view name);

// general.alignment (a power-of-two uint32), or kDefaultAlignment when the
// key is absent; Corruption otherwise.
Result<uint64_t> AlignmentOf(const Metadata& md);

// Parses `n_kv` key/value pairs that fill `kv` exactly (a KV section as the
// store keeps it).
Result<Metadata> ParseMetadata(ByteSpan kv, uint64_t n_kv, std::string_view name);

// Encodes metadata as a KV section (the inverse of ParseMetadata).
Bytes EncodeMetadata(const Metadata& metadata);

// What to write: the KV section as bytes (so an imported one is reproduced
// exactly), the tensor infos with their offsets, and the alignment.
struct FileSpec {
  uint32_t version = 3;
  uint64_t n_kv = 0;
  Bytes kv;
  std::vector<TensorInfo> tensors;
  uint64_t alignment = kDefaultAlignment;
  // Total file size; 0 means "end of the last tensor, padded to alignment"
  // (what llama.cpp writes).
  uint64_t file_size = 0;
};

// Lays the tensors out one after another in the given order, each at an
// aligned offset, and fills in nbytes; InvalidArgument on a bad shape/type.
Status AssignOffsets(FileSpec* spec);

// The bytes from the magic to the start of the data section.
Bytes EncodeHeader(const FileSpec& spec);

// Writes a whole GGUF file: header, then each tensor's bytes (asked for in
// offset order through `tensor_data`, which must return exactly nbytes), zero
// padding between tensors and up to the file size.
Status WriteFile(WritableFile* file, const FileSpec& spec,
                 const std::function<Result<ByteSpan>(size_t index)>& tensor_data);

}  // namespace fqpack::gguf

#endif  // FQPACK_SCHEMA_GGUF_H_
