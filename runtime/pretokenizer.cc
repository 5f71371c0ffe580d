#include "runtime/pretokenizer.h"

#include <algorithm>
#include <iterator>
#include <limits>

#include "runtime/unicode.h"

namespace fqpack::runtime {

namespace {

using Rule = PreTokenizer::Rule;
using RuleKind = PreTokenizer::RuleKind;

constexpr uint32_t kUnbounded = std::numeric_limits<uint32_t>::max();

struct Range {
  uint32_t lo;
  uint32_t hi;
};

template <size_t N>
bool InRanges(const Range (&ranges)[N], uint32_t cp) {
  for (const Range& r : ranges) {
    if (cp >= r.lo && cp <= r.hi) return true;
  }
  return false;
}

// llama.cpp matches a class written with \p{..} against a copy of the text in
// which every non-ASCII character is replaced by one stand-in per class, and
// White_Space wins over the category; a class written with literal
// characters it matches against the code points with non-ASCII White_Space
// replaced by U+000B. Either way a non-ASCII space is in no class.
bool NonAsciiSpace(uint32_t cp) { return cp >= 0x80 && IsWhitespace(cp); }

bool IsLetter(uint32_t cp) { return ClassOf(cp) == CodepointClass::kLetter && !NonAsciiSpace(cp); }
bool IsNumber(uint32_t cp) { return ClassOf(cp) == CodepointClass::kNumber && !NonAsciiSpace(cp); }
bool IsPunctuation(uint32_t cp) {
  return ClassOf(cp) == CodepointClass::kPunctuation && !NonAsciiSpace(cp);
}
bool IsCrLf(uint32_t cp) { return cp == '\r' || cp == '\n'; }
bool IsAsciiDigit(uint32_t cp) { return cp >= '0' && cp <= '9'; }
// [^\s\p{L}\p{N}]
bool IsOther(uint32_t cp) { return !IsWhitespace(cp) && !IsLetter(cp) && !IsNumber(cp); }

// Falcon: [\p{P}\$\+<=>\^~\|`]
bool IsFalconPunctuation(uint32_t cp) {
  return IsPunctuation(cp) ||
         (cp < 0x80 &&
          std::string_view("$+<=>^~|`").find(static_cast<char>(cp)) != std::string_view::npos);
}
// llama.cpp's default rules: [\p{P}\$\+<=>\^~\|]
bool IsDefaultPunctuation(uint32_t cp) {
  return IsPunctuation(cp) ||
         (cp < 0x80 &&
          std::string_view("$+<=>^~|").find(static_cast<char>(cp)) != std::string_view::npos);
}

// DeepSeek LLM's letters: the class "[A-Za-zµÀ-ÖØ-öø-ƺ...𞤀-𞥃]" of its
// regex, as code points.
constexpr Range kDeepseekLetters[] = {
    {0x0041, 0x005A},   {0x0061, 0x007A},   {0x00B5, 0x00B5},   {0x00C0, 0x00D6},
    {0x00D8, 0x00F6},   {0x00F8, 0x01BA},   {0x01BC, 0x01BF},   {0x01C4, 0x0293},
    {0x0295, 0x02AF},   {0x0370, 0x0373},   {0x0376, 0x0377},   {0x037B, 0x037D},
    {0x037F, 0x037F},   {0x0386, 0x0386},   {0x0388, 0x038A},   {0x038C, 0x038C},
    {0x038E, 0x03A1},   {0x03A3, 0x03F5},   {0x03F7, 0x0481},   {0x048A, 0x052F},
    {0x0531, 0x0556},   {0x10A0, 0x10C5},   {0x13A0, 0x13F5},   {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA},   {0x1CBD, 0x1CBF},   {0x1D00, 0x1D2B},   {0x1D6B, 0x1D77},
    {0x1D79, 0x1D9A},   {0x1E00, 0x1F15},   {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F59},   {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},   {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},
    {0x2102, 0x2102},   {0x2107, 0x2107},   {0x210A, 0x2113},   {0x2115, 0x2115},
    {0x2119, 0x211D},   {0x2124, 0x2124},   {0x2126, 0x2126},   {0x2128, 0x2128},
    {0x212A, 0x212D},   {0x212F, 0x2134},   {0x2139, 0x2139},   {0x213C, 0x213F},
    {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2184},   {0x2C00, 0x2C7B},
    {0x2C7E, 0x2CE4},   {0x2CEB, 0x2CEE},   {0x2CF2, 0x2CF3},   {0xA640, 0xA66D},
    {0xA680, 0xA69B},   {0xA722, 0xA76F},   {0xA771, 0xA787},   {0xA78B, 0xA78E},
    {0xAB70, 0xABBF},   {0xFB00, 0xFB06},   {0xFB13, 0xFB17},   {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A},   {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
bool IsDeepseekLetter(uint32_t cp) {
  // Sorted and disjoint: the last range starting at or before cp decides.
  const Range* it = std::upper_bound(std::begin(kDeepseekLetters), std::end(kDeepseekLetters), cp,
                                     [](uint32_t c, const Range& r) { return c < r.lo; });
  return it != std::begin(kDeepseekLetters) && cp <= (it - 1)->hi;
}

// DeepSeek LLM's punctuation: [!-/:-~！-／：-～‘-‟　-。] (ASCII letters
// included: the range :-~ spans them).
constexpr Range kDeepseekPunctuation[] = {{0x21, 0x2F},     {0x3A, 0x7E},     {0xFF01, 0xFF0F},
                                          {0xFF1A, 0xFF5E}, {0x2018, 0x201F}, {0x3000, 0x3002}};
bool IsDeepseekPunctuation(uint32_t cp) {
  return !NonAsciiSpace(cp) && InRanges(kDeepseekPunctuation, cp);
}

// DeepSeek's CJK run: [一-龥ࠀ-一가-퟿].
constexpr Range kDeepseekCjk[] = {{0x4E00, 0x9FA5}, {0x0800, 0x4E00}, {0xAC00, 0xD7FF}};
bool IsDeepseekCjk(uint32_t cp) { return !NonAsciiSpace(cp) && InRanges(kDeepseekCjk, cp); }

Rule Gpt2() { return Rule{RuleKind::kGpt2}; }
Rule Llama3(uint32_t max_digits) { return Rule{RuleKind::kLlama3, nullptr, false, 1, max_digits}; }
Rule Run(bool (*member)(uint32_t), bool lead_space, uint32_t min, uint32_t max) {
  return Rule{RuleKind::kRun, member, lead_space, min, max};
}

struct Family {
  std::vector<std::string_view> names;
  std::vector<Rule> rules;
  bool ignore_merges = false;
  bool add_bos = false;
};

// llama.cpp's names for each set of rules (llama_vocab::impl::load maps the
// name to a pre-tokenizer type, llm_tokenizer_bpe the type to its regexes).
// Names whose vocabularies need more than the rules (ChatGLM-4 has no BOS,
// Tekken and GPT-4o use other regexes, ...) are left out: NotSupported.
const std::vector<Family>& Families() {
  static const std::vector<Family> families = {
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
        "mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais",
        "trillion", "granite-docling", "exaone4"},
       {Gpt2()}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
        "jina-v5-nano"},
       {Llama3(3)},
       /*ignore_merges=*/true,
       /*add_bos=*/true},
      {{"dbrx", "smaug-bpe"}, {Llama3(3)}},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
        "solar-open"},
       {Llama3(1)}},
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
        "mellum2"},
       {Run(IsNumber, false, 1, 1), Gpt2()}},
      {{"falcon"},
       {Run(IsFalconPunctuation, false, 1, kUnbounded), Gpt2(), Run(IsAsciiDigit, false, 3, 3)}},
      {{"deepseek-llm"},
       {Run(IsCrLf, false, 1, 1), Run(IsDeepseekLetter, true, 1, kUnbounded),
        Run(IsDeepseekPunctuation, true, 1, kUnbounded), Rule{RuleKind::kTrailingSpace},
        Run(IsDeepseekCjk, false, 1, kUnbounded), Run(IsNumber, false, 1, kUnbounded)}},
      {{"deepseek-coder"},
       {Run(IsCrLf, false, 1, 1), Run(IsLetter, true, 1, kUnbounded),
        Run(IsPunctuation, true, 1, kUnbounded), Run(IsDeepseekCjk, false, 1, kUnbounded),
        Run(IsNumber, false, 1, 1)}},
      {{"", "default"},
       {Run(IsDefaultPunctuation, false, 1, kUnbounded), Gpt2(),
        Run(IsNumber, false, 1, kUnbounded), Run(IsAsciiDigit, false, 3, 3)}},
  };
  return families;
}

