#include "runtime/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/unicode.h"
#include "schema/env.h"
#include "schema/gguf.h"
#include "tests/support/test_util.h"

namespace fqpack::runtime {
namespace {

using gguf::Value;
using gguf::ValueType;
using Ids = std::vector<int32_t>;

// U+2581, the visible space of SentencePiece pieces.
const std::string kU = "\xE2\x96\x81";

struct VocabEntry {
  std::string text;
  float score;
  TokenType type;
};

gguf::Metadata MakeMetadata(const std::vector<VocabEntry>& vocab,
                            std::string_view model = "llama") {
  std::vector<Value> texts, scores, types;
  for (const VocabEntry& e : vocab) {
    texts.push_back(Value::String(e.text));
    scores.push_back(Value::Float(ValueType::kF32, e.score));
    types.push_back(Value::Int(ValueType::kI32, static_cast<int64_t>(e.type)));
  }
  gguf::Metadata md;
  md.Set("tokenizer.ggml.model", Value::String(std::string(model)));
  md.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, std::move(texts)));
  md.Set("tokenizer.ggml.scores", Value::Array(ValueType::kF32, std::move(scores)));
  md.Set("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, std::move(types)));
  return md;
}

// A small vocabulary built by hand, with every expected id below worked out
// on paper:
//   0 <unk>, 1 <s>, 2 </s>, 3 + b: <0xBB> for every byte b (so 'A' = 68),
//   259 ▁ -10, 260 a -10, 261 b -10, 262 c -10, 263 ab -1, 264 bc -2,
//   265 ▁a -3, 266 abc -4, 267 ▁b -3, 268 é -10, 269 xx -1, 270 ▁▁ -20,
//   271 <tag> (user-defined).
constexpr int32_t kByte0 = 3;
constexpr int32_t kSpace = 259, kA = 260, kB = 261, kAB = 263, kBC = 264, kSpaceA = 265, kABC = 266,
                  kSpaceB = 267, kEAcute = 268, kXX = 269, kTwoSpaces = 270, kTag = 271;

std::vector<VocabEntry> HandVocab() {
  std::vector<VocabEntry> v = {{"<unk>", 0, TokenType::kUnknown},
                               {"<s>", 0, TokenType::kControl},
                               {"</s>", 0, TokenType::kControl}};
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    v.push_back({std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">", 0, TokenType::kByte});
  }
  const std::vector<std::pair<std::string, float>> normal = {
      {kU, -10},      {"a", -10},  {"b", -10},     {"c", -10},        {"ab", -1}, {"bc", -2},
      {kU + "a", -3}, {"abc", -4}, {kU + "b", -3}, {"\xC3\xA9", -10}, {"xx", -1}, {kU + kU, -20}};
  for (const auto& [text, score] : normal) v.push_back({text, score, TokenType::kNormal});
  v.push_back({"<tag>", 0, TokenType::kUserDefined});
  return v;
}

Tokenizer MustLoad(const gguf::Metadata& md) {
  Result<Tokenizer> tok = Tokenizer::FromMetadata(md);
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return std::move(tok).value();
}

int32_t ByteId(unsigned char b) { return kByte0 + b; }

TEST(TokenizerHand, ReadsVocabularyAndDefaults) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  EXPECT_EQ(tok.n_vocab(), 272);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_EQ(tok.unk(), 0);
  EXPECT_EQ(tok.pad(), Tokenizer::kNoToken);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_FALSE(tok.add_eos());
  EXPECT_TRUE(tok.add_space_prefix());
  EXPECT_EQ(tok.token_text(kAB), "ab");
  EXPECT_FLOAT_EQ(tok.token_score(kBC), -2.0f);
  EXPECT_EQ(tok.token_type(ByteId('A')), TokenType::kByte);
  EXPECT_EQ(tok.token_type(kTag), TokenType::kUserDefined);
  EXPECT_EQ(tok.Find("abc"), kABC);
  EXPECT_EQ(tok.Find("abcd"), Tokenizer::kNoToken);
}

TEST(TokenizerHand, MergesHighestScoreFirst) {
  // "▁abc": ab (-1) beats bc (-2) and ▁a (-3); then ab+c = abc (-4) is the
  // only merge left, and ▁abc is no token.
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  EXPECT_EQ(tok.Encode("abc", false), (Ids{kSpace, kABC}));

  // With ▁a raised above ab, ▁a merges first; then ▁ab is no token, bc (-2)
  // merges, and ▁a+bc is no token.
  std::vector<VocabEntry> v = HandVocab();
  v[kSpaceA].score = -0.5f;
  const Tokenizer raised = MustLoad(MakeMetadata(v));
  EXPECT_EQ(raised.Encode("abc", false), (Ids{kSpaceA, kBC}));
}

