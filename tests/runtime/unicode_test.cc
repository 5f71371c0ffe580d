#include "runtime/unicode.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fqpack::runtime {
namespace {

TEST(Unicode, ClassesFollowTheGeneralCategory) {
  EXPECT_EQ(ClassOf('a'), CodepointClass::kLetter);
  EXPECT_EQ(ClassOf('5'), CodepointClass::kNumber);
  EXPECT_EQ(ClassOf('!'), CodepointClass::kPunctuation);
  EXPECT_EQ(ClassOf('$'), CodepointClass::kSymbol);
  EXPECT_EQ(ClassOf(' '), CodepointClass::kSeparator);
  EXPECT_EQ(ClassOf('\n'), CodepointClass::kOther);
  EXPECT_EQ(ClassOf(0x00B2), CodepointClass::kNumber);     // superscript two
  EXPECT_EQ(ClassOf(0x0301), CodepointClass::kMark);       // combining acute accent
  EXPECT_EQ(ClassOf(0x4E2D), CodepointClass::kLetter);     // CJK, inside a First/Last range
  EXPECT_EQ(ClassOf(0xAC01), CodepointClass::kLetter);     // Hangul syllable, likewise
  EXPECT_EQ(ClassOf(0x1F600), CodepointClass::kSymbol);    // emoji
  EXPECT_EQ(ClassOf(0x200B), CodepointClass::kOther);      // zero width space (Cf)
  EXPECT_EQ(ClassOf(0x0378), CodepointClass::kUndefined);  // unassigned
  EXPECT_EQ(ClassOf(0x10FFFF), CodepointClass::kUndefined);
  EXPECT_EQ(ClassOf(0x110000), CodepointClass::kUndefined);
}

TEST(Unicode, WhiteSpaceProperty) {
  for (uint32_t cp : {0x09u, 0x0Au, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x2000u, 0x3000u}) {
    EXPECT_TRUE(IsWhitespace(cp)) << cp;
  }
  for (uint32_t cp : {0x1Cu, 0x200Bu, 0xFEFFu, 0x61u}) EXPECT_FALSE(IsWhitespace(cp)) << cp;
}

TEST(Unicode, DecodesLikeLlamaCpp) {
  EXPECT_EQ(DecodeUtf8("a\xC3\xA9\xF0\x9F\x98\x81"), (std::vector<uint32_t>{'a', 0xE9, 0x1F601}));
  // A truncated sequence and a stray continuation byte: U+FFFD each byte.
  EXPECT_EQ(DecodeUtf8("\xFF\xE2\x82"),
            (std::vector<uint32_t>{kReplacementChar, kReplacementChar, kReplacementChar}));
  std::string s;
  for (uint32_t cp : {0x41u, 0xE9u, 0x20ACu, 0x1F601u}) AppendUtf8(cp, &s);
  EXPECT_EQ(s, "A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x81");
}

TEST(Unicode, Gpt2ByteMap) {
  EXPECT_EQ(ByteToUnicode(' '), "\xC4\xA0");   // Ġ
  EXPECT_EQ(ByteToUnicode('\n'), "\xC4\x8A");  // Ċ
  EXPECT_EQ(ByteToUnicode('a'), "a");
  EXPECT_EQ(ByteToUnicode(0xE9), "\xC3\xA9");  // é stands for itself
  for (int b = 0; b < 256; ++b) {
    const std::vector<uint32_t> cps = DecodeUtf8(ByteToUnicode(static_cast<uint8_t>(b)));
    ASSERT_EQ(cps.size(), 1u);
    EXPECT_EQ(UnicodeToByte(cps[0]), b);
  }
  EXPECT_EQ(UnicodeToByte(0x20), -1);  // the space itself stands for no byte
}

}  // namespace
}  // namespace fqpack::runtime
