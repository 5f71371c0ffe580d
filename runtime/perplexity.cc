#include "runtime/perplexity.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/llama.h"
#include "runtime/sampler.h"

namespace fqpack::runtime {

double TokenNll(std::span<const float> logits, int32_t target) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(l - max);
  return -(static_cast<double>(logits[static_cast<size_t>(target)] - max) - std::log(sum));
}

double TokenKl(std::span<const float> base_logits, std::span<const float> logits) {
  auto log_sum_exp = [](std::span<const float> l, double* max_out) {
    const double max = *std::max_element(l.begin(), l.end());
    double sum = 0;
    for (float v : l) sum += std::exp(static_cast<double>(v) - max);
    *max_out = max;
    return std::log(sum);
  };
  double max_b, max_p;
  const double lse_b = log_sum_exp(base_logits, &max_b);
  const double lse_p = log_sum_exp(logits, &max_p);
  double kl = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double log_pb = static_cast<double>(base_logits[i]) - max_b - lse_b;
    const double log_p = static_cast<double>(logits[i]) - max_p - lse_p;
    kl += std::exp(log_pb) * (log_pb - log_p);
  }
  return std::max(kl, 0.0);  // rounding can leave -1e-17 for identical rows
}

double MeanAccumulator::StandardError() const {
  if (count_ < 2) return 0;
  const double n = static_cast<double>(count_);
  const double var = sum2_ / n - (sum_ / n) * (sum_ / n);
  return var > 0 ? std::sqrt(var / (n - 1)) : 0;
}

std::vector<std::vector<int32_t>> PerplexityChunks(std::span<const int32_t> tokens, int64_t n_ctx,
                                                   int32_t bos, int64_t max_chunks) {
  std::vector<std::vector<int32_t>> chunks;
  if (n_ctx <= 0) return chunks;
  int64_t n = static_cast<int64_t>(tokens.size()) / n_ctx;
  if (max_chunks >= 0) n = std::min(n, max_chunks);
  for (int64_t i = 0; i < n; ++i) {
    auto c = tokens.subspan(static_cast<size_t>(i * n_ctx), static_cast<size_t>(n_ctx));
    chunks.emplace_back(c.begin(), c.end());
    if (bos >= 0) chunks.back()[0] = bos;
  }
  return chunks;
}

namespace {

// What one chunk contributes, per scored token.
struct ChunkScores {
  std::vector<double> nll, base_nll, kl;
  int64_t same_top = 0;
};

// Evaluates chunks on sessions of their own. Several run at once when the
// chunks are spread over threads; each then runs single-threaded on a pool of
// its own (pool == nullptr).
class ChunkScorer {
 public:
  ChunkScorer(const Model& model, const Model* base, int64_t n_ctx, ThreadPool* pool)
      : own_pool_(pool == nullptr ? std::make_unique<ThreadPool>(1) : nullptr),
        session_(&model, n_ctx, pool != nullptr ? pool : own_pool_.get()) {
    if (base != nullptr) {
      base_session_ =
          std::make_unique<Session>(base, n_ctx, pool != nullptr ? pool : own_pool_.get());
    }
  }

  // `text` is the chunk as it stands in the text (the targets); `input` the
  // same with BOS first.
  Status Score(std::span<const int32_t> input, const int32_t* text, ChunkScores* out) {
    const int64_t n_ctx = static_cast<int64_t>(input.size());
    const int64_t first = n_ctx / 2;
    const size_t v = static_cast<size_t>(session_.model().hparams().n_vocab);
    session_.Reset();
    FQ_RETURN_IF_ERROR(session_.Eval(input, static_cast<size_t>(first), &logits_));
    if (base_session_ != nullptr) {
      base_session_->Reset();
      FQ_RETURN_IF_ERROR(base_session_->Eval(input, static_cast<size_t>(first), &base_logits_));
    }
    for (int64_t j = first; j < n_ctx - 1; ++j) {
      const std::span<const float> row(logits_.data() + static_cast<size_t>(j - first) * v, v);
      const int32_t target = text[j + 1];
      out->nll.push_back(TokenNll(row, target));
      if (base_session_ != nullptr) {
        const std::span<const float> base_row(
            base_logits_.data() + static_cast<size_t>(j - first) * v, v);
        out->base_nll.push_back(TokenNll(base_row, target));
        out->kl.push_back(TokenKl(base_row, row));
        out->same_top += Sampler::Argmax(row) == Sampler::Argmax(base_row);
      }
    }
    return Status::OK();
  }

 private:
  std::unique_ptr<ThreadPool> own_pool_;
  Session session_;
  std::unique_ptr<Session> base_session_;
  std::vector<float> logits_, base_logits_;
};

// Chunks go to threads whole when a session is small: the blocks of tiny
// models are too short to split well across threads, and a chunk per thread
// is perfectly parallel. Large models keep one session (their KV cache and
// scratch per thread would cost real memory) and split each matmul instead.
constexpr uint64_t kMaxSessionBytesForChunkThreads = 64ull << 20;

// A session's KV cache plus its scratch: for up to 512 tokens, the residual
// stream and the Q, K, V, attention and projection outputs (about 6 x n_embd),
// the gate and up activations (2 x n_ff) and the logits, in floats.
uint64_t SessionBytes(const Model& m, int64_t n_ctx) {
  const Hparams& hp = m.hparams();
  const int64_t rows = std::min<int64_t>(n_ctx, 512);
  return KvCacheBytes(hp, n_ctx) +
         static_cast<uint64_t>(rows) *
             static_cast<uint64_t>(6 * hp.n_embd + 2 * hp.n_ff + hp.n_vocab) * 4;
}

}  // namespace

