#include "schema/gguf.h"

#include <gtest/gtest.h>

#include "schema/quant_types.h"
#include "tests/support/test_util.h"

namespace fqpack::gguf {
namespace {

using testing::EncodeGguf;
using testing::TestGguf;

Metadata AllTypes() {
  Metadata md;
  md.Set("u8", Value::Uint(ValueType::kU8, 200));
  md.Set("i8", Value::Int(ValueType::kI8, -100));
  md.Set("u16", Value::Uint(ValueType::kU16, 60000));
  md.Set("i16", Value::Int(ValueType::kI16, -30000));
  md.Set("u32", Value::Uint(ValueType::kU32, 4000000000u));
  md.Set("i32", Value::Int(ValueType::kI32, -2000000000));
  md.Set("f32", Value::Float(ValueType::kF32, 0.1));
  md.Set("bool", Value::Bool(true));
  md.Set("str", Value::String("héllo\n"));
  md.Set("u64", Value::Uint(ValueType::kU64, 1ull << 60));
  md.Set("i64", Value::Int(ValueType::kI64, -(1ll << 60)));
  md.Set("f64", Value::Float(ValueType::kF64, 1e300));
  md.Set("arr_str", Value::Array(ValueType::kString, {Value::String("a"), Value::String("")}));
  md.Set("arr_nested",
         Value::Array(ValueType::kArray,
                      {Value::Array(ValueType::kI32, {Value::Int(ValueType::kI32, 1)}),
                       Value::Array(ValueType::kF32, {})}));
  md.Set("arr_empty", Value::Array(ValueType::kU8, {}));
  return md;
}

TestGguf Small() {
  TestGguf g;
  g.metadata = AllTypes();
  g.tensors.push_back({"a", {32, 3}, ToId(QType::kQ8_0), {}});
  g.tensors.push_back({"b", {7}, ToId(QType::kF32), {}});
  g.tensors.push_back({"c", {256, 2, 1, 2}, ToId(QType::kQ4_K), {}});
  testing::FillRandom(&g, 7);
  return g;
}

TEST(Gguf, ParsesEveryValueTypeAndReencodesTheSameBytes) {
  TestGguf g = Small();
  Bytes file = EncodeGguf(g);
  Result<Header> h = ParseFile(file, "small.gguf");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->version, 3u);
  ASSERT_EQ(h->metadata.entries.size(), g.metadata.entries.size());
  EXPECT_EQ(*h->metadata.GetUint("u8"), 200u);
  EXPECT_EQ(*h->metadata.GetInt("i8"), -100);
  EXPECT_EQ(*h->metadata.GetUint("u32"), 4000000000u);
  EXPECT_EQ(*h->metadata.GetInt("i64"), -(1ll << 60));
  EXPECT_FLOAT_EQ(static_cast<float>(*h->metadata.GetFloat("f32")), 0.1f);
  EXPECT_EQ(*h->metadata.GetFloat("f64"), 1e300);
  EXPECT_TRUE(*h->metadata.GetBool("bool"));
  EXPECT_EQ(*h->metadata.GetString("str"), "héllo\n");
  EXPECT_EQ(*h->metadata.GetStringArray("arr_str"), (std::vector<std::string>{"a", ""}));
  const Value* nested = h->metadata.Find("arr_nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->size(), 2u);
  EXPECT_EQ(nested->At(0).At(0).i, 1);
  EXPECT_EQ(nested->At(1).elem_type, ValueType::kF32);
  // The KV section re-encodes to the very same bytes.
  Bytes kv = EncodeMetadata(h->metadata);
  ByteSpan orig = h->KvBytes(file);
  EXPECT_TRUE(std::equal(kv.begin(), kv.end(), orig.begin(), orig.end()));
  ASSERT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[2].ShapeString(), "256x2x1x2");
  EXPECT_EQ(h->tensors[2].nbytes, 4u * 144u);
  EXPECT_EQ(h->data_offset % 32, 0u);
  ByteSpan t1 = h->TensorBytes(file, 1);
  EXPECT_TRUE(std::equal(t1.begin(), t1.end(), g.tensors[1].data.begin()));
}

TEST(Gguf, TypedGettersNameTheKeyOnError) {
  Metadata md = AllTypes();
  Result<std::string> s = md.GetString("u8");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsInvalidArgument());
  EXPECT_NE(s.status().message().find("'u8'"), std::string::npos);
  Result<uint64_t> missing = md.GetUint("nope");
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_FALSE(md.GetUint("i8").ok()) << "a negative value is not an unsigned integer";
}

