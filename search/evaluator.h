// Scoring EQMs on calibration tokens: the cost centre of the search.
//
// The calibration text is cut into chunks of n_ctx tokens, each run from
// position 0 with its first token replaced by BOS (as llama.cpp's perplexity
// does). Every position but the last of a chunk is scored: n_ctx - 1 tokens
// per chunk, the whole chunk rather than llama.cpp's second half, because
// the search wants as many scored tokens per evaluated token as it can get.
// Per scored token:
//   nll = -log softmax(logits)[next token]
//   kl  = KL(P_up || P) = sum_v P_up(v) (log P_up(v) - log P(v)), in nats,
// against QM(n_up)'s distribution, computed once when the evaluator is made.
// A Score holds their means; the calibration perplexity is exp(mean nll).
//
// Reuse: an EQM is evaluated relative to an already evaluated parent whose
// activations (runtime::LayerStates per chunk) were kept. Only the layers
// from the first one whose weights differ are recomputed: a changed block
// matrix of layer l recomputes layers l.., a changed output matrix only the
// final projection, a changed token embedding everything. The prefix layers
// see the same weights and inputs either way, so the score is bit for bit
// the score of a full evaluation.
//
// Parallelism: every (EQM, chunk) pair is one unit of work. Each worker
// thread owns a clone of the model (sharing the module bytes) and an
// evaluator on a single-thread pool, so a unit is computed by the same code
// whatever the thread count, and a score (per-chunk sums added in chunk
// order) does not depend on it.
//
// Thread-safety: an Evaluator is used by one thread at a time; Evaluate
// parallelises internally.
#ifndef FQPACK_SEARCH_EVALUATOR_H_
#define FQPACK_SEARCH_EVALUATOR_H_

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/llama.h"
#include "runtime/model.h"
#include "schema/thread_pool.h"
#include "search/ladder.h"

namespace fqpack::search {

enum class Metric { kKl, kPpl };
const char* MetricName(Metric m);  // "kl", "ppl"
Result<Metric> ParseMetric(const std::string& name);

struct CalibSet {
  int64_t n_ctx = 0;
  std::vector<std::vector<int32_t>> inputs;   // n_ctx tokens each, BOS first
  std::vector<std::vector<int32_t>> targets;  // the same tokens as the text has them
  int64_t chunks() const { return static_cast<int64_t>(inputs.size()); }
  int64_t tokens() const { return chunks() * n_ctx; }
  int64_t scored() const { return chunks() * (n_ctx - 1); }
};

// floor(n_tokens / n_ctx) chunks from the start of `text_tokens` (which
// should begin with BOS when the vocabulary adds one). InvalidArgument when
// n_ctx < 2, when n_tokens < n_ctx, or when the text is shorter than the
// chunks need (the message says how many tokens are needed and how many the
// text has).
Result<CalibSet> MakeCalibSet(std::span<const int32_t> text_tokens, int64_t n_ctx, int64_t n_tokens,
                              int32_t bos);

struct Score {
  double kl = 0;   // mean KL(P_up || P), nats per token
  double nll = 0;  // mean negative log-likelihood, nats per token
  double ppl() const { return std::exp(nll); }
  double Get(Metric m) const { return m == Metric::kKl ? kl : ppl(); }
};

// Activations of one EQM: one LayerStates per calibration chunk.
using ChunkStates = std::vector<runtime::LayerStates>;

struct EvalJob {
  const EqmState* state = nullptr;
  // An evaluated EQM to start from (both null: evaluate from the embedding).
  const EqmState* parent_state = nullptr;
  const ChunkStates* parent_states = nullptr;
  // Keep this EQM's activations in the result (to evaluate its children).
  bool keep_states = false;
  // Only chunks [chunk_begin, chunk_end) (chunk_end -1: to the last). The
  // tree search scores a child a few chunks at a time so that it can stop
  // as soon as the chunks so far prove the child cannot survive.
  int64_t chunk_begin = 0;
  int64_t chunk_end = -1;
};

struct EvalResult {
  // Over the job's chunks: the sums below divided by the calibration set's
  // scored(), so a partial range gives a partial mean (never more than the
  // whole, every per-chunk sum being >= 0).
  Score score;
  ChunkStates states;  // all chunks' slots; the job's range filled when it asked to keep them
  std::vector<double> chunk_kl;   // per chunk of the range: sum of KL over its positions
  std::vector<double> chunk_nll;  // ... and of the negative log-likelihood
};

struct EvalStats {
  int64_t evaluations = 0;  // EQMs scored (the up model not counted)
  int64_t blocks_run = 0;   // layer blocks computed, summed over chunks
  int64_t blocks_full = 0;  // what evaluating every EQM from the embedding would compute
  int64_t units = 0;        // (EQM, chunk) pairs scored
  double seconds = 0;       // wall time inside Evaluate
};

class Evaluator {
 public:
  struct Options {
    int threads = 1;
    // false: every EQM from the embedding (to measure what reuse saves).
    bool reuse = true;
  };

  // Loads every module of `library` from `source` (they stay in memory, so
  // `source` is not used afterwards) and runs QM(n_up) on `calib`: its
  // distributions are the KL reference, its activations the root's.
  static Result<std::unique_ptr<Evaluator>> Create(const Library* library,
                                                   store::ModuleSource* source, CalibSet calib,
                                                   const Options& options);
  ~Evaluator();

  const Library& library() const { return *library_; }
  const CalibSet& calib() const { return calib_; }
  const runtime::Hparams& hparams() const;
  int threads() const { return pool_->size(); }
  bool reuse() const { return reuse_; }

  // QM(n_up): its score (kl = 0) and activations.
  const Score& up_score() const { return up_score_; }
  const ChunkStates& up_states() const { return up_states_; }

  // Scores `jobs` (in parallel); results in job order. `cancelled` is polled
  // before every unit of work, from any thread: once it returns true the
  // call ends with Aborted. `progress(done, total)` counts units (jobs x
  // chunks), called with a lock held.
  Result<std::vector<EvalResult>> Evaluate(
      const std::vector<EvalJob>& jobs, const std::function<bool()>& cancelled = nullptr,
      const std::function<void(int64_t done, int64_t total)>& progress = nullptr);

  EvalStats stats() const;

  // The first layer whose input changes between `parent` and `state`:
  // -1 when the token embedding changes (run everything), n_layer when only
  // the final norm or output matrix changes.
  int FirstChangedLayer(const EqmState& parent, const EqmState& state) const;

 private:
  struct Worker;
  Evaluator() = default;
  Status ScoreUnit(Worker* w, const EvalJob& job, int64_t chunk, double* kl_sum, double* nll_sum,
                   runtime::LayerStates* keep);

  const Library* library_ = nullptr;
  CalibSet calib_;
  bool reuse_ = true;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<runtime::Model> model_;  // QM(n_up), the template of the workers' clones
  // The module of every rung: data_[chain][rung].
  std::vector<std::vector<store::ModuleData>> data_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // First layer a change of each chain affects (see FirstChangedLayer).
  std::vector<int> affects_;
  int64_t n_vocab_ = 0;
  // Per chunk, per scored position: P_up and log P_up, n_vocab floats each.
  std::vector<std::vector<float>> up_prob_;
  std::vector<std::vector<float>> up_logprob_;
  Score up_score_;
  ChunkStates up_states_;
  std::atomic<int64_t> evaluations_{0};
  std::atomic<int64_t> blocks_run_{0};
  std::atomic<int64_t> blocks_full_{0};
  std::atomic<int64_t> units_{0};
  double seconds_ = 0;
};

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_EVALUATOR_H_
