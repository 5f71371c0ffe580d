#include "runtime/tokenizer.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>

namespace fqpack::runtime {

namespace {

// U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible space.
constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";

constexpr std::string_view kModelKey = "tokenizer.ggml.model";
constexpr std::string_view kTokensKey = "tokenizer.ggml.tokens";
constexpr std::string_view kScoresKey = "tokenizer.ggml.scores";
constexpr std::string_view kTypesKey = "tokenizer.ggml.token_type";
constexpr std::string_view kBosKey = "tokenizer.ggml.bos_token_id";
constexpr std::string_view kEosKey = "tokenizer.ggml.eos_token_id";
constexpr std::string_view kUnkKey = "tokenizer.ggml.unknown_token_id";
constexpr std::string_view kPadKey = "tokenizer.ggml.padding_token_id";
constexpr std::string_view kAddBosKey = "tokenizer.ggml.add_bos_token";
constexpr std::string_view kAddEosKey = "tokenizer.ggml.add_eos_token";
constexpr std::string_view kAddSpacePrefixKey = "tokenizer.ggml.add_space_prefix";

size_t HashText(std::string_view s) { return std::hash<std::string_view>{}(s); }

// The length of the UTF-8 sequence a lead byte announces, judged by its high
// four bits only, as llama.cpp's unicode_len_utf8 does: a stray continuation
// byte counts as one character and a truncated sequence is cut at the end of
// the text, so invalid UTF-8 still tokenizes (into byte tokens) the same way.
size_t Utf8Length(unsigned char lead) {
  static constexpr uint8_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte a byte token stands for: the hex digits after "<0x" (what
// llama.cpp's strtol reads; 0 when there are none).
char ByteOfToken(const std::string& text) {
  int value = 0;
  for (size_t i = 3; i < text.size() && i < 5; ++i) {
    const int d = HexDigit(text[i]);
    if (d < 0) break;
    value = value * 16 + d;
  }
  return static_cast<char>(value);
}

std::string EscapeSpaces(std::string_view text, bool space_prefix) {
  std::string out;
  out.reserve(text.size() + text.size() / 4 + kSpaceMarker.size());
  if (space_prefix) out.append(kSpaceMarker);
  for (char c : text) {
    if (c == ' ') {
      out.append(kSpaceMarker);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void AppendUnescaped(std::string_view text, std::string* out) {
  size_t pos = 0;
  while (true) {
    const size_t hit = text.find(kSpaceMarker, pos);
    if (hit == std::string_view::npos) break;
    out->append(text.substr(pos, hit - pos));
    out->push_back(' ');
    pos = hit + kSpaceMarker.size();
  }
  out->append(text.substr(pos));
}

// An optional special-token id from the metadata: llama.cpp keeps the
// default when the key is absent or names an id outside the vocabulary.
Status ReadSpecialId(const gguf::Metadata& md, std::string_view key, int32_t n_vocab, int32_t* id) {
  if (*id >= n_vocab) *id = Tokenizer::kNoToken;
  if (!md.Has(key)) return Status::OK();
  FQ_ASSIGN_OR_RETURN(const uint64_t value, md.GetUint(key));
  if (value < static_cast<uint64_t>(n_vocab)) *id = static_cast<int32_t>(value);
  return Status::OK();
}

Status ReadFlag(const gguf::Metadata& md, std::string_view key, bool* flag) {
  if (!md.Has(key)) return Status::OK();
  FQ_ASSIGN_OR_RETURN(*flag, md.GetBool(key));
  return Status::OK();
}

}  // namespace

// One piece of the text during merging: bytes [start, start + n) of the
// escaped text, linked to its live neighbours. A piece merged into its left
// neighbour keeps n == 0 and leaves the list.
struct Tokenizer::Symbol {
  int64_t start;
  int64_t prev;
  int64_t next;
  uint32_t n;
};

// A candidate merge of symbol `left` with its right neighbour into a token of
// `size` bytes. It is stale when either side has changed since it was queued,
// which shows as left.n + right.n != size (pieces only ever grow).
struct Tokenizer::Bigram {
  float score;
  uint32_t size;
  int64_t left;

  // The heap pops the greatest: the highest score, and among equal scores
  // the leftmost pair, as llama.cpp's llm_bigram_spm comparator orders it.
  bool operator<(const Bigram& o) const {
    return score < o.score || (score == o.score && left > o.left);
  }
};

Result<Tokenizer> Tokenizer::FromMetadata(const gguf::Metadata& md) {
  FQ_ASSIGN_OR_RETURN(const std::string model, md.GetString(kModelKey));
  if (model != "llama") {
    return Status::NotSupported("tokenizer model '" + model +
                                "' is not supported (only 'llama', SentencePiece)");
  }

  Tokenizer tok;
  FQ_ASSIGN_OR_RETURN(tok.texts_, md.GetStringArray(kTokensKey));
  if (tok.texts_.empty() ||
      tok.texts_.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max() / 2)) {
    return Status::Corruption(std::string(kTokensKey) + ": " + std::to_string(tok.texts_.size()) +
                              " tokens");
  }
  const int32_t n = static_cast<int32_t>(tok.texts_.size());

  tok.scores_.assign(n, 0.0f);
  if (md.Has(kScoresKey)) {
    FQ_ASSIGN_OR_RETURN(std::vector<float> scores, md.GetFloatArray(kScoresKey));
    if (scores.size() < tok.texts_.size()) {
      return Status::Corruption(std::string(kScoresKey) + ": " + std::to_string(scores.size()) +
                                " scores for " + std::to_string(n) + " tokens");
    }
    std::copy_n(scores.begin(), n, tok.scores_.begin());
    // A NaN would break the strict ordering the merge queue relies on; it
    // ranks below every real score instead.
    for (float& score : tok.scores_) {
      if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
    }
  }

  tok.types_.assign(n, TokenType::kNormal);
  if (md.Has(kTypesKey)) {
    FQ_ASSIGN_OR_RETURN(std::vector<int64_t> types, md.GetIntArray(kTypesKey));
    if (types.size() < tok.texts_.size()) {
      return Status::Corruption(std::string(kTypesKey) + ": " + std::to_string(types.size()) +
                                " types for " + std::to_string(n) + " tokens");
    }
    for (int32_t i = 0; i < n; ++i) {
      const int64_t t = types[i];
      tok.types_[i] = (t >= static_cast<int64_t>(TokenType::kNormal) &&
                       t <= static_cast<int64_t>(TokenType::kByte))
                          ? static_cast<TokenType>(t)
                          : TokenType::kUndefined;
    }
  }

  // Text -> id. An empty token could never match and would make the special
  // token search loop; llama.cpp renames it the same way.
  tok.table_.assign(std::bit_ceil(static_cast<size_t>(n) * 2), Slot{0, kNoToken});
  const size_t mask = tok.table_.size() - 1;
  tok.split_at_words_ = true;
  for (int32_t id = 0; id < n; ++id) {
    std::string& text = tok.texts_[id];
    if (text.empty()) text = "[EMPTY_" + std::to_string(id) + "]";
    tok.max_token_bytes_ = std::max(tok.max_token_bytes_, text.size());
    for (size_t k = text.find(kSpaceMarker, 1); k != std::string::npos;
         k = text.find(kSpaceMarker, k + 1)) {
      if (k < kSpaceMarker.size() ||
          std::string_view{text}.substr(k - kSpaceMarker.size(), kSpaceMarker.size()) !=
              kSpaceMarker) {
        tok.split_at_words_ = false;
      }
    }
    const size_t hash = HashText(text);
    size_t slot = hash & mask;
    while (tok.table_[slot].id != kNoToken) {
      if (tok.texts_[tok.table_[slot].id] == text) {
        return Status::Corruption(std::string(kTokensKey) + ": duplicate token '" + text +
                                  "' at ids " + std::to_string(tok.table_[slot].id) + " and " +
                                  std::to_string(id));
      }
      slot = (slot + 1) & mask;
    }
    tok.table_[slot] = Slot{static_cast<uint32_t>(hash >> 32), id};
  }

  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kBosKey, n, &tok.bos_));
  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kEosKey, n, &tok.eos_));
  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kUnkKey, n, &tok.unk_));
  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kPadKey, n, &tok.pad_));
  FQ_RETURN_IF_ERROR(ReadFlag(md, kAddBosKey, &tok.add_bos_));
  FQ_RETURN_IF_ERROR(ReadFlag(md, kAddEosKey, &tok.add_eos_));
  FQ_RETURN_IF_ERROR(ReadFlag(md, kAddSpacePrefixKey, &tok.add_space_prefix_));
  if (tok.add_bos_ && tok.bos_ == kNoToken) {
    return Status::Corruption(std::string(kAddBosKey) + " is true but there is no BOS token");
  }
  if (tok.add_eos_ && tok.eos_ == kNoToken) {
    return Status::Corruption(std::string(kAddEosKey) + " is true but there is no EOS token");
  }

  tok.byte_tokens_.assign(256, kNoToken);
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char name[] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    int32_t id = tok.Find(std::string_view(name, sizeof(name)));
    if (id == kNoToken) {
      const char c = static_cast<char>(b);
      id = tok.Find(std::string_view(&c, 1));
    }
    tok.byte_tokens_[b] = id;
  }

  for (int32_t id = 0; id < n; ++id) {
    const TokenType t = tok.types_[id];
    if (t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) {
      tok.special_tokens_.push_back(id);
    }
  }
  // Longest first, so that "</s>" is found before a shorter token inside it;
  // equal lengths keep id order (llama.cpp leaves that order unspecified).
  std::stable_sort(
      tok.special_tokens_.begin(), tok.special_tokens_.end(),
      [&tok](int32_t a, int32_t b) { return tok.texts_[a].size() > tok.texts_[b].size(); });
  return tok;
}

