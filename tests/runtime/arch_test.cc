// The architecture table (runtime/arch.h) through the whole runtime: small
// random models of every family, generated here, run by the fast forward
// pass (Session, one token at a time, and BatchEvaluator) and compared with
// a slow scalar forward pass written out below in double precision from the
// published semantics of each family (llama.cpp's graph builders), plus the
// errors a model of an unknown or malformed architecture gives.
#include "runtime/arch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <random>

#include "runtime/llama.h"
#include "runtime/llama_kernels.h"
#include "runtime/model.h"
#include "runtime/quant/quant.h"
#include "schema/half.h"
#include "tests/support/tiny_llama.h"

namespace fqpack::runtime {
namespace {

using gguf::Value;
using gguf::ValueType;

// A tiny model of one architecture. head_dim may differ from
// n_embd / n_head (qwen3 and gemma3 allow it through key_length).
struct ArchSpec {
  std::string arch = "phi3";
  int64_t n_vocab = 40;
  int64_t n_embd = 32;
  int64_t n_layer = 3;
  int64_t n_ff = 48;
  int64_t n_head = 4;
  int64_t n_head_kv = 2;
  int64_t head_dim = 8;
  int64_t n_swa = 0;  // written as attention.sliding_window when > 0
  float rope_base = 10000.0f;
  float rope_scale = 0;  // linear rope.scaling.factor when > 0
  float rms_eps = 1e-5f;
  bool tied_output = false;
  uint32_t seed = 1;
};

struct ArchModel {
  ArchSpec spec;
  store::ModelManifest manifest;
  testing::MemorySource source;
  std::map<std::string, std::vector<float>> w;  // row-major [ne1][ne0]
};

gguf::Metadata ArchMetadata(const ArchSpec& s) {
  gguf::Metadata md = testing::TinyLlamaMetadata(
      {.n_vocab = s.n_vocab, .n_embd = s.n_embd, .n_layer = s.n_layer, .n_ff = s.n_ff});
  gguf::Metadata out;
  auto u32 = [](int64_t v) { return Value::Uint(ValueType::kU32, static_cast<uint64_t>(v)); };
  // The tokenizer keys of the llama metadata, the rest under the arch's prefix.
  for (const gguf::KeyValue& kv : md.entries) {
    if (kv.key.rfind("tokenizer.", 0) == 0) out.Set(kv.key, kv.value);
  }
  const std::string a = s.arch + ".";
  out.Set("general.architecture", Value::String(s.arch));
  out.Set("general.name", Value::String("tiny-" + s.arch));
  out.Set(a + "context_length", u32(128));
  out.Set(a + "embedding_length", u32(s.n_embd));
  out.Set(a + "feed_forward_length", u32(s.n_ff));
  out.Set(a + "block_count", u32(s.n_layer));
  out.Set(a + "attention.head_count", u32(s.n_head));
  out.Set(a + "attention.head_count_kv", u32(s.n_head_kv));
  out.Set(a + "attention.key_length", u32(s.head_dim));
  out.Set(a + "attention.value_length", u32(s.head_dim));
  out.Set(a + "rope.dimension_count", u32(s.head_dim));
  out.Set(a + "rope.freq_base", Value::Float(ValueType::kF32, s.rope_base));
  out.Set(a + "attention.layer_norm_rms_epsilon", Value::Float(ValueType::kF32, s.rms_eps));
  if (s.n_swa > 0) out.Set(a + "attention.sliding_window", u32(s.n_swa));
  if (s.rope_scale > 0) {
    out.Set(a + "rope.scaling.type", Value::String("linear"));
    out.Set(a + "rope.scaling.factor", Value::Float(ValueType::kF32, s.rope_scale));
  }
  return out;
}

std::unique_ptr<ArchModel> MakeArchModel(const ArchSpec& spec) {
  auto m = std::make_unique<ArchModel>();
  m->spec = spec;
  m->manifest.model = "tiny-" + spec.arch;
  m->manifest.label = "test";
  m->manifest.arch = spec.arch;
  testing::SetManifestMetadata(&m->manifest, ArchMetadata(spec));
  std::mt19937 rng(spec.seed);
  auto add = [&](const std::string& name, int64_t ne0, int64_t ne1, float center, float spread) {
    std::uniform_real_distribution<float> dist(center - spread, center + spread);
    std::vector<float> values(static_cast<size_t>(ne0 * ne1));
    Bytes bytes;
    for (float& v : values) {
      v = dist(rng);
      PutF32(&bytes, v);
    }
    store::ModuleDesc desc;
    desc.qtype = ToId(QType::kF32);
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
    m->w[name] = std::move(values);
  };
  const std::string& a = spec.arch;
  const int64_t e = spec.n_embd, hd = spec.head_dim, q = hd * spec.n_head, kv = hd * spec.n_head_kv,
                ff = spec.n_ff;
  auto spread = [](int64_t n_in) { return std::sqrt(3.0f / static_cast<float>(n_in)); };
  add("token_embd.weight", e, spec.n_vocab, 0.0f, a == "gemma3" ? 0.2f : 1.0f);
  add("output_norm.weight", e, 1, 1.0f, 0.2f);
  if (!spec.tied_output) add("output.weight", e, spec.n_vocab, 0.0f, spread(e));
  for (int64_t l = 0; l < spec.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", e, 1, 1.0f, 0.2f);
    if (a == "phi3") {
      add(p + "attn_qkv.weight", e, q + 2 * kv, 0.0f, 2.0f * spread(e));
    } else {
      add(p + "attn_q.weight", e, q, 0.0f, 2.0f * spread(e));
      add(p + "attn_k.weight", e, kv, 0.0f, 2.0f * spread(e));
      add(p + "attn_v.weight", e, kv, 0.0f, spread(e));
    }
    if (a == "qwen2") {
      add(p + "attn_q.bias", q, 1, 0.0f, 0.5f);
      add(p + "attn_k.bias", kv, 1, 0.0f, 0.5f);
      add(p + "attn_v.bias", kv, 1, 0.0f, 0.5f);
    }
    if (a == "qwen3" || a == "gemma3") {
      add(p + "attn_q_norm.weight", hd, 1, 1.0f, 0.3f);
      add(p + "attn_k_norm.weight", hd, 1, 1.0f, 0.3f);
    }
    add(p + "attn_output.weight", q, e, 0.0f, spread(q));
    if (a == "gemma3") add(p + "post_attention_norm.weight", e, 1, 1.0f, 0.2f);
    add(p + "ffn_norm.weight", e, 1, 1.0f, 0.2f);
    if (a == "phi3") {
      add(p + "ffn_up.weight", e, 2 * ff, 0.0f, spread(e));
    } else {
      add(p + "ffn_gate.weight", e, ff, 0.0f, spread(e));
      add(p + "ffn_up.weight", e, ff, 0.0f, spread(e));
    }
    add(p + "ffn_down.weight", ff, e, 0.0f, spread(ff));
    if (a == "gemma3") add(p + "post_ffw_norm.weight", e, 1, 1.0f, 0.2f);
  }
  return m;
}

// ---- The slow reference: plain loops in double, one token at a time. ----

using Vec = std::vector<double>;

Vec RmsNormRef(const double* x, size_t n, const std::vector<float>& w, double eps) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const double scale = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  Vec y(n);
  for (size_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
  return y;
}

Vec MatVecRef(const std::vector<float>& w, const Vec& x) {
  const size_t cols = x.size(), rows = w.size() / cols;
  Vec y(rows, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t k = 0; k < cols; ++k) y[r] += static_cast<double>(w[r * cols + k]) * x[k];
  }
  return y;
}

// Rotation of each head: NEOX pairs dimension i with i + hd/2, NORM pairs
// 2i with 2i+1; pair i turns by pos * base^(-2i/hd) / factor (linear
// scaling: positions squeezed by the factor).
void RopeRef(Vec* v, int64_t n_heads, int64_t hd, bool neox, double base, double factor,
             int64_t pos) {
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double angle = static_cast<double>(pos) * std::pow(base, -2.0 * i / hd) / factor;
      const size_t i0 = static_cast<size_t>(h * hd + (neox ? i : 2 * i));
      const size_t i1 = static_cast<size_t>(h * hd + (neox ? i + hd / 2 : 2 * i + 1));
      const double a = (*v)[i0], b = (*v)[i1];
      (*v)[i0] = a * std::cos(angle) - b * std::sin(angle);
      (*v)[i1] = a * std::sin(angle) + b * std::cos(angle);
    }
  }
}

