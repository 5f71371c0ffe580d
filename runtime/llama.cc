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
// Every option of the architecture is resolved here once (runtime/arch.h);
// Block and Output only test flags.
class ForwardScratch {
 public:
  ForwardScratch(const Model* model, ThreadPool* pool)
      : model_(model), pool_(pool), kernels_(&llama_kernels::Best()) {
    const Hparams& hp = model->hparams();
    const ArchInfo& a = *hp.arch;
    rope_[0].theta_scale = std::pow(hp.rope_freq_base, -2.0f / static_cast<float>(hp.n_rot));
    rope_[0].freq_scale = hp.rope_freq_scale;
    // llama.cpp's windowed layers use their own base and no scaling.
    rope_[1].theta_scale = std::pow(hp.rope_freq_base_swa, -2.0f / static_cast<float>(hp.n_rot));
    rope_[1].freq_scale = 1.0f;
    for (int64_t l = 0; l < hp.n_layer; ++l) any_swa_ = any_swa_ || hp.is_swa(l);
    neox_ = a.rope == RopeType::kNeox;
    if (a.q_prescale) {
      q_scale_ = hp.attn_scale;
      kq_scale_ = 1.0f;
    } else {
      kq_scale_ = hp.attn_scale;
    }
  }

  // x[t] = embedding of tokens[t] (times the architecture's scale).
  void Embed(std::span<const int32_t> tokens, float* x) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    GetRows(model_->token_embd().view, tokens.data(), n, x);
    const float scale = model_->hparams().embd_scale;
    if (scale != 1.0f) {
      const int64_t total = n * model_->hparams().n_embd;
      for (int64_t i = 0; i < total; ++i) x[i] *= scale;
    }
  }

  // Block `l` on the n tokens in x (positions pos0..pos0+n-1), in place. The
  // layer's cache must hold positions [0, pos0); [pos0, pos0+n) are written
  // here.
  void Block(int l, float* x, int64_t n, int64_t pos0, const LayerKv& kv);

  // Logits of rows [from, n) of the final residual stream x.
  void Output(const float* x, int64_t n, int64_t from, float* logits);

 private:
  // cos and sin of every rotated pair for the tokens of one pass, per rope
  // variant (0: global layers, 1: sliding-window layers).
  struct RopeCache {
    float theta_scale = 1;
    float freq_scale = 1;
    std::vector<float> cos, sin;  // [token][n_rot / 2]
    int64_t pos0 = -1;
    int64_t n = 0;
  };

  void Reserve(int64_t n);
  void FillRope(RopeCache* r, int64_t n, int64_t pos0);
  void Rope(const RopeCache& r, float* v, int64_t n, int64_t n_heads, int64_t stride);
  void Attention(int64_t n, int64_t pos0, int64_t window, const LayerKv& kv);
  void AddBias(float* y, int64_t n, int64_t width, const SlotWeights* b) {
    if (b == nullptr) return;
    PerToken(n, [&](int64_t t) {
      float* yt = y + t * width;
      for (int64_t i = 0; i < width; ++i) yt[i] = yt[i] + b->values[static_cast<size_t>(i)];
    });
  }
  // RMSNorm of every head_dim-wide group of y (per-head q/k norms).
  void HeadNorm(float* y, int64_t n, int64_t n_heads, const SlotWeights* w) {
    const Hparams& hp = model_->hparams();
    const int64_t hd = hp.head_dim();
    PerToken(n, [&](int64_t t) {
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = y + (t * n_heads + h) * hd;
        RmsNorm(v, w->values.data(), hd, hp.rms_eps, v);
      }
    });
  }
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
  RopeCache rope_[2];
  bool any_swa_ = false;
  bool neox_ = false;
  float q_scale_ = 1.0f;  // applied to Q before attention (1: not applied)
  float kq_scale_;        // applied to the scores
  int64_t capacity_ = 0;
  std::vector<float> xn_, qkv_, q_, k_, v_, att_, o_, gate_, up_;
};