int32_t Tokenizer::Find(std::string_view text) const {
  if (table_.empty()) return kNoToken;
  const size_t mask = table_.size() - 1;
  const size_t hash = HashText(text);
  const uint32_t tag = static_cast<uint32_t>(hash >> 32);
  for (size_t slot = hash & mask;; slot = (slot + 1) & mask) {
    const Slot& s = table_[slot];
    if (s.id == kNoToken) return kNoToken;
    if (s.tag == tag && texts_[s.id] == text) return s.id;
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  // Split the text at the special tokens it spells (a raw-text fragment has
  // token kNoToken), each token in turn, longest first, leftmost occurrences.
  struct Fragment {
    int32_t token;
    size_t begin;
    size_t end;
  };
  std::vector<Fragment> fragments;
  if (!text.empty()) fragments.push_back({kNoToken, 0, text.size()});
  std::vector<Fragment> split;
  for (int32_t special : special_tokens_) {
    const TokenType type = types_[special];
    if (!parse_special && (type == TokenType::kControl || type == TokenType::kUnknown)) continue;
    const std::string& needle = texts_[special];
    split.clear();
    for (const Fragment& f : fragments) {
      if (f.token != kNoToken) {
        split.push_back(f);
        continue;
      }
      const std::string_view hay = text.substr(0, f.end);
      size_t pos = f.begin;
      while (true) {
        const size_t hit = hay.find(needle, pos);
        if (hit == std::string_view::npos) break;
        if (hit > pos) split.push_back({kNoToken, pos, hit});
        split.push_back({special, hit, hit + needle.size()});
        pos = hit + needle.size();
      }
      if (pos < f.end) split.push_back({kNoToken, pos, f.end});
    }
    fragments.swap(split);
  }

  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && add_bos_) out.push_back(bos_);
  // A dummy-prefix space starts the text and every run of text that follows a
  // special token, as llama.cpp's SPM path does.
  bool prev_special = true;
  for (const Fragment& f : fragments) {
    if (f.token != kNoToken) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    const std::string escaped =
        EscapeSpaces(text.substr(f.begin, f.end - f.begin), add_space_prefix_ && prev_special);
    EncodeFragment(escaped, &out);
    prev_special = false;
  }
  if (add_special && add_eos_) out.push_back(eos_);
  return out;
}

