#include "tests/support/tiny_llama.h"

#include <cmath>
#include <cstdlib>
#include <random>

#include "runtime/quant/quant.h"
#include "schema/half.h"
#include "store/module_key.h"

namespace fqpack::testing {

store::ModuleKey MemorySource::Add(const store::ModuleDesc& desc, Bytes bytes) {
  store::ModuleKey key = store::ComputeModuleKey(desc, bytes);
  std::lock_guard<std::mutex> lock(mu_);
  modules_[key] = std::move(bytes);
  return key;
}

Result<store::ModuleData> MemorySource::Load(const store::ModuleKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = modules_.find(key);
  if (it == modules_.end()) return Status::NotFound("module " + key.Hex() + " is not in memory");
  ++loads_;
  return store::ModuleData::Owned(it->second);
}

gguf::Metadata TinyLlamaMetadata(const TinyLlamaSpec& spec) {
  using gguf::Value;
  using gguf::ValueType;
  gguf::Metadata md;
  auto u32 = [](int64_t v) { return Value::Uint(ValueType::kU32, static_cast<uint64_t>(v)); };
  md.Set("general.architecture", Value::String("llama"));
  md.Set("general.name", Value::String("tiny"));
  md.Set("llama.context_length", u32(spec.n_ctx_train));
  md.Set("llama.embedding_length", u32(spec.n_embd));
  md.Set("llama.feed_forward_length", u32(spec.n_ff));
  md.Set("llama.attention.head_count", u32(spec.n_head));
  md.Set("llama.attention.head_count_kv", u32(spec.n_head_kv));
  md.Set("llama.block_count", u32(spec.n_layer));
  md.Set("llama.rope.dimension_count",
         u32(spec.n_rot > 0 ? spec.n_rot : spec.n_embd / spec.n_head));
  if (spec.rope_freq_base != 10000.0f) {
    md.Set("llama.rope.freq_base", Value::Float(ValueType::kF32, spec.rope_freq_base));
  }
  md.Set("llama.attention.layer_norm_rms_epsilon", Value::Float(ValueType::kF32, spec.rms_eps));
  std::vector<Value> tokens, scores, types;
  for (int64_t i = 0; i < spec.n_vocab; ++i) {
    std::string text = i == 0   ? "<unk>"
                       : i == 1 ? "<s>"
                       : i == 2 ? "</s>"
                                : "t" + std::to_string(i);
    tokens.push_back(Value::String(text));
    scores.push_back(Value::Float(ValueType::kF32, -static_cast<double>(i)));
    types.push_back(Value::Int(ValueType::kI32, i == 0 ? 2 : i < 3 ? 3 : 1));
  }
  md.Set("tokenizer.ggml.model", Value::String("llama"));
  md.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, tokens));
  md.Set("tokenizer.ggml.scores", Value::Array(ValueType::kF32, scores));
  md.Set("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, types));
  md.Set("tokenizer.ggml.bos_token_id", u32(1));
  md.Set("tokenizer.ggml.eos_token_id", u32(2));
  return md;
}

void SetManifestMetadata(store::ModelManifest* manifest, const gguf::Metadata& md) {
  manifest->metadata = gguf::EncodeMetadata(md);
  manifest->n_kv = md.entries.size();
}

