// Perplexity the way llama.cpp's llama-perplexity computes it, so numbers
// from the two tools compare directly:
// - the text is tokenized once, with BOS when the vocabulary adds one (the
//   caller tokenizes; this file works on token ids);
// - it is cut into floor(n_tokens / n_ctx) chunks of n_ctx tokens (the rest
//   is dropped); each chunk is evaluated from an empty cache with its first
//   token replaced by BOS (when the vocabulary adds one);
// - only the second half is scored: the logits at positions
//   n_ctx/2 .. n_ctx-2 predict the tokens at n_ctx/2+1 .. n_ctx-1, so every
//   scored token has at least n_ctx/2 tokens of context;
// - nll = -log softmax(logits)[target] (log-sum-exp in double);
//   PPL = exp(mean nll), and its error is PPL * sqrt(var(nll) / (N - 1)),
//   var(nll) = mean(nll^2) - mean(nll)^2 over the N scored tokens.
//
// With a base model the same chunks also give the KL divergence of this
// model's next-token distribution from the base's, KL(P_base || P), averaged
// over the scored tokens (exact, from both models' logits).
//
// Chunks of small models are spread over the pool's threads whole, large
// models split each matmul instead; either way the per-token values are
// summed in text order, so the result does not depend on the thread count.
//
// Thread-safety: the functions are reentrant; the models are only read.
#ifndef FQPACK_RUNTIME_PERPLEXITY_H_
#define FQPACK_RUNTIME_PERPLEXITY_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/model.h"
#include "schema/status.h"
#include "schema/thread_pool.h"

namespace fqpack::runtime {

// -log softmax(logits)[target]: llama.cpp's log_softmax (max subtracted,
// exponentials in float, their sum in double).
double TokenNll(std::span<const float> logits, int32_t target);

// KL(softmax(base) || softmax(logits)) in nats, in double.
double TokenKl(std::span<const float> base_logits, std::span<const float> logits);

// Running mean and spread of per-token values.
class MeanAccumulator {
 public:
  void Add(double v) {
    sum_ += v;
    sum2_ += v * v;
    ++count_;
  }
  int64_t count() const { return count_; }
  double mean() const { return count_ == 0 ? 0 : sum_ / static_cast<double>(count_); }
  // Standard error of the mean: sqrt((mean(v^2) - mean(v)^2) / (N - 1)).
  double StandardError() const;

 private:
  double sum_ = 0;
  double sum2_ = 0;
  int64_t count_ = 0;
};

struct PerplexityOptions {
  int64_t n_ctx = 0;        // tokens per chunk; at least 4
  int32_t bos = -1;         // put first in every chunk; -1 keeps the text's token
  int64_t max_chunks = -1;  // -1: every whole chunk of the text
  // Called after each chunk; a non-OK Status (say Aborted on Ctrl-C) stops
  // the run and is returned.
  std::function<Status(int64_t done, int64_t total)> progress;
};

struct PerplexityResult {
  double ppl = 0;
  double ppl_err = 0;
  double nll = 0;      // mean negative log-likelihood, nats per token
  int64_t tokens = 0;  // tokens of the text
  int64_t n_ctx = 0;
  int64_t chunks = 0;
  int64_t scored = 0;  // tokens scored: chunks * (n_ctx - n_ctx/2 - 1)
  // With a base model:
  bool has_kl = false;
  double kl = 0;      // mean KL(P_base || P), nats
  double kl_err = 0;  // its standard error
  double base_ppl = 0;
  double same_top = 0;  // fraction of scored tokens where both argmaxes agree
};

// The chunk boundaries and BOS rule above, as token lists: chunk i is
// tokens[i*n_ctx, (i+1)*n_ctx) with its first token replaced by `bos`
// (unless bos < 0). For callers that evaluate chunks their own way (the
// search) and must score exactly what `Perplexity` scores.
std::vector<std::vector<int32_t>> PerplexityChunks(std::span<const int32_t> tokens, int64_t n_ctx,
                                                   int32_t bos, int64_t max_chunks = -1);

// Perplexity of `model` on `tokens`, and with `kl_base` its KL divergence
// from that model (same vocabulary). InvalidArgument when the text has fewer
// than 2 * n_ctx tokens (the message says how many are needed and how many
// there are), or n_ctx is below 4.
Result<PerplexityResult> Perplexity(const Model& model, std::span<const int32_t> tokens,
                                    const PerplexityOptions& options, ThreadPool* pool,
                                    const Model* kl_base = nullptr);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_PERPLEXITY_H_
