#include "runtime/llama.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>

#include "runtime/llama_kernels.h"
#include "runtime/quant/quant.h"
#include "schema/half.h"
#include "tests/support/tiny_llama.h"

namespace fqpack::runtime {
namespace {

using testing::MakeTinyLlama;
using testing::TinyLlamaSpec;

std::vector<int32_t> RandomTokens(int n, int64_t n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab));
  return t;
}

// Largest |a - b| over the logits, relative to the largest |b|.
double MaxRelDiff(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  return MaxRelDiff(a, std::vector<double>(b.begin(), b.end()));
}

std::unique_ptr<Model> LoadOrDie(testing::TinyLlama* m) {
  Result<std::unique_ptr<Model>> model = Model::Load(m->manifest, &m->source);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(model).value() : nullptr;
}

// The runtime rounds Q, K and V to F16 (as llama.cpp's F16 KV cache does);
// a relative error of 2^-11 per value leaves the logits within about 1e-3 of
// full precision. A wrong RoPE pairing, a missing causal mask or a GQA
// head mix-up moves them by tens of percent.
constexpr double kVsReference = 5e-3;

struct ReferenceCase {
  const char* name;
  TinyLlamaSpec spec;
};

// gtest would otherwise print the parameter's bytes, padding included.
void PrintTo(const ReferenceCase& c, std::ostream* os) { *os << c.name; }

class ForwardVsReference : public ::testing::TestWithParam<ReferenceCase> {};

TEST_P(ForwardVsReference, MatchesNaiveDoublePrecisionForward) {
  auto tiny = MakeTinyLlama(GetParam().spec);
  auto model = LoadOrDie(tiny.get());
  ASSERT_NE(model, nullptr);
  ThreadPool pool(2);
  const auto tokens = RandomTokens(24, tiny->spec.n_vocab, 7);
  Session session(model.get(), 64, &pool);
  std::vector<float> logits;
  ASSERT_TRUE(session.Eval(tokens, 0, &logits).ok());
  const std::vector<double> ref = testing::ReferenceLogits(*tiny, tokens);
  ASSERT_EQ(logits.size(), ref.size());
  EXPECT_LT(MaxRelDiff(logits, ref), kVsReference);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ForwardVsReference,
    ::testing::Values(ReferenceCase{"Gqa", {}},
                      ReferenceCase{"MultiHead", {.n_head_kv = 4, .seed = 2}},
                      ReferenceCase{"PartialRopeOtherBase",
                                    {.n_embd = 48,
                                     .n_head = 4,
                                     .n_head_kv = 1,
                                     .n_rot = 6,
                                     .rope_freq_base = 500.0f,
                                     .seed = 3}},
                      ReferenceCase{"TiedOutputThreeLayers",
                                    {.n_layer = 3, .tied_output = true, .seed = 4}},
                      ReferenceCase{"F16Weights", {.weight_type = ToId(QType::kF16), .seed = 5}}),
    [](const ::testing::TestParamInfo<ReferenceCase>& info) { return info.param.name; });

// Quantized weights: the runtime also quantizes the activations (to Q8_0
// for a Q8_0 matrix, as llama.cpp does), which costs about 1% more.
TEST(ForwardVsReference, QuantizedWeightsStayClose) {
  auto tiny = MakeTinyLlama({.n_ff = 64, .weight_type = ToId(QType::kQ8_0), .seed = 6});
  auto model = LoadOrDie(tiny.get());
  ThreadPool pool(2);
  const auto tokens = RandomTokens(24, tiny->spec.n_vocab, 7);
  Session session(model.get(), 64, &pool);
  std::vector<float> logits;
  ASSERT_TRUE(session.Eval(tokens, 0, &logits).ok());
  EXPECT_LT(MaxRelDiff(logits, testing::ReferenceLogits(*tiny, tokens)), 3e-2);
}

