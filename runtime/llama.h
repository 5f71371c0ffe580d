// The forward pass of every architecture in runtime/arch.h: token embedding
// (scaled where the architecture says), then per block RMSNorm -> Q/K/V
// projections (fused or not, with or without biases) -> per-head q/k norms
// where present -> RoPE -> causal grouped-query attention over a KV cache,
// windowed in sliding-window layers -> output projection -> optional
// post-attention norm -> residual, RMSNorm -> gated feed-forward (SwiGLU or
// GEGLU, gate and up fused or not) -> optional post-FFN norm -> residual; a
// final RMSNorm and the output projection (optionally soft-capped) give the
// logits. The options are taken from the architecture's row once per model,
// not per token.
//
// Numerics follow llama.cpp's CPU backend so that perplexities and greedy
// generations agree with it:
// - RoPE is ggml's: "normal" mode (adjacent pairs, arch llama) or NEOX mode
//   (pairs i and i + n_rot/2), each rotating by pos * base^(-2i/n_rot),
//   the angle built by repeated float multiplication as ggml builds it and
//   divided by Llama 3's per-pair rope_freqs when the model has them.
// - The KV cache holds F16 (llama.cpp's default cache type): K after RoPE and
//   V are rounded to F16 when stored. Q is rounded to F16 too, because ggml
//   converts the activation side of an F16 matmul (Q against the K cache) to
//   F16. Scores accumulate in F32; softmax sums in double.
// - Softmax probabilities stay F32 for the product with V (what llama.cpp's
//   batched path computes; its 1-token path rounds them to F16, a difference
//   far below anything measurable, and keeping one rule makes the decode
//   path and the batched path agree with each other).
// - RMSNorm sums squares in double, then y = (x * (1/sqrt(mean + eps))) * w.
// - GELU is ggml's CPU gelu: the tanh approximation looked up in its F16
//   table (llama_kernels::GeGlu).
//
// Two ways to run the graph:
// - Session: a KV cache plus scratch; Eval appends tokens (a whole prompt or
//   chunk at once, or one token while decoding) and returns logits.
// - BatchEvaluator: one batch of tokens from position 0 with no lasting cache,
//   keeping the input of every layer (LayerStates), so that after SetSlot on
//   layer l's weights only layers l.. need recomputing (RunFrom). The
//   FlexQuant search reuses a parent EQM's activations that way.
//
// Thread-safety: a Session or BatchEvaluator belongs to one thread at a time;
// it parallelises internally on the ThreadPool it was given. Several may
// share one const Model. LayerStates are immutable values, safe to share.
#ifndef FQPACK_RUNTIME_LLAMA_H_
#define FQPACK_RUNTIME_LLAMA_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "runtime/model.h"
#include "schema/status.h"
#include "schema/thread_pool.h"

namespace fqpack::runtime {

// K and V of every layer for positions [0, n_ctx), stored as F16 bits. Per
// layer, K is transposed per KV head, [n_head_kv][head_dim][k_stride] with
// k_stride = n_ctx rounded up to 8, so attention reads each dimension along
// positions in whole vectors; V is [n_ctx][n_embd_kv].
class KvCache {
 public:
  KvCache(const Hparams& hp, int64_t n_ctx);

  int64_t n_ctx() const { return n_ctx_; }
  // Positions filled so far; the next token goes to position n_past().
  int64_t n_past() const { return n_past_; }
  void set_n_past(int64_t n) { n_past_ = n; }
  void Clear() { n_past_ = 0; }
  uint64_t bytes() const { return (k_.size() + v_.size()) * sizeof(uint16_t); }

  int64_t k_stride() const { return k_stride_; }
  uint16_t* k(int64_t layer) { return k_.data() + static_cast<size_t>(layer * k_layer_); }
  uint16_t* v(int64_t layer) { return v_.data() + static_cast<size_t>(layer * v_layer_); }