// A match of one rule in the piece [begin, end) of `cps`.
class Matcher {
 public:
  Matcher(const std::vector<uint32_t>& cps, size_t end) : cps_(cps), end_(end) {}

  // The length of the rule's match starting at `pos`, 0 if none.
  size_t MatchAt(const Rule& rule, size_t pos) const {
    switch (rule.kind) {
      case RuleKind::kGpt2:
        return Gpt2At(pos);
      case RuleKind::kLlama3:
        return Llama3At(pos, rule.max);
      case RuleKind::kRun:
        return RunAt(rule, pos);
      case RuleKind::kTrailingSpace:
        break;
    }
    return 0;
  }

 private:
  bool Is(bool (*member)(uint32_t), size_t i) const { return i < end_ && member(cps_[i]); }
  uint32_t At(size_t i) const { return i < end_ ? cps_[i] : 0xFFFFFFFFu; }
  // How many members of the class follow from `i` on, at most `max`.
  size_t Count(bool (*member)(uint32_t), size_t i, size_t max = kUnbounded) const {
    size_t n = 0;
    while (n < max && Is(member, i + n)) ++n;
    return n;
  }

  // 's|'t|'re|'ve|'m|'ll|'d, case-insensitively when `fold` (Llama-3's
  // (?:'[sS]|'[tT]|...)).
  size_t ContractionAt(size_t pos, bool fold) const {
    if (At(pos) != '\'') return 0;
    auto lower = [fold](uint32_t c) { return fold && c >= 'A' && c <= 'Z' ? c + 32 : c; };
    const uint32_t c1 = lower(At(pos + 1));
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
    const uint32_t c2 = lower(At(pos + 2));
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
    return 0;
  }

