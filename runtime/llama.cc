#include "runtime/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "runtime/llama_kernels.h"

namespace fqpack::runtime {
namespace {

// Tokens per pass through the blocks. Longer inputs are cut into pieces of
// this size, which bounds scratch memory (llama.cpp's default n_ubatch).
// Causal attention makes the result independent of the cut.
constexpr int64_t kMaxUbatch = 512;

// y = (x * (1 / sqrt(mean(x^2) + eps))) * w, the sum of squares in double
// and the scale in float, in ggml's order of operations.
void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* y) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * w[i];
}

Status CheckTokens(std::span<const int32_t> tokens, int64_t n_vocab) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) {
      return Status::InvalidArgument("token id " + std::to_string(tokens[i]) + " at index " +
                                     std::to_string(i) + " is outside the vocabulary of " +
                                     std::to_string(n_vocab) + " tokens");
    }
  }
  return Status::OK();
}

// One layer's slice of a KV cache (KvCache's layout).
struct LayerKv {
  uint16_t* k;
  uint16_t* v;
  int64_t k_stride;
};

}  // namespace

// Activations of one pass through the blocks, and the code that runs them.
class ForwardScratch {
 public:
  ForwardScratch(const Model* model, ThreadPool* pool)
      : model_(model), pool_(pool), kernels_(&llama_kernels::Best()) {
    const LlamaHparams& hp = model->hparams();
    theta_scale_ = std::pow(hp.rope_freq_base, -2.0f / static_cast<float>(hp.n_rot));
    kq_scale_ = 1.0f / std::sqrt(static_cast<float>(hp.head_dim()));
  }

  // x[t] = embedding of tokens[t].
  void Embed(std::span<const int32_t> tokens, float* x) {
    GetRows(model_->token_embd().view, tokens.data(), static_cast<int64_t>(tokens.size()), x);
  }

  // Block `l` on the n tokens in x (positions pos0..pos0+n-1), in place. The
  // layer's cache must hold positions [0, pos0); [pos0, pos0+n) are written
  // here.
  void Block(int l, float* x, int64_t n, int64_t pos0, const LayerKv& kv);

  // Logits of rows [from, n) of the final residual stream x.
  void Output(const float* x, int64_t n, int64_t from, float* logits);

 private:
  void Reserve(int64_t n);
  void Rope(float* v, int64_t n, int64_t n_heads, int64_t stride);
  void Attention(int64_t n, int64_t pos0, const LayerKv& kv);
  void PerToken(int64_t n, const std::function<void(int64_t t)>& fn) {
    pool_->ParallelFor(
        n,
        [&](int64_t b, int64_t e) {
          for (int64_t t = b; t < e; ++t) fn(t);
        },
        16);
  }

  const Model* model_;
  ThreadPool* pool_;
  const llama_kernels::Kernels* kernels_;
  float theta_scale_;
  float kq_scale_;
  int64_t capacity_ = 0;
  std::vector<float> xn_, q_, k_, v_, att_, o_, gate_, up_;
  std::vector<float> rope_cos_, rope_sin_;  // [token][n_rot / 2]
  int64_t rope_pos0_ = -1;
  int64_t rope_n_ = 0;
};

void ForwardScratch::Reserve(int64_t n) {
  if (n <= capacity_) return;
  const LlamaHparams& hp = model_->hparams();
  auto size = [n](int64_t w) { return static_cast<size_t>(n * w); };
  xn_.resize(size(hp.n_embd));
  q_.resize(size(hp.n_embd));
  k_.resize(size(hp.n_embd_kv()));
  v_.resize(size(hp.n_embd_kv()));
  att_.resize(size(hp.n_embd));
  o_.resize(size(hp.n_embd));
  gate_.resize(size(hp.n_ff));
  up_.resize(size(hp.n_ff));
  rope_cos_.resize(size(hp.n_rot / 2));
  rope_sin_.resize(size(hp.n_rot / 2));
  rope_pos0_ = -1;
  capacity_ = n;
}