TEST(TokenizerHand, NanScoresRankLast) {
  // ab's score is NaN: it reads as -inf, so bc (-2) merges first, then ▁a
  // (-3) before a+bc (-4), leaving ▁a bc.
  std::vector<VocabEntry> v = HandVocab();
  v[kAB].score = std::numeric_limits<float>::quiet_NaN();
  const Tokenizer tok = MustLoad(MakeMetadata(v));
  EXPECT_EQ(tok.token_score(kAB), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(tok.Encode("abc", false), (Ids{kSpaceA, kBC}));
}

TEST(TokenizerHand, EqualScoresMergeLeftmostFirst) {
  // "▁xxx": x is no token but xx is; both xx pairs score -1, the left one
  // wins and the last x falls back to its byte.
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  EXPECT_EQ(tok.Encode("xxx", false), (Ids{kSpace, kXX, ByteId('x')}));
  // Two spaces: "▁▁▁" (dummy prefix + 2); both ▁▁ pairs tie, the left wins.
  EXPECT_EQ(tok.Encode("  ", false), (Ids{kTwoSpaces, kSpace}));
}

TEST(TokenizerHand, OnlySpaces) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  EXPECT_EQ(tok.Encode(" ", false), (Ids{kTwoSpaces}));
  EXPECT_EQ(tok.Encode("   ", false), (Ids{kTwoSpaces, kTwoSpaces}));
  EXPECT_EQ(tok.Encode("    ", false), (Ids{kTwoSpaces, kTwoSpaces, kSpace}));
}

TEST(TokenizerHand, EmptyString) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  EXPECT_EQ(tok.Encode("", false), Ids{});
  EXPECT_EQ(tok.Encode("", true), (Ids{1}));
}

TEST(TokenizerHand, AddsBosAndEosAsTheMetadataSays) {
  gguf::Metadata md = MakeMetadata(HandVocab());
  md.Set("tokenizer.ggml.add_eos_token", Value::Bool(true));
  md.Set("tokenizer.ggml.add_bos_token", Value::Bool(false));
  const Tokenizer tok = MustLoad(md);
  EXPECT_EQ(tok.Encode("a", true), (Ids{kSpaceA, 2}));
  EXPECT_EQ(tok.Encode("a", false), (Ids{kSpaceA}));

  md.Set("tokenizer.ggml.add_bos_token", Value::Bool(true));
  md.Set("tokenizer.ggml.bos_token_id", Value::Uint(ValueType::kU32, kB));
  EXPECT_EQ(MustLoad(md).Encode("a", true), (Ids{kB, kSpaceA, 2}));
}

TEST(TokenizerHand, SpacePrefixFlag) {
  gguf::Metadata md = MakeMetadata(HandVocab());
  md.Set("tokenizer.ggml.add_space_prefix", Value::Bool(false));
  const Tokenizer tok = MustLoad(md);
  EXPECT_EQ(tok.Encode("a b", false), (Ids{kA, kSpaceB}));
  EXPECT_EQ(tok.Decode(tok.Encode("a b", false)), "a b");
}

TEST(TokenizerHand, ByteFallbackForUnknownCharacters) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  // é is a token; ü (C3 BC) is not and falls back to its two bytes.
  EXPECT_EQ(tok.Encode("\xC3\xA9", false), (Ids{kSpace, kEAcute}));
  EXPECT_EQ(tok.Encode("\xC3\xBC", false), (Ids{kSpace, ByteId(0xC3), ByteId(0xBC)}));
  // A four-byte character (U+1F600) is one symbol: four byte tokens.
  EXPECT_EQ(tok.Encode("\xF0\x9F\x98\x80", false),
            (Ids{kSpace, ByteId(0xF0), ByteId(0x9F), ByteId(0x98), ByteId(0x80)}));
  EXPECT_EQ(tok.Encode("a!", false), (Ids{kSpaceA, ByteId('!')}));
}

TEST(TokenizerHand, InvalidUtf8IsSplitByLeadBytes) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  // E9 announces a three-byte character, so it swallows "ab" and ab never
  // merges: three byte tokens.
  EXPECT_EQ(tok.Encode(std::string("\xE9") + "ab", false),
            (Ids{kSpace, ByteId(0xE9), ByteId('a'), ByteId('b')}));
  // A stray continuation byte is a character of its own.
  EXPECT_EQ(tok.Encode("a\x80", false), (Ids{kSpaceA, ByteId(0x80)}));
  // A sequence cut off by the end of the text.
  EXPECT_EQ(tok.Encode("a\xC3", false), (Ids{kSpaceA, ByteId(0xC3)}));
}

TEST(TokenizerHand, UnknownTokenWithoutByteTokens) {
  const Tokenizer tok = MustLoad(MakeMetadata({{"<unk>", 0, TokenType::kUnknown},
                                               {"<s>", 0, TokenType::kControl},
                                               {"</s>", 0, TokenType::kControl},
                                               {kU, -1, TokenType::kNormal},
                                               {"a", -1, TokenType::kNormal},
                                               {kU + "a", -1, TokenType::kNormal},
                                               {"\xC3", -1, TokenType::kNormal}}));
  // One <unk> per character that is neither a token nor spelled in bytes.
  EXPECT_EQ(tok.Encode("a!", false), (Ids{5, 0}));
  EXPECT_EQ(tok.Encode("a\xF0\x9F\x98\x80!", false), (Ids{5, 0, 0}));
  // Without <0xXX> tokens a byte falls back to the one-byte token spelling
  // it: C3 swallows the 'a' after it, and both bytes are tokens.
  EXPECT_EQ(tok.Encode(std::string("\xC3") + "a", false), (Ids{3, 6, 4}));
}