std::unique_ptr<TinyLlama> MakeTinyLlama(const TinyLlamaSpec& spec) {
  auto m = std::make_unique<TinyLlama>();
  m->spec = spec;
  m->manifest.model = "tiny";
  m->manifest.label = "test";
  m->manifest.arch = "llama";
  SetManifestMetadata(&m->manifest, TinyLlamaMetadata(spec));
  std::mt19937 rng(spec.seed);

  const uint32_t f32 = ToId(QType::kF32);
  auto add = [&](const std::string& name, int64_t ne0, int64_t ne1, uint32_t type, float center,
                 float spread) {
    std::uniform_real_distribution<float> dist(center - spread, center + spread);
    const size_t n = static_cast<size_t>(ne0 * ne1);
    std::vector<float> values(n);
    for (float& v : values) v = dist(rng);
    Bytes bytes;
    if (type == f32) {
      for (float v : values) PutF32(&bytes, v);
    } else if (type == ToId(QType::kF16)) {
      for (float& v : values) {
        const uint16_t h = F32ToFp16(v);
        PutU16(&bytes, h);
        v = Fp16ToF32(h);
      }
    } else {
      // Any other type through the runtime's reference quantizer; the values
      // kept are what its dequantizer gives back.
      const runtime::quant::TypeTraits* tr = runtime::quant::FindTraits(type);
      Result<uint64_t> rb = RowBytes(type, static_cast<uint64_t>(ne0));
      if (tr == nullptr || tr->quantize == nullptr || !rb.ok()) std::abort();
      bytes.resize(static_cast<size_t>(*rb * ne1));
      for (int64_t r = 0; r < ne1; ++r) {
        tr->quantize(values.data() + r * ne0, bytes.data() + r * *rb, ne0);
        tr->dequantize(bytes.data() + r * *rb, values.data() + r * ne0, ne0);
      }
    }
    store::ModuleDesc desc;
    desc.qtype = type;
    desc.n_dims = ne1 == 1 ? 1 : 2;
    desc.ne = {static_cast<uint64_t>(ne0), static_cast<uint64_t>(ne1), 1, 1};
    store::ManifestSlot slot;
    slot.idx = static_cast<int>(m->manifest.slots.size());
    slot.name = name;
    slot.kind = store::SlotKindOf(name, &slot.layer);
    slot.desc = desc;
    slot.bytes = bytes.size();
    slot.key = m->source.Add(desc, std::move(bytes));
    m->manifest.slots.push_back(slot);
    m->weights[name] = std::move(values);
  };
  const int64_t e = spec.n_embd, ekv = spec.n_embd / spec.n_head * spec.n_head_kv;
  const uint32_t wt = spec.weight_type;
  // Uniform(-a, a) has variance a^2/3; a = sqrt(3/n_in) keeps a projection's
  // outputs at the scale of its inputs.
  auto spread = [](int64_t n_in) { return std::sqrt(3.0f / static_cast<float>(n_in)); };
  add("token_embd.weight", e, spec.n_vocab, wt, 0.0f, 1.0f);
  add("output_norm.weight", e, 1, f32, 1.0f, 0.2f);
  if (!spec.tied_output) add("output.weight", e, spec.n_vocab, wt, 0.0f, spread(e));
  for (int64_t l = 0; l < spec.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", e, 1, f32, 1.0f, 0.2f);
    // Larger Q and K make attention far from uniform, so RoPE and the causal
    // mask matter to the result.
    add(p + "attn_q.weight", e, e, wt, 0.0f, 2.0f * spread(e));
    add(p + "attn_k.weight", e, ekv, wt, 0.0f, 2.0f * spread(e));
    add(p + "attn_v.weight", e, ekv, wt, 0.0f, spread(e));
    add(p + "attn_output.weight", e, e, wt, 0.0f, spread(e));
    add(p + "ffn_norm.weight", e, 1, f32, 1.0f, 0.2f);
    add(p + "ffn_gate.weight", e, spec.n_ff, wt, 0.0f, spread(e));
    add(p + "ffn_up.weight", e, spec.n_ff, wt, 0.0f, spread(e));
    add(p + "ffn_down.weight", spec.n_ff, e, wt, 0.0f, spread(spec.n_ff));
  }
  return m;
}

namespace {

using Vec = std::vector<double>;

Vec RmsNormRef(const Vec& x, const std::vector<float>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * w[i];
  return y;
}

// y[r] = sum_k W[r][k] x[k], W stored [rows][cols].
Vec MatVecRef(const std::vector<float>& w, const Vec& x) {
  const size_t cols = x.size(), rows = w.size() / cols;
  Vec y(rows, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t k = 0; k < cols; ++k) y[r] += static_cast<double>(w[r * cols + k]) * x[k];
  }
  return y;
}