// ggml's rope cache: theta starts at the position and is multiplied by
// base^(-2/n_rot) once per pair, in float.
void ForwardScratch::Rope(float* v, int64_t n, int64_t n_heads, int64_t stride) {
  const LlamaHparams& hp = model_->hparams();
  const int64_t half = hp.n_rot / 2;
  const int64_t hd = hp.head_dim();
  PerToken(n, [&](int64_t t) {
    const float* c = rope_cos_.data() + t * half;
    const float* s = rope_sin_.data() + t * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* x = v + t * stride + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = x[2 * i];
        const float x1 = x[2 * i + 1];
        x[2 * i] = x0 * c[i] - x1 * s[i];
        x[2 * i + 1] = x0 * s[i] + x1 * c[i];
      }
    }
  });
}

void ForwardScratch::Attention(int64_t n, int64_t pos0, const LayerKv& kv) {
  const LlamaHparams& hp = model_->hparams();
  const int64_t hd = hp.head_dim();
  const int64_t group = hp.n_head / hp.n_head_kv;
  const int64_t len8 = (pos0 + n + 7) & ~int64_t{7};
  pool_->ParallelFor(hp.n_head * n, [&](int64_t begin, int64_t end) {
    // A per-thread buffer that only grows: a decode step would otherwise
    // allocate it for every layer.
    static thread_local std::vector<float> s;
    s.resize(std::max(s.size(), static_cast<size_t>(len8)));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t h = item / n;
      const int64_t t = item % n;
      const int64_t g = h / group;
      // Causal: token t sees positions 0..pos0+t.
      kernels_->attend(q_.data() + t * hp.n_embd + h * hd, kv.k + g * hd * kv.k_stride, kv.k_stride,
                       kv.v + g * hd, hp.n_embd_kv(), hd, pos0 + t + 1, kq_scale_, s.data(),
                       att_.data() + t * hp.n_embd + h * hd);
    }
  });
}

void ForwardScratch::Block(int l, float* x, int64_t n, int64_t pos0, const LayerKv& kv) {
  Reserve(n);
  const LlamaHparams& hp = model_->hparams();
  const Model::Layer& L = model_->layer(l);
  const int64_t e = hp.n_embd;
  const int64_t ekv = hp.n_embd_kv();

  if (rope_pos0_ != pos0 || rope_n_ != n) {
    const int64_t half = hp.n_rot / 2;
    for (int64_t t = 0; t < n; ++t) {
      float theta = static_cast<float>(pos0 + t);
      for (int64_t i = 0; i < half; ++i) {
        rope_cos_[static_cast<size_t>(t * half + i)] = std::cos(theta);
        rope_sin_[static_cast<size_t>(t * half + i)] = std::sin(theta);
        theta *= theta_scale_;
      }
    }
    rope_pos0_ = pos0;
    rope_n_ = n;
  }

  PerToken(n, [&](int64_t t) {
    RmsNorm(x + t * e, L.attn_norm->values.data(), e, hp.rms_eps, xn_.data() + t * e);
  });
  MatMul(L.wq->view, xn_.data(), n, q_.data(), pool_);
  MatMul(L.wk->view, xn_.data(), n, k_.data(), pool_);
  MatMul(L.wv->view, xn_.data(), n, v_.data(), pool_);
  Rope(q_.data(), n, hp.n_head, e);
  Rope(k_.data(), n, hp.n_head_kv, ekv);
  PerToken(n, [&](int64_t t) {
    kernels_->round_to_half(q_.data() + t * e, e);
    kernels_->to_half(v_.data() + t * ekv, kv.v + (pos0 + t) * ekv, ekv);
    // K goes in transposed: element i of the row to kv.k[i * k_stride + pos].
    static thread_local std::vector<uint16_t> row;
    row.resize(static_cast<size_t>(ekv));
    kernels_->to_half(k_.data() + t * ekv, row.data(), ekv);
    for (int64_t i = 0; i < ekv; ++i)
      kv.k[i * kv.k_stride + pos0 + t] = row[static_cast<size_t>(i)];
  });
  Attention(n, pos0, kv);
  MatMul(L.wo->view, att_.data(), n, o_.data(), pool_);
  PerToken(n, [&](int64_t t) {
    float* xt = x + t * e;
    const float* ot = o_.data() + t * e;
    for (int64_t i = 0; i < e; ++i) xt[i] = ot[i] + xt[i];
    RmsNorm(xt, L.ffn_norm->values.data(), e, hp.rms_eps, xn_.data() + t * e);
  });
  MatMul(L.ffn_gate->view, xn_.data(), n, gate_.data(), pool_);
  MatMul(L.ffn_up->view, xn_.data(), n, up_.data(), pool_);
  const int64_t ff = hp.n_ff;
  PerToken(n, [&](int64_t t) { kernels_->swiglu(gate_.data() + t * ff, up_.data() + t * ff, ff); });
  MatMul(L.ffn_down->view, gate_.data(), n, o_.data(), pool_);
  PerToken(n, [&](int64_t t) {
    float* xt = x + t * e;
    const float* ot = o_.data() + t * e;
    for (int64_t i = 0; i < e; ++i) xt[i] = ot[i] + xt[i];
  });
}

