#include "runtime/arch.h"

#include <cmath>

namespace fqpack::runtime {
namespace {

// Upper bounds on hyper-parameters. They are far above any real model and
// only keep crafted metadata from asking for absurd allocations (the KV
// cache is sized from them before any tensor is read).
constexpr uint64_t kMaxDim = 1u << 20;
constexpr uint64_t kMaxLayers = 1u << 12;
constexpr uint64_t kMaxContext = 1u << 24;

// Facts from llama.cpp (src/llama-arch.cpp tensor lists, src/llama-model.cpp
// hyper-parameter loading and graph builders):
// - llama: NORM rope, SwiGLU; Llama 3 adds rope_freqs.weight.
// - qwen2: NEOX rope, q/k/v biases.
// - qwen3: NEOX rope, per-head q/k RMSNorm before rope.
// - gemma3: NEOX rope, q/k norms, post-attention and post-FFN norms, GEGLU,
//   embedding times sqrt(n_embd), Q pre-scaled, 5 windowed layers then one
//   global (set_swa_pattern(6)), windowed layers' rope base 10000.
// - phi3: NEOX rope, fused QKV and gate/up, Q pre-scaled by 1/sqrt(head);
//   llama.cpp reads its sliding_window and then disables it (PR 13676).
constexpr ArchInfo kArchitectures[] = {
    {.name = "llama",
     .rope = RopeType::kNorm,
     .act = Activation::kSilu,
     .rope_freqs = true,
     .swa_rope_base = 10000.0f},
    {.name = "qwen2",
     .rope = RopeType::kNeox,
     .act = Activation::kSilu,
     .qkv_bias = true,
     .swa_rope_base = 10000.0f},
    {.name = "qwen3",
     .rope = RopeType::kNeox,
     .act = Activation::kSilu,
     .qk_norm = true,
     .swa_rope_base = 10000.0f},
    {.name = "gemma3",
     .rope = RopeType::kNeox,
     .act = Activation::kGelu,
     .qk_norm = true,
     .post_norms = true,
     .embd_scale = true,
     .q_prescale = true,
     .swa_pattern = 6,
     .swa_rope_base = 10000.0f,
     .softcaps = true},
    {.name = "phi3",
     .rope = RopeType::kNeox,
     .act = Activation::kSilu,
     .fused_qkv = true,
     .fused_gate_up = true,
     .q_prescale = true,
     .swa_ignored = true,
     .swa_rope_base = 10000.0f},
};

std::string Key(const Hparams& hp, std::string_view suffix) {
  return std::string(hp.arch->name) + "." + std::string(suffix);
}

Result<int64_t> GetDim(const gguf::Metadata& md, const std::string& key, uint64_t max,
                       std::string_view what) {
  Result<uint64_t> v = md.GetUint(key);
  if (!v.ok()) return Status::InvalidArgument(std::string(what) + ": " + v.status().message());
  if (*v == 0 || *v > max) {
    return Status::InvalidArgument(std::string(what) + ": " + key + " = " + std::to_string(*v) +
                                   " is out of range [1, " + std::to_string(max) + "]");
  }
  return static_cast<int64_t>(*v);
}

// An optional float key that must be finite and >= 0 (or > 0 if `positive`).
Status GetOptionalFloat(const gguf::Metadata& md, const std::string& key, bool positive,
                        std::string_view what, float* out) {
  if (!md.Has(key)) return Status::OK();
  Result<double> v = md.GetFloat(key);
  if (!v.ok()) return Status::InvalidArgument(std::string(what) + ": " + v.status().message());
  if (!std::isfinite(*v) || *v < 0 || (positive && *v == 0)) {
    return Status::InvalidArgument(std::string(what) + ": " + key + " must be " +
                                   (positive ? "positive" : "non-negative"));
  }
  *out = static_cast<float>(*v);
  return Status::OK();
}

std::array<uint64_t, 4> Shape(int64_t ne0, int64_t ne1 = 1) {
  return {static_cast<uint64_t>(ne0), static_cast<uint64_t>(ne1), 1, 1};
}

}  // namespace

std::span<const ArchInfo> Architectures() { return kArchitectures; }

const ArchInfo* FindArch(std::string_view name) {
  for (const ArchInfo& a : kArchitectures) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

Result<Hparams> ReadHparams(const gguf::Metadata& md, std::string_view what) {
  Result<std::string> arch = md.GetString("general.architecture");
  if (!arch.ok())
    return Status::InvalidArgument(std::string(what) + ": " + arch.status().message());
  Hparams hp;
  hp.arch = FindArch(*arch);
  if (hp.arch == nullptr) {
    std::string names;
    for (const ArchInfo& a : kArchitectures) {
      if (!names.empty()) names += ", ";
      names += a.name;
    }
    return Status::NotSupported(std::string(what) + ": architecture '" + *arch +
                                "' is not supported (the runtime runs " + names + ")");
  }
  const gguf::Value* tokens = md.Find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != gguf::ValueType::kArray || tokens->size() == 0) {
    return Status::InvalidArgument(std::string(what) +
                                   ": metadata has no tokenizer.ggml.tokens array, so the "
                                   "vocabulary size is unknown");
  }
  hp.n_vocab = static_cast<int64_t>(tokens->size());
  FQ_ASSIGN_OR_RETURN(hp.n_embd, GetDim(md, Key(hp, "embedding_length"), kMaxDim, what));
  FQ_ASSIGN_OR_RETURN(hp.n_layer, GetDim(md, Key(hp, "block_count"), kMaxLayers, what));
  FQ_ASSIGN_OR_RETURN(hp.n_ff, GetDim(md, Key(hp, "feed_forward_length"), kMaxDim, what));
  FQ_ASSIGN_OR_RETURN(hp.n_head, GetDim(md, Key(hp, "attention.head_count"), kMaxDim, what));
  FQ_ASSIGN_OR_RETURN(hp.n_ctx_train, GetDim(md, Key(hp, "context_length"), kMaxContext, what));
  // llama.cpp: the head size defaults to n_embd / n_head, and without
  // key_length the heads must divide the embedding.
  if (md.Has(Key(hp, "attention.key_length"))) {
    FQ_ASSIGN_OR_RETURN(hp.n_embd_head, GetDim(md, Key(hp, "attention.key_length"), kMaxDim, what));
  } else {
    if (hp.n_embd % hp.n_head != 0) {
      return Status::InvalidArgument(
          std::string(what) + ": attention.head_count " + std::to_string(hp.n_head) +
          " does not divide embedding_length " + std::to_string(hp.n_embd));
    }
    hp.n_embd_head = hp.n_embd / hp.n_head;
  }
  if (md.Has(Key(hp, "attention.value_length"))) {
    FQ_ASSIGN_OR_RETURN(int64_t v, GetDim(md, Key(hp, "attention.value_length"), kMaxDim, what));
    if (v != hp.n_embd_head) {
      return Status::NotSupported(std::string(what) + ": attention.value_length " +
                                  std::to_string(v) + " differs from key_length " +
                                  std::to_string(hp.n_embd_head) +
                                  "; the runtime needs them equal");
    }
  }
  if (static_cast<uint64_t>(hp.n_embd_head) * static_cast<uint64_t>(hp.n_head) > kMaxDim) {
    return Status::InvalidArgument(std::string(what) + ": head_count x key_length is too large");
  }
  hp.n_head_kv = hp.n_head;
  if (md.Has(Key(hp, "attention.head_count_kv"))) {
    FQ_ASSIGN_OR_RETURN(hp.n_head_kv,
                        GetDim(md, Key(hp, "attention.head_count_kv"), kMaxDim, what));
  }
  if (hp.n_head % hp.n_head_kv != 0) {
    return Status::InvalidArgument(std::string(what) + ": attention.head_count_kv " +
                                   std::to_string(hp.n_head_kv) + " does not divide head_count " +
                                   std::to_string(hp.n_head));
  }
  hp.n_rot = hp.head_dim();
  if (md.Has(Key(hp, "rope.dimension_count"))) {
    FQ_ASSIGN_OR_RETURN(hp.n_rot, GetDim(md, Key(hp, "rope.dimension_count"), kMaxDim, what));
  }
  if (hp.n_rot > hp.head_dim() || hp.n_rot % 2 != 0) {
    return Status::InvalidArgument(
        std::string(what) + ": rope.dimension_count " + std::to_string(hp.n_rot) +
        " must be even and at most the head size " + std::to_string(hp.head_dim()));
  }
  FQ_RETURN_IF_ERROR(
      GetOptionalFloat(md, Key(hp, "rope.freq_base"), true, what, &hp.rope_freq_base));
  // Rope scaling as llama.cpp reads it: a factor (rope.scaling.factor, or
  // the older rope.scale_linear) with type linear unless rope.scaling.type
  // says otherwise; YaRN and LongRoPE change the angles in ways the
  // runtime does not implement.
  if (md.Has(Key(hp, "rope.scaling.type"))) {
    FQ_ASSIGN_OR_RETURN(std::string type, md.GetString(Key(hp, "rope.scaling.type")));
    if (type != "none" && type != "linear") {
      return Status::NotSupported(std::string(what) + ": rope scaling '" + type +
                                  "' is not supported (none and linear are)");
    }
  }
  float factor = 0;
  FQ_RETURN_IF_ERROR(GetOptionalFloat(md, Key(hp, "rope.scale_linear"), false, what, &factor));
  FQ_RETURN_IF_ERROR(GetOptionalFloat(md, Key(hp, "rope.scaling.factor"), false, what, &factor));
  hp.rope_freq_scale = factor == 0 ? 1.0f : 1.0f / factor;
  hp.rope_freq_base_swa = hp.arch->swa_rope_base;
  FQ_RETURN_IF_ERROR(
      GetOptionalFloat(md, Key(hp, "rope.freq_base_swa"), true, what, &hp.rope_freq_base_swa));

  Result<double> eps = md.GetFloat(Key(hp, "attention.layer_norm_rms_epsilon"));
  if (!eps.ok()) return Status::InvalidArgument(std::string(what) + ": " + eps.status().message());
  if (!(*eps >= 0) || !std::isfinite(*eps)) {
    return Status::InvalidArgument(std::string(what) +
                                   ": attention.layer_norm_rms_epsilon must be >= 0");
  }
  hp.rms_eps = static_cast<float>(*eps);

  if (md.Has(Key(hp, "attention.sliding_window"))) {
    FQ_ASSIGN_OR_RETURN(uint64_t swa, md.GetUint(Key(hp, "attention.sliding_window")));
    if (swa > kMaxContext) {
      return Status::InvalidArgument(std::string(what) + ": attention.sliding_window " +
                                     std::to_string(swa) + " is out of range");
    }
    if (hp.arch->swa_pattern > 0 && !hp.arch->swa_ignored) hp.n_swa = static_cast<int64_t>(swa);
  }
  if (hp.arch->softcaps) {
    FQ_RETURN_IF_ERROR(
        GetOptionalFloat(md, Key(hp, "attn_logit_softcapping"), false, what, &hp.attn_softcap));
    FQ_RETURN_IF_ERROR(
        GetOptionalFloat(md, Key(hp, "final_logit_softcapping"), false, what, &hp.final_softcap));
  }
  // llama.cpp's gemma3 scales by 1/sqrt(n_embd / n_head) for the 27B model
  // (recognised by its 62 layers) and by 1/sqrt(head size) otherwise.
  const bool gemma27b = hp.arch->name == "gemma3" && hp.n_layer == 62;
  hp.attn_scale =
      1.0f / std::sqrt(static_cast<float>(gemma27b ? hp.n_embd / hp.n_head : hp.head_dim()));
  if (hp.arch->embd_scale) hp.embd_scale = std::sqrt(static_cast<float>(hp.n_embd));
  return hp;
}

std::vector<ExpectedTensor> ExpectedTensors(const Hparams& hp) {
  const ArchInfo& a = *hp.arch;
  const int64_t e = hp.n_embd, q = hp.n_embd_q(), kv = hp.n_embd_kv(), hd = hp.head_dim();
  std::vector<ExpectedTensor> t;
  t.push_back({"token_embd.weight", Shape(e, hp.n_vocab)});
  t.push_back({"output_norm.weight", Shape(e)});
  t.push_back({"output.weight", Shape(e, hp.n_vocab), false});
  if (a.rope_freqs) t.push_back({"rope_freqs.weight", Shape(hp.n_rot / 2), false});
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back({p + "attn_norm.weight", Shape(e)});
    if (a.fused_qkv) {
      t.push_back({p + "attn_qkv.weight", Shape(e, q + 2 * kv)});
    } else {
      t.push_back({p + "attn_q.weight", Shape(e, q)});
      t.push_back({p + "attn_k.weight", Shape(e, kv)});
      t.push_back({p + "attn_v.weight", Shape(e, kv)});
    }
    if (a.qkv_bias) {
      t.push_back({p + "attn_q.bias", Shape(q)});
      t.push_back({p + "attn_k.bias", Shape(kv)});
      t.push_back({p + "attn_v.bias", Shape(kv)});
    }
    if (a.qk_norm) {
      t.push_back({p + "attn_q_norm.weight", Shape(hd)});
      t.push_back({p + "attn_k_norm.weight", Shape(hd)});
    }
    t.push_back({p + "attn_output.weight", Shape(q, e)});
    if (a.post_norms) t.push_back({p + "post_attention_norm.weight", Shape(e)});
    t.push_back({p + "ffn_norm.weight", Shape(e)});
    if (a.fused_gate_up) {
      t.push_back({p + "ffn_up.weight", Shape(e, 2 * hp.n_ff)});
    } else {
      t.push_back({p + "ffn_gate.weight", Shape(e, hp.n_ff)});
      t.push_back({p + "ffn_up.weight", Shape(e, hp.n_ff)});
    }
    t.push_back({p + "ffn_down.weight", Shape(hp.n_ff, e)});
    if (a.post_norms) t.push_back({p + "post_ffw_norm.weight", Shape(e)});
  }
  return t;
}

}  // namespace fqpack::runtime