TEST(TokenizerHand, TokensSpanningSpacesStillMerge) {
  // "a▁" holds a space after its first byte, so merges may cross words:
  // "▁a▁b" gives ▁ + a▁ (-1), then a▁ + b (-0.5).
  const Tokenizer tok = MustLoad(MakeMetadata({{"<unk>", 0, TokenType::kUnknown},
                                               {"<s>", 0, TokenType::kControl},
                                               {"</s>", 0, TokenType::kControl},
                                               {kU, -5, TokenType::kNormal},
                                               {"a", -5, TokenType::kNormal},
                                               {"b", -5, TokenType::kNormal},
                                               {"a" + kU, -1, TokenType::kNormal},
                                               {"a" + kU + "b", -0.5, TokenType::kNormal}}));
  EXPECT_EQ(tok.Encode("a b", false), (Ids{3, 7}));
  EXPECT_EQ(tok.Encode("b a b", false), (Ids{3, 5, 3, 7}));
}

TEST(TokenizerHand, ParsesSpecialTokensOnlyWhenAsked) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  // Parsed: a special token ends a fragment and the next one gets a dummy
  // prefix space again.
  EXPECT_EQ(tok.Encode("a</s>b", false, true), (Ids{kSpaceA, 2, kSpaceB}));
  // Not parsed: "</s>" is spelled with byte tokens (none of < / s > is a
  // token) and b stays a plain b.
  EXPECT_EQ(tok.Encode("a</s>b", false, false),
            (Ids{kSpaceA, ByteId('<'), ByteId('/'), ByteId('s'), ByteId('>'), kB}));
  // User-defined tokens are always parsed out.
  EXPECT_EQ(tok.Encode("a<tag>b", false, false), (Ids{kSpaceA, kTag, kSpaceB}));
  EXPECT_EQ(tok.Encode("<tag><tag>", false), (Ids{kTag, kTag}));
}

TEST(TokenizerHand, TokenToPiece) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  EXPECT_EQ(tok.TokenToPiece(kSpaceA), " a");
  EXPECT_EQ(tok.TokenToPiece(kTwoSpaces), "  ");
  EXPECT_EQ(tok.TokenToPiece(ByteId('A')), "A");
  EXPECT_EQ(tok.TokenToPiece(ByteId(0xC3)), "\xC3");
  EXPECT_EQ(tok.TokenToPiece(1), "");
  EXPECT_EQ(tok.TokenToPiece(1, /*special=*/true), "<s>");
  EXPECT_EQ(tok.TokenToPiece(0), "");
  EXPECT_EQ(tok.TokenToPiece(kTag), "<tag>");
  EXPECT_EQ(tok.TokenToPiece(-1), "");
  EXPECT_EQ(tok.TokenToPiece(tok.n_vocab()), "");
}

TEST(TokenizerHand, DecodeRemovesTheDummyPrefixOnce) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  EXPECT_EQ(tok.Decode(Ids{kSpaceA, kSpaceB}), "a b");
  EXPECT_EQ(tok.Decode(tok.Encode(" abc  b\xC3\xBC", false)), " abc  b\xC3\xBC");
  // A BOS left in the sequence renders as nothing but still takes the one
  // strip, as llama_detokenize does.
  EXPECT_EQ(tok.Decode(Ids{1, kSpaceA}), " a");
  EXPECT_EQ(tok.Decode(Ids{1, kSpaceA}, /*remove_special=*/true), " a");
  EXPECT_EQ(tok.Decode(Ids{1, kSpaceA, 2}, false, /*unparse_special=*/true), "<s> a</s>");
  EXPECT_EQ(tok.Decode(Ids{}), "");
}

TEST(TokenizerHand, DecodeStreamStripsTheSpaceAfterBos) {
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  DecodeStream stream(&tok, tok.bos());
  std::string printed;
  for (int32_t id : Ids{kSpaceA, kSpaceB, ByteId('\n'), kSpaceA}) printed += stream.Next(id);
  EXPECT_EQ(printed, "a b\n a");

  // After BOS again (a new story), the next piece loses its space again; a
  // byte token for ' ' keeps it, as in llama2.c.
  DecodeStream again(&tok, kA);
  EXPECT_EQ(again.Next(kSpaceB), " b");
  EXPECT_EQ(again.Next(tok.bos()), "");
  EXPECT_EQ(again.Next(kSpaceB), "b");
  EXPECT_EQ(again.Next(tok.bos()), "");
  EXPECT_EQ(again.Next(ByteId(' ')), " ");
}