void ForwardScratch::Reserve(int64_t n) {
  if (n <= capacity_) return;
  const Hparams& hp = model_->hparams();
  const ArchInfo& a = *hp.arch;
  auto size = [n](int64_t w) { return static_cast<size_t>(n * w); };
  xn_.resize(size(hp.n_embd));
  if (a.fused_qkv) qkv_.resize(size(hp.n_embd_q() + 2 * hp.n_embd_kv()));
  q_.resize(size(hp.n_embd_q()));
  k_.resize(size(hp.n_embd_kv()));
  v_.resize(size(hp.n_embd_kv()));
  att_.resize(size(hp.n_embd_q()));
  o_.resize(size(hp.n_embd));
  gate_.resize(size(hp.n_ff));
  up_.resize(size(a.fused_gate_up ? 2 * hp.n_ff : hp.n_ff));
  for (int r = 0; r < (any_swa_ ? 2 : 1); ++r) {
    rope_[r].cos.resize(size(hp.n_rot / 2));
    rope_[r].sin.resize(size(hp.n_rot / 2));
    rope_[r].pos0 = -1;
  }
  capacity_ = n;
}

// ggml's rope cache: theta starts at the position and is multiplied by
// base^(-2/n_rot) once per pair, in float; the angle of pair i is
// freq_scale * (theta / freq_factor[i]) (rope_yarn without extrapolation
// mixing; freq_factor is Llama 3's rope_freqs, else 1).
void ForwardScratch::FillRope(RopeCache* r, int64_t n, int64_t pos0) {
  if (r->pos0 == pos0 && r->n == n) return;
  const int64_t half = model_->hparams().n_rot / 2;
  const SlotWeights* ff = model_->rope_freqs();
  for (int64_t t = 0; t < n; ++t) {
    float theta = static_cast<float>(pos0 + t);
    for (int64_t i = 0; i < half; ++i) {
      float angle = theta;
      if (ff != nullptr) angle = angle / ff->values[static_cast<size_t>(i)];
      if (r->freq_scale != 1.0f) angle = r->freq_scale * angle;
      r->cos[static_cast<size_t>(t * half + i)] = std::cos(angle);
      r->sin[static_cast<size_t>(t * half + i)] = std::sin(angle);
      theta *= r->theta_scale;
    }
  }
  r->pos0 = pos0;
  r->n = n;
}

// NORM rotates the pairs (2i, 2i+1), NEOX the pairs (i, i + n_rot/2), of
// the first n_rot dimensions of each head.
void ForwardScratch::Rope(const RopeCache& r, float* v, int64_t n, int64_t n_heads,
                          int64_t stride) {
  const Hparams& hp = model_->hparams();
  const int64_t half = hp.n_rot / 2;
  const int64_t hd = hp.head_dim();
  const bool neox = neox_;
  PerToken(n, [&](int64_t t) {
    const float* c = r.cos.data() + t * half;
    const float* s = r.sin.data() + t * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* x = v + t * stride + h * hd;
      if (neox) {
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = x[i];
          const float x1 = x[i + half];
          x[i] = x0 * c[i] - x1 * s[i];
          x[i + half] = x0 * s[i] + x1 * c[i];
        }
      } else {
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = x[2 * i];
          const float x1 = x[2 * i + 1];
          x[2 * i] = x0 * c[i] - x1 * s[i];
          x[2 * i + 1] = x0 * s[i] + x1 * c[i];
        }
      }
    }
  });
}

