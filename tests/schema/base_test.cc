// Tests of the small building blocks of schema/: SHA-256, fp16/bf16, sizes,
// JSON, the type table, Status.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "schema/half.h"
#include "schema/json.h"
#include "schema/quant_types.h"
#include "schema/sha256.h"
#include "schema/status.h"
#include "schema/units.h"

namespace fqpack {
namespace {

std::string Sha(std::string_view s) {
  return Sha256::HexOf(ByteSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

TEST(Sha256, MatchesFips180Vectors) {
  EXPECT_EQ(Sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  EXPECT_EQ(Sha(million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalUpdatesGiveTheSameDigest) {
  std::string text(1000, 'x');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>(i * 7);
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  for (size_t split : {0, 1, 63, 64, 65, 500, 999}) {
    Sha256 h;
    h.Update(ByteSpan(p, split));
    h.Update(ByteSpan(p + split, text.size() - split));
    auto d = h.Finish();
    EXPECT_EQ(HexEncode(d), Sha(text)) << split;
  }
}

// Padding boundaries (55/56 bytes leave room for the length or not, 64 is a
// whole block) and multi-block inputs, against coreutils' sha256sum of
// that many 'a's.
TEST(Sha256, MatchesAnIndependentImplementationAtBlockBoundaries) {
  const std::pair<size_t, const char*> cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
      {127, "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a"},
      {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
      {4097, "4e369b5618643c3abddd027b650bfa54810be3b418028a7c9d82299a59d008e8"},
      {100000, "6d1cf22d7cc09b085dfc25ee1a1f3ae0265804c607bc2074ad253bcc82fd81ee"},
  };
  for (const auto& [len, hex] : cases) EXPECT_EQ(Sha(std::string(len, 'a')), hex) << len;
}

// Independent reference: the nearest fp16 value by exhaustive comparison of
// candidates in double precision.
uint16_t NearestFp16(float f) {
  if (std::isnan(f)) return 0x7e00;
  uint16_t best = 0;
  double best_err = INFINITY;
  const double x = f;
  // Candidates: the two fp16 values around x found by bisection over the
  // ordered positive encodings.
  const double ax = std::fabs(x);
  uint16_t lo = 0, hi = 0x7c00;  // +0 .. +inf
  while (hi - lo > 1) {
    uint16_t mid = static_cast<uint16_t>((lo + hi) / 2);
    if (Fp16ToF32(mid) <= ax)
      lo = mid;
    else
      hi = mid;
  }
  for (uint16_t c : {lo, hi}) {
    double v = Fp16ToF32(c);
    double err = std::fabs(v - ax);
    if (c == 0x7c00) err = ax >= 65520.0 ? 0 : INFINITY;  // overflow threshold
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  return static_cast<uint16_t>(best | (std::signbit(f) ? 0x8000 : 0));
}

TEST(Half, EveryFp16RoundTripsThroughF32) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Fp16ToF32(F32ToFp16(f))));
      continue;
    }
    EXPECT_EQ(F32ToFp16(f), h) << std::hex << h;
  }
}

TEST(Half, KnownValues) {
  EXPECT_EQ(Fp16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToF32(0xc000), -2.0f);
  EXPECT_EQ(Fp16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(Fp16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F32ToFp16(1e6f), 0x7c00);
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(1.00390625f), 0x3f80) << "ties round to even";
  EXPECT_EQ(F32ToBf16(1.01171875f), 0x3f82) << "ties round to even";
}

TEST(Half, F32ToFp16RoundsToNearestEven) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> exp_dist(-27, 17);
  for (int i = 0; i < 200000; ++i) {
    float f = std::ldexp(1.0f + (rng() & 0xffffff) / 16777216.0f, static_cast<int>(exp_dist(rng)));
    if (rng() & 1) f = -f;
    ASSERT_EQ(F32ToFp16(f), NearestFp16(f)) << f;
  }
}

// Found by fuzz_budget_trace (tests/fuzz/regressions): sizes from 2^63 on
// came back as 2^63.
TEST(Units, ParsesSizesAbove2To63) {
  EXPECT_EQ(*ParseBytes("10000000000000000000"), 10000000000000000000u);
  EXPECT_EQ(*ParseBytes("16000000TB"), 16000000000000000000u);
  EXPECT_FALSE(ParseBytes("18446744073709551616").ok());  // 2^64
}

TEST(Units, ParsesAndFormatsSizes) {
  EXPECT_EQ(*ParseBytes("300MB"), 300000000u);
  EXPECT_EQ(*ParseBytes("600KB"), 600000u);
  EXPECT_EQ(*ParseBytes("512KiB"), 524288u);
  EXPECT_EQ(*ParseBytes("1.5G"), 1610612736u);
  EXPECT_EQ(*ParseBytes("4096"), 4096u);
  EXPECT_EQ(*ParseBytes(" 2 mib "), 2097152u);
  EXPECT_FALSE(ParseBytes("").ok());
  EXPECT_FALSE(ParseBytes("MB").ok());
  EXPECT_FALSE(ParseBytes("12XB").ok());
  EXPECT_FALSE(ParseBytes("1.2.3MB").ok());
  EXPECT_FALSE(ParseBytes("-5MB").ok());
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(1234567), "1.18 MiB");
  EXPECT_EQ(FormatBytesSigned(-1536), "-1.50 KiB");
}

TEST(Json, WritesNestedDocumentsWithEscapes) {
  JsonWriter w;
  w.BeginObject().Key("a").Int(-1).Key("b").BeginArray().Double(0.5).Bool(false).Null().EndArray();
  w.Key("s")
      .String("q\"\\\n\x01")
      .Key("e")
      .BeginObject()
      .EndObject()
      .Key("nan")
      .Double(NAN)
      .EndObject();
  EXPECT_EQ(w.str(), R"({"a":-1,"b":[0.5,false,null],"s":"q\"\\\n\u0001","e":{},"nan":null})");
  JsonWriter d;
  d.Double(0.1);
  EXPECT_EQ(d.str(), "0.1");
}