TEST(TokenizerHand, LongRunsStayCorrect) {
  // Many merges over one long word and one long run of spaces: every pair
  // of x merges, leftmost first.
  const Tokenizer tok = MustLoad(MakeMetadata(HandVocab()));
  const std::vector<int32_t> ids = tok.Encode(std::string(100001, 'x'), false);
  ASSERT_EQ(ids.size(), 1u + 50000u + 1u);
  EXPECT_EQ(ids.front(), kSpace);
  EXPECT_EQ(ids[1], kXX);
  EXPECT_EQ(ids[50000], kXX);
  EXPECT_EQ(ids.back(), ByteId('x'));
  const std::vector<int32_t> spaces = tok.Encode(std::string(99999, ' '), false);
  EXPECT_EQ(spaces, Ids(50000, kTwoSpaces));
}

TEST(TokenizerHand, RejectsOtherModelsAndBadVocabularies) {
  const Result<Tokenizer> bert = Tokenizer::FromMetadata(MakeMetadata(HandVocab(), "bert"));
  ASSERT_FALSE(bert.ok());
  EXPECT_TRUE(bert.status().IsNotSupported());
  EXPECT_NE(bert.status().message().find("bert"), std::string::npos);

  gguf::Metadata no_model = MakeMetadata(HandVocab());
  no_model.entries.erase(no_model.entries.begin());
  EXPECT_FALSE(Tokenizer::FromMetadata(no_model).ok());

  std::vector<VocabEntry> dup = HandVocab();
  dup[kB].text = "a";
  const Result<Tokenizer> dup_tok = Tokenizer::FromMetadata(MakeMetadata(dup));
  ASSERT_FALSE(dup_tok.ok());
  EXPECT_TRUE(dup_tok.status().IsCorruption());

  gguf::Metadata short_scores = MakeMetadata(HandVocab());
  short_scores.Set("tokenizer.ggml.scores",
                   Value::Array(ValueType::kF32, {Value::Float(ValueType::kF32, 0)}));
  EXPECT_TRUE(Tokenizer::FromMetadata(short_scores).status().IsCorruption());

  // One token: the default BOS id 1 is out of range, yet add_bos defaults on.
  const Result<Tokenizer> tiny =
      Tokenizer::FromMetadata(MakeMetadata({{"<unk>", 0, TokenType::kUnknown}}));
  EXPECT_TRUE(tiny.status().IsCorruption());
}

TEST(TokenizerHand, SpecialIdsOutOfRangeKeepTheDefaults) {
  gguf::Metadata md = MakeMetadata(HandVocab());
  md.Set("tokenizer.ggml.eos_token_id", Value::Uint(ValueType::kU32, 4294967295u));
  md.Set("tokenizer.ggml.padding_token_id", Value::Uint(ValueType::kU32, 4294967295u));
  md.Set("tokenizer.ggml.unknown_token_id", Value::Uint(ValueType::kU32, kTag));
  const Tokenizer tok = MustLoad(md);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_EQ(tok.pad(), Tokenizer::kNoToken);
  EXPECT_EQ(tok.unk(), kTag);
}

Tokenizer LoadVocab(const std::string& relative) {
  const std::string path = testing::TestDataPath(relative);
  Result<MappedFile> file = Env::Default()->MapFile(path);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  Result<gguf::Header> header = gguf::ParseFile(file->bytes(), path);
  EXPECT_TRUE(header.ok()) << header.status().ToString();
  return MustLoad(header->metadata);
}

std::string ReadText(const std::string& relative) {
  Result<Bytes> bytes = ReadFileBytes(Env::Default(), testing::TestDataPath(relative));
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return std::string(bytes->begin(), bytes->end());
}

// llama.cpp's tests/test-tokenizer-0.cpp: the .inp file is split at every
// "\n__ggml_vocab_test__\n" (the text after the last separator, empty here,
// is not a test), each .out line holds the expected ids, and every string is
// tokenized with add_special = false, parse_special = false.
struct VocabVectors {
  std::vector<std::string> inputs;
  std::vector<Ids> expected;
};

VocabVectors ReadVectors(const std::string& vocab) {
  VocabVectors v;
  const std::string raw = ReadText(vocab + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      v.inputs.push_back(raw.substr(pos));
      break;
    }
    v.inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::istringstream out_lines(ReadText(vocab + ".out"));
  for (std::string line; std::getline(out_lines, line);) {
    std::istringstream fields(line);
    Ids ids;
    for (int32_t id; fields >> id;) ids.push_back(id);
    v.expected.push_back(ids);
  }
  return v;
}

TEST(TokenizerLlamaSpm, MatchesLlamaCppTestVectors) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab("tokenizer/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok.n_vocab(), 32000);

  const VocabVectors v = ReadVectors("tokenizer/ggml-vocab-llama-spm.gguf");
  const std::vector<std::string>& inputs = v.inputs;
  const std::vector<Ids>& expected = v.expected;
  ASSERT_EQ(inputs.size(), expected.size());
  ASSERT_GE(inputs.size(), 40u);

  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(tok.Encode(inputs[i], false, false), expected[i])
        << "vector " << i << ": '" << inputs[i] << "'";
  }
}

