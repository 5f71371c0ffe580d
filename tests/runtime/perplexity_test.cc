#include "runtime/perplexity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "runtime/llama.h"
#include "schema/half.h"
#include "tests/support/tiny_llama.h"

namespace fqpack::runtime {
namespace {

using testing::MakeTinyLlama;

std::vector<int32_t> RandomTokens(int n, int64_t n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab));
  return t;
}

TEST(TokenNll, IsTheNegativeLogSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f, -50.0f};
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(-50.0);
  EXPECT_NEAR(TokenNll(logits, 1), -std::log(std::exp(2.0) / z), 1e-6);
  EXPECT_NEAR(TokenNll(logits, 3), -std::log(std::exp(-50.0) / z), 1e-4);
  // Shifting every logit changes nothing.
  std::vector<float> shifted = logits;
  for (float& l : shifted) l += 1000.0f;
  EXPECT_NEAR(TokenNll(shifted, 1), TokenNll(logits, 1), 1e-4);
}

TEST(TokenKl, MatchesTheDefinition) {
  const std::vector<double> p = {0.5, 0.25, 0.25}, q = {0.25, 0.5, 0.25};
  std::vector<float> lp, lq;
  for (double v : p) lp.push_back(static_cast<float>(std::log(v)) + 3.0f);
  for (double v : q) lq.push_back(static_cast<float>(std::log(v)) - 1.0f);
  const double expected = 0.5 * std::log(0.5 / 0.25) + 0.25 * std::log(0.25 / 0.5);
  EXPECT_NEAR(TokenKl(lp, lq), expected, 1e-6);
  EXPECT_NEAR(TokenKl(lq, lp), 0.25 * std::log(0.25 / 0.5) + 0.5 * std::log(0.5 / 0.25), 1e-6);
  EXPECT_EQ(TokenKl(lp, lp), 0.0);
}

TEST(MeanAccumulator, GivesMeanAndStandardError) {
  MeanAccumulator m;
  for (double v : {1.0, 2.0, 4.0, 5.0}) m.Add(v);
  EXPECT_EQ(m.count(), 4);
  EXPECT_DOUBLE_EQ(m.mean(), 3.0);
  // Population variance 2.5, divided by N - 1 = 3.
  EXPECT_NEAR(m.StandardError(), std::sqrt(2.5 / 3), 1e-12);
}

TEST(PerplexityChunks, CutsWholeChunksAndPutsBosFirst) {
  const std::vector<int32_t> t = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
  auto chunks = PerplexityChunks(t, 4, 1);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0], (std::vector<int32_t>{1, 11, 12, 13}));
  EXPECT_EQ(chunks[1], (std::vector<int32_t>{1, 15, 16, 17}));
  EXPECT_EQ(PerplexityChunks(t, 4, -1)[1], (std::vector<int32_t>{14, 15, 16, 17}));
  EXPECT_EQ(PerplexityChunks(t, 4, 1, 1).size(), 1u);
}

// The procedure written out plainly with the double-precision reference
// forward pass: chunks, BOS first, second half scored against the text.
struct ManualPpl {
  double ppl;
  double err;
  int64_t scored;
};

ManualPpl ManualPerplexity(const testing::TinyLlama& tiny, const std::vector<int32_t>& tokens,
                           int64_t n_ctx, int32_t bos) {
  double sum = 0, sum2 = 0;
  int64_t count = 0;
  const int64_t v = tiny.spec.n_vocab;
  for (size_t start = 0; start + n_ctx <= tokens.size(); start += static_cast<size_t>(n_ctx)) {
    std::vector<int32_t> chunk(tokens.begin() + start, tokens.begin() + start + n_ctx);
    chunk[0] = bos;
    const std::vector<double> logits = testing::ReferenceLogits(tiny, chunk);
    for (int64_t j = n_ctx / 2; j < n_ctx - 1; ++j) {
      double max = -1e300, z = 0;
      for (int64_t k = 0; k < v; ++k) max = std::max(max, logits[j * v + k]);
      for (int64_t k = 0; k < v; ++k) z += std::exp(logits[j * v + k] - max);
      const double nll = -(logits[j * v + tokens[start + j + 1]] - max - std::log(z));
      sum += nll;
      sum2 += nll * nll;
      ++count;
    }
  }
  const double mean = sum / count, var = sum2 / count - mean * mean;
  return {std::exp(mean), std::exp(mean) * std::sqrt(var / (count - 1)), count};
}

TEST(Perplexity, FollowsLlamaCppsProcedure) {
  auto tiny = MakeTinyLlama({.n_vocab = 30, .seed = 31});
  Result<std::unique_ptr<Model>> model = Model::Load(tiny->manifest, &tiny->source);
  ASSERT_TRUE(model.ok());
  const auto tokens = RandomTokens(16 * 5 + 7, 30, 4);
  ThreadPool pool(2);
  PerplexityOptions opts;
  opts.n_ctx = 16;
  opts.bos = 1;
  Result<PerplexityResult> r = Perplexity(**model, tokens, opts, &pool);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tokens, 87);
  EXPECT_EQ(r->n_ctx, 16);
  EXPECT_EQ(r->chunks, 5);
  EXPECT_EQ(r->scored, 5 * 7);  // positions 8..14 predict 9..15
  const ManualPpl m = ManualPerplexity(*tiny, tokens, 16, 1);
  EXPECT_EQ(r->scored, m.scored);
  EXPECT_NEAR(r->ppl, m.ppl, 2e-3 * m.ppl);
  EXPECT_NEAR(r->ppl_err, m.err, 2e-2 * m.err);
  EXPECT_NEAR(r->nll, std::log(m.ppl), 2e-3);
  EXPECT_FALSE(r->has_kl);
}