void Tokenizer::EncodeFragment(std::string_view text, std::vector<int32_t>* out) const {
  // Words are merged one at a time: a word starts at a "▁" that does not
  // follow another "▁". No token holds such a "▁" after its first byte
  // (split_at_words_ checks that), so no merge ever joins two words and the
  // result is the same as merging the whole text at once, as llama.cpp does,
  // with scratch space that stays small enough for the cache.
  std::vector<Symbol> symbols;
  std::vector<Bigram> heap;
  for (size_t offs = 0; offs < text.size();) {
    const size_t len =
        std::min(Utf8Length(static_cast<unsigned char>(text[offs])), text.size() - offs);
    if (split_at_words_ && !symbols.empty() && text.substr(offs, len) == kSpaceMarker &&
        (offs < kSpaceMarker.size() ||
         text.substr(offs - kSpaceMarker.size(), kSpaceMarker.size()) != kSpaceMarker)) {
      MergeSymbols(text, &symbols, &heap, out);
      symbols.clear();
    }
    symbols.push_back({static_cast<int64_t>(offs), -1, -1, static_cast<uint32_t>(len)});
    offs += len;
  }
  MergeSymbols(text, &symbols, &heap, out);
}

// Merges `symbols` (consecutive pieces of `text`) highest score first and
// appends the resulting tokens. `heap` is scratch space, reused between calls.
void Tokenizer::MergeSymbols(std::string_view text, std::vector<Symbol>* symbols_ptr,
                             std::vector<Bigram>* heap, std::vector<int32_t>* out) const {
  std::vector<Symbol>& symbols = *symbols_ptr;
  const int64_t n = static_cast<int64_t>(symbols.size());
  if (n == 0) return;
  for (int64_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }
  // Every queued pair names a token, so the queue holds fewer than
  // n_symbols + 2 * n_merges entries: O(n log n) however long the words or
  // the runs of spaces.
  heap->clear();
  auto try_add = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0) return;
    const size_t size = static_cast<size_t>(symbols[left].n) + symbols[right].n;
    if (size > max_token_bytes_) return;
    const int32_t id = Find(text.substr(symbols[left].start, size));
    if (id == kNoToken) return;
    heap->push_back({scores_[id], static_cast<uint32_t>(size), left});
    std::push_heap(heap->begin(), heap->end());
  };
  for (int64_t i = 1; i < n; ++i) try_add(i - 1, i);

  while (!heap->empty()) {
    std::pop_heap(heap->begin(), heap->end());
    const Bigram top = heap->back();
    heap->pop_back();
    Symbol& left = symbols[top.left];
    if (left.n == 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    if (left.n + right.n != top.size) continue;
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    try_add(left.prev, top.left);
    try_add(top.left, left.next);
  }

  // The first symbol is never merged away (merges fold right into left), so
  // it heads the list of final pieces.
  for (int64_t i = 0; i != -1; i = symbols[i].next) {
    const std::string_view piece = text.substr(symbols[i].start, symbols[i].n);
    const int32_t id = Find(piece);
    if (id != kNoToken) {
      out->push_back(id);
    } else {
      AppendBytes(piece, out);
    }
  }
}