void ForwardScratch::Attention(int64_t n, int64_t pos0, int64_t window, const LayerKv& kv) {
  const Hparams& hp = model_->hparams();
  const int64_t hd = hp.head_dim();
  const int64_t qd = hp.n_embd_q();
  const int64_t group = hp.n_head / hp.n_head_kv;
  const int64_t len8 = (pos0 + n + 7) & ~int64_t{7};
  const float softcap = hp.attn_softcap;
  // One item is the query heads of one KV head for one token (they read the
  // same K and V); when there are fewer items than threads (decode with few
  // KV heads), the heads of a KV head are split into smaller items.
  int64_t heads = group;
  const int64_t threads = pool_->size();
  while (heads > 1 && n * hp.n_head_kv * ((group + heads - 1) / heads) < threads) {
    heads = (heads + 1) / 2;
  }
  const int64_t per_kv = (group + heads - 1) / heads;
  pool_->ParallelFor(n * hp.n_head_kv * per_kv, [&](int64_t begin, int64_t end) {
    // A per-thread buffer that only grows: a decode step would otherwise
    // allocate it for every layer.
    static thread_local std::vector<float> s;
    s.resize(std::max(s.size(), static_cast<size_t>(heads * len8)));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / (hp.n_head_kv * per_kv);
      const int64_t g = item / per_kv % hp.n_head_kv;
      const int64_t h = g * group + item % per_kv * heads;
      const int64_t nq = std::min(heads, (g + 1) * group - h);
      // Causal: token t sees positions 0..pos0+t, the last `window` of
      // them in a sliding-window layer (llama.cpp masks p1 - p0 >= n_swa).
      const int64_t len = pos0 + t + 1;
      const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0;
      kernels_->attend_group(q_.data() + t * qd + h * hd, nq, kv.k + g * hd * kv.k_stride,
                             kv.k_stride, kv.v + g * hd, hp.n_embd_kv(), hd, first, len, kq_scale_,
                             softcap, s.data(), att_.data() + t * qd + h * hd);
    }
  });
}

void ForwardScratch::Block(int l, float* x, int64_t n, int64_t pos0, const LayerKv& kv) {
  Reserve(n);
  const Hparams& hp = model_->hparams();
  const ArchInfo& a = *hp.arch;
  const Model::Layer& L = model_->layer(l);
  const int64_t e = hp.n_embd;
  const int64_t qd = hp.n_embd_q();
  const int64_t ekv = hp.n_embd_kv();
  const bool swa = hp.is_swa(l);
  RopeCache& rope = rope_[swa ? 1 : 0];
  FillRope(&rope, n, pos0);

  PerToken(n, [&](int64_t t) {
    RmsNorm(x + t * e, L.attn_norm->values.data(), e, hp.rms_eps, xn_.data() + t * e);
  });
  if (L.wqkv != nullptr) {
    // One product for Q, K and V, whose rows are [Q; K; V].
    const int64_t w = qd + 2 * ekv;
    MatMul(L.wqkv->view, xn_.data(), n, qkv_.data(), pool_);
    PerToken(n, [&](int64_t t) {
      const float* src = qkv_.data() + t * w;
      std::copy(src, src + qd, q_.data() + t * qd);
      std::copy(src + qd, src + qd + ekv, k_.data() + t * ekv);
      std::copy(src + qd + ekv, src + w, v_.data() + t * ekv);
    });
  } else {
    const WeightView w[] = {L.wq->view, L.wk->view, L.wv->view};
    float* const y[] = {q_.data(), k_.data(), v_.data()};
    MatMulSameInput(w, xn_.data(), n, y, pool_);
  }
  AddBias(q_.data(), n, qd, L.bq);
  AddBias(k_.data(), n, ekv, L.bk);
  AddBias(v_.data(), n, ekv, L.bv);
  if (L.q_norm != nullptr) HeadNorm(q_.data(), n, hp.n_head, L.q_norm);
  if (L.k_norm != nullptr) HeadNorm(k_.data(), n, hp.n_head_kv, L.k_norm);
  Rope(rope, q_.data(), n, hp.n_head, qd);
  Rope(rope, k_.data(), n, hp.n_head_kv, ekv);
  const float q_scale = q_scale_;
  PerToken(n, [&](int64_t t) {
    float* qt = q_.data() + t * qd;
    if (q_scale != 1.0f) {
      for (int64_t i = 0; i < qd; ++i) qt[i] *= q_scale;
    }
    kernels_->round_to_half(qt, qd);
    kernels_->to_half(v_.data() + t * ekv, kv.v + (pos0 + t) * ekv, ekv);
    // K goes in transposed: element i of the row to kv.k[i * k_stride + pos].
    static thread_local std::vector<uint16_t> row;
    row.resize(static_cast<size_t>(ekv));
    kernels_->to_half(k_.data() + t * ekv, row.data(), ekv);
    for (int64_t i = 0; i < ekv; ++i)
      kv.k[i * kv.k_stride + pos0 + t] = row[static_cast<size_t>(i)];
  });
  Attention(n, pos0, swa ? hp.n_swa : 0, kv);
  MatMul(L.wo->view, att_.data(), n, o_.data(), pool_);
  const SlotWeights* post_attn = L.post_attn_norm;
  PerToken(n, [&](int64_t t) {
    float* xt = x + t * e;
    float* ot = o_.data() + t * e;
    if (post_attn != nullptr) RmsNorm(ot, post_attn->values.data(), e, hp.rms_eps, ot);
    for (int64_t i = 0; i < e; ++i) xt[i] = ot[i] + xt[i];
    RmsNorm(xt, L.ffn_norm->values.data(), e, hp.rms_eps, xn_.data() + t * e);
  });
  const int64_t ff = hp.n_ff;
  if (L.ffn_gate == nullptr) {
    // ffn_up holds [gate; up]: the first n_ff outputs are the gate.
    MatMul(L.ffn_up->view, xn_.data(), n, up_.data(), pool_);
    PerToken(n, [&](int64_t t) {
      const float* gu = up_.data() + t * 2 * ff;
      float* g = gate_.data() + t * ff;
      std::copy(gu, gu + ff, g);
      if (a.act == Activation::kGelu) {
        llama_kernels::GeGlu(g, gu + ff, ff);
      } else {
        kernels_->swiglu(g, gu + ff, ff);
      }
    });
  } else {
    const WeightView w[] = {L.ffn_gate->view, L.ffn_up->view};
    float* const y[] = {gate_.data(), up_.data()};
    MatMulSameInput(w, xn_.data(), n, y, pool_);
    PerToken(n, [&](int64_t t) {
      if (a.act == Activation::kGelu) {
        llama_kernels::GeGlu(gate_.data() + t * ff, up_.data() + t * ff, ff);
      } else {
        kernels_->swiglu(gate_.data() + t * ff, up_.data() + t * ff, ff);
      }
    });
  }
  MatMul(L.ffn_down->view, gate_.data(), n, o_.data(), pool_);
  const SlotWeights* post_ffn = L.post_ffn_norm;
  PerToken(n, [&](int64_t t) {
    float* xt = x + t * e;
    float* ot = o_.data() + t * e;
    if (post_ffn != nullptr) RmsNorm(ot, post_ffn->values.data(), e, hp.rms_eps, ot);
    for (int64_t i = 0; i < e; ++i) xt[i] = ot[i] + xt[i];
  });
}