void ForwardScratch::Output(const float* x, int64_t n, int64_t from, float* logits) {
  if (from >= n) return;
  const int64_t m = n - from;
  Reserve(m);
  const int64_t e = model_->hparams().n_embd;
  const float* w = model_->output_norm().values.data();
  PerToken(m, [&](int64_t t) {
    RmsNorm(x + (from + t) * e, w, e, model_->hparams().rms_eps, xn_.data() + t * e);
  });
  MatMul(model_->output().view, xn_.data(), m, logits, pool_);
}

KvCache::KvCache(const LlamaHparams& hp, int64_t n_ctx)
    : n_ctx_(n_ctx),
      k_stride_((n_ctx + 7) & ~int64_t{7}),
      k_layer_(k_stride_ * hp.n_embd_kv()),
      v_layer_(n_ctx * hp.n_embd_kv()) {
  k_.resize(static_cast<size_t>(k_layer_ * hp.n_layer));
  v_.resize(static_cast<size_t>(v_layer_ * hp.n_layer));
}

uint64_t KvCacheBytes(const LlamaHparams& hp, int64_t n_ctx) {
  const uint64_t k_stride = static_cast<uint64_t>((n_ctx + 7) & ~int64_t{7});
  return sizeof(uint16_t) * (k_stride + static_cast<uint64_t>(n_ctx)) *
         static_cast<uint64_t>(hp.n_embd_kv()) * static_cast<uint64_t>(hp.n_layer);
}

Session::Session(const Model* model, int64_t n_ctx, ThreadPool* pool)
    : model_(model),
      cache_(model->hparams(), n_ctx),
      scratch_(std::make_unique<ForwardScratch>(model, pool)) {}

Session::~Session() = default;

Status Session::Eval(std::span<const int32_t> tokens, size_t logits_from,
                     std::vector<float>* logits) {
  const LlamaHparams& hp = model_->hparams();
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (cache_.n_past() + n > cache_.n_ctx()) {
    return Status::InvalidArgument("the context holds " + std::to_string(cache_.n_ctx()) +
                                   " tokens; " + std::to_string(cache_.n_past()) +
                                   " are used and " + std::to_string(n) + " more do not fit");
  }
  FQ_RETURN_IF_ERROR(CheckTokens(tokens, hp.n_vocab));
  const int64_t from = std::min<int64_t>(static_cast<int64_t>(logits_from), n);
  if (logits != nullptr) logits->assign(static_cast<size_t>((n - from) * hp.n_vocab), 0.0f);
  std::vector<float> x;
  for (int64_t b = 0; b < n; b += kMaxUbatch) {
    const int64_t m = std::min(kMaxUbatch, n - b);
    const int64_t pos0 = cache_.n_past() + b;
    x.resize(static_cast<size_t>(m * hp.n_embd));
    scratch_->Embed(tokens.subspan(static_cast<size_t>(b), static_cast<size_t>(m)), x.data());
    for (int64_t l = 0; l < hp.n_layer; ++l) {
      scratch_->Block(static_cast<int>(l), x.data(), m, pos0,
                      LayerKv{cache_.k(l), cache_.v(l), cache_.k_stride()});
    }
    if (logits != nullptr && from < b + m) {
      const int64_t local_from = std::max<int64_t>(from - b, 0);
      scratch_->Output(x.data(), m, local_from,
                       logits->data() + (b + local_from - from) * hp.n_vocab);
    }
  }
  cache_.set_n_past(cache_.n_past() + n);
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  return Status::OK();
}

