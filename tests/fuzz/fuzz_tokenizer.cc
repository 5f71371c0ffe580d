// The tokenizers (runtime/tokenizer.h), two ways; the first input byte
// chooses:
//  - bit 0 clear: the rest is text, encoded and decoded with the vocabulary
//    of $FQ_TESTDATA/tokenizer/ggml-vocab-llama-spm.gguf (llama.cpp's test
//    vocabulary) or, without test data, TinyVocabMetadata(); with bit 5 set,
//    the byte-level BPE vocabulary of ggml-vocab-gpt-2.gguf or
//    TinyBpeVocabMetadata(). Bits 1-4 are add_special, parse_special,
//    remove_special and unparse_special. With all four clear, decoding must
//    give the text back: SentencePiece when it has byte fallback for every
//    byte, no "▁" is in the text (which decodes as a space) and no broken
//    UTF-8 sequence could swallow one (see SplitsCleanly); BPE whenever the
//    text is valid UTF-8 (invalid bytes become U+FFFD, as in llama.cpp).
//  - bit 0 set: the rest is a vocabulary file (GGUF), read as `fqpack run`
//    reads a model's tokenizer, then used on a few fixed texts.

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer.h"
#include "runtime/unicode.h"
#include "schema/gguf.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/fuzz_target.h"