// The Llama-2 encodings of karpathy/llama2.c's test_all.py, as stored in
// reference/llama2c_reference_vectors.json ("llama2_tokenizer_encode":
// encode(text, bos=1, eos=0) with tokenizer.bin, the same 32000-token
// vocabulary). Copied from that file.
TEST(TokenizerLlamaSpm, MatchesLlama2cReferenceEncodings) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab("tokenizer/ggml-vocab-llama-spm.gguf");
  struct Vector {
    std::string prompt;
    Ids tokens_with_bos;
  };
  const std::vector<Vector> vectors = {
      {"", {1}},
      {"I believe the meaning of life is", {1, 306, 4658, 278, 6593, 310, 2834, 338}},
      {"Simply put, the theory of relativity states that ",
       {1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871}},
      {"A brief message congratulating the team on the launch:\n\n        Hi everyone,\n\n"
       "        I just ",
       {1,     319, 11473, 2643, 378,  629,   271,   18099, 278, 3815, 373, 278, 6826,
        29901, 13,  13,    4706, 6324, 14332, 29892, 13,    13,  4706, 306, 925, 29871}},
      {"Translate English to French:\n\n        sea otter => loutre de mer\n        peppermint "
       "=> menthe poivr\u00e9e\n        plush girafe => girafe peluche\n        cheese =>",
       {1,    4103, 9632, 4223, 304,   5176,  29901, 13,   13,   4706, 7205, 4932, 357,
        1149, 301,  449,  276,  316,   2778,  13,    4706, 1236, 407,  837,  524,  1149,
        6042, 354,  772,  440,  29878, 1318,  13,    4706, 715,  1878, 330,  3055, 1725,
        1149, 330,  3055, 1725, 4639,  28754, 13,    4706, 923,  968,  1149}},
  };
  for (const Vector& v : vectors) {
    EXPECT_EQ(tok.Encode(v.prompt, /*add_special=*/true), v.tokens_with_bos)
        << "prompt '" << v.prompt << "'";
  }
  // The same file as read by a caller, to catch a transcription slip above.
  const std::string json = ReadText("reference/llama2c_reference_vectors.json");
  EXPECT_NE(json.find("\"prompt\": \"I believe the meaning of life is\""), std::string::npos);
  EXPECT_NE(json.find("poivr\u00e9e\\n"), std::string::npos);
}

TEST(TokenizerLlamaSpm, DecodeInvertsEncode) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab("tokenizer/ggml-vocab-llama-spm.gguf");
  const std::string text = "Hello, y'all! How are you \xF0\x9F\x98\x81 ?\xE6\x88\x91\n\tdone  ";
  EXPECT_EQ(tok.Decode(tok.Encode(text, false)), text);
  EXPECT_EQ(tok.TokenToPiece(29871), " ");
  EXPECT_EQ(tok.TokenToPiece(13), "\n");
  EXPECT_EQ(tok.TokenToPiece(15043), " Hello");
}

// The stories260K vocabulary (tok512 as llama.cpp's llama2.c converter wrote
// it into the GGUF). Expected ids were computed with llama2.c's run.c encode
// (greedy highest-score merge, leftmost on ties) over tok512.bin and checked
// piece by piece against the vocabulary.
TEST(TokenizerStories260K, HandCheckedEncodings) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab("models/stories260K/stories260K-F32.gguf");
  EXPECT_EQ(tok.n_vocab(), 512);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_TRUE(tok.add_bos());                 // absent from this file: llama.cpp's default
  EXPECT_EQ(tok.pad(), Tokenizer::kNoToken);  // stored as 0xFFFFFFFF

  // ▁Once ▁upon ▁a ▁time , ▁there ▁was ▁a ▁little ▁g ir l ▁named ▁Lily .
  EXPECT_EQ(tok.Encode("Once upon a time, there was a little girl named Lily.", true),
            (Ids{1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426}));
  // ▁The ▁c at ▁s at .
  EXPECT_EQ(tok.Encode("The cat sat.", true), (Ids{1, 291, 280, 294, 262, 294, 426}));
  // ▁ ▁ ▁t w o ▁ ▁s p a ce s
  EXPECT_EQ(tok.Encode("  two  spaces", true),
            (Ids{1, 410, 410, 259, 424, 414, 410, 262, 427, 412, 331, 419}));
  // ▁h é ll o ▁ <0xF0> <0x9F> <0x98> <0x80>
  EXPECT_EQ(tok.Encode("h\xC3\xA9llo \xF0\x9F\x98\x80", true),
            (Ids{1, 270, 485, 306, 414, 410, 243, 162, 155, 131}));
  // ▁a <0x0A> b
  EXPECT_EQ(tok.Encode("a\nb", true), (Ids{1, 261, 13, 430}));
}

TEST(TokenizerStories260K, RoundTripsAParagraph) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab("models/stories260K/stories260K-F32.gguf");
  const std::string text = ReadText("text/tinystories.txt");
  // The first three paragraphs (two blank-line separators).
  size_t end = text.find("\n\n");
  ASSERT_NE(end, std::string::npos);
  end = text.find("\n\n", end + 2);
  ASSERT_NE(end, std::string::npos);
  end = text.find("\n\n", end + 2);
  ASSERT_NE(end, std::string::npos);
  const std::string paragraph = text.substr(0, end + 2);
  const Ids ids = tok.Encode(paragraph, false);
  EXPECT_GT(ids.size(), paragraph.size() / 6);
  EXPECT_LT(ids.size(), paragraph.size());
  EXPECT_EQ(tok.Decode(ids), paragraph);

  // The whole file as one text, as perplexity tokenizes it.
  EXPECT_EQ(tok.Decode(tok.Encode(text, false)), text);
}