// A piece that is not a token: one byte token per byte. llama.cpp has no
// answer when a byte has no token (it throws); here the piece becomes one
// UNK, or nothing when the vocabulary has no UNK either.
void Tokenizer::AppendBytes(std::string_view piece, std::vector<int32_t>* out) const {
  const bool all_bytes = std::all_of(piece.begin(), piece.end(), [this](char c) {
    return byte_tokens_[static_cast<unsigned char>(c)] != kNoToken;
  });
  if (!all_bytes) {
    if (unk_ != kNoToken) out->push_back(unk_);
    return;
  }
  for (char c : piece) out->push_back(byte_tokens_[static_cast<unsigned char>(c)]);
}

namespace {

// Appends `piece` without up to one leading space when `lstrip`.
void AppendStripped(std::string_view piece, bool lstrip, std::string* out) {
  if (lstrip && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
  out->append(piece);
}

}  // namespace

std::string Tokenizer::TokenToPiece(int32_t id, bool special) const {
  std::string out;
  if (id < 0 || id >= n_vocab()) return out;
  const std::string& text = texts_[id];
  switch (types_[id]) {
    case TokenType::kNormal:
      AppendUnescaped(text, &out);
      break;
    case TokenType::kByte:
      out.push_back(ByteOfToken(text));
      break;
    case TokenType::kUserDefined:
      out = text;
      break;
    case TokenType::kControl:
    case TokenType::kUnknown:
      if (special) out = text;
      break;
    case TokenType::kUnused:
    case TokenType::kUndefined:
      break;
  }
  return out;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool remove_special,
                              bool unparse_special) const {
  bool remove_space = add_space_prefix_;
  if (remove_special && add_bos_ && !ids.empty() && ids.front() == bos_) {
    remove_space = false;
    ids = ids.subspan(1);
  }
  if (remove_special && add_eos_ && !ids.empty() && ids.back() == eos_) {
    ids = ids.first(ids.size() - 1);
  }
  std::string out;
  for (int32_t id : ids) {
    // Only the very first token may lose its space, even when it renders as
    // nothing (a BOS kept in the sequence), as llama_detokenize does.
    AppendStripped(TokenToPiece(id, unparse_special), remove_space, &out);
    remove_space = false;
  }
  return out;
}

std::string DecodeStream::Next(int32_t id) {
  std::string piece = tokenizer_->TokenToPiece(id);
  // llama2.c tests the piece's text before turning "<0xXX>" into its byte,
  // so a byte token for ' ' keeps its space even after BOS.
  const bool byte_token =
      id >= 0 && id < tokenizer_->n_vocab() && tokenizer_->token_type(id) == TokenType::kByte;
  if (prev_ == tokenizer_->bos() && !byte_token && !piece.empty() && piece.front() == ' ') {
    piece.erase(0, 1);
  }
  prev_ = id;
  return piece;
}

}  // namespace fqpack::runtime