TEST(Gguf, Version2ParsesLikeVersion3) {
  TestGguf g = Small();
  g.version = 2;
  Bytes file = EncodeGguf(g);
  Result<Header> h = ParseFile(file, "v2.gguf");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->version, 2u);
}

TEST(Gguf, WriteFileReproducesTheEncodedFile) {
  TestGguf g = Small();
  Bytes file = EncodeGguf(g);
  Header h = *ParseFile(file, "x");
  FileSpec spec;
  spec.version = h.version;
  spec.n_kv = h.n_kv;
  ByteSpan kv = h.KvBytes(file);
  spec.kv.assign(kv.begin(), kv.end());
  spec.tensors = h.tensors;
  spec.alignment = h.alignment;
  spec.file_size = h.file_size;
  testing::TempDir dir;
  const std::string out = dir.Join("out.gguf");
  ASSERT_TRUE(PublishFileWith(Env::Default(), out, [&](WritableFile* f) {
                return WriteFile(
                    f, spec, [&](size_t i) -> Result<ByteSpan> { return h.TensorBytes(file, i); });
              }).ok());
  Result<Bytes> written = ReadFileBytes(Env::Default(), out);
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(*written, file);
}

// One defect per file: each must give a clean error that names the file.
struct BadCase {
  const char* name;
  std::function<void(Bytes*)> corrupt;
  Status::Code code;
  const char* message_part;
};

Bytes Patch(Bytes b, size_t at, std::initializer_list<uint8_t> bytes) {
  for (uint8_t x : bytes) b.at(at++) = x;
  return b;
}