double GeluTanh(double x) {
  return 0.5 * x *
         (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * x * (1.0 + 0.044715 * x * x)));
}

std::vector<double> ReferenceLogits(const ArchModel& m, const std::vector<int32_t>& tokens) {
  const ArchSpec& s = m.spec;
  const std::string& a = s.arch;
  const bool phi3 = a == "phi3", gemma3 = a == "gemma3";
  const bool neox = a != "llama";
  const int64_t e = s.n_embd, hd = s.head_dim, ff = s.n_ff, n = static_cast<int64_t>(tokens.size());
  const int64_t qd = hd * s.n_head, kvd = hd * s.n_head_kv;
  auto W = [&](const std::string& name) -> const std::vector<float>& { return m.w.at(name); };
  std::vector<Vec> x(static_cast<size_t>(n), Vec(static_cast<size_t>(e)));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < e; ++i) {
      x[t][i] = W("token_embd.weight")[tokens[t] * e + i] * (gemma3 ? std::sqrt(double(e)) : 1.0);
    }
  }
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    // gemma3: every 6th layer global, the others windowed.
    const bool windowed = gemma3 && s.n_swa > 0 && l % 6 < 5;
    std::vector<Vec> q(n), k(n), v(n);
    for (int64_t t = 0; t < n; ++t) {
      Vec h = RmsNormRef(x[t].data(), e, W(p + "attn_norm.weight"), s.rms_eps);
      if (phi3) {
        Vec qkv = MatVecRef(W(p + "attn_qkv.weight"), h);
        q[t].assign(qkv.begin(), qkv.begin() + qd);
        k[t].assign(qkv.begin() + qd, qkv.begin() + qd + kvd);
        v[t].assign(qkv.begin() + qd + kvd, qkv.end());
      } else {
        q[t] = MatVecRef(W(p + "attn_q.weight"), h);
        k[t] = MatVecRef(W(p + "attn_k.weight"), h);
        v[t] = MatVecRef(W(p + "attn_v.weight"), h);
      }
      if (a == "qwen2") {
        for (int64_t i = 0; i < qd; ++i) q[t][i] += W(p + "attn_q.bias")[i];
        for (int64_t i = 0; i < kvd; ++i) k[t][i] += W(p + "attn_k.bias")[i];
        for (int64_t i = 0; i < kvd; ++i) v[t][i] += W(p + "attn_v.bias")[i];
      }
      if (a == "qwen3" || gemma3) {
        for (int64_t h2 = 0; h2 < s.n_head; ++h2) {
          Vec y = RmsNormRef(q[t].data() + h2 * hd, hd, W(p + "attn_q_norm.weight"), s.rms_eps);
          std::copy(y.begin(), y.end(), q[t].begin() + h2 * hd);
        }
        for (int64_t h2 = 0; h2 < s.n_head_kv; ++h2) {
          Vec y = RmsNormRef(k[t].data() + h2 * hd, hd, W(p + "attn_k_norm.weight"), s.rms_eps);
          std::copy(y.begin(), y.end(), k[t].begin() + h2 * hd);
        }
      }
      // gemma3's windowed layers turn with base 10000 and no scaling,
      // whatever rope.freq_base and rope.scaling say.
      const double base = windowed ? 10000.0 : s.rope_base;
      const double factor = windowed || s.rope_scale == 0 ? 1.0 : s.rope_scale;
      RopeRef(&q[t], s.n_head, hd, neox, base, factor, t);
      RopeRef(&k[t], s.n_head_kv, hd, neox, base, factor, t);
    }
    for (int64_t t = 0; t < n; ++t) {
      Vec att(static_cast<size_t>(qd), 0.0);
      const int64_t j0 = windowed ? std::max<int64_t>(0, t - s.n_swa + 1) : 0;
      for (int64_t h = 0; h < s.n_head; ++h) {
        const int64_t g = h / (s.n_head / s.n_head_kv);
        std::vector<double> w(static_cast<size_t>(t + 1), 0.0);
        double max = -1e300;
        for (int64_t j = j0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += q[t][h * hd + d] * k[j][g * hd + d];
          w[j] = dot / std::sqrt(static_cast<double>(hd));
          max = std::max(max, w[j]);
        }
        double sum = 0;
        for (int64_t j = j0; j <= t; ++j) sum += (w[j] = std::exp(w[j] - max));
        for (int64_t j = j0; j <= t; ++j) {
          for (int64_t d = 0; d < hd; ++d) att[h * hd + d] += w[j] / sum * v[j][g * hd + d];
        }
      }
      Vec o = MatVecRef(W(p + "attn_output.weight"), att);
      if (gemma3) o = RmsNormRef(o.data(), e, W(p + "post_attention_norm.weight"), s.rms_eps);
      for (int64_t i = 0; i < e; ++i) x[t][i] += o[i];
      Vec h = RmsNormRef(x[t].data(), e, W(p + "ffn_norm.weight"), s.rms_eps);
      Vec gate, up;
      if (phi3) {
        // One matrix, [gate; up]: the first n_ff rows are the gate.
        Vec gu = MatVecRef(W(p + "ffn_up.weight"), h);
        gate.assign(gu.begin(), gu.begin() + ff);
        up.assign(gu.begin() + ff, gu.end());
      } else {
        gate = MatVecRef(W(p + "ffn_gate.weight"), h);
        up = MatVecRef(W(p + "ffn_up.weight"), h);
      }
      for (int64_t i = 0; i < ff; ++i) {
        const double g = gate[i];
        gate[i] = (gemma3 ? GeluTanh(g) : g / (1.0 + std::exp(-g))) * up[i];
      }
      Vec down = MatVecRef(W(p + "ffn_down.weight"), gate);
      if (gemma3) down = RmsNormRef(down.data(), e, W(p + "post_ffw_norm.weight"), s.rms_eps);
      for (int64_t i = 0; i < e; ++i) x[t][i] += down[i];
    }
  }
  const std::vector<float>& out = s.tied_output ? W("token_embd.weight") : W("output.weight");
  std::vector<double> logits;
  for (int64_t t = 0; t < n; ++t) {
    Vec h = RmsNormRef(x[t].data(), e, W("output_norm.weight"), s.rms_eps);
    Vec lg = MatVecRef(out, h);
    logits.insert(logits.end(), lg.begin(), lg.end());
  }
  return logits;
}