void ForwardScratch::Output(const float* x, int64_t n, int64_t from, float* logits) {
  if (from >= n) return;
  const int64_t m = n - from;
  Reserve(m);
  const Hparams& hp = model_->hparams();
  const int64_t e = hp.n_embd;
  const float* w = model_->output_norm().values.data();
  PerToken(m,
           [&](int64_t t) { RmsNorm(x + (from + t) * e, w, e, hp.rms_eps, xn_.data() + t * e); });
  MatMul(model_->output().view, xn_.data(), m, logits, pool_);
  const float cap = hp.final_softcap;
  if (cap > 0) {
    // ggml's order: scale by 1/cap, tanh, scale by cap.
    const int64_t v = hp.n_vocab;
    PerToken(m, [&](int64_t t) {
      float* lt = logits + t * v;
      for (int64_t i = 0; i < v; ++i) lt[i] = std::tanh(lt[i] * (1.0f / cap)) * cap;
    });
  }
}

KvCache::KvCache(const Hparams& hp, int64_t n_ctx)
    : n_ctx_(n_ctx),
      k_stride_((n_ctx + 7) & ~int64_t{7}),
      k_layer_(k_stride_ * hp.n_embd_kv()),
      v_layer_(n_ctx * hp.n_embd_kv()) {
  k_.resize(static_cast<size_t>(k_layer_ * hp.n_layer));
  v_.resize(static_cast<size_t>(v_layer_ * hp.n_layer));
}

uint64_t KvCacheBytes(const Hparams& hp, int64_t n_ctx) {
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
  const Hparams& hp = model_->hparams();
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
  const Hparams& hp = model_->hparams();
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
  const Hparams& hp = model_->hparams();
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