TEST(Gguf, RejectsHandcraftedBadFiles) {
  const TestGguf g = Small();
  const Bytes good = EncodeGguf(g);
  const Header h = *ParseFile(good, "good");
  // Offset of the first tensor info's fields.
  const size_t ti0 = h.kv_end;
  const size_t ti0_dims = ti0 + 8 + 1;           // after name length and "a"
  const size_t ti0_type = ti0_dims + 4 + 2 * 8;  // after n_dims and two ne
  const size_t ti0_off = ti0_type + 4;

  std::vector<BadCase> cases = {
      {"bad magic", [](Bytes* b) { (*b)[0] = 'X'; }, Status::Code::kCorruption, "not a GGUF file"},
      {"version 1",
       [](Bytes* b) {
         *b = Patch(*b, 4, {1, 0, 0, 0});
       },
       Status::Code::kNotSupported, "version 1"},
      {"version 4",
       [](Bytes* b) {
         *b = Patch(*b, 4, {4, 0, 0, 0});
       },
       Status::Code::kNotSupported, "version 4"},
      {"big endian",
       [](Bytes* b) {
         *b = Patch(*b, 4, {0, 0, 0, 3});
       },
       Status::Code::kNotSupported, "big-endian"},
      {"absurd tensor count",
       [](Bytes* b) {
         *b = Patch(*b, 8, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f});
       },
       Status::Code::kCorruption, "tensor count"},
      {"absurd kv count",
       [](Bytes* b) {
         *b = Patch(*b, 16, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0});
       },
       Status::Code::kCorruption, "metadata count"},
      {"absurd key length",
       [](Bytes* b) {
         *b = Patch(*b, 24, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
       },
       Status::Code::kCorruption, "length"},
      {"unknown value type",
       [](Bytes* b) {
         *b = Patch(*b, 24 + 8 + 2, {99, 0, 0, 0});
       },
       Status::Code::kCorruption, "unknown value type 99"},
      {"zero dims",
       [&](Bytes* b) {
         *b = Patch(*b, ti0_dims, {0, 0, 0, 0});
       },
       Status::Code::kCorruption, "0 dimensions"},
      {"five dims",
       [&](Bytes* b) {
         *b = Patch(*b, ti0_dims, {5, 0, 0, 0});
       },
       Status::Code::kCorruption, "5 dimensions"},
      {"unknown tensor type",
       [&](Bytes* b) {
         *b = Patch(*b, ti0_type, {77, 0, 0, 0});
       },
       Status::Code::kCorruption, "unknown tensor type 77"},
      {"removed tensor type 4",
       [&](Bytes* b) {
         *b = Patch(*b, ti0_type, {4, 0, 0, 0});
       },
       Status::Code::kCorruption, "unknown tensor type 4"},
      {"row not a block multiple",
       [&](Bytes* b) {
         *b = Patch(*b, ti0_type, {12, 0, 0, 0});
       },
       Status::Code::kCorruption, "not a multiple of 256"},
      {"misaligned offset",
       [&](Bytes* b) {
         *b = Patch(*b, ti0_off, {1, 0, 0, 0});
       },
       Status::Code::kCorruption, "not a multiple of the alignment"},
      {"data past the end",
       [&](Bytes* b) {
         *b = Patch(*b, ti0_off, {0, 0, 0, 0, 1, 0, 0, 0});
       },
       Status::Code::kCorruption, "past the end"},
      {"overlapping tensors",
       [&](Bytes* b) {
         // Tensor "b" (second) moved onto tensor "a".
         size_t ti1 = ti0_off + 8;
         size_t ti1_off = ti1 + 8 + 1 + 4 + 8 + 4;
         *b = Patch(*b, ti1_off, {0, 0, 0, 0, 0, 0, 0, 0});
       },
       Status::Code::kCorruption, "overlaps"},
      {"duplicate tensor name", [&](Bytes* b) { (*b)[ti0 + 8] = 'b'; }, Status::Code::kCorruption,
       "duplicate tensor 'b'"},
      {"duplicate key", [&](Bytes* b) { (*b)[24 + 15 + 8] = 'u'; }, Status::Code::kCorruption,
       "duplicate metadata key 'u8'"},
  };
  for (const BadCase& c : cases) {
    Bytes b = good;
    c.corrupt(&b);
    Result<Header> r = ParseFile(b, "bad.gguf");
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), c.code) << c.name << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.message_part), std::string::npos)
        << c.name << ": " << r.status().ToString();
    EXPECT_EQ(r.status().message().rfind("bad.gguf", 0), 0u)
        << c.name << ": " << r.status().ToString();
  }
}

// A header written by hand: `tensors` with the given shapes and offsets and
// no data at all behind them.
Bytes HeaderOnly(const Metadata& md, std::vector<TensorInfo> tensors) {
  FileSpec spec;
  spec.n_kv = md.entries.size();
  spec.kv = EncodeMetadata(md);
  spec.tensors = std::move(tensors);
  return EncodeHeader(spec);
}