double MaxRelDiff(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

std::vector<int32_t> RandomTokens(int n, int64_t n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab));
  return t;
}

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

// Q, K and V go through F16 (the KV cache), GELU through ggml's F16 table:
// about 1e-3 of the logits' scale. A wrong pairing, window or split moves
// them by tens of percent.
constexpr double kVsReference = 5e-3;

struct Case {
  const char* name;
  ArchSpec spec;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ArchVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(ArchVsReference, FastForwardMatchesTheScalarReference) {
  auto m = MakeArchModel(GetParam().spec);
  Result<std::unique_ptr<Model>> model = Model::Load(m->manifest, &m->source);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->hparams().arch_name(), GetParam().spec.arch);
  ThreadPool pool(2);
  const int n = 24;
  const auto tokens = RandomTokens(n, m->spec.n_vocab, 7);
  const std::vector<double> ref = ReferenceLogits(*m, tokens);

  // The whole sequence at once.
  Session session(model->get(), 64, &pool);
  std::vector<float> logits;
  ASSERT_TRUE(session.Eval(tokens, 0, &logits).ok());
  ASSERT_EQ(logits.size(), ref.size());
  EXPECT_LT(MaxRelDiff(logits, ref), kVsReference);

  // Decoding one token at a time through the KV cache gives the same.
  Session decode(model->get(), 64, &pool);
  std::vector<float> all, one;
  for (int32_t t : tokens) {
    ASSERT_TRUE(decode.Decode(t, &one).ok());
    all.insert(all.end(), one.begin(), one.end());
  }
  EXPECT_LT(MaxRelDiff(all, ref), kVsReference);