// A differently paired RoPE (first half with second half, the "neox" mode)
// must not pass the reference check: it guards the test's power.
TEST(ForwardVsReference, DetectsWrongRopePairing) {
  auto tiny = MakeTinyLlama({.seed = 9});
  auto model = LoadOrDie(tiny.get());
  ThreadPool pool(1);
  const auto tokens = RandomTokens(24, tiny->spec.n_vocab, 7);
  Session session(model.get(), 64, &pool);
  std::vector<float> logits;
  ASSERT_TRUE(session.Eval(tokens, 0, &logits).ok());
  // Permute Q and K rows so that adjacent pairs become (i, i + hd/2) pairs:
  // the same model under the other pairing convention.
  const int64_t e = tiny->spec.n_embd, hd = e / tiny->spec.n_head;
  auto permute = [&](std::vector<float>* w, int64_t rows) {
    std::vector<float> out(w->size());
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = r / hd, i = r % hd;
      const int64_t src = h * hd + (i % 2 == 0 ? i / 2 : hd / 2 + i / 2);
      std::copy_n(w->data() + src * e, e, out.data() + r * e);
    }
    *w = out;
  };
  permute(&tiny->weights["blk.0.attn_q.weight"], e);
  permute(&tiny->weights["blk.0.attn_k.weight"], e / tiny->spec.n_head * tiny->spec.n_head_kv);
  const std::vector<double> ref = testing::ReferenceLogits(*tiny, tokens);
  EXPECT_GT(MaxRelDiff(logits, ref), 10 * kVsReference);
}

TEST(Session, DecodingOneTokenAtATimeEqualsOneBatch) {
  auto tiny = MakeTinyLlama({.seed = 11});
  auto model = LoadOrDie(tiny.get());
  ThreadPool pool(2);
  const auto tokens = RandomTokens(40, tiny->spec.n_vocab, 3);
  Session batch(model.get(), 64, &pool);
  std::vector<float> all;
  ASSERT_TRUE(batch.Eval(tokens, 0, &all).ok());
  EXPECT_EQ(batch.n_past(), 40);

  Session decode(model.get(), 64, &pool);
  std::vector<float> one, stepwise;
  for (int32_t t : tokens) {
    ASSERT_TRUE(decode.Decode(t, &one).ok());
    stepwise.insert(stepwise.end(), one.begin(), one.end());
  }
  ASSERT_EQ(stepwise.size(), all.size());
  EXPECT_LT(MaxRelDiff(stepwise, all), 1e-5);

  // A prompt in two pieces, logits of the last few only.
  Session split(model.get(), 64, &pool);
  std::vector<float> tail;
  ASSERT_TRUE(split.Eval(std::span(tokens).first(25), 25, nullptr).ok());
  ASSERT_TRUE(split.Eval(std::span(tokens).subspan(25), 10, &tail).ok());
  const size_t v = static_cast<size_t>(tiny->spec.n_vocab);
  ASSERT_EQ(tail.size(), 5 * v);
  EXPECT_LT(MaxRelDiff(tail, std::vector<float>(all.end() - 5 * v, all.end())), 1e-5);
}

TEST(Session, LongInputsAreCutIntoPiecesWithoutChangingResults) {
  auto tiny = MakeTinyLlama(
      {.n_embd = 16, .n_layer = 1, .n_ff = 16, .n_head = 2, .n_head_kv = 1, .seed = 12});
  auto model = LoadOrDie(tiny.get());
  ThreadPool pool(2);
  const auto tokens = RandomTokens(700, tiny->spec.n_vocab, 5);  // > one 512-token piece
  Session whole(model.get(), 700, &pool);
  std::vector<float> a;
  ASSERT_TRUE(whole.Eval(tokens, 690, &a).ok());
  Session parts(model.get(), 700, &pool);
  ASSERT_TRUE(parts.Eval(std::span(tokens).first(300), 300, nullptr).ok());
  std::vector<float> b;
  ASSERT_TRUE(parts.Eval(std::span(tokens).subspan(300), 390, &b).ok());
  EXPECT_LT(MaxRelDiff(a, b), 1e-5);
  const std::vector<double> ref = testing::ReferenceLogits(*tiny, tokens);
  EXPECT_LT(MaxRelDiff(a, std::vector<double>(ref.end() - 10 * tiny->spec.n_vocab, ref.end())),
            kVsReference);
}

TEST(Session, RejectsTokensBeyondTheContextAndOutsideTheVocabulary) {
  auto tiny = MakeTinyLlama({});
  auto model = LoadOrDie(tiny.get());
  ThreadPool pool(1);
  Session session(model.get(), 8, &pool);
  const auto tokens = RandomTokens(6, tiny->spec.n_vocab, 1);
  ASSERT_TRUE(session.Eval(tokens, 6, nullptr).ok());
  Status s = session.Eval(tokens, 6, nullptr);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("holds 8 tokens"), std::string::npos) << s.message();
  EXPECT_EQ(session.n_past(), 6);

  const int32_t bad[] = {3, static_cast<int32_t>(tiny->spec.n_vocab)};
  s = session.Eval(bad, 0, nullptr);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("token id 40 at index 1"), std::string::npos) << s.message();
  EXPECT_EQ(session.n_past(), 6);
  session.Reset();
  EXPECT_EQ(session.n_past(), 0);
}