// Rotates the pairs (2i, 2i+1), i < n_rot/2, of each head by pos * base^(-2i/n_rot).
void RopeRef(Vec* v, int64_t n_heads, int64_t hd, int64_t n_rot, double base, int64_t pos) {
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < n_rot / 2; ++i) {
      const double angle =
          static_cast<double>(pos) *
          std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(n_rot));
      double& a = (*v)[static_cast<size_t>(h * hd + 2 * i)];
      double& b = (*v)[static_cast<size_t>(h * hd + 2 * i + 1)];
      const double a0 = a, b0 = b;
      a = a0 * std::cos(angle) - b0 * std::sin(angle);
      b = a0 * std::sin(angle) + b0 * std::cos(angle);
    }
  }
}

}  // namespace

std::vector<double> ReferenceLogits(const TinyLlama& model, std::span<const int32_t> tokens) {
  const TinyLlamaSpec& s = model.spec;
  const int64_t e = s.n_embd, hd = s.n_embd / s.n_head, n = static_cast<int64_t>(tokens.size());
  const int64_t n_rot = s.n_rot > 0 ? s.n_rot : hd;
  auto W = [&](const std::string& name) -> const std::vector<float>& {
    return model.weights.at(name);
  };
  std::vector<Vec> x(static_cast<size_t>(n), Vec(static_cast<size_t>(e)));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < e; ++i) x[t][i] = W("token_embd.weight")[tokens[t] * e + i];
  }
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    std::vector<Vec> q(n), k(n), v(n);
    for (int64_t t = 0; t < n; ++t) {
      Vec h = RmsNormRef(x[t], W(p + "attn_norm.weight"), s.rms_eps);
      q[t] = MatVecRef(W(p + "attn_q.weight"), h);
      k[t] = MatVecRef(W(p + "attn_k.weight"), h);
      v[t] = MatVecRef(W(p + "attn_v.weight"), h);
      RopeRef(&q[t], s.n_head, hd, n_rot, s.rope_freq_base, t);
      RopeRef(&k[t], s.n_head_kv, hd, n_rot, s.rope_freq_base, t);
    }
    for (int64_t t = 0; t < n; ++t) {
      Vec att(static_cast<size_t>(e), 0.0);
      for (int64_t h = 0; h < s.n_head; ++h) {
        const int64_t g = h / (s.n_head / s.n_head_kv);
        std::vector<double> w(static_cast<size_t>(t + 1));
        double max = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += q[t][h * hd + d] * k[j][g * hd + d];
          w[j] = dot / std::sqrt(static_cast<double>(hd));
          max = std::max(max, w[j]);
        }
        double sum = 0;
        for (double& wj : w) sum += (wj = std::exp(wj - max));
        for (int64_t j = 0; j <= t; ++j) {
          for (int64_t d = 0; d < hd; ++d) att[h * hd + d] += w[j] / sum * v[j][g * hd + d];
        }
      }
      Vec o = MatVecRef(W(p + "attn_output.weight"), att);
      for (int64_t i = 0; i < e; ++i) x[t][i] += o[i];
      Vec h = RmsNormRef(x[t], W(p + "ffn_norm.weight"), s.rms_eps);
      Vec gate = MatVecRef(W(p + "ffn_gate.weight"), h);
      Vec up = MatVecRef(W(p + "ffn_up.weight"), h);
      for (size_t i = 0; i < gate.size(); ++i)
        gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      Vec down = MatVecRef(W(p + "ffn_down.weight"), gate);
      for (int64_t i = 0; i < e; ++i) x[t][i] += down[i];
    }
  }
  const std::vector<float>& out = s.tied_output ? W("token_embd.weight") : W("output.weight");
  std::vector<double> logits;
  for (int64_t t = 0; t < n; ++t) {
    Vec h = RmsNormRef(x[t], W("output_norm.weight"), s.rms_eps);
    Vec lg = MatVecRef(out, h);
    logits.insert(logits.end(), lg.begin(), lg.end());
  }
  return logits;
}

}  // namespace fqpack::testing
