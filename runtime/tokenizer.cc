#include "runtime/tokenizer.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>

#include "runtime/pretokenizer.h"
#include "runtime/unicode.h"
#include "schema/log.h"

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
constexpr std::string_view kPreKey = "tokenizer.ggml.pre";
constexpr std::string_view kMergesKey = "tokenizer.ggml.merges";
constexpr std::string_view kEotKey = "tokenizer.ggml.eot_token_id";
constexpr std::string_view kEomKey = "tokenizer.ggml.eom_token_id";

// DeepSeek's "<｜end▁of▁sentence｜>" (octal escapes: a hex escape would run
// into the letters after it).
constexpr std::string_view kDeepseekEos =
    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>";
// Texts llama.cpp takes for an end-of-turn token when the metadata names
// none, and for end-of-generation tokens (llama_vocab::impl::load).
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",     "<|end_of_text|>",
    "<EOT>",      "_<EOT>",     "[EOT]",   kDeepseekEos,    "<end_of_utterance>"};
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>",    "<|im_end|>",    "<|end|>", "<|return|>",      "<|call|>",
    "<end_of_turn>", "<|endoftext|>", "</s>",    "<|eom_id|>",      "<EOT>",
    "_<EOT>",        "[EOT]",         "[EOS]",   "<|end_of_text|>", "<end_of_utterance>",
    "<eos>",         kDeepseekEos};

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

// The merge ranks of a byte-level BPE vocabulary. Merges are looked up by
// piece: every text a merge names gets an id (its token id, or an id past
// the vocabulary for a text that is no token), and a symbol carries the id of
// its text, so finding the rank of a pair costs one integer-keyed look-up.
struct Tokenizer::BpeData {
  explicit BpeData(PreTokenizer p) : pre(std::move(p)) {}

  struct Merge {
    int32_t rank;
    int32_t result;  // piece id of the merged text, kNoToken if no merge names it
  };
  PreTokenizer pre;
  std::unordered_map<uint64_t, Merge> merges;
  std::unordered_map<std::string, int32_t> extra_pieces;  // merge texts that are no token
  std::array<int32_t, 256> byte_piece;   // piece id of the character standing for each byte
  std::array<int32_t, 256> single_byte;  // token of a one-byte text, for pieces left over

  static uint64_t Key(int32_t left, int32_t right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
  }
};

Result<Tokenizer> Tokenizer::FromMetadata(const gguf::Metadata& md, std::string_view source) {
  Result<Tokenizer> tok = Load(md);
  if (!tok.ok() && !source.empty()) return tok.status().WithContext(source);
  return tok;
}

Result<Tokenizer> Tokenizer::Load(const gguf::Metadata& md) {
  FQ_ASSIGN_OR_RETURN(const std::string model, md.GetString(kModelKey));
  Tokenizer tok;
  if (model == "gpt2") {
    tok.type_ = VocabType::kBytePairs;
    tok.bos_ = 11;
    tok.eos_ = 11;
    tok.unk_ = kNoToken;
    tok.add_bos_ = false;
    tok.add_space_prefix_ = false;
  } else if (model != "llama") {
    return Status::NotSupported(std::string(kModelKey) + " '" + model +
                                "' is not supported (only 'llama', SentencePiece, and 'gpt2', "
                                "byte-level BPE)");
  }

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

  if (tok.type_ == VocabType::kBytePairs) {
    std::string pre;
    if (md.Has(kPreKey)) {
      FQ_ASSIGN_OR_RETURN(pre, md.GetString(kPreKey));
    } else {
      Warn(std::string(kPreKey) +
           " is missing: using llama.cpp's default pre-tokenizer, which splits text differently "
           "from most models (regenerate the GGUF with a current converter)");
    }
    FQ_RETURN_IF_ERROR(tok.LoadMerges(md, pre));
  }

  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kBosKey, n, &tok.bos_));
  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kEosKey, n, &tok.eos_));
  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kUnkKey, n, &tok.unk_));
  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kPadKey, n, &tok.pad_));
  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kEotKey, n, &tok.eot_));
  int32_t eom = kNoToken;
  FQ_RETURN_IF_ERROR(ReadSpecialId(md, kEomKey, n, &eom));

  // End of turn and of generation by their text, as llama.cpp finds them; a
  // token found so becomes a control token whatever its type (llama.cpp
  // warns that the model is probably wrong and adds the control attribute,
  // which then decides how the token is parsed and rendered).
  auto make_control = [&tok](int32_t id) { tok.types_[id] = TokenType::kControl; };
  for (int32_t id = 0; id < n && tok.eot_ == kNoToken; ++id) {
    if (std::find(std::begin(kEotTexts), std::end(kEotTexts), tok.texts_[id]) !=
        std::end(kEotTexts)) {
      tok.eot_ = id;
      make_control(id);
    }
  }
  for (int32_t id = 0; id < n; ++id) {
    if (std::find(std::begin(kEogTexts), std::end(kEogTexts), tok.texts_[id]) !=
        std::end(kEogTexts)) {
      tok.eog_ids_.push_back(id);
      make_control(id);
    }
  }
  for (int32_t id : {tok.eos_, tok.eot_, eom}) {
    if (id != kNoToken) tok.eog_ids_.push_back(id);
  }
  std::sort(tok.eog_ids_.begin(), tok.eog_ids_.end());
  tok.eog_ids_.erase(std::unique(tok.eog_ids_.begin(), tok.eog_ids_.end()), tok.eog_ids_.end());
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