// Merging word by word (what Encode does for vocabularies like this one)
// must give what merging the whole text at once gives. An extra token that
// holds a "▁" after its first byte, and that this text never spells, makes
// the tokenizer merge the whole text at once, as llama.cpp does.
TEST(TokenizerStories260K, WordByWordEqualsWholeText) {
  FQ_REQUIRE_TESTDATA();
  const std::string path = testing::TestDataPath("models/stories260K/stories260K-F32.gguf");
  Result<MappedFile> file = Env::Default()->MapFile(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  Result<gguf::Header> header = gguf::ParseFile(file->bytes(), path);
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  gguf::Metadata md = header->metadata;
  const std::pair<const char*, Value> extra[] = {
      {"tokenizer.ggml.tokens", Value::String("\x01" + kU)},
      {"tokenizer.ggml.scores", Value::Float(ValueType::kF32, 0)},
      {"tokenizer.ggml.token_type", Value::Int(ValueType::kI32, 1)}};
  for (const auto& [key, value] : extra) {
    ASSERT_NE(md.Find(key), nullptr) << key;
    Value array = *md.Find(key);
    array.Push(value);
    md.Set(key, array);
  }
  const Tokenizer words = MustLoad(header->metadata);
  const Tokenizer whole = MustLoad(md);
  ASSERT_EQ(whole.n_vocab(), words.n_vocab() + 1);

  const std::string text = ReadText("text/tinystories_val.txt");
  const Ids ids = words.Encode(text, true);
  EXPECT_EQ(ids, whole.Encode(text, true));
  EXPECT_GT(ids.size(), text.size() / 4);
  const std::string odd = "  x \n\n   y\t \xE9 z\xF0\x9F\x98\x80  ";
  EXPECT_EQ(words.Encode(odd, false), whole.Encode(odd, false));
}

// What a generator prints: llama2.c's output for stories260K starts with
// "Once upon a time," after BOS, with the space of "▁Once" stripped.
TEST(TokenizerStories260K, DecodeStreamPrintsLikeLlama2c) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab("models/stories260K/stories260K-F32.gguf");
  const std::string expected = "Once upon a time, there was a little girl named Lily.\nShe said.";
  Ids ids = tok.Encode(expected, true);
  ASSERT_EQ(ids.front(), tok.bos());
  DecodeStream stream(&tok, tok.bos());
  std::string printed;
  for (size_t i = 1; i < ids.size(); ++i) printed += stream.Next(ids[i]);
  EXPECT_EQ(printed, expected);
}

// A byte-level BPE vocabulary built by hand: the 256 byte characters of
// GPT-2's map (id b for byte b), then "ab" 256, "bc" 257, "abc" 258,
// "<|endoftext|>" 259 (control) and "<tag>" 260 (user-defined).
constexpr int32_t kBpeAB = 256, kBpeBC = 257, kBpeABC = 258, kBpeEnd = 259, kBpeTag = 260;

gguf::Metadata BpeMetadata(const std::vector<std::string>& merges, std::string_view pre) {
  std::vector<Value> texts, types, merge_values;
  for (int b = 0; b < 256; ++b) {
    texts.push_back(Value::String(ByteToUnicode(static_cast<uint8_t>(b))));
    types.push_back(Value::Int(ValueType::kI32, 1));
  }
  for (const char* t : {"ab", "bc", "abc"}) {
    texts.push_back(Value::String(t));
    types.push_back(Value::Int(ValueType::kI32, 1));
  }
  texts.push_back(Value::String("<|endoftext|>"));
  types.push_back(Value::Int(ValueType::kI32, 3));
  texts.push_back(Value::String("<tag>"));
  types.push_back(Value::Int(ValueType::kI32, 4));
  for (const std::string& m : merges) merge_values.push_back(Value::String(m));
  gguf::Metadata md;
  md.Set("tokenizer.ggml.model", Value::String("gpt2"));
  md.Set("tokenizer.ggml.pre", Value::String(std::string(pre)));
  md.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, texts));
  md.Set("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, types));
  md.Set("tokenizer.ggml.merges", Value::Array(ValueType::kString, merge_values));
  md.Set("tokenizer.ggml.bos_token_id", Value::Uint(ValueType::kU32, kBpeEnd));
  md.Set("tokenizer.ggml.eos_token_id", Value::Uint(ValueType::kU32, kBpeEnd));
  return md;
}