Result<PerplexityResult> Perplexity(const Model& model, std::span<const int32_t> tokens,
                                    const PerplexityOptions& options, ThreadPool* pool,
                                    const Model* kl_base) {
  const int64_t n_ctx = options.n_ctx;
  if (n_ctx < 4) {
    return Status::InvalidArgument("perplexity needs a context of at least 4 tokens, got " +
                                   std::to_string(n_ctx));
  }
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  if (n_tokens < 2 * n_ctx) {
    return Status::InvalidArgument("perplexity with a context of " + std::to_string(n_ctx) +
                                   " tokens needs a text of at least " + std::to_string(2 * n_ctx) +
                                   " tokens; this text has only " + std::to_string(n_tokens));
  }
  const int64_t n_vocab = model.hparams().n_vocab;
  if (kl_base != nullptr && kl_base->hparams().n_vocab != n_vocab) {
    return Status::InvalidArgument("the KL base model has a vocabulary of " +
                                   std::to_string(kl_base->hparams().n_vocab) +
                                   " tokens, this one " + std::to_string(n_vocab));
  }
  const auto chunks = PerplexityChunks(tokens, n_ctx, options.bos, options.max_chunks);
  const int64_t n_chunks = static_cast<int64_t>(chunks.size());
  std::vector<ChunkScores> scores(chunks.size());

  std::mutex mu;
  Status error;
  int64_t done = 0;
  // Called after each chunk, from whichever thread scored it.
  auto finish_chunk = [&](const Status& st) {
    std::lock_guard<std::mutex> lock(mu);
    if (!st.ok()) {
      if (error.ok()) error = st;
      return;
    }
    ++done;
    if (options.progress && error.ok()) {
      Status p = options.progress(done, n_chunks);
      if (!p.ok()) error = p;
    }
  };
  auto failed = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return !error.ok();
  };

  uint64_t session_bytes = SessionBytes(model, n_ctx);
  if (kl_base != nullptr) session_bytes += SessionBytes(*kl_base, n_ctx);
  const bool chunk_threads =
      pool->size() > 1 && n_chunks > 1 && session_bytes <= kMaxSessionBytesForChunkThreads;
  if (chunk_threads) {
    // One scorer per thread that may be working at a time, handed out from a
    // free list: ParallelFor ranges carry no thread identity.
    std::vector<std::unique_ptr<ChunkScorer>> free_scorers;
    free_scorers.reserve(static_cast<size_t>(pool->size()));
    for (int i = 0; i < pool->size(); ++i) {
      free_scorers.push_back(std::make_unique<ChunkScorer>(model, kl_base, n_ctx, nullptr));
    }
    pool->ParallelFor(n_chunks, [&](int64_t begin, int64_t end) {
      std::unique_ptr<ChunkScorer> scorer;
      {
        std::lock_guard<std::mutex> lock(mu);
        scorer = std::move(free_scorers.back());
        free_scorers.pop_back();
      }
      for (int64_t c = begin; c < end && !failed(); ++c) {
        const int32_t* text = tokens.data() + c * n_ctx;
        finish_chunk(
            scorer->Score(chunks[static_cast<size_t>(c)], text, &scores[static_cast<size_t>(c)]));
      }
      std::lock_guard<std::mutex> lock(mu);
      free_scorers.push_back(std::move(scorer));
    });
  } else {
    ChunkScorer scorer(model, kl_base, n_ctx, pool);
    for (int64_t c = 0; c < n_chunks && !failed(); ++c) {
      const int32_t* text = tokens.data() + c * n_ctx;
      finish_chunk(
          scorer.Score(chunks[static_cast<size_t>(c)], text, &scores[static_cast<size_t>(c)]));
    }
  }
  if (!error.ok()) return error;

  // Summed in text order, so the result does not depend on the threads.
  MeanAccumulator nll, base_nll, kl;
  int64_t same_top = 0;
  for (const ChunkScores& cs : scores) {
    for (double v : cs.nll) nll.Add(v);
    for (double v : cs.base_nll) base_nll.Add(v);
    for (double v : cs.kl) kl.Add(v);
    same_top += cs.same_top;
  }
  PerplexityResult r;
  r.tokens = n_tokens;
  r.n_ctx = n_ctx;
  r.chunks = n_chunks;
  r.scored = nll.count();
  r.nll = nll.mean();
  r.ppl = std::exp(r.nll);
  r.ppl_err = r.ppl * nll.StandardError();
  if (kl_base != nullptr) {
    r.has_kl = true;
    r.kl = kl.mean();
    r.kl_err = kl.StandardError();
    r.base_ppl = std::exp(base_nll.mean());
    r.same_top = r.scored == 0 ? 0 : static_cast<double>(same_top) / static_cast<double>(r.scored);
  }
  return r;
}

}  // namespace fqpack::runtime
