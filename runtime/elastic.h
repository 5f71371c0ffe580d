// Running a .fqpack elastically: a ResidencyManager, the Session that runs
// its model, the tokenizer, and memory budgets that change while it works
// (a budget trace, or budgets requested from another thread).
//
// Budget traces are text, one change per line: `token_index,budget`, the
// budget with units ("120,450KB"; schema/units.h). A header line (the first
// line that is not a comment, when it does not start with a digit), blank
// lines and `#` comments are allowed; token indices must not decrease. The
// budget at token t is that of the last line with token_index <= t; before
// the first line, the starting budget applies.
//
// When a change applies:
// - Generate: token_index counts generated tokens. Changes at 0 apply before
//   the prompt; a change at k applies after the k-th token is chosen and
//   before it is fed back, i.e. between tokens.
// - Perplexity: token_index is a position in the evaluated text, and changes
//   apply between chunks: chunk c (tokens [c*n_ctx, (c+1)*n_ctx)) runs under
//   the budget in force at its first token.
// Budgets requested from any thread (ResidencyManager::RequestBudget) apply
// at the same points.
//
// Ownership and thread-safety: an ElasticRuntime owns its pack reader,
// residency manager and session; Generate and Perplexity run on the calling
// thread, one at a time. residency()->RequestBudget and ->stats() may be
// called from any thread.
#ifndef FQPACK_RUNTIME_ELASTIC_H_
#define FQPACK_RUNTIME_ELASTIC_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pack/reader.h"
#include "runtime/generate.h"
#include "runtime/llama.h"
#include "runtime/perplexity.h"
#include "runtime/residency.h"
#include "runtime/tokenizer.h"
#include "schema/env.h"
#include "schema/json.h"

namespace fqpack::runtime {

struct BudgetChange {
  int64_t token = 0;
  uint64_t budget = 0;
  int line = 0;  // 1-based line in the trace, for messages
};

// InvalidArgument "<name>:<line>: <what>" for a bad line: not two fields, a
// bad number or unit, a negative or decreasing token index, a zero budget.
Result<std::vector<BudgetChange>> ParseBudgetTrace(std::string_view text, const std::string& name);
Result<std::vector<BudgetChange>> ReadBudgetTrace(Env* env, const std::string& path);

// What the session evaluates at once; sizes the scratch counted in budgets.
enum class Workload {
  kGenerate,    // a prompt (up to 512 tokens per pass), then one token at a time; one row of logits
  kPerplexity,  // whole chunks of n_ctx tokens, logits for their second half
};

// Tokens per forward pass when generating: a prompt is evaluated this many
// tokens at a time. The activations of a pass grow with it (for a 7B llama
// about 220 KB per token), so an edge budget wants it small; llama.cpp's
// default is 512.
constexpr int64_t kDefaultGenerateBatch = 64;

struct ElasticOptions {
  ResidencyOptions residency;
  int64_t n_ctx = 0;  // 0: the model's training context
  Workload workload = Workload::kGenerate;
  // Tokens per forward pass; 0: kDefaultGenerateBatch when generating, a
  // whole chunk (n_ctx, as llama.cpp's perplexity runs) for perplexity.
  int64_t n_batch = 0;
};

// The starting level: an EQM step, a QM label, or the largest that fits a
// budget; with none of them the largest level.
struct LevelChoice {
  int eqm = -1;
  std::string qm;
  uint64_t budget = 0;
};

using TransitionCallback = std::function<void(const TransitionRecord&)>;

struct ElasticGenerateResult {
  GenerateStats generate;
  std::vector<TransitionRecord> transitions;  // those that changed a slot
};

struct ChunkResult {
  int64_t index = 0;
  int level = 0;
  std::string label;
  uint64_t footprint = 0;
  uint64_t budget = 0;  // in force for this chunk; 0 without budgets
  double nll = 0;       // mean over its scored tokens
  int64_t scored = 0;
};

struct ElasticPerplexityResult {
  PerplexityResult total;  // as runtime::Perplexity computes it
  std::vector<ChunkResult> chunks;
  std::vector<TransitionRecord> transitions;
};

class ElasticRuntime {
 public:
  // Opens and validates the pack and reads its levels; nothing is loaded
  // until Start. `pool` must outlive the runtime.
  static Result<std::unique_ptr<ElasticRuntime>> Open(Env* env, const std::string& path,
                                                      const ElasticOptions& options,
                                                      ThreadPool* pool);
  ~ElasticRuntime();

  // Picks the starting level (InvalidArgument for an EQM out of range, an
  // unknown QM, or a budget below the minimum, giving it) and loads it.
  Status Start(const LevelChoice& choice);

  // Checks every budget of `trace` against the minimum before a run, so a
  // run does not fail half-way: InvalidArgument "<name>:<line>: ...".
  Status CheckTrace(const std::vector<BudgetChange>& trace, const std::string& name) const;

  pack::PackReader* pack() { return pack_.get(); }
  ResidencyManager* residency() { return residency_.get(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  Model* model() { return residency_->model(); }
  // The session Generate and Perplexity run (after Start).
  Session* session() { return session_.get(); }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_batch() const { return n_batch_; }
  const RuntimeOverhead& overhead() const { return overhead_; }

  // Resets the session and generates from `prompt` following `trace`.
  // `on_transition` sees each transition as it happens.
  Result<ElasticGenerateResult> Generate(std::span<const int32_t> prompt,
                                         const GenerateOptions& options,
                                         const std::vector<BudgetChange>& trace,
                                         const std::function<Status(int32_t token)>& on_token,
                                         const TransitionCallback& on_transition = {});

  // llama.cpp's perplexity (runtime/perplexity.h) chunk by chunk on one
  // session of n_ctx() positions, n_batch() tokens per pass, following
  // `trace`; with whole-chunk passes, identical numbers to
  // runtime::Perplexity when the level never changes. `progress` as there.
  Result<ElasticPerplexityResult> Perplexity(
      std::span<const int32_t> tokens, int64_t max_chunks, const std::vector<BudgetChange>& trace,
      const std::function<Status(int64_t, int64_t)>& progress = {},
      const TransitionCallback& on_transition = {});

 private:
  ElasticRuntime() = default;
  // Applies trace entries up to `token` (advancing *next) and any budget
  // requested from another thread.
  Status ApplyBudgets(const std::vector<BudgetChange>& trace, size_t* next, int64_t token,
                      std::vector<TransitionRecord>* log, const TransitionCallback& on_transition);

  ElasticOptions options_;
  ThreadPool* pool_ = nullptr;
  std::unique_ptr<pack::PackReader> pack_;
  std::unique_ptr<ResidencyManager> residency_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Session> session_;
  int64_t n_ctx_ = 0;
  int64_t n_batch_ = 0;
  RuntimeOverhead overhead_;
};

// "token 120: eqm:3 -> eqm:17 (budget 450 KB): 14 modules swapped, 1.20 MiB
// read, 3.4 ms"
std::string DescribeTransition(const TransitionRecord& t);
// One transition as a JSON object.
void WriteTransitionJson(JsonWriter* w, const TransitionRecord& t);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_ELASTIC_H_
