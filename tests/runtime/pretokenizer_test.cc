#include "runtime/pretokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fqpack::runtime {
namespace {

using Words = std::vector<std::string>;

Words Split(std::string_view pre, std::string_view text) {
  Result<PreTokenizer> p = PreTokenizer::ForName(pre);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p->Split(text);
}

// Expected splits below are worked out by hand from the regexes llama.cpp
// gives each pre-tokenizer (src/llama-vocab.cpp), with leftmost-first
// backtracking semantics and the text between matches kept as a word.

// (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
TEST(PreTokenizerLlama3, SplitsAsItsRegex) {
  EXPECT_EQ(Split("llama-bpe", "Hello world"), (Words{"Hello", " world"}));
  // A lone space before digits matches only \s+; digits go three at a time.
  EXPECT_EQ(Split("llama-bpe", "I'm 12345 years"), (Words{"I", "'m", " ", "123", "45", " years"}));
  // Contractions ignore case.
  EXPECT_EQ(Split("llama-bpe", "DON'T"), (Words{"DON", "'T"}));
  // \s*[\r\n]+ ends at the last line break of a run of spaces; \s+(?!\S)
  // leaves the last space to the word after it.
  EXPECT_EQ(Split("llama-bpe", "x  \n\n  y"), (Words{"x", "  \n\n", " ", " y"}));
  // One non-letter, non-digit, non-newline character may lead letters;
  // punctuation runs take the line breaks after them.
  EXPECT_EQ(Split("llama-bpe", "(hello)!!\n"), (Words{"(hello", ")!!\n"}));
  EXPECT_EQ(Split("llama-bpe", "\t\tfoo"), (Words{"\t", "\tfoo"}));
  EXPECT_EQ(Split("llama-bpe", "\nfoo"), (Words{"\n", "foo"}));
  // Spaces at the end stay together.
  EXPECT_EQ(Split("llama-bpe", "ab   "), (Words{"ab", "   "}));
  // Non-ASCII letters and digits by their Unicode category.
  EXPECT_EQ(Split("llama-bpe", "na\xC3\xAFve caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD 1\xC2\xB2"),
            (Words{"na\xC3\xAFve", " caf\xC3\xA9", " \xE4\xBD\xA0\xE5\xA5\xBD", " ", "1\xC2\xB2"}));
  // A no-break space is no letter, yet it may lead letters as any space
  // but CR and LF may.
  EXPECT_EQ(Split("llama3",
                  "a\xC2\xA0"
                  "b"),
            (Words{"a",
                   "\xC2\xA0"
                   "b"}));
}

// Qwen2: Llama-3's regex with \p{N} one digit at a time.
TEST(PreTokenizerQwen2, SplitsDigitsOneByOne) {
  EXPECT_EQ(Split("qwen2", "I'm 2024"), (Words{"I", "'m", " ", "2", "0", "2", "4"}));
  EXPECT_EQ(Split("qwen2", "x1y"), (Words{"x", "1", "y"}));
  EXPECT_EQ(Split("qwen2", "Hello,  world!\n\n"), (Words{"Hello", ",", " ", " world", "!\n\n"}));
}

// SmolLM (as StarCoder): \p{N} first, then GPT-2's regex on every piece.
TEST(PreTokenizerSmollm, SplitsDigitsThenGpt2) {
  EXPECT_EQ(Split("smollm", "abc123 def"), (Words{"abc", "1", "2", "3", " def"}));
  // The space before the digits stays alone: in the piece "x = " it is at
  // the end, so \s+(?!\S) takes it.
  EXPECT_EQ(Split("smollm", "x = 10"), (Words{"x", " =", " ", "1", "0"}));
  // GPT-2's contractions are lower case only.
  EXPECT_EQ(Split("smollm", "I'm"), (Words{"I", "'m"}));
  EXPECT_EQ(Split("smollm", "I'M"), (Words{"I", "'", "M"}));
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
TEST(PreTokenizerGpt2, SplitsAsItsRegex) {
  EXPECT_EQ(Split("gpt-2", "Hello  world"), (Words{"Hello", " ", " world"}));
  EXPECT_EQ(Split("gpt-2", "a 12345!?"), (Words{"a", " 12345", "!?"}));
  // A newline before a word matches nothing and stays a word of its own.
  EXPECT_EQ(Split("gpt-2", "a\nb"), (Words{"a", "\n", "b"}));
  EXPECT_EQ(Split("gpt-2", "a \n\n b"), (Words{"a", " \n\n", " b"}));
}

// Falcon: [\p{P}\$\+<=>\^~\|`]+, then GPT-2's regex, then [0-9][0-9][0-9].
TEST(PreTokenizerFalcon, SplitsPunctuationThenDigitTriples) {
  EXPECT_EQ(Split("falcon", "a+b=3,5678"), (Words{"a", "+", "b", "=", "3", ",", "567", "8"}));
}

TEST(PreTokenizer, WordsJoinBackToTheText) {
  const std::string text =
      "  Hello, y'all!\tHow 're you?\r\n\n  1234567 \xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96 "
      "\xF0\x9F\x98\x81\xF0\x9F\x98\x81 caf\xC3\xA9\xE3\x80\x80x  ";
  for (const std::string name : {"gpt-2", "llama-bpe", "qwen2", "smollm", "starcoder", "falcon",
                                 "deepseek-llm", "deepseek-coder", "default"}) {
    std::string joined;
    for (const std::string& w : Split(name, text)) {
      EXPECT_FALSE(w.empty()) << name;
      joined += w;
    }
    EXPECT_EQ(joined, text) << name;
  }
  // Invalid UTF-8 comes back as U+FFFD, a byte at a time.
  EXPECT_EQ(Split("gpt-2", "a\xFF\xC3"), (Words{"a", "\xEF\xBF\xBD\xEF\xBF\xBD"}));
  EXPECT_TRUE(Split("gpt-2", "").empty());
}

// Random texts over a hostile alphabet (every kind of space, combining
// marks, CJK, digits of other scripts, contractions) split by an independent
// regex engine with Unicode classes, following llama.cpp's regexes; see
// gen_pretokenizer_cases.py.
struct RegexCase {
  const char* pre;
  const char* text;
  std::vector<std::string> words;
};

TEST(PreTokenizer, AgreesWithARegexEngine) {
  const std::vector<RegexCase> cases = {
#include "tests/runtime/pretokenizer_cases.inc"
  };
  ASSERT_GE(cases.size(), 300u);
  for (const RegexCase& c : cases) {
    EXPECT_EQ(Split(c.pre, c.text), c.words) << c.pre << ": '" << c.text << "'";
  }
}

TEST(PreTokenizer, RejectsUnknownNames) {
  const Result<PreTokenizer> p = PreTokenizer::ForName("klingon-bpe");
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().IsNotSupported());
  EXPECT_NE(p.status().message().find("'klingon-bpe'"), std::string::npos);
  EXPECT_NE(p.status().message().find("llama-bpe"), std::string::npos);
  EXPECT_TRUE(PreTokenizer::ForName("llama-bpe")->ignore_merges());
  EXPECT_FALSE(PreTokenizer::ForName("qwen2")->ignore_merges());
}

}  // namespace
}  // namespace fqpack::runtime