TEST(TokenizerBpeHand, MergesLowestRankFirst) {
  // "b c" ranks first: a + bc, then "a bc" makes abc.
  const Tokenizer first_bc = MustLoad(BpeMetadata({"b c", "a b", "a bc"}, "gpt-2"));
  EXPECT_EQ(first_bc.vocab_type(), VocabType::kBytePairs);
  EXPECT_EQ(first_bc.Encode("abc", false), (Ids{kBpeABC}));
  // "a b" ranks first and nothing merges ab with c: ab c.
  const Tokenizer first_ab = MustLoad(BpeMetadata({"a b", "b c", "a bc"}, "gpt-2"));
  EXPECT_EQ(first_ab.Encode("abc", false), (Ids{kBpeAB, 'c'}));
  // Equal pairs: the leftmost merges first ("bcbc": bc bc).
  EXPECT_EQ(first_bc.Encode("bcbc", false), (Ids{kBpeBC, kBpeBC}));
  // Merges never cross words: " abc" is the word " abc", whose space has
  // no merge with a.
  EXPECT_EQ(first_bc.Encode(" abc", false), (Ids{' ', kBpeABC}));
}

TEST(TokenizerBpeHand, IgnoreMergesTakesWholeWordTokens) {
  // Llama-3's pre-tokenizer takes a word that is a token as it is, even with
  // no merge leading to it; GPT-2's merges byte by byte.
  const Tokenizer llama3 = MustLoad(BpeMetadata({"x y"}, "llama-bpe"));
  EXPECT_EQ(llama3.Encode("abc", false), (Ids{kBpeABC}));
  EXPECT_TRUE(llama3.add_bos());
  EXPECT_EQ(llama3.Encode("abc", true), (Ids{kBpeEnd, kBpeABC}));
  const Tokenizer gpt2 = MustLoad(BpeMetadata({"x y"}, "gpt-2"));
  EXPECT_EQ(gpt2.Encode("abc", false), (Ids{'a', 'b', 'c'}));
  EXPECT_FALSE(gpt2.add_bos());
  EXPECT_EQ(gpt2.Encode("abc", true), gpt2.Encode("abc", false));
}

TEST(TokenizerBpeHand, SpecialTokensAndEndOfGeneration) {
  const Tokenizer tok = MustLoad(BpeMetadata({"a b"}, "gpt-2"));
  EXPECT_EQ(tok.eot(), kBpeEnd);
  EXPECT_TRUE(tok.IsEndOfGeneration(kBpeEnd));
  EXPECT_FALSE(tok.IsEndOfGeneration(kBpeAB));
  // Control tokens only when asked; user-defined always.
  EXPECT_EQ(tok.Encode("ab<|endoftext|>", false, true), (Ids{kBpeAB, kBpeEnd}));
  EXPECT_EQ(tok.Encode("ab<|endoftext|>", false, false).size(), 1u + 13u);
  EXPECT_EQ(tok.Encode("<tag>ab", false, false), (Ids{kBpeTag, kBpeAB}));
  EXPECT_EQ(tok.TokenToPiece(kBpeEnd), "");
  EXPECT_EQ(tok.TokenToPiece(kBpeEnd, true), "<|endoftext|>");
  EXPECT_EQ(tok.TokenToPiece(kBpeTag), "<tag>");
  // The byte characters decode to their bytes.
  EXPECT_EQ(tok.TokenToPiece(tok.Find(ByteToUnicode(' '))), " ");
  EXPECT_EQ(tok.TokenToPiece(tok.Find(ByteToUnicode(0xF0))), "\xF0");
}

TEST(TokenizerBpeHand, RejectsVocabulariesWithoutMergesOrWithAnUnknownPreTokenizer) {
  gguf::Metadata no_merges = BpeMetadata({"a b"}, "gpt-2");
  no_merges.entries.erase(
      std::find_if(no_merges.entries.begin(), no_merges.entries.end(),
                   [](const gguf::KeyValue& kv) { return kv.key == "tokenizer.ggml.merges"; }));
  const Result<Tokenizer> missing = Tokenizer::FromMetadata(no_merges, "vocab.gguf");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().IsCorruption());
  EXPECT_EQ(missing.status().message().rfind("vocab.gguf: ", 0), 0u) << missing.status().message();
  EXPECT_NE(missing.status().message().find("tokenizer.ggml.merges"), std::string::npos);

  const Result<Tokenizer> empty = Tokenizer::FromMetadata(BpeMetadata({}, "gpt-2"), "vocab.gguf");
  ASSERT_FALSE(empty.ok());
  EXPECT_TRUE(empty.status().IsCorruption());
  EXPECT_NE(empty.status().message().find("merges"), std::string::npos);

  const Result<Tokenizer> unknown =
      Tokenizer::FromMetadata(BpeMetadata({"a b"}, "klingon-bpe"), "vocab.gguf");
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(unknown.status().IsNotSupported());
  EXPECT_NE(unknown.status().message().find("vocab.gguf: "), std::string::npos);
  EXPECT_NE(unknown.status().message().find("'klingon-bpe'"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("tokenizer.ggml.pre"), std::string::npos);

  // No tokenizer.ggml.pre at all: llama.cpp's default rules, with a warning.
  gguf::Metadata no_pre = BpeMetadata({"a b"}, "gpt-2");
  no_pre.entries.erase(
      std::find_if(no_pre.entries.begin(), no_pre.entries.end(),
                   [](const gguf::KeyValue& kv) { return kv.key == "tokenizer.ggml.pre"; }));
  const Tokenizer fallback = MustLoad(no_pre);
  EXPECT_EQ(fallback.pre_tokenizer(), "default");
  EXPECT_EQ(fallback.Encode("ab", false), (Ids{kBpeAB}));
}