TEST(KvCache, HoldsF16CopiesOfKAndV) {
  auto tiny = MakeTinyLlama({.n_layer = 1});
  auto model = LoadOrDie(tiny.get());
  ThreadPool pool(1);
  Session session(model.get(), 4, &pool);
  const int32_t token = 5;
  ASSERT_TRUE(session.Decode(token, nullptr).ok());
  EXPECT_EQ(session.cache().bytes(), KvCacheBytes(model->hparams(), 4));
  // Position 0: RoPE is the identity, so K is W_k * rmsnorm(embedding).
  const auto& w = tiny->weights;
  const int64_t e = tiny->spec.n_embd;
  std::vector<double> x(w.at("token_embd.weight").begin() + token * e,
                        w.at("token_embd.weight").begin() + (token + 1) * e);
  double ss = 0;
  for (double v : x) ss += v * v;
  const double scale = 1 / std::sqrt(ss / e + tiny->spec.rms_eps);
  KvCache& cache = const_cast<KvCache&>(session.cache());
  const int64_t ekv = model->hparams().n_embd_kv();
  for (int64_t r = 0; r < ekv; ++r) {
    double k = 0;
    for (int64_t c = 0; c < e; ++c) {
      k +=
          w.at("blk.0.attn_k.weight")[r * e + c] * x[c] * scale * w.at("blk.0.attn_norm.weight")[c];
    }
    // Transposed layout: dimension r of position 0.
    EXPECT_NEAR(Fp16ToF32(cache.k(0)[r * cache.k_stride()]), k, 2e-3 * std::max(1.0, std::abs(k)))
        << r;
  }
  EXPECT_EQ(cache.k_stride(), 8);
  // V stays row-major: position 0 is the first row.
  for (int64_t r = 0; r < ekv; ++r) {
    double v = 0;
    for (int64_t c = 0; c < e; ++c) {
      v +=
          w.at("blk.0.attn_v.weight")[r * e + c] * x[c] * scale * w.at("blk.0.attn_norm.weight")[c];
    }
    EXPECT_NEAR(Fp16ToF32(cache.v(0)[r]), v, 2e-3 * std::max(1.0, std::abs(v))) << r;
  }
}

TEST(BatchEvaluator, MatchesSessionAndRecomputesFromAChangedLayer) {
  auto tiny = MakeTinyLlama({.n_layer = 3, .seed = 21});
  auto model = LoadOrDie(tiny.get());
  ThreadPool pool(2);
  const auto tokens = RandomTokens(30, tiny->spec.n_vocab, 8);

  BatchEvaluator eval(model.get(), &pool);
  Result<LayerStates> states = eval.Run(tokens);
  ASSERT_TRUE(states.ok()) << states.status().ToString();
  EXPECT_EQ(states->n_layers(), 3);
  std::vector<float> from_states;
  ASSERT_TRUE(eval.Logits(*states, 10, &from_states).ok());
  Session session(model.get(), 30, &pool);
  std::vector<float> from_session;
  ASSERT_TRUE(session.Eval(tokens, 10, &from_session).ok());
  EXPECT_EQ(from_states, from_session);

  // Swap layer 2's ffn_up for an F16 copy: recomputing from layer 2 must give
  // exactly what a fresh run gives, and differ from before.
  const int idx = model->FindSlot("blk.2.ffn_up.weight");
  const auto& values = tiny->weights.at("blk.2.ffn_up.weight");
  Bytes f16;
  for (float v : values) PutU16(&f16, F32ToFp16(v * 1.5f));
  store::ModuleDesc desc = model->slot(idx)->desc;
  desc.qtype = ToId(QType::kF16);
  ASSERT_TRUE(model->SetSlot(idx, store::ModuleData::Owned(f16), desc).ok());

  Result<LayerStates> child = eval.RunFrom(*states, 2);
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(child->input(1), states->input(1));  // shared, not copied
  EXPECT_EQ(child->input(2), states->input(2));
  std::vector<float> child_logits, fresh_logits;
  ASSERT_TRUE(eval.Logits(*child, 10, &child_logits).ok());
  Result<LayerStates> fresh = eval.Run(tokens);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE(eval.Logits(*fresh, 10, &fresh_logits).ok());
  EXPECT_EQ(child_logits, fresh_logits);
  EXPECT_GT(MaxRelDiff(child_logits, from_states), 1e-3);

  EXPECT_TRUE(eval.RunFrom(*states, 4).status().IsInvalidArgument());
  EXPECT_TRUE(eval.Run({}).status().IsInvalidArgument());
}

