#include "runtime/generate.h"

#include <gtest/gtest.h>

#include "tests/support/tiny_llama.h"

namespace fqpack::runtime {
namespace {

using testing::MakeTinyLlama;

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tiny_ = MakeTinyLlama({.n_vocab = 24, .seed = 41});
    Result<std::unique_ptr<Model>> m = Model::Load(tiny_->manifest, &tiny_->source);
    ASSERT_TRUE(m.ok());
    model_ = std::move(m).value();
  }

  // Greedy continuation computed without the KV cache: every step re-runs
  // the whole prefix from scratch and takes the argmax of its last logits.
  std::vector<int32_t> GreedyByRecomputation(std::vector<int32_t> prefix, int n) {
    BatchEvaluator eval(model_.get(), &pool_);
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
      Result<LayerStates> st = eval.Run(prefix);
      EXPECT_TRUE(st.ok());
      std::vector<float> logits;
      EXPECT_TRUE(eval.Logits(*st, prefix.size() - 1, &logits).ok());
      const int32_t next = Sampler::Argmax(logits);
      out.push_back(next);
      prefix.push_back(next);
    }
    return out;
  }

  Result<GenerateStats> Run(std::vector<int32_t> prompt, GenerateOptions opts, int64_t n_ctx = 64,
                            std::vector<int32_t>* seen = nullptr) {
    Session session(model_.get(), n_ctx, &pool_);
    return Generate(&session, prompt, opts, [seen](int32_t t) {
      if (seen != nullptr) seen->push_back(t);
      return Status::OK();
    });
  }

  std::unique_ptr<testing::TinyLlama> tiny_;
  std::unique_ptr<Model> model_;
  ThreadPool pool_{2};
};

TEST_F(GenerateTest, GreedyEqualsRecomputingEveryPrefix) {
  GenerateOptions opts;
  opts.n_predict = 12;
  opts.sampling.temperature = 0;
  std::vector<int32_t> seen;
  Result<GenerateStats> r = Run({1, 5, 9}, opts, 64, &seen);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->prompt_tokens, 3);
  EXPECT_EQ(r->generated, 12);
  EXPECT_EQ(r->stop, StopReason::kLength);
  EXPECT_EQ(r->tokens, seen);
  EXPECT_EQ(r->tokens, GreedyByRecomputation({1, 5, 9}, 12));
}

TEST_F(GenerateTest, StopsAtEosAndAtBosWithoutPassingThem) {
  GenerateOptions opts;
  opts.n_predict = 12;
  opts.sampling.temperature = 0;
  const std::vector<int32_t> all = GreedyByRecomputation({1}, 12);
  // Declare the 6th generated token the end of text (or BOS): generation
  // stops before its first occurrence.
  const int32_t stop = all[5];
  const size_t first = static_cast<size_t>(std::find(all.begin(), all.end(), stop) - all.begin());
  opts.eos = stop;
  Result<GenerateStats> r = Run({1}, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kEos);
  EXPECT_EQ(r->tokens, std::vector<int32_t>(all.begin(), all.begin() + first));
  opts.eos = -1;
  opts.bos = stop;
  r = Run({1}, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kBos);
  EXPECT_EQ(r->generated, static_cast<int64_t>(first));
}

TEST_F(GenerateTest, StopsWhenTheContextIsFull) {
  GenerateOptions opts;
  opts.sampling.temperature = 0;  // n_predict -1: no length limit
  Result<GenerateStats> r = Run({1, 2, 3}, opts, 10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kContextFull);
  // 10 positions hold the prompt and 7 generated tokens; the 8th is sampled
  // from the logits of position 9 and needs no position of its own.
  EXPECT_EQ(r->generated, 8);
}

TEST_F(GenerateTest, SeededSamplingIsReproducible) {
  GenerateOptions opts;
  opts.n_predict = 30;
  opts.sampling = {.temperature = 1.5f, .top_p = 0.98f, .seed = 123};
  Result<GenerateStats> a = Run({1}, opts);
  Result<GenerateStats> b = Run({1}, opts);
  opts.sampling.seed = 124;
  Result<GenerateStats> c = Run({1}, opts);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_NE(a->tokens, c->tokens);
}

TEST_F(GenerateTest, ZeroTokensAndCallbackErrors) {
  GenerateOptions opts;
  opts.n_predict = 0;
  Result<GenerateStats> r = Run({1, 4}, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->generated, 0);

  opts.n_predict = 10;
  opts.sampling.temperature = 0;
  Session session(model_.get(), 64, &pool_);
  int calls = 0;
  Result<GenerateStats> aborted = Generate(&session, std::vector<int32_t>{1}, opts, [&](int32_t) {
    return ++calls == 3 ? Status::Aborted("interrupted") : Status::OK();
  });
  EXPECT_TRUE(aborted.status().IsAborted());
  EXPECT_EQ(calls, 3);
}

TEST_F(GenerateTest, RejectsBadPromptsAndOptions) {
  GenerateOptions opts;
  EXPECT_TRUE(Run({}, opts).status().IsInvalidArgument());
  EXPECT_TRUE(Run(std::vector<int32_t>(20, 3), opts, 16).status().IsInvalidArgument());
  opts.sampling.top_p = 0;
  EXPECT_TRUE(Run({1}, opts).status().IsInvalidArgument());
}

}  // namespace
}  // namespace fqpack::runtime
