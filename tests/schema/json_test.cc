// The JSON readers take index columns from files of any origin.
#include "schema/json.h"

#include <gtest/gtest.h>

namespace fqpack {
namespace {

TEST(JsonRead, StringArrays) {
  auto a = ParseJsonStringArray(" [\"Q8_0\", \"a\\\"b\",\"\\u0041\", \"\\u00e9\"] ", "lib");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(*a, (std::vector<std::string>{"Q8_0", "a\"b", "A", "\xc3\xa9"}));
  EXPECT_TRUE(ParseJsonStringArray("[]", "lib")->empty());
  for (const char* bad :
       {"[\"a\",]", "{\"a\"}", "[\"a\"", "[1]", "", "[\"\\uZZZZ\"]", "[\"\\u12\"]", "null"}) {
    Result<std::vector<std::string>> r = ParseJsonStringArray(bad, "lib");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(r.status().IsCorruption()) << bad;
    EXPECT_EQ(r.status().message().rfind("lib: ", 0), 0u) << r.status().ToString();
  }
}

TEST(JsonRead, ObjectMembers) {
  auto o = ParseJsonObject(R"({"metric":"kl","stem":2,"ok":true,"x":null,"n":[1,2],"s":"a\"b"})",
                           "params");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->at("metric"), "kl");
  EXPECT_EQ(o->at("stem"), "2");
  EXPECT_EQ(o->at("ok"), "true");
  EXPECT_EQ(o->at("x"), "null");
  EXPECT_EQ(o->at("n"), "[1,2]");
  EXPECT_EQ(o->at("s"), "a\"b");
  EXPECT_EQ(JsonMember(R"({"metric":"kl"})", "metric"), "kl");
  EXPECT_EQ(JsonMember(R"({"metric":"kl"})", "stem"), "");
  EXPECT_EQ(JsonMember("not json", "metric"), "");
  EXPECT_FALSE(ParseJsonObject("[1]", "params").ok());
}

// The old readers looked for `"key":` anywhere in the text: a key inside a
// string value matched.
TEST(JsonRead, KeysInsideStringsAreNotMembers) {
  EXPECT_EQ(JsonMember(R"({"note":"\"metric\":\"ppl\"","metric":"kl"})", "metric"), "kl");
}

TEST(JsonRead, DeepNestingIsRefusedNotRecursedInto) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  Result<std::vector<std::string>> r = ParseJsonStringArray(deep, "deep");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested deeper"), std::string::npos);
  const std::string ok = std::string(kMaxJsonDepth - 1, '[') + std::string(kMaxJsonDepth - 1, ']');
  EXPECT_TRUE(ParseJsonObject("{\"a\":" + ok + "}", "ok").ok());
}

TEST(JsonRead, InvalidUtf8InANestedValueDoesNotThrow) {
  auto o = ParseJsonObject("{\"a\":[\"\xff\xfe\"]}", "utf8");
  // Either refused by the parser or printed with a replacement: never thrown.
  if (o.ok()) {
    EXPECT_FALSE(o->at("a").empty());
  }
}

// A GGUF string may hold any bytes; what the writer makes of it must be
// JSON a strict reader accepts, with valid UTF-8 kept as it is.
TEST(JsonWrite, InvalidUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(JsonWriter::Escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  // A lone continuation byte, a truncated sequence, an overlong '/', a
  // surrogate, and a code point above U+10FFFF.
  EXPECT_EQ(JsonWriter::Escape("a\x80z"), "\"a\\ufffdz\"");
  EXPECT_EQ(JsonWriter::Escape("\xe2\x82"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonWriter::Escape("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonWriter::Escape("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonWriter::Escape("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  const std::string hostile = "k\xff\xfe\xc3";
  JsonWriter w;
  w.BeginArray().String(hostile).EndArray();
  Result<std::vector<std::string>> back = ParseJsonStringArray(w.str(), "test");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0], "k\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

}  // namespace
}  // namespace fqpack