// The byte-level BPE vocabularies of llama.cpp's test suite.
class TokenizerBpeVocab : public ::testing::TestWithParam<const char*> {
 protected:
  std::string VocabPath() const {
    return std::string("tokenizer/ggml-vocab-") + GetParam() + ".gguf";
  }
};

TEST_P(TokenizerBpeVocab, MatchesLlamaCppTestVectors) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab(VocabPath());
  EXPECT_EQ(tok.vocab_type(), VocabType::kBytePairs);
  EXPECT_EQ(tok.pre_tokenizer(), GetParam());
  const VocabVectors v = ReadVectors(VocabPath());
  ASSERT_EQ(v.inputs.size(), v.expected.size());
  ASSERT_GE(v.inputs.size(), 40u);
  size_t passed = 0;
  for (size_t i = 0; i < v.inputs.size(); ++i) {
    const Ids ids = tok.Encode(v.inputs[i], false, false);
    EXPECT_EQ(ids, v.expected[i]) << "vector " << i << ": '" << v.inputs[i] << "'";
    passed += ids == v.expected[i];
  }
  EXPECT_EQ(passed, v.inputs.size());
}

TEST_P(TokenizerBpeVocab, DecodeGivesBackTheBytes) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab(VocabPath());
  const std::string text =
      "Hello, y'all! How are you \xF0\x9F\x98\x81 ?\xE6\x88\x91\xE6\x83\xB3\n\tdone  \r\n"
      "   3333 caf\xC3\xA9 \xE1\x80\xA1 <|endoftext|>";
  const Ids ids = tok.Encode(text, false);
  EXPECT_EQ(tok.Decode(ids), text);
  // Piece by piece: pieces may hold part of a UTF-8 character (the emoji
  // takes several tokens in GPT-2), their concatenation is the text.
  std::string joined;
  for (int32_t id : ids) joined += tok.TokenToPiece(id);
  EXPECT_EQ(joined, text);
  // Every vector round-trips too.
  for (const std::string& input : ReadVectors(VocabPath()).inputs) {
    EXPECT_EQ(tok.Decode(tok.Encode(input, false)), input);
  }
}

INSTANTIATE_TEST_SUITE_P(LlamaCpp, TokenizerBpeVocab,
                         ::testing::Values("gpt-2", "starcoder", "deepseek-coder", "deepseek-llm",
                                           "falcon"));

TEST(TokenizerBpeGpt2, SplitsACharacterAcrossTokensAndReplacesInvalidUtf8) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab("tokenizer/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(tok.bos(), 50256);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.eot(), 50256);
  EXPECT_TRUE(tok.IsEndOfGeneration(50256));
  // The emoji's four bytes take more than one token, and some piece is not
  // valid UTF-8 on its own.
  const Ids emoji = tok.Encode("\xF0\x9F\x98\x81", false);
  ASSERT_GT(emoji.size(), 1u);
  EXPECT_NE(tok.TokenToPiece(emoji[0]), "\xF0\x9F\x98\x81");
  std::string joined;
  for (int32_t id : emoji) joined += tok.TokenToPiece(id);
  EXPECT_EQ(joined, "\xF0\x9F\x98\x81");
  // DecodeStream hands out the same bytes, the space after BOS kept (no
  // dummy prefix in a BPE vocabulary).
  DecodeStream stream(&tok, tok.bos());
  std::string printed;
  for (int32_t id : tok.Encode(" Hi \xF0\x9F\x98\x81", false)) printed += stream.Next(id);
  EXPECT_EQ(printed, " Hi \xF0\x9F\x98\x81");
  // Invalid UTF-8 becomes U+FFFD before merging, as in llama.cpp.
  EXPECT_EQ(tok.Decode(tok.Encode("a\xFF"
                                  "b",
                                  false)),
            "a\xEF\xBF\xBD"
            "b");
  // Control tokens are parsed only when asked.
  EXPECT_EQ(tok.Encode("<|endoftext|>", false, true), (Ids{50256}));
  EXPECT_GT(tok.Encode("<|endoftext|>", false, false).size(), 1u);
}

TEST(TokenizerBpeDeepseekCoder, AddsBosAsTheVocabularySays) {
  FQ_REQUIRE_TESTDATA();
  const Tokenizer tok = LoadVocab("tokenizer/ggml-vocab-deepseek-coder.gguf");
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.bos(), 32013);
  // No eot_token_id in the file: found by its text, "<｜end▁of▁sentence｜>".
  EXPECT_EQ(tok.eot(), 32014);
  EXPECT_TRUE(tok.IsEndOfGeneration(32014));
  const Ids ids = tok.Encode("int main", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 32013);
  EXPECT_EQ(Ids(ids.begin() + 1, ids.end()), tok.Encode("int main", false));
  EXPECT_EQ(tok.Decode(ids, /*remove_special=*/true), "int main");
}

}  // namespace
}  // namespace fqpack::runtime