uint64_t LayerStates::bytes() const {
  uint64_t n = tokens_.size() * sizeof(int32_t);
  for (const auto& s : inputs_) n += s->size() * sizeof(float);
  return n;
}

BatchEvaluator::BatchEvaluator(const Model* model, ThreadPool* pool)
    : model_(model), scratch_(std::make_unique<ForwardScratch>(model, pool)) {}

BatchEvaluator::~BatchEvaluator() = default;

Result<LayerStates> BatchEvaluator::Run(std::span<const int32_t> tokens) {
  if (tokens.empty()) return Status::InvalidArgument("an empty batch has no states");
  FQ_RETURN_IF_ERROR(CheckTokens(tokens, model_->hparams().n_vocab));
  LayerStates root;
  root.tokens_.assign(tokens.begin(), tokens.end());
  auto x = std::make_shared<std::vector<float>>(tokens.size() *
                                                static_cast<size_t>(model_->hparams().n_embd));
  scratch_->Embed(tokens, x->data());
  root.inputs_.push_back(std::move(x));
  return RunFrom(root, 0);
}

Result<LayerStates> BatchEvaluator::RunFrom(const LayerStates& parent, int first_layer) {
  const LlamaHparams& hp = model_->hparams();
  if (first_layer < 0 || first_layer > hp.n_layer ||
      static_cast<size_t>(first_layer) >= parent.inputs_.size()) {
    return Status::InvalidArgument("RunFrom: layer " + std::to_string(first_layer) +
                                   " has no saved input");
  }
  LayerStates out;
  out.tokens_ = parent.tokens_;
  out.inputs_.assign(parent.inputs_.begin(), parent.inputs_.begin() + first_layer + 1);
  const int64_t n = parent.n_tokens();
  // One layer's cache, reused by every layer: a layer only attends to its own K and V.
  const int64_t k_stride = (n + 7) & ~int64_t{7};
  std::vector<uint16_t> k_cache(static_cast<size_t>(k_stride * hp.n_embd_kv()));
  std::vector<uint16_t> v_cache(static_cast<size_t>(n * hp.n_embd_kv()));
  const LayerKv kv{k_cache.data(), v_cache.data(), k_stride};
  for (int64_t l = first_layer; l < hp.n_layer; ++l) {
    auto x = std::make_shared<std::vector<float>>(*out.inputs_.back());
    for (int64_t b = 0; b < n; b += kMaxUbatch) {
      const int64_t m = std::min(kMaxUbatch, n - b);
      scratch_->Block(static_cast<int>(l), x->data() + b * hp.n_embd, m, b, kv);
    }
    out.inputs_.push_back(std::move(x));
  }
  return out;
}

Status BatchEvaluator::Logits(const LayerStates& states, size_t from, std::vector<float>* logits) {
  const LlamaHparams& hp = model_->hparams();
  if (states.n_layers() != hp.n_layer) {
    return Status::InvalidArgument("Logits: the states do not reach the last layer");
  }
  const int64_t n = states.n_tokens();
  const int64_t f = std::min<int64_t>(static_cast<int64_t>(from), n);
  logits->assign(static_cast<size_t>((n - f) * hp.n_vocab), 0.0f);
  for (int64_t b = f; b < n; b += kMaxUbatch) {
    const int64_t m = std::min(kMaxUbatch, n - b);
    scratch_->Output(states.input(states.n_layers()) + b * hp.n_embd, m, 0,
                     logits->data() + (b - f) * hp.n_vocab);
  }
  return Status::OK();
}

}  // namespace fqpack::runtime