  // The search's evaluator too.
  BatchEvaluator eval(model->get(), &pool);
  Result<LayerStates> states = eval.Run(tokens);
  ASSERT_TRUE(states.ok());
  std::vector<float> batch;
  ASSERT_TRUE(eval.Logits(*states, 0, &batch).ok());
  EXPECT_EQ(batch, logits);
  Result<LayerStates> again = eval.RunFrom(*states, 1);
  ASSERT_TRUE(again.ok());
  std::vector<float> from;
  ASSERT_TRUE(eval.Logits(*again, 0, &from).ok());
  EXPECT_EQ(from, logits);
}

INSTANTIATE_TEST_SUITE_P(
    Families, ArchVsReference,
    ::testing::Values(
        // phi3 has no file in the zoo yet: this is its check.
        Case{"Phi3FusedQkvAndGateUp", {.arch = "phi3"}},
        Case{"Phi3Tied", {.arch = "phi3", .n_head_kv = 4, .tied_output = true, .seed = 2}},
        // llama.cpp reads phi3's window and disables it.
        Case{"Phi3IgnoresItsSlidingWindow", {.arch = "phi3", .n_swa = 4, .seed = 3}},
        Case{"Qwen2Biases", {.arch = "qwen2", .seed = 4}},
        Case{"Qwen3HeadNormsWideHeads", {.arch = "qwen3", .head_dim = 12, .seed = 5}},
        Case{"Gemma3GlobalOnly", {.arch = "gemma3", .seed = 6}},
        Case{"Gemma3SlidingWindow",
             {.arch = "gemma3",
              .n_layer = 7,
              .head_dim = 12,
              .n_swa = 5,
              .rope_base = 1e6f,
              .tied_output = true,
              .seed = 7}},
        // Gemma 3 4B's kind: global layers scaled linearly, windowed ones not.
        Case{"Gemma3LinearRopeScaling",
             {.arch = "gemma3",
              .n_layer = 6,
              .n_swa = 6,
              .rope_base = 1e6f,
              .rope_scale = 8.0f,
              .seed = 9}},
        Case{"LlamaNorm", {.arch = "llama", .seed = 8}},
        Case{"LlamaLinearRopeScaling", {.arch = "llama", .rope_scale = 4.0f, .seed = 10}}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// The attention kernels' sliding window (positions before `first` take no
// part) and gemma2-style score softcapping, portable and AVX2, against
// double precision.
TEST(ArchKernels, AttendHonoursTheWindowAndTheSoftcap) {
  std::vector<std::pair<const char*, const llama_kernels::Kernels*>> sets = {
      {"portable", &llama_kernels::Portable()}};
  if (quant::CpuHasAvx2()) sets.push_back({"avx2", &llama_kernels::Avx2()});
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  for (auto [name, k] : sets) {
    for (int64_t len : {1, 9, 40, 77}) {
      for (int64_t first : {int64_t{0}, len / 3, len - 1}) {
        for (float softcap : {0.0f, 2.5f}) {
          const int64_t hd = 16, kt_stride = (len + 7) / 8 * 8, v_stride = hd;
          std::vector<float> q(hd), s(kt_stride), out(hd);
          // Junk (NaN) before the window too: it must not leak in.
          std::vector<uint16_t> kt(hd * kt_stride, F32ToFp16(NAN)), v(len * v_stride);
          for (float& x : q) x = dist(rng);
          for (int64_t d = 0; d < hd; ++d) {
            for (int64_t j = 0; j < len; ++j) {
              kt[d * kt_stride + j] = j < first ? F32ToFp16(NAN) : F32ToFp16(dist(rng));
              v[j * v_stride + d] = j < first ? F32ToFp16(NAN) : F32ToFp16(dist(rng));
            }
          }
          const float scale = 0.6f;
          k->attend(q.data(), kt.data(), kt_stride, v.data(), v_stride, hd, first, len, scale,
                    softcap, s.data(), out.data());
          std::vector<double> w(len, 0.0);
          double max = -1e300, sum = 0;
          for (int64_t j = first; j < len; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < hd; ++d)
              dot += static_cast<double>(q[d]) * Fp16ToF32(kt[d * kt_stride + j]);
            w[j] = dot * scale;
            if (softcap > 0) w[j] = softcap * std::tanh(w[j] / softcap);
            max = std::max(max, w[j]);
          }
          for (int64_t j = first; j < len; ++j) sum += (w[j] = std::exp(w[j] - max));
          for (int64_t d = 0; d < hd; ++d) {
            double ref = 0;
            for (int64_t j = first; j < len; ++j)
              ref += w[j] / sum * Fp16ToF32(v[j * v_stride + d]);
            EXPECT_NEAR(out[d], ref, 2e-5)
                << name << " len " << len << " first " << first << " softcap " << softcap;
          }
        }
      }
    }
  }
}

TEST(Arch, TableDescribesEachFamily) {
  const ArchInfo* gemma = FindArch("gemma3");
  ASSERT_NE(gemma, nullptr);
  EXPECT_EQ(gemma->rope, RopeType::kNeox);
  EXPECT_EQ(gemma->act, Activation::kGelu);
  EXPECT_EQ(gemma->swa_pattern, 6);
  EXPECT_TRUE(gemma->embd_scale);
  EXPECT_EQ(FindArch("llama")->rope, RopeType::kNorm);
  EXPECT_TRUE(FindArch("qwen2")->qkv_bias);
  EXPECT_TRUE(FindArch("phi3")->fused_qkv);
  EXPECT_EQ(FindArch("gpt2"), nullptr);
  EXPECT_EQ(Architectures().size(), 5u);
}

TEST(Arch, ReadsGemmaHyperParameters) {
  ArchSpec spec{.arch = "gemma3", .n_layer = 7, .head_dim = 12, .n_swa = 5};
  gguf::Metadata md = ArchMetadata(spec);
  md.Set("gemma3.final_logit_softcapping", Value::Float(ValueType::kF32, 30.0));
  md.Set("gemma3.rope.scaling.factor", Value::Float(ValueType::kF32, 8.0));
  Result<Hparams> hp = ReadHparams(md, "m");
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ(hp->head_dim(), 12);
  EXPECT_EQ(hp->n_embd_q(), 48);
  EXPECT_EQ(hp->n_swa, 5);
  EXPECT_EQ(hp->final_softcap, 30.0f);
  EXPECT_EQ(hp->rope_freq_scale, 0.125f);
  EXPECT_EQ(hp->rope_freq_base_swa, 10000.0f);
  EXPECT_FLOAT_EQ(hp->embd_scale, std::sqrt(32.0f));
  EXPECT_FLOAT_EQ(hp->attn_scale, 1.0f / std::sqrt(12.0f));
  for (int l = 0; l < 7; ++l) EXPECT_EQ(hp->is_swa(l), l != 5) << l;
}

TEST(Arch, RejectsRopeScalingItDoesNotImplement) {
  gguf::Metadata md = ArchMetadata({.arch = "qwen2"});
  md.Set("qwen2.rope.scaling.type", Value::String("yarn"));
  Status s = ReadHparams(md, "m").status();
  EXPECT_TRUE(s.IsNotSupported()) << s.ToString();
  EXPECT_TRUE(Contains(s, "'yarn'")) << s.message();
}

TEST(ArchValidate, UnknownArchitectureIsNotSupportedNamingModelAndArchitecture) {
  auto m = MakeArchModel({.arch = "qwen2"});
  gguf::Metadata md = ArchMetadata(m->spec);
  md.Set("general.architecture", Value::String("mamba"));
  testing::SetManifestMetadata(&m->manifest, md);
  Status s = Model::Validate(m->manifest).status();
  EXPECT_TRUE(s.IsNotSupported()) << s.ToString();
  EXPECT_TRUE(Contains(s, "tiny-qwen2/test")) << s.message();
  EXPECT_TRUE(Contains(s, "'mamba'")) << s.message();
}

TEST(ArchValidate, MissingTensorNamesItAndItsShape) {
  auto m = MakeArchModel({.arch = "qwen2"});
  auto& slots = m->manifest.slots;
  slots.erase(
      std::remove_if(slots.begin(), slots.end(),
                     [](const store::ManifestSlot& s) { return s.name == "blk.1.attn_k.bias"; }),
      slots.end());
  Status s = Model::Validate(m->manifest).status();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_TRUE(Contains(s, "'blk.1.attn_k.bias' is missing (expected shape 16)")) << s.message();
}

TEST(ArchValidate, WrongShapeNamesExpectedAndActual) {
  auto m = MakeArchModel({.arch = "phi3"});
  for (auto& slot : m->manifest.slots) {
    // A phi3 ffn_up that is not gate and up together.
    if (slot.name == "blk.2.ffn_up.weight") slot.desc.ne[1] = 48;
  }
  Status s = Model::Validate(m->manifest).status();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_TRUE(Contains(s, "'blk.2.ffn_up.weight' has shape 32x48, expected 32x96")) << s.message();
}

TEST(ArchValidate, ATensorOfAnotherFamilyIsNotSupported) {
  // A llama model carrying a gemma3 post-norm: not part of the llama graph.
  auto gemma = MakeArchModel({.arch = "gemma3"});
  auto m = MakeArchModel({.arch = "llama"});
  for (const auto& slot : gemma->manifest.slots) {
    if (slot.name == "blk.0.post_ffw_norm.weight") m->manifest.slots.push_back(slot);
  }
  Status s = Model::Validate(m->manifest).status();
  EXPECT_TRUE(s.IsNotSupported()) << s.ToString();
  EXPECT_TRUE(Contains(s, "'blk.0.post_ffw_norm.weight' is not part of the llama graph"))
      << s.message();
}

TEST(ArchValidate, LongRopeFactorsAreNamedAsNotSupported) {
  // Phi-3.5's per-pair LongRoPE factors: a clear refusal, not a wrong result.
  auto m = MakeArchModel({.arch = "phi3"});
  store::ManifestSlot extra = m->manifest.slots.back();
  extra.name = "rope_factors_long.weight";
  extra.idx = static_cast<int>(m->manifest.slots.size());
  m->manifest.slots.push_back(extra);
  Status s = Model::Validate(m->manifest).status();
  EXPECT_TRUE(s.IsNotSupported()) << s.ToString();
  EXPECT_TRUE(Contains(s, "'rope_factors_long.weight': LongRoPE")) << s.message();
}

}  // namespace
}  // namespace fqpack::runtime