// A tensor whose byte size is close to 2^64: data_offset + offset + nbytes
// wraps to a small number, which a bounds check done by addition accepts.
TEST(Gguf, RejectsATensorWhoseSizeWrapsTheBoundsCheck) {
  TensorInfo t;
  t.name = "wrap";
  t.n_dims = 2;
  t.ne[0] = uint64_t{1} << 40;  // F64: 8 * 2^40 * (2^21 - 1) = 2^64 - 2^43 bytes
  t.ne[1] = (uint64_t{1} << 21) - 1;
  t.type = ToId(QType::kF64);
  Bytes file = HeaderOnly(Metadata(), {t});
  file.resize(file.size() + 64, 0);
  Result<Header> r = ParseFile(file, "wrap.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("past the end"), std::string::npos) << r.status().ToString();

  // The same wrap through the overlap check: a small tensor after a huge one.
  TensorInfo small;
  small.name = "small";
  small.n_dims = 1;
  small.ne[0] = 8;
  small.type = ToId(QType::kF32);
  small.offset = 32;
  t.offset = 0;
  ASSERT_EQ(*TensorBytes(t.type, std::span(t.ne.data(), 2)),
            ~uint64_t{0} - (uint64_t{1} << 43) + 1);
  Bytes two = HeaderOnly(Metadata(), {t, small});
  two.resize(two.size() + 128, 0);
  Result<Header> r2 = ParseFile(two, "wrap2.gguf");
  ASSERT_FALSE(r2.ok());
  EXPECT_TRUE(r2.status().IsCorruption()) << r2.status().ToString();
}

// Arrays are flat: a million one-byte bools cost a megabyte, not the ~100 MB
// that a Value per element would.
TEST(Gguf, ArraysCostWhatTheyTakeOnDisk) {
  Metadata md;
  Value bools;
  bools.type = ValueType::kArray;
  bools.elem_type = ValueType::kBool;
  bools.scalars.assign(1 << 20, 1);
  md.Set("many", bools);
  std::vector<Value> strs;
  for (int k = 0; k < 1000; ++k) strs.push_back(Value::String(std::to_string(k)));
  md.Set("strs", Value::Array(ValueType::kString, strs));
  TestGguf g;
  g.metadata = md;
  Result<Header> h = ParseFile(EncodeGguf(g), "flat.gguf");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  const Value* v = h->metadata.Find("many");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->size(), size_t{1} << 20);
  EXPECT_LE(v->scalars.capacity(), size_t{1} << 20);
  EXPECT_EQ(v->At(12345).u, 1u);
  EXPECT_EQ(h->metadata.Find("strs")->StringAt(999), "999");
  EXPECT_EQ(*h->metadata.GetStringArray("strs"), [&] {
    std::vector<std::string> want;
    for (int k = 0; k < 1000; ++k) want.push_back(std::to_string(k));
    return want;
  }());
}

// A float keeps its stored bits: a signalling NaN is quieted by any trip
// through a double, and the metadata must encode back to the bytes read.
TEST(Gguf, FloatValuesKeepTheirBits) {
  for (uint32_t bits : {0xff9c0000u, 0x7f800001u, 0x80000000u}) {
    Metadata md;
    md.Set("f", Value::Float(ValueType::kF32, 0));
    md.Set("a", Value::Array(ValueType::kF32, {Value::Float(ValueType::kF32, 0)}));
    Bytes kv = EncodeMetadata(md);
    EncodeU32(kv.data() + 8 + 1 + 4, bits);
    EncodeU32(kv.data() + kv.size() - 4, bits);
    Result<Metadata> r = ParseMetadata(kv, 2, "nan.kv");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(EncodeMetadata(*r), kv) << std::hex << bits;
  }
}