  size_t Gpt2At(size_t pos) const {
    if (size_t n = ContractionAt(pos, false)) return n;
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the classes are disjoint
    // and hold no space, so at most one applies.
    for (bool (*member)(uint32_t) : {IsLetter, IsNumber, IsOther}) {
      if (At(pos) == ' ' && Is(member, pos + 1)) return 1 + Count(member, pos + 1);
      if (Is(member, pos)) return Count(member, pos);
    }
    // \s+(?!\S): all the spaces at the end of the piece, else all but the
    // last (which goes with the word after it); one space before a word
    // does not match.
    const size_t n = Count(IsWhitespace, pos);
    if (n == 0) return 0;
    if (pos + n == end_) return n;
    return n - 1;
  }

  // (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|
  // \p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  size_t Llama3At(size_t pos, uint32_t max_digits) const {
    if (size_t n = ContractionAt(pos, true)) return n;
    if (Is(IsLetter, pos)) return Count(IsLetter, pos);
    if (pos < end_ && !IsCrLf(cps_[pos]) && !IsNumber(cps_[pos]) && Is(IsLetter, pos + 1)) {
      return 1 + Count(IsLetter, pos + 1);
    }
    if (Is(IsNumber, pos)) return Count(IsNumber, pos, max_digits);
    const size_t lead = At(pos) == ' ' && Is(IsOther, pos + 1) ? 1 : 0;
    if (Is(IsOther, pos + lead)) {
      const size_t others = pos + lead + Count(IsOther, pos + lead);
      return others + Count(IsCrLf, others) - pos;
    }
    const size_t n = Count(IsWhitespace, pos);
    if (n == 0) return 0;
    // \s*[\r\n]+: \s* backs off to the last line break of the run; the match
    // ends right after it.
    for (size_t k = n; k > 0; --k) {
      if (IsCrLf(cps_[pos + k - 1])) return k;
    }
    if (pos + n == end_ || n == 1) return n;  // \s+(?!\S), else \s+
    return n - 1;
  }

  size_t RunAt(const Rule& rule, size_t pos) const {
    // \s? is greedy: with the space first, without it if that fails.
    if (rule.lead_space && Is(IsWhitespace, pos)) {
      const size_t n = Count(rule.member, pos + 1, rule.max);
      if (n >= rule.min) return 1 + n;
    }
    const size_t n = Count(rule.member, pos, rule.max);
    return n >= rule.min ? n : 0;
  }

  const std::vector<uint32_t>& cps_;
  size_t end_;
};