namespace fqpack::fuzz {
namespace {

using runtime::Tokenizer;

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581

struct Vocab {
  std::unique_ptr<Tokenizer> tok;
  bool byte_fallback = false;  // a <0xXX> byte token for all 256 bytes
  bool known = false;          // a vocabulary of ours, not a crafted file
};

// True when llama.cpp's decoder reads `text` without a U+FFFD for a bad byte.
bool DecodesCleanly(std::string_view text) {
  std::string again;
  for (uint32_t cp : runtime::DecodeUtf8(text)) runtime::AppendUtf8(cp, &again);
  return again == text;
}

bool HasByteFallback(const Tokenizer& tok) {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const int32_t id = tok.Find(name);
    if (id == Tokenizer::kNoToken || tok.token_type(id) != runtime::TokenType::kByte) return false;
  }
  return true;
}

Result<gguf::Metadata> TestVocab(bool bpe) {
  const char* dir = std::getenv("FQ_TESTDATA");
  const gguf::Metadata tiny = bpe ? TinyBpeVocabMetadata() : TinyVocabMetadata();
  if (dir == nullptr || *dir == '\0') return tiny;
  const std::string path = JoinPath(JoinPath(dir, "tokenizer"),
                                    bpe ? "ggml-vocab-gpt-2.gguf" : "ggml-vocab-llama-spm.gguf");
  if (!Env::Default()->FileExists(path)) return tiny;
  FQ_ASSIGN_OR_RETURN(MappedFile f, Env::Default()->MapFile(path));
  FQ_ASSIGN_OR_RETURN(gguf::Header h, gguf::ParseFile(f.bytes(), path));
  return std::move(h.metadata);
}

Vocab* MakeVocab(bool bpe) {
  auto* v = new Vocab();
  Result<gguf::Metadata> md = TestVocab(bpe);
  FQ_FUZZ_CHECK(md.ok(), md.status().ToString());
  Result<Tokenizer> tok = Tokenizer::FromMetadata(*md);
  FQ_FUZZ_CHECK(tok.ok(), tok.status().ToString());
  v->tok = std::make_unique<Tokenizer>(std::move(*tok));
  v->byte_fallback = HasByteFallback(*v->tok);
  v->known = true;
  return v;
}

const Vocab& SharedVocab(bool bpe) {
  static const Vocab* spm = MakeVocab(false);
  static const Vocab* byte_pairs = MakeVocab(true);
  return bpe ? *byte_pairs : *spm;
}

// True when splitting `text` into characters as the tokenizer does (the
// length from the high bits of each first byte, as llama.cpp's utf8_len)
// never takes a byte that does not continue a sequence: otherwise a
// character may swallow the start of a "▁" put in for a space, whose bytes
// then come back as they are. Valid UTF-8 always splits cleanly.
bool SplitsCleanly(std::string_view text) {
  static constexpr size_t kLength[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  for (size_t i = 0; i < text.size();) {
    const size_t n = kLength[static_cast<unsigned char>(text[i]) >> 4];
    for (size_t k = 1; k < n && i + k < text.size(); ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

void CheckIds(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    FQ_FUZZ_CHECK(id >= 0 && id < tok.n_vocab(),
                  "Encode gave id " + std::to_string(id) + " of " + std::to_string(tok.n_vocab()));
  }
}

void RunText(const Vocab& vocab, uint8_t flags, std::string_view text) {
  const Tokenizer& tok = *vocab.tok;
  const bool add_special = flags & 2, parse_special = flags & 4;
  const bool remove_special = flags & 8, unparse_special = flags & 16;
  const std::vector<int32_t> ids = tok.Encode(text, add_special, parse_special);
  CheckIds(tok, ids);
  const std::string decoded = tok.Decode(ids, remove_special, unparse_special);
  // A "▁" in the text decodes as a space, as in SentencePiece and llama.cpp.
  const bool bpe = tok.vocab_type() == runtime::VocabType::kBytePairs;
  const bool spm_exact = vocab.byte_fallback && text.find(kSpaceMarker) == std::string_view::npos &&
                         SplitsCleanly(text);
  if (vocab.known && (flags & 30) == 0 && (bpe ? DecodesCleanly(text) : spm_exact)) {
    FQ_FUZZ_CHECK(decoded == text,
                  "Decode(Encode(text)) is not the text: " + std::to_string(text.size()) +
                      " bytes in, " + std::to_string(decoded.size()) + " out");
  }
  runtime::DecodeStream stream(&tok, tok.bos());
  for (int32_t id : ids) (void)stream.Next(id);
}

void RunVocabFile(ByteSpan file) {
  Result<gguf::Header> h = gguf::ParseFile(file, "fuzz-vocab.gguf");
  if (!h.ok()) return;
  // Getter errors for missing or mistyped keys pass through; the rest is
  // NotSupported or Corruption. Any of them is a clean refusal.
  Result<Tokenizer> made = Tokenizer::FromMetadata(h->metadata);
  if (!made.ok()) return;
  const Tokenizer& tok = *made;
  const int32_t n = tok.n_vocab();
  for (int32_t id : {tok.bos(), tok.eos(), tok.unk(), tok.pad()}) {
    FQ_FUZZ_CHECK(id == Tokenizer::kNoToken || (id >= 0 && id < n),
                  "special id " + std::to_string(id));
  }
  // Bounded: a crafted vocabulary may hold a great many tokens.
  for (int32_t id = 0; id < n && id < 4096; ++id) {
    FQ_FUZZ_CHECK(tok.Find(tok.token_text(id)) == id,
                  "token " + std::to_string(id) + " is not found by its text");
    (void)tok.TokenToPiece(id, false);
    (void)tok.TokenToPiece(id, true);
    (void)tok.token_score(id);
  }
  FQ_FUZZ_CHECK(tok.TokenToPiece(-1).empty() && tok.TokenToPiece(n).empty(),
                "a piece for an id out of range");
  // No round-trip check here: a crafted vocabulary may merge pieces into a
  // control or unused token, which renders as nothing (as in llama.cpp).
  Vocab vocab;
  vocab.tok = std::make_unique<Tokenizer>(tok);
  for (std::string_view text :
       {"Hello world", "  two  spaces", "<s>x</s><unk>", "\xE2\x96\x81\xE2\x96\x81", "\xFF\xFE\xC3",
        "caf\xC3\xA9 \xF0\x9F\x99\x82", ""}) {
    for (uint8_t flags = 0; flags < 32; flags += 2) RunText(vocab, flags, text);
  }
}

}  // namespace
}  // namespace fqpack::fuzz

FQ_FUZZ_ENTRY(fuzz_tokenizer)(const uint8_t* data, size_t size) {
  using namespace fqpack;
  if (size == 0) return 0;
  if (data[0] & 1) {
    fuzz::RunVocabFile(ByteSpan(data + 1, size - 1));
  } else {
    fuzz::RunText(fuzz::SharedVocab(data[0] & 32), data[0],
                  std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  }
  return 0;
}