// The kernel sets to check: always the portable one, and AVX2 and AVX-512
// where the CPU runs them.
std::vector<std::pair<const char*, const llama_kernels::Kernels*>> KernelSets() {
  std::vector<std::pair<const char*, const llama_kernels::Kernels*>> k = {
      {"portable", &llama_kernels::Portable()}};
  if (quant::CpuHasAvx2()) k.push_back({"avx2", &llama_kernels::Avx2()});
  if (quant::CpuSimdLevel() >= quant::SimdLevel::kAvx512) {
    k.push_back({"avx512", &llama_kernels::Avx512()});
  }
  return k;
}

// attend_group gives every head exactly what attend gives it alone: group
// sizes across the AVX-512 kernel's passes of up to 8 heads, head sizes with
// 8- and 1-element tails, lengths around its blocks of 16 and 64 positions,
// sliding windows and softcapping. K and V lie in wider rows whose junk
// (NaN) must not matter.
TEST(LlamaKernels, AttendGroupGivesEachHeadWhatAttendGives) {
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  for (auto [name, k] : KernelSets()) {
    for (int64_t nq : {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16}) {
      for (int64_t hd : {8, 12, 64, 72, 80, 128}) {
        for (int64_t len : {1, 7, 8, 9, 17, 33, 64, 100, 257}) {
          const int64_t len8 = (len + 7) / 8 * 8, kt_stride = len8 + 8, v_stride = hd + 5;
          std::vector<float> q(nq * hd);
          std::vector<uint16_t> kt(hd * kt_stride, F32ToFp16(NAN)),
              v(len * v_stride, F32ToFp16(NAN));
          for (float& x : q) x = dist(rng);
          for (int64_t d = 0; d < hd; ++d) {
            for (int64_t j = 0; j < len; ++j) {
              kt[d * kt_stride + j] = F32ToFp16(dist(rng));
              v[j * v_stride + d] = F32ToFp16(dist(rng));
            }
          }
          const int64_t first = len > 20 ? len - 19 : 0;  // a window of 19 on long rows
          const float softcap = nq % 2 == 0 ? 0.0f : 1.5f;
          std::vector<float> s(nq * len8), out(nq * hd, -1.0f);
          k->attend_group(q.data(), nq, kt.data(), kt_stride, v.data(), v_stride, hd, first, len,
                          0.3f, softcap, s.data(), out.data());
          std::vector<float> one(hd);
          for (int64_t i = 0; i < nq; ++i) {
            k->attend(q.data() + i * hd, kt.data(), kt_stride, v.data(), v_stride, hd, first, len,
                      0.3f, softcap, s.data(), one.data());
            for (int64_t d = 0; d < hd; ++d) {
              ASSERT_EQ(std::bit_cast<uint32_t>(out[i * hd + d]), std::bit_cast<uint32_t>(one[d]))
                  << name << " nq " << nq << " hd " << hd << " len " << len << " head " << i
                  << " d " << d << ": " << out[i * hd + d] << " vs " << one[d];
            }
          }
        }
      }
    }
  }
}