Status Tokenizer::LoadMerges(const gguf::Metadata& md, const std::string& pre_name) {
  FQ_ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::ForName(pre_name));
  add_bos_ = pre.default_add_bos();
  if (!md.Has(kMergesKey)) {
    return Status::Corruption("byte-level BPE vocabulary without merges (" +
                              std::string(kMergesKey) + " is missing)");
  }
  FQ_ASSIGN_OR_RETURN(const std::vector<std::string> merges, md.GetStringArray(kMergesKey));
  if (merges.empty()) {
    return Status::Corruption("byte-level BPE vocabulary without merges (" +
                              std::string(kMergesKey) + " is empty)");
  }
  if (merges.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::Corruption(std::string(kMergesKey) + ": " + std::to_string(merges.size()) +
                              " merges");
  }
  auto data = std::make_shared<BpeData>(std::move(pre));
  const int32_t n = n_vocab();
  auto piece_of = [&](std::string_view text, bool add) -> int32_t {
    const int32_t id = Find(text);
    if (id != kNoToken) return id;
    auto it = data->extra_pieces.find(std::string(text));
    if (it != data->extra_pieces.end()) return it->second;
    if (!add) return kNoToken;
    const int32_t extra = n + static_cast<int32_t>(data->extra_pieces.size());
    data->extra_pieces.emplace(std::string(text), extra);
    return extra;
  };
  // "left right", split at the first space after the first byte (so a
  // merge of a space token still splits); a line without one never matches.
  // The first of duplicate merges keeps its rank, as in llama.cpp.
  struct Pair {
    int32_t left;
    int32_t right;
    size_t split;
  };
  std::vector<Pair> pairs(merges.size(), Pair{kNoToken, kNoToken, 0});
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& m = merges[i];
    const size_t split = m.find(' ', 1);
    if (split == std::string::npos || split + 1 >= m.size()) continue;
    const std::string_view view(m);
    pairs[i] = {piece_of(view.substr(0, split), true), piece_of(view.substr(split + 1), true),
                split};
  }
  for (size_t i = 0; i < merges.size(); ++i) {
    if (pairs[i].left == kNoToken) continue;
    const std::string& m = merges[i];
    const std::string merged = m.substr(0, pairs[i].split) + m.substr(pairs[i].split + 1);
    data->merges.emplace(BpeData::Key(pairs[i].left, pairs[i].right),
                         BpeData::Merge{static_cast<int32_t>(i), piece_of(merged, false)});
  }
  for (int b = 0; b < 256; ++b) {
    data->byte_piece[b] = piece_of(ByteToUnicode(static_cast<uint8_t>(b)), false);
    const char c = static_cast<char>(b);
    data->single_byte[b] = Find(std::string_view(&c, 1));
  }
  bpe_ = std::move(data);
  return Status::OK();
}