TEST(QuantTypes, RowBytesFollowTheBlockTable) {
  EXPECT_EQ(*RowBytes(ToId(QType::kQ4_K), 512), 288u);
  EXPECT_EQ(*RowBytes(ToId(QType::kQ8_0), 64), 68u);
  EXPECT_EQ(*RowBytes(ToId(QType::kF16), 172), 344u);
  Result<uint64_t> bad = RowBytes(ToId(QType::kQ4_K), 172);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.status().IsInvalidArgument());
  EXPECT_TRUE(RowBytes(4, 32).status().IsNotSupported()) << "id 4 was removed from ggml";
  std::vector<uint64_t> huge = {256, 1ull << 40, 1ull << 40};
  EXPECT_FALSE(TensorBytes(ToId(QType::kQ4_K), huge).ok());
}

TEST(QuantTypes, NamesRoundTrip) {
  for (const QTypeInfo& t : GgmlTypes()) {
    EXPECT_EQ(*ParseQTypeName(t.name), t.id) << t.name;
    EXPECT_EQ(QTypeName(t.id), t.name);
  }
  EXPECT_EQ(QTypeName(GroupIntId(3, 64)), "int3-g64");
  EXPECT_EQ(*ParseQTypeName("int3-g64"), GroupIntId(3, 64));
  EXPECT_FALSE(ParseQTypeName("int7-g64").ok());
  EXPECT_FALSE(ParseQTypeName("int4-g48").ok());
  EXPECT_EQ(QTypeName(99), "type#99");
}

TEST(QuantTypes, GroupIntRowsEndInAShorterGroup) {
  // int3-g64 on 172 weights: two full groups (4 + 24 bytes each) and a
  // group of 44 (4 + ceil(132/8) = 21 bytes).
  EXPECT_EQ(*RowBytes(GroupIntId(3, 64), 172), 2u * 28u + 21u);
  EXPECT_EQ(*RowBytes(GroupIntId(8, 32), 64), 2u * 36u);
}

TEST(Status, CarriesCodeAndContext) {
  Status s = Status::Corruption("bad byte").WithContext("file.gguf");
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_EQ(s.message(), "file.gguf: bad byte");
  EXPECT_EQ(s.ToString(), "Corruption: file.gguf: bad byte");
  EXPECT_TRUE(Status::OK().WithContext("x").ok());
  Result<int> r = Status::NotFound("x");
  EXPECT_FALSE(r.ok());
  Result<int> v = 5;
  EXPECT_EQ(*v, 5);
}

}  // namespace
}  // namespace fqpack