TEST(LlamaKernels, AttendMatchesDoublePrecision) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  for (auto [name, k] : KernelSets()) {
    for (int64_t hd : {8, 12, 32, 64, 72}) {
      for (int64_t len : {1, 7, 8, 33, 100}) {
        // K transposed with rows longer than needed, the tail holding junk
        // (even NaN) that must not matter; V rows inside wider rows.
        const int64_t kt_stride = (len + 7) / 8 * 8 + 8, v_stride = hd + 5;
        std::vector<float> q(hd), s(kt_stride), out(hd);
        std::vector<uint16_t> kt(hd * kt_stride, F32ToFp16(NAN)), v(len * v_stride, F32ToFp16(NAN));
        for (float& x : q) x = dist(rng);
        for (int64_t d = 0; d < hd; ++d) {
          for (int64_t j = 0; j < len; ++j) {
            kt[d * kt_stride + j] = F32ToFp16(dist(rng));
            v[j * v_stride + d] = F32ToFp16(dist(rng));
          }
        }
        const float scale = 0.7f;
        k->attend(q.data(), kt.data(), kt_stride, v.data(), v_stride, hd, 0, len, scale, 0.0f,
                  s.data(), out.data());
        std::vector<double> w(len);
        double max = -1e300, sum = 0;
        for (int64_t j = 0; j < len; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d)
            dot += static_cast<double>(q[d]) * Fp16ToF32(kt[d * kt_stride + j]);
          w[j] = dot * scale;
          max = std::max(max, w[j]);
        }
        for (double& x : w) sum += (x = std::exp(x - max));
        for (int64_t d = 0; d < hd; ++d) {
          double ref = 0;
          for (int64_t j = 0; j < len; ++j) ref += w[j] / sum * Fp16ToF32(v[j * v_stride + d]);
          EXPECT_NEAR(out[d], ref, 2e-5) << name << " hd " << hd << " len " << len << " d " << d;
        }
      }
    }
  }
}

TEST(LlamaKernels, HalfConversionsRoundToNearestEven) {
  std::vector<float> x = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.5f,
                          65504.0f,
                          65519.0f,
                          65520.0f,
                          -1e9f,
                          6.0e-8f,
                          2.9e-8f,
                          3.0e-8f,
                          1e-10f,
                          5.9604645e-08f,
                          0.1f,
                          1.0f + 1.0f / 2048,
                          1.0f + 3.0f / 2048,
                          3.14159f,
                          -2.71828f,
                          INFINITY,
                          -INFINITY};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-70000.0f, 70000.0f);
  for (int i = 0; i < 1000; ++i)
    x.push_back(dist(rng) * std::pow(2.0f, -static_cast<float>(i % 40)));
  for (auto [name, k] : KernelSets()) {
    std::vector<uint16_t> h(x.size());
    k->to_half(x.data(), h.data(), static_cast<int64_t>(x.size()));
    std::vector<float> r = x;
    k->round_to_half(r.data(), static_cast<int64_t>(r.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(h[i], F32ToFp16(x[i])) << name << " " << x[i];
      EXPECT_EQ(std::bit_cast<uint32_t>(r[i]), std::bit_cast<uint32_t>(Fp16ToF32(F32ToFp16(x[i]))))
          << name << " " << x[i];
    }
  }
}

TEST(LlamaKernels, SwiGluMatchesTheDefinition) {
  std::vector<float> g = {-200.0f, -90.0f, -20.0f, -1.0f, -0.0f, 0.0f,
                          0.5f,    3.0f,   20.0f,  90.0f, 200.0f};
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> dist(-12.0f, 12.0f);
  for (int i = 0; i < 100; ++i) g.push_back(dist(rng));
  std::vector<float> up(g.size());
  for (float& u : up) u = dist(rng);
  for (auto [name, k] : KernelSets()) {
    std::vector<float> out = g;
    k->swiglu(out.data(), up.data(), static_cast<int64_t>(out.size()));
    for (size_t i = 0; i < g.size(); ++i) {
      const double ref = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * up[i];
      EXPECT_NEAR(out[i], ref, 1e-6 * std::max(1.0, std::abs(ref))) << name << " " << g[i];
    }
  }
}

// The forward pass gives the same answer on either kernel set.
TEST(LlamaKernels, ForwardPassAgreesAcrossKernelSets) {
  if (!quant::CpuHasAvx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  auto tiny = MakeTinyLlama({.seed = 13});
  auto model = LoadOrDie(tiny.get());
  ThreadPool pool(1);
  const auto tokens = RandomTokens(30, tiny->spec.n_vocab, 2);
  std::vector<float> a, b;
  quant::SetSimdEnabled(false);
  {
    Session s(model.get(), 32, &pool);
    ASSERT_TRUE(s.Eval(tokens, 0, &a).ok());
  }
  quant::SetSimdEnabled(true);
  Session s(model.get(), 32, &pool);
  ASSERT_TRUE(s.Eval(tokens, 0, &b).ok());
  EXPECT_LT(MaxRelDiff(a, b), 1e-4);
  EXPECT_LT(MaxRelDiff(a, testing::ReferenceLogits(*tiny, tokens)), kVsReference);
}

}  // namespace
}  // namespace fqpack::runtime