const std::string& Tokenizer::pre_tokenizer() const {
  static const std::string kNone;
  return bpe_ ? bpe_->pre.name() : kNone;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
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
    if (type_ == VocabType::kBytePairs) {
      EncodeBpeFragment(text.substr(f.begin, f.end - f.begin), &out);
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

void Tokenizer::EncodeBpeFragment(std::string_view text, std::vector<int32_t>* out) const {
  const std::vector<uint32_t> cps = DecodeUtf8(text);
  // Words recur (" the", ","): each distinct short word is merged once per
  // fragment and its tokens copied after that. Bounded so that a text of
  // endless distinct words cannot grow it without limit.
  constexpr size_t kMaxCachedWordBytes = 32;
  constexpr size_t kMaxCachedWords = 1 << 16;
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>> cache;  // [begin, end) in cached
  std::vector<int32_t> cached;
  std::string word;
  std::string utf8;
  size_t begin = 0;
  for (const size_t len : bpe_->pre.SplitCodepoints(cps)) {
    // The word's bytes (invalid UTF-8 already replaced by U+FFFD), each
    // spelled as the character GPT-2's byte map gives it.
    utf8.clear();
    for (size_t i = begin; i < begin + len; ++i) AppendUtf8(cps[i], &utf8);
    begin += len;
    const bool cacheable = utf8.size() <= kMaxCachedWordBytes;
    if (cacheable) {
      auto it = cache.find(utf8);
      if (it != cache.end()) {
        out->insert(out->end(), cached.begin() + it->second.first,
                    cached.begin() + it->second.second);
        continue;
      }
    }
    const size_t first = out->size();
    word.clear();
    for (char c : utf8) word += ByteToUnicode(static_cast<uint8_t>(c));
    const int32_t whole = bpe_->pre.ignore_merges() ? Find(word) : kNoToken;
    if (whole != kNoToken) {
      out->push_back(whole);
    } else {
      MergeBpeWord(utf8, word, out);
    }
    if (cacheable && cache.size() < kMaxCachedWords) {
      const uint32_t at = static_cast<uint32_t>(cached.size());
      cached.insert(cached.end(), out->begin() + first, out->end());
      cache.emplace(utf8, std::make_pair(at, static_cast<uint32_t>(cached.size())));
    }
  }
}

// One symbol of a BPE word: bytes [start, start + n) of the byte-mapped
// word, its piece id, and its live neighbours. A symbol merged into its left
// neighbour keeps n == 0.
struct BpeSymbol {
  uint32_t start;
  uint32_t n;
  int32_t piece;
  int32_t prev;
  int32_t next;
};

// A queued merge of symbols left and right (its neighbour when queued). It
// is stale once either has changed, which shows as a size that differs from
// left.n + right.n (symbols only grow) or a right symbol merged away.
struct BpePair {
  int32_t rank;
  int32_t left;
  int32_t right;
  uint32_t size;
  int32_t result;  // piece id of the merged text

  // The heap pops the greatest: the lowest rank, then the leftmost pair, as
  // llama.cpp's llm_bigram_bpe comparator orders them.
  bool operator<(const BpePair& o) const {
    return rank > o.rank || (rank == o.rank && left > o.left);
  }
};

void Tokenizer::MergeBpeWord(std::string_view bytes, std::string_view word,
                             std::vector<int32_t>* out) const {
  // One symbol per byte: the character standing for it in `word`.
  std::vector<BpeSymbol> symbols;
  symbols.reserve(bytes.size());
  uint32_t offs = 0;
  for (char c : bytes) {
    const uint8_t b = static_cast<uint8_t>(c);
    const int32_t index = static_cast<int32_t>(symbols.size());
    const uint32_t len = static_cast<uint32_t>(ByteToUnicode(b).size());
    symbols.push_back({offs, len, bpe_->byte_piece[b], index - 1,
                       index + 1 == static_cast<int32_t>(bytes.size()) ? -1 : index + 1});
    offs += len;
  }

  std::vector<BpePair> heap;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const BpeSymbol& l = symbols[left];
    const BpeSymbol& r = symbols[right];
    if (l.piece == kNoToken || r.piece == kNoToken) return;
    auto it = bpe_->merges.find(BpeData::Key(l.piece, r.piece));
    if (it == bpe_->merges.end()) return;
    heap.push_back({it->second.rank, left, right, l.n + r.n, it->second.result});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const BpePair top = heap.back();
    heap.pop_back();
    BpeSymbol& left = symbols[top.left];
    BpeSymbol& right = symbols[top.right];
    if (left.n == 0 || right.n == 0 || left.n + right.n != top.size) continue;
    left.n += right.n;
    right.n = 0;
    left.piece = top.result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    try_add(left.prev, top.left);
    try_add(top.left, left.next);
  }

  for (int32_t i = 0; i != -1 && !symbols.empty(); i = symbols[i].next) {
    const std::string_view piece = word.substr(symbols[i].start, symbols[i].n);
    const int32_t id = Find(piece);
    if (id != kNoToken) {
      out->push_back(id);
      continue;
    }
    // No token: llama.cpp looks up each byte of the mapped text on its own,
    // and drops the bytes that are no token either.
    for (char c : piece) {
      const int32_t b = bpe_->single_byte[static_cast<unsigned char>(c)];
      if (b != kNoToken) out->push_back(b);
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
      if (type_ == VocabType::kBytePairs) {
        // Each character stands for a byte; a character outside GPT-2's map
        // (a hand-made vocabulary) is kept as it is written.
        for (uint32_t cp : DecodeUtf8(text)) {
          const int byte = UnicodeToByte(cp);
          if (byte >= 0) {
            out.push_back(static_cast<char>(byte));
          } else {
            AppendUtf8(cp, &out);
          }
        }
      } else {
        AppendUnescaped(text, &out);
      }
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
  if (tokenizer_->add_space_prefix() && prev_ == tokenizer_->bos() && !byte_token &&
      !piece.empty() && piece.front() == ' ') {
    piece.erase(0, 1);
  }
  prev_ = id;
  return piece;
}

}  // namespace fqpack::runtime