 private:
  int64_t n_ctx_;
  int64_t k_stride_;
  int64_t k_layer_;
  int64_t v_layer_;
  int64_t n_past_ = 0;
  std::vector<uint16_t> k_;
  std::vector<uint16_t> v_;
};

// Bytes the KV cache of `n_ctx` positions takes (for memory budgets).
uint64_t KvCacheBytes(const Hparams& hp, int64_t n_ctx);

class ForwardScratch;

class Session {
 public:
  // `model` and `pool` must outlive the session; 1 <= n_ctx.
  Session(const Model* model, int64_t n_ctx, ThreadPool* pool);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const Model& model() const { return *model_; }
  int64_t n_ctx() const { return cache_.n_ctx(); }
  int64_t n_past() const { return cache_.n_past(); }
  const KvCache& cache() const { return cache_; }
  // The token at each position 0 .. n_past() - 1: what a context shift
  // (runtime/generate.h) evaluates again.
  std::span<const int32_t> tokens() const { return tokens_; }
  // Forgets every position (the next Eval starts at position 0).
  void Reset() {
    cache_.Clear();
    tokens_.clear();
  }

  // Runs `tokens` at positions n_past() .. n_past() + size - 1 and appends
  // them to the cache. The logits of tokens[logits_from..] are written to
  // *logits, n_vocab floats per token (logits_from >= size asks for none, and
  // then `logits` may be null). InvalidArgument when the tokens do not fit
  // in the context or an id is outside the vocabulary; nothing is appended
  // then.
  Status Eval(std::span<const int32_t> tokens, size_t logits_from, std::vector<float>* logits);

  // Eval of one token, returning its logits.
  Status Decode(int32_t token, std::vector<float>* logits) {
    return Eval(std::span<const int32_t>(&token, 1), 0, logits);
  }

 private:
  const Model* model_;
  KvCache cache_;
  std::vector<int32_t> tokens_;  // tokens_.size() == cache_.n_past()
  std::unique_ptr<ForwardScratch> scratch_;
};

// The residual stream of a batch of tokens (positions 0..n-1) at every layer
// boundary: input(l) is what block l reads, input(n_layer) what the final
// norm reads; each n_tokens x n_embd floats. States made by RunFrom share the
// unchanged prefix with their parent, so they are cheap to keep side by side.
class LayerStates {
 public:
  LayerStates() = default;
  std::span<const int32_t> tokens() const { return tokens_; }
  int64_t n_tokens() const { return static_cast<int64_t>(tokens_.size()); }
  int n_layers() const { return static_cast<int>(inputs_.size()) - 1; }
  const float* input(int layer) const { return inputs_[static_cast<size_t>(layer)]->data(); }
  // Bytes held, counting shared buffers in full.
  uint64_t bytes() const;

 private:
  friend class BatchEvaluator;
  std::vector<int32_t> tokens_;
  std::vector<std::shared_ptr<const std::vector<float>>> inputs_;
};

class BatchEvaluator {
 public:
  // `model` and `pool` must outlive the evaluator.
  BatchEvaluator(const Model* model, ThreadPool* pool);
  ~BatchEvaluator();
  BatchEvaluator(const BatchEvaluator&) = delete;
  BatchEvaluator& operator=(const BatchEvaluator&) = delete;

  // Runs every layer on `tokens` (at positions 0..n-1). InvalidArgument for
  // an empty batch or an id outside the vocabulary.
  Result<LayerStates> Run(std::span<const int32_t> tokens);

  // Recomputes layers first_layer.. with the model's current weights,
  // starting from parent.input(first_layer); inputs 0..first_layer are
  // shared with `parent`. first_layer == n_layer only re-reads the final
  // state (for a changed output norm or output matrix, use Logits directly).
  Result<LayerStates> RunFrom(const LayerStates& parent, int first_layer);

  // Logits of tokens[from..] of `states` (final norm and output matrix with
  // the model's current weights), n_vocab floats per token.
  Status Logits(const LayerStates& states, size_t from, std::vector<float>* logits);

 private:
  const Model* model_;
  std::unique_ptr<ForwardScratch> scratch_;
};

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_LLAMA_H_