// Cuts each piece of `pieces` (lengths over `cps`) at the matches of `rule`.
std::vector<size_t> ApplyRule(const Rule& rule, const std::vector<uint32_t>& cps,
                              const std::vector<size_t>& pieces) {
  std::vector<size_t> out;
  out.reserve(pieces.size());
  size_t begin = 0;
  for (const size_t len : pieces) {
    const size_t end = begin + len;
    if (rule.kind == RuleKind::kTrailingSpace) {
      // The leftmost match of \s+$ is the whole run of spaces ending the piece.
      size_t start = end;
      while (start > begin && IsWhitespace(cps[start - 1])) --start;
      if (start > begin) out.push_back(start - begin);
      if (end > start) out.push_back(end - start);
      begin = end;
      continue;
    }
    const Matcher matcher(cps, end);
    size_t gap = begin;  // start of the text no match has taken yet
    for (size_t pos = begin; pos < end;) {
      const size_t n = matcher.MatchAt(rule, pos);
      if (n == 0) {
        ++pos;
        continue;
      }
      if (pos > gap) out.push_back(pos - gap);
      out.push_back(n);
      pos += n;
      gap = pos;
    }
    if (end > gap) out.push_back(end - gap);
    begin = end;
  }
  return out;
}

}  // namespace

Result<PreTokenizer> PreTokenizer::ForName(std::string_view name) {
  for (const Family& family : Families()) {
    if (std::find(family.names.begin(), family.names.end(), name) == family.names.end()) continue;
    PreTokenizer pre;
    pre.name_ = name.empty() ? "default" : std::string(name);
    pre.rules_ = family.rules;
    pre.ignore_merges_ = family.ignore_merges;
    pre.default_add_bos_ = family.add_bos;
    return pre;
  }
  return Status::NotSupported("pre-tokenizer '" + std::string(name) +
                              "' (tokenizer.ggml.pre) is not supported; known: " + KnownNames());
}

std::string PreTokenizer::KnownNames() {
  std::string out;
  for (const Family& family : Families()) {
    for (std::string_view name : family.names) {
      if (name.empty()) continue;
      if (!out.empty()) out += ", ";
      out += name;
    }
  }
  return out;
}

std::vector<size_t> PreTokenizer::SplitCodepoints(const std::vector<uint32_t>& cps) const {
  std::vector<size_t> pieces;
  if (cps.empty()) return pieces;
  pieces.push_back(cps.size());
  for (const Rule& rule : rules_) pieces = ApplyRule(rule, cps, pieces);
  return pieces;
}

std::vector<std::string> PreTokenizer::Split(std::string_view text) const {
  const std::vector<uint32_t> cps = DecodeUtf8(text);
  std::vector<std::string> words;
  size_t begin = 0;
  for (const size_t len : SplitCodepoints(cps)) {
    std::string& word = words.emplace_back();
    for (size_t i = begin; i < begin + len; ++i) AppendUtf8(cps[i], &word);
    begin += len;
  }
  return words;
}

}  // namespace fqpack::runtime