TEST(Perplexity, DoesNotDependOnTheNumberOfThreads) {
  auto tiny = MakeTinyLlama({.seed = 32});
  Result<std::unique_ptr<Model>> model = Model::Load(tiny->manifest, &tiny->source);
  ASSERT_TRUE(model.ok());
  const auto tokens = RandomTokens(300, tiny->spec.n_vocab, 5);
  PerplexityOptions opts;
  opts.n_ctx = 32;
  opts.bos = 1;
  ThreadPool one(1), three(3);
  Result<PerplexityResult> a = Perplexity(**model, tokens, opts, &one);
  Result<PerplexityResult> b = Perplexity(**model, tokens, opts, &three);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->ppl, b->ppl);
  EXPECT_EQ(a->ppl_err, b->ppl_err);
}

TEST(Perplexity, SaysHowManyTokensATooShortTextNeeds) {
  auto tiny = MakeTinyLlama({});
  Result<std::unique_ptr<Model>> model = Model::Load(tiny->manifest, &tiny->source);
  ASSERT_TRUE(model.ok());
  ThreadPool pool(1);
  PerplexityOptions opts;
  opts.n_ctx = 64;
  Status s = Perplexity(**model, RandomTokens(127, tiny->spec.n_vocab, 1), opts, &pool).status();
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(s.message(),
            "perplexity with a context of 64 tokens needs a text of at least 128 tokens; this text "
            "has only 127");
  EXPECT_TRUE(Perplexity(**model, RandomTokens(128, tiny->spec.n_vocab, 1), opts, &pool).ok());
  opts.n_ctx = 3;
  EXPECT_TRUE(Perplexity(**model, RandomTokens(128, tiny->spec.n_vocab, 1), opts, &pool)
                  .status()
                  .IsInvalidArgument());
}

TEST(Perplexity, KlAgainstABaseModel) {
  auto tiny = MakeTinyLlama({.seed = 33});
  Result<std::unique_ptr<Model>> model = Model::Load(tiny->manifest, &tiny->source);
  Result<std::unique_ptr<Model>> same = Model::Load(tiny->manifest, &tiny->source);
  Result<std::unique_ptr<Model>> other = Model::Load(tiny->manifest, &tiny->source);
  ASSERT_TRUE(model.ok() && same.ok() && other.ok());
  // `other` gets a perturbed output matrix.
  const int idx = (*other)->FindSlot("output.weight");
  Bytes f16;
  std::mt19937 rng(1);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  for (float v : tiny->weights.at("output.weight")) PutU16(&f16, F32ToFp16(v + noise(rng)));
  store::ModuleDesc desc = (*other)->slot(idx)->desc;
  desc.qtype = ToId(QType::kF16);
  ASSERT_TRUE((*other)->SetSlot(idx, store::ModuleData::Owned(f16), desc).ok());

  const auto tokens = RandomTokens(96, tiny->spec.n_vocab, 6);
  ThreadPool pool(2);
  PerplexityOptions opts;
  opts.n_ctx = 32;
  opts.bos = 1;
  Result<PerplexityResult> self = Perplexity(**model, tokens, opts, &pool, same->get());
  ASSERT_TRUE(self.ok());
  EXPECT_TRUE(self->has_kl);
  EXPECT_EQ(self->kl, 0.0);
  EXPECT_EQ(self->same_top, 1.0);
  EXPECT_EQ(self->base_ppl, self->ppl);

  Result<PerplexityResult> r = Perplexity(**other, tokens, opts, &pool, model->get());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->base_ppl, self->ppl);
  // The mean KL over the scored positions, from each model's logits.
  Session a(model->get(), 32, &pool), b(other->get(), 32, &pool);
  double kl = 0;
  int n = 0;
  for (const auto& chunk : PerplexityChunks(tokens, 32, 1)) {
    std::vector<float> la, lb;
    a.Reset();
    b.Reset();
    ASSERT_TRUE(a.Eval(chunk, 16, &la).ok());
    ASSERT_TRUE(b.Eval(chunk, 16, &lb).ok());
    const size_t v = static_cast<size_t>(tiny->spec.n_vocab);
    for (size_t j = 0; j + 1 < 16; ++j, ++n) {
      kl += TokenKl(std::span(la).subspan(j * v, v), std::span(lb).subspan(j * v, v));
    }
  }
  EXPECT_GT(r->kl, 1e-4);
  EXPECT_NEAR(r->kl, kl / n, 1e-12);
  EXPECT_GT(r->kl_err, 0.0);
  EXPECT_LE(r->same_top, 1.0);
}

TEST(Perplexity, ProgressIsReportedAndCanStopTheRun) {
  auto tiny = MakeTinyLlama({});
  Result<std::unique_ptr<Model>> model = Model::Load(tiny->manifest, &tiny->source);
  ASSERT_TRUE(model.ok());
  ThreadPool pool(2);
  const auto tokens = RandomTokens(200, tiny->spec.n_vocab, 2);
  PerplexityOptions opts;
  opts.n_ctx = 20;
  std::vector<int64_t> seen;
  opts.progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(total, 10);
    seen.push_back(done);
    return Status::OK();
  };
  ASSERT_TRUE(Perplexity(**model, tokens, opts, &pool).ok());
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));

  int calls = 0;
  opts.progress = [&](int64_t done, int64_t) {
    ++calls;
    return done >= 3 ? Status::Aborted("stop") : Status::OK();
  };
  Status s = Perplexity(**model, tokens, opts, &pool).status();
  EXPECT_TRUE(s.IsAborted()) << s.ToString();
  EXPECT_LT(calls, 10);
}

}  // namespace
}  // namespace fqpack::runtime
