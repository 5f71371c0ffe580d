// The pre-tokenizers of byte-level BPE vocabularies: how the text is cut into
// words before merges run, chosen by `tokenizer.ggml.pre`. Each is the list
// of split rules llama.cpp gives it (src/llama-vocab.cpp, llm_tokenizer_bpe),
// applied in turn: a rule cuts every piece the previous rules left at its
// matches, and the text between matches stays a piece of its own (what
// llama.cpp's unicode_regex_split does with each regex). The rules are
// written out over code points rather than run through a regex engine; the
// comment of each gives the regex it implements. As in llama.cpp, a
// non-ASCII White_Space character counts only as \s, never as a member of a
// character class.
//
// Thread-safety: immutable; Split may be called from any number of threads.
#ifndef FQPACK_RUNTIME_PRETOKENIZER_H_
#define FQPACK_RUNTIME_PRETOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"

namespace fqpack::runtime {

class PreTokenizer {
 public:
  // The pre-tokenizer `tokenizer.ggml.pre` names ("" or "default": the
  // default rules). NotSupported naming `name` and the known names.
  static Result<PreTokenizer> ForName(std::string_view name);

  // The names ForName accepts, for messages.
  static std::string KnownNames();

  // The words of `text`, in order; their concatenation is `text` after
  // invalid UTF-8 was replaced by U+FFFD (as llama.cpp's decoder does).
  std::vector<std::string> Split(std::string_view text) const;

  // The same, as lengths in code points of `cps`.
  std::vector<size_t> SplitCodepoints(const std::vector<uint32_t>& cps) const;

  const std::string& name() const { return name_; }
  // A word that is a token as a whole becomes that token without merges
  // (llama.cpp's ignore_merges, set for the Llama-3 family).
  bool ignore_merges() const { return ignore_merges_; }
  // BOS is added unless the vocabulary says otherwise (the Llama-3 family).
  bool default_add_bos() const { return default_add_bos_; }

  // One split rule: which matcher, and for kRun the character class, an
  // optional leading \s, and how many class members in a row.
  enum class RuleKind : uint8_t {
    kGpt2,           // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
    kLlama3,         // Llama-3's regex with \p{N}{1,max}; max 1 is Qwen2's
    kRun,            // \s?C{min,max} (lead_space) or C{min,max}
    kTrailingSpace,  // \s+$
  };
  struct Rule {
    RuleKind kind;
    bool (*member)(uint32_t cp) = nullptr;
    bool lead_space = false;
    uint32_t min = 1;
    uint32_t max = 1;
  };

 private:
  PreTokenizer() = default;

  std::string name_;
  std::vector<Rule> rules_;
  bool ignore_merges_ = false;
  bool default_add_bos_ = false;
};

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_PRETOKENIZER_H_
