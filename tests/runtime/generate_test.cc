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

  // Greedy generation with llama.cpp's context shift, computed without the
  // KV cache: the window of tokens the context holds is re-run from scratch
  // at positions 0.. for every token; when it is full, it keeps its first
  // n_keep tokens and drops the oldest half of the rest. *shifts counts them.
  std::vector<int32_t> GreedyWithShiftsByRecomputation(std::vector<int32_t> window, int n,
                                                       size_t n_ctx, size_t n_keep,
                                                       int64_t* shifts) {
    BatchEvaluator eval(model_.get(), &pool_);
    std::vector<int32_t> out;
    *shifts = 0;
    for (int i = 0; i < n; ++i) {
      Result<LayerStates> st = eval.Run(window);
      EXPECT_TRUE(st.ok());
      std::vector<float> logits;
      EXPECT_TRUE(eval.Logits(*st, window.size() - 1, &logits).ok());
      const int32_t next = Sampler::Argmax(logits);
      out.push_back(next);
      if (i + 1 == n) break;  // the last token is never evaluated
      if (window.size() == n_ctx) {
        const size_t discard = (n_ctx - n_keep) / 2;
        window.erase(window.begin() + static_cast<ptrdiff_t>(n_keep),
                     window.begin() + static_cast<ptrdiff_t>(n_keep + discard));
        ++*shifts;
      }
      window.push_back(next);
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

TEST_F(GenerateTest, StopsAtEosEotAndBosWithoutPassingThem) {
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
  // A chat vocabulary's end-of-turn token stops it the same way.
  opts.eos = -1;
  opts.eot = stop;
  r = Run({1}, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kEos);
  EXPECT_EQ(r->generated, static_cast<int64_t>(first));
  opts.eot = -1;
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
  EXPECT_EQ(r->context_shifts, 0);

  // With a token limit too when shifting is off, or when a shift could drop
  // nothing: keeping 9 of 10 tokens leaves one, and half of one is none.
  opts.n_predict = 50;
  opts.context_shift = false;
  r = Run({1, 2, 3}, opts, 10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kContextFull);
  EXPECT_EQ(r->generated, 8);
  opts.context_shift = true;
  opts.n_keep = 9;
  r = Run({1, 2, 3}, opts, 10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kContextFull);
  EXPECT_EQ(r->generated, 8);
}

TEST_F(GenerateTest, ShiftsTheContextToGeneratePastIt) {
  GenerateOptions opts;
  opts.n_predict = 100;
  opts.sampling.temperature = 0;
  for (int64_t n_keep : {1, 3}) {
    opts.n_keep = n_keep;
    std::vector<int32_t> seen;
    Result<GenerateStats> r = Run({1, 5, 9}, opts, 32, &seen);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->generated, 100);
    EXPECT_EQ(r->stop, StopReason::kLength);
    EXPECT_EQ(r->tokens, seen);
    int64_t shifts = 0;
    EXPECT_EQ(r->tokens, GreedyWithShiftsByRecomputation({1, 5, 9}, 100, 32,
                                                         static_cast<size_t>(n_keep), &shifts))
        << "n_keep " << n_keep;
    // 3 + 99 evaluated tokens through 32 positions: the first shift before
    // the 30th new token is evaluated, then one every 15 (n_keep 1) or 14
    // (n_keep 3) tokens.
    EXPECT_EQ(shifts, 5);
    EXPECT_EQ(r->context_shifts, shifts);
    // Greedy output after shifts is deterministic.
    Result<GenerateStats> again = Run({1, 5, 9}, opts, 32);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->tokens, r->tokens);
  }
}

TEST_F(GenerateTest, AShiftLeavesWhatAFreshSessionHoldsForTheKeptTokens) {
  const std::vector<int32_t> text = {1, 7, 3, 19, 4, 4, 11, 2, 8, 15, 22, 6, 9, 13, 5, 17};
  Session session(model_.get(), 16, &pool_);
  ASSERT_TRUE(session.Eval(text, text.size(), nullptr).ok());
  GenerateOptions opts;
  opts.n_keep = 3;
  std::vector<float> shifted_last;
  Result<int64_t> dropped = ShiftContext(&session, opts, &shifted_last);
  ASSERT_TRUE(dropped.ok()) << dropped.status().ToString();
  // 16 - 3 = 13 after the kept ones; the oldest 6 go, the other 7 move down
  // to positions 3..9.
  EXPECT_EQ(*dropped, 6);
  std::vector<int32_t> kept(text.begin(), text.begin() + 3);
  kept.insert(kept.end(), text.begin() + 9, text.end());
  EXPECT_EQ(session.n_past(), 10);
  EXPECT_EQ(std::vector<int32_t>(session.tokens().begin(), session.tokens().end()), kept);

  // The logits right after the shift equal, bit for bit, those of a fresh
  // session evaluated on the kept tokens at positions 0..9: the shift
  // evaluates them again rather than rotating cached keys (generate.cc).
  Session fresh(model_.get(), 16, &pool_);
  std::vector<float> fresh_last;
  ASSERT_TRUE(fresh.Eval(kept, kept.size() - 1, &fresh_last).ok());
  EXPECT_EQ(shifted_last, fresh_last);
  std::vector<float> after;
  std::vector<float> fresh_after;
  ASSERT_TRUE(session.Decode(12, &after).ok());
  ASSERT_TRUE(fresh.Decode(12, &fresh_after).ok());
  EXPECT_EQ(after, fresh_after);

  // Nothing to drop: the session is left as it was.
  opts.n_keep = 11;
  ASSERT_TRUE(session.Eval(std::vector<int32_t>{3}, 1, nullptr).ok());
  std::vector<float> untouched = {42.0f};
  dropped = ShiftContext(&session, opts, &untouched);
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 0);
  EXPECT_EQ(session.n_past(), 12);
  EXPECT_EQ(untouched, std::vector<float>{42.0f});
}

TEST_F(GenerateTest, APerTokenHookSeesTheKeptTokensEvaluatedAgain) {
  GenerateOptions opts;
  opts.n_predict = 40;
  opts.sampling.temperature = 0;
  Result<GenerateStats> plain = Run({1, 5, 9}, opts, 16);
  int64_t calls = 0;
  int64_t empty = 0;
  opts.before_token = [&](std::span<const float> previous) {
    ++calls;
    if (previous.empty()) ++empty;
    return Status::OK();
  };
  Result<GenerateStats> hooked = Run({1, 5, 9}, opts, 16);
  ASSERT_TRUE(plain.ok() && hooked.ok());
  EXPECT_EQ(hooked->tokens, plain->tokens);
  ASSERT_GT(hooked->context_shifts, 0);
  // Every evaluated position: the prompt, the generated tokens but the last,
  // and the kept tokens of every shift (16 - 7 = 9 each with n_keep 1), each
  // starting again from a position whose previous logits are unknown.
  EXPECT_EQ(calls, 3 + 39 + 9 * hooked->context_shifts);
  EXPECT_EQ(empty, 1 + hooked->context_shifts);
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