TEST(Gguf, RejectsEmptyAndAbsurdExtents) {
  TensorInfo t;
  t.name = "empty";
  t.n_dims = 2;
  t.ne[0] = 144115188075855888ull;
  t.ne[1] = 0;
  t.type = ToId(QType::kF32);
  Result<Header> r = ParseFile(HeaderOnly(Metadata(), {t}), "empty.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();  // 2^57 elements come first
  t.ne[0] = 64;
  r = ParseFile(HeaderOnly(Metadata(), {t}), "empty.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotSupported()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("empty"), std::string::npos) << r.status().ToString();
}

// Counts that claim more elements than the bytes left can hold are refused
// before anything is reserved, for every element type.
TEST(Gguf, RejectsArrayCountsLargerThanTheFile) {
  for (ValueType et : {ValueType::kU8, ValueType::kBool, ValueType::kF32, ValueType::kU64,
                       ValueType::kString, ValueType::kArray}) {
    Metadata md;
    md.Set("a", Value::Array(et, {}));
    Bytes kv = EncodeMetadata(md);
    // key length (8) + "a" + type (4) + elem type (4): then the count.
    EncodeU64(kv.data() + 8 + 1 + 4 + 4, uint64_t{1} << 40);
    kv.resize(kv.size() + 100, 0);
    Result<Metadata> r = ParseMetadata(kv, 1, "count.kv");
    ASSERT_FALSE(r.ok()) << ValueTypeName(et);
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
    EXPECT_NE(r.status().message().find("cannot fit"), std::string::npos) << r.status().ToString();
  }
}

TEST(Gguf, RejectsABoolArrayElementThatIsNotZeroOrOne) {
  Metadata md;
  md.Set("b", Value::Array(ValueType::kBool, {Value::Bool(true), Value::Bool(false)}));
  Bytes kv = EncodeMetadata(md);
  kv.back() = 7;
  Result<Metadata> r = ParseMetadata(kv, 1, "bool.kv");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not 0 or 1"), std::string::npos) << r.status().ToString();
}

TEST(Gguf, EveryTruncationIsACleanError) {
  const Bytes good = EncodeGguf(Small());
  for (size_t n = 0; n < good.size(); ++n) {
    Bytes cut(good.begin(), good.begin() + static_cast<long>(n));
    Result<Header> r = ParseFile(cut, "cut.gguf");
    // The padding after the last tensor may be cut without losing data.
    if (r.ok()) {
      uint64_t end = 0;
      for (const TensorInfo& t : r->tensors)
        end = std::max(end, r->data_offset + t.offset + t.nbytes);
      EXPECT_GE(n, end) << "prefix of " << n << " bytes parsed";
      continue;
    }
    EXPECT_TRUE(r.status().IsCorruption()) << n << ": " << r.status().ToString();
  }
}

TEST(Gguf, RandomByteFlipsNeverCrash) {
  const Bytes good = EncodeGguf(Small());
  std::mt19937 rng(1);
  for (int i = 0; i < 3000; ++i) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    Result<Header> r = ParseFile(b, "flip.gguf");
    if (!r.ok()) {
      EXPECT_FALSE(r.status().message().empty());
    }
  }
}

TEST(Gguf, RejectsArraysNestedTooDeeply) {
  Value v = Value::Array(ValueType::kU8, {});
  for (int i = 0; i < kMaxArrayDepth + 1; ++i) v = Value::Array(ValueType::kArray, {v});
  TestGguf g;
  g.metadata.Set("deep", v);
  Result<Header> r = ParseFile(EncodeGguf(g), "deep.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested too deeply"), std::string::npos);
}

TEST(Gguf, RejectsAlignmentThatIsNotAPowerOfTwo) {
  TestGguf g = Small();
  g.metadata.Set("general.alignment", Value::Uint(ValueType::kU32, 48));
  g.alignment = 16;
  Result<Header> r = ParseFile(EncodeGguf(g), "align.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("power of two"), std::string::npos);
}

TEST(Gguf, HonoursGeneralAlignment) {
  TestGguf g = Small();
  g.metadata.Set("general.alignment", Value::Uint(ValueType::kU32, 64));
  g.alignment = 64;
  Bytes file = EncodeGguf(g);
  Result<Header> r = ParseFile(file, "align64.gguf");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->alignment, 64u);
  EXPECT_EQ(r->data_offset % 64, 0u);
}

// Real files as llama.cpp writes them: header round trip is byte-exact.
TEST(Gguf, SharedFilesReencodeByteForByte) {
  FQ_REQUIRE_TESTDATA();
  for (const char* rel :
       {"models/stories260K/stories260K-F32.gguf", "models/stories260K/stories260K-Q4_K_M.gguf",
        "models/tinystories-3M/tinystories-3M-Q2_K.gguf", "tokenizer/ggml-vocab-llama-spm.gguf"}) {
    const std::string path = testing::TestDataPath(rel);
    Result<MappedFile> f = Env::Default()->MapFile(path);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    Result<Header> h = ParseFile(f->bytes(), path);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    FileSpec spec;
    spec.version = h->version;
    spec.n_kv = h->n_kv;
    spec.kv = EncodeMetadata(h->metadata);
    spec.tensors = h->tensors;
    spec.alignment = h->alignment;
    Bytes header = EncodeHeader(spec);
    const size_t end = h->tensors.empty() ? h->header_end : h->data_offset;
    ASSERT_EQ(header.size(), end) << path;
    EXPECT_TRUE(std::equal(header.begin(), header.end(), f->data())) << path;
  }
}

}  // namespace
}  // namespace fqpack::gguf
