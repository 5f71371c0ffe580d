// The tokenizers that GGUF metadata describes, encoded and decoded exactly as
// llama.cpp does (src/llama-vocab.cpp), so token ids, perplexities and
// generations can be compared with llama.cpp's one for one:
//
// - `tokenizer.ggml.model` "llama": SentencePiece-style. Spaces become
//   U+2581 ("▁"), a "▁" is put before the text (and after every special
//   token parsed out of it) when add_space_prefix says so, the text is split
//   into UTF-8 characters, and adjacent pieces are merged highest score
//   first (ties: leftmost first) as long as the merged text is a token.
//   Pieces left that are not tokens fall back to <0xXX> byte tokens.
// - `tokenizer.ggml.model` "gpt2": byte-level BPE. The pre-tokenizer named by
//   `tokenizer.ggml.pre` cuts the text into words (runtime/pretokenizer.h),
//   each byte of a word becomes the character GPT-2's byte map gives it, and
//   adjacent pieces are merged by the rank of the pair in
//   `tokenizer.ggml.merges` (lowest first, ties leftmost first).
//
// Both parse special tokens written in the text first (llama.cpp's
// tokenizer_st_partition): control and unknown tokens when asked,
// user-defined tokens always.
//
// Ownership and thread-safety: a Tokenizer owns (or shares, immutably) its
// vocabulary and is immutable after FromMetadata; any number of threads may
// call its const methods at once. A DecodeStream belongs to one thread and
// must not outlive the Tokenizer it reads.
#ifndef FQPACK_RUNTIME_TOKENIZER_H_
#define FQPACK_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <memory>
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

// Which algorithm a vocabulary uses (`tokenizer.ggml.model`).
enum class VocabType : uint8_t {
  kSentencePiece = 0,  // "llama"
  kBytePairs = 1,      // "gpt2": byte-level BPE
};

class Tokenizer {
 public:
  // No special token: what the id accessors return when the vocabulary has none.
  static constexpr int32_t kNoToken = -1;

  // Reads the vocabulary from GGUF metadata; `source` (a file or model name)
  // starts every error message when given. NotSupported for a
  // tokenizer.ggml.model other than "llama" and "gpt2", and for a
  // tokenizer.ggml.pre fqpack does not know; Corruption for a malformed
  // vocabulary (arrays of the wrong type or length, duplicate tokens, a BPE
  // vocabulary without merges, BOS/EOS required by add_bos/add_eos but
  // absent). Absent flags and ids take llama.cpp's defaults: for "llama"
  // add_bos true, add_eos false, add_space_prefix true, BOS 1, EOS 2, UNK 0;
  // for "gpt2" add_bos only for the Llama-3 pre-tokenizers, add_eos and
  // add_space_prefix false, BOS and EOS 11, no UNK; no PAD for either.
  static Result<Tokenizer> FromMetadata(const gguf::Metadata& md, std::string_view source = {});

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
  // lstrip 0): the bytes it stands for ("▁" becomes a space in a
  // SentencePiece vocabulary; a byte-level BPE token's characters become the
  // bytes GPT-2's byte map assigns them, possibly a part of a UTF-8
  // character), a byte token its raw byte, control and unknown tokens nothing
  // unless `special` (then their text), user-defined tokens their text,
  // unused and undefined tokens nothing. "" for an id out of range.
  std::string TokenToPiece(int32_t id, bool special = false) const;

  // The text of a sequence, as llama_detokenize renders it: the pieces
  // concatenated, with the leading space of the first piece removed when
  // add_space_prefix (the space Encode added). remove_special drops a leading
  // BOS (then no space is removed) and a trailing EOS when the vocabulary adds
  // them; unparse_special renders control tokens as their text. llama.cpp
  // also "cleans up" spaces before punctuation for some BPE vocabularies
  // (gpt-2, starcoder, falcon: clean_up_tokenization_spaces); fqpack never
  // does, so the bytes Encode was given come back exactly.
  std::string Decode(std::span<const int32_t> ids, bool remove_special = false,
                     bool unparse_special = false) const;

  int32_t n_vocab() const { return static_cast<int32_t>(texts_.size()); }
  VocabType vocab_type() const { return type_; }
  // The pre-tokenizer's name for a BPE vocabulary ("default" when the file
  // names none), "" for SentencePiece.
  const std::string& pre_tokenizer() const;
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  // End of turn: tokenizer.ggml.eot_token_id, else the first token whose text
  // llama.cpp recognises as one ("<|eot_id|>", "<|im_end|>", ...), else none.
  int32_t eot() const { return eot_; }
  // Whether generation should stop at `id`: EOS, EOT, EOM and the tokens
  // llama.cpp treats as end of generation by their text.
  bool IsEndOfGeneration(int32_t id) const;
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
  struct BpeData;
  static Result<Tokenizer> Load(const gguf::Metadata& md);
  Status LoadMerges(const gguf::Metadata& md, const std::string& pre);
  void EncodeFragment(std::string_view escaped, std::vector<int32_t>* out) const;
  void EncodeBpeFragment(std::string_view text, std::vector<int32_t>* out) const;
  void MergeBpeWord(std::string_view bytes, std::string_view word, std::vector<int32_t>* out) const;
  void MergeSymbols(std::string_view text, std::vector<Symbol>* symbols, std::vector<Bigram>* heap,
                    std::vector<int32_t>* out) const;
  void AppendBytes(std::string_view piece, std::vector<int32_t>* out) const;

  VocabType type_ = VocabType::kSentencePiece;
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

  // BPE only: the pre-tokenizer and merge ranks, shared by copies.
  std::shared_ptr<const BpeData> bpe_;

  int32_t bos_ = 1;
  int32_t eos_ = 2;
  int32_t unk_ = 0;
  int32_t pad_ = kNoToken;
  int32_t eot_ = kNoToken;
  std::vector<int32_t> eog_ids_;  // sorted
  bool add_bos_ = true;
  bool add_eos_ = false;
  bool add_space_prefix_ = true;
};

// Renders generated tokens one at a time for printing, the way llama2.c's
// run.c prints them: each piece as TokenToPiece renders it, except that with
// a SentencePiece dummy prefix (add_space_prefix) the piece following BOS
// loses its leading space. Pieces are bytes: a BPE piece may end inside a
// UTF-8 character that the next piece completes. A generator starting from BOS
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
