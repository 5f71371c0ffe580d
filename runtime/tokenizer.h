// The SentencePiece-style tokenizer that GGUF metadata describes when
// `tokenizer.ggml.model` is "llama": the vocabulary, scores and token types of
// the `tokenizer.ggml.*` keys, encoded and decoded exactly as llama.cpp does
// (src/llama-vocab.cpp, its SPM tokenizer), so token ids, perplexities and
// generations can be compared with llama.cpp's one for one.
//
// Encoding: spaces become U+2581 ("▁"), a "▁" is put before the text (and
// after every special token parsed out of it) when add_space_prefix says so,
// the text is split into UTF-8 characters, and adjacent pieces are merged
// highest score first (ties: leftmost first) as long as the merged text is a
// token. Pieces left that are not tokens fall back to <0xXX> byte tokens.
//
// Ownership and thread-safety: a Tokenizer owns a copy of its vocabulary and
// is immutable after FromMetadata; any number of threads may call its const
// methods at once. A DecodeStream belongs to one thread and must not outlive
// the Tokenizer it reads.
#ifndef FQPACK_RUNTIME_TOKENIZER_H_
#define FQPACK_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schema/gguf.h"
#include "schema/status.h"

namespace fqpack::runtime {

// `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  // No special token: what the id accessors return when the vocabulary has none.
  static constexpr int32_t kNoToken = -1;

  // Reads the vocabulary from GGUF metadata. NotSupported (naming the model)
  // unless tokenizer.ggml.model is "llama"; Corruption for a malformed
  // vocabulary (arrays of the wrong type or length, duplicate tokens, BOS/EOS
  // required by add_bos/add_eos but absent). Absent flags take llama.cpp's
  // defaults for this model: add_bos true, add_eos false, add_space_prefix
  // true; absent or out-of-range special ids take BOS 1, EOS 2, UNK 0, no PAD.
  static Result<Tokenizer> FromMetadata(const gguf::Metadata& md);

  // The token ids of `text`. add_special: prepend BOS / append EOS when the
  // vocabulary says so (add_bos / add_eos). parse_special: control and
  // unknown tokens written out in the text ("<s>", "</s>", "<unk>") become
  // those tokens instead of being spelled with ordinary pieces; user-defined
  // tokens are always parsed out. llama.cpp's test-tokenizer-0 and
  // llama-perplexity both tokenize with parse_special = false (perplexity
  // with add_special = true, on its -f file less one trailing newline).
  std::vector<int32_t> Encode(std::string_view text, bool add_special,
                              bool parse_special = false) const;

  // The text of one token as llama.cpp renders it (llama_token_to_piece with
  // lstrip 0): "▁" becomes a space, a byte token its raw byte, control and
  // unknown tokens nothing unless `special` (then their text), user-defined
  // tokens their text, unused and undefined tokens nothing. "" for an id out
  // of range.
  std::string TokenToPiece(int32_t id, bool special = false) const;

  // The text of a sequence, as llama_detokenize renders it: the pieces
  // concatenated, with the leading space of the first piece removed when
  // add_space_prefix (the space Encode added). remove_special drops a leading
  // BOS (then no space is removed) and a trailing EOS when the vocabulary adds
  // them; unparse_special renders control tokens as their text.
  std::string Decode(std::span<const int32_t> ids, bool remove_special = false,
                     bool unparse_special = false) const;

  int32_t n_vocab() const { return static_cast<int32_t>(texts_.size()); }
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  int32_t unk() const { return unk_; }
  int32_t pad() const { return pad_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }

  // Per-token data; `id` must be in [0, n_vocab()). A NaN score in the file
  // reads as -infinity.
  const std::string& token_text(int32_t id) const { return texts_[id]; }
  float token_score(int32_t id) const { return scores_[id]; }
  TokenType token_type(int32_t id) const { return types_[id]; }

  // The id whose text is exactly `text`, or kNoToken.
  int32_t Find(std::string_view text) const;

 private:
  Tokenizer() = default;

  struct Symbol;
  struct Bigram;
  void EncodeFragment(std::string_view escaped, std::vector<int32_t>* out) const;
  void MergeSymbols(std::string_view text, std::vector<Symbol>* symbols, std::vector<Bigram>* heap,
                    std::vector<int32_t>* out) const;
  void AppendBytes(std::string_view piece, std::vector<int32_t>* out) const;

  std::vector<std::string> texts_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  // Open-addressing hash of token text -> id (id kNoToken = empty slot); the
  // size is a power of two at least twice n_vocab. The tag (high hash bits)
  // spares reading the text of most non-matching slots.
  struct Slot {
    uint32_t tag;
    int32_t id;
  };
  std::vector<Slot> table_;
  // The byte fallback of each byte value: <0xXX>, else the one-byte token,
  // else kNoToken (a piece holding such a byte becomes one UNK).
  std::vector<int32_t> byte_tokens_;
  // Tokens that may be parsed out of the text, longest text first.
  std::vector<int32_t> special_tokens_;
  size_t max_token_bytes_ = 0;
  // True when no token holds a "▁" after its first byte other than right
  // after another "▁": then a "▁" that does not follow a "▁" starts a word
  // that no merge crosses, and words can be merged one at a time.
  bool split_at_words_ = false;

  int32_t bos_ = 1;
  int32_t eos_ = 2;
  int32_t unk_ = 0;
  int32_t pad_ = kNoToken;
  bool add_bos_ = true;
  bool add_eos_ = false;
  bool add_space_prefix_ = true;
};

// Renders generated tokens one at a time for printing, the way llama2.c's
// run.c prints them: each piece as TokenToPiece renders it, except that the
// piece following BOS loses its leading space (SentencePiece strips the
// dummy-prefix space at the start of a text). A generator starting from BOS
// alone constructs it with prev = tokenizer.bos() and concatenates Next() of
// every sampled token; llama2.c stops (prints nothing) when BOS is sampled.
class DecodeStream {
 public:
  // `prev`: the last token before the first one passed to Next (the last
  // prompt token; BOS for an empty prompt).
  DecodeStream(const Tokenizer* tokenizer, int32_t prev) : tokenizer_(tokenizer), prev_(prev) {}

  // The text to print for `id`; remembers `id` as the previous token.
  std::string Next(int32_t id);

 private:
  const Tokenizer* tokenizer_;
  int32_t prev_;
};

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_TOKENIZER_H_
