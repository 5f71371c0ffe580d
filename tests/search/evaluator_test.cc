// Evaluator: calibration chunks, scores against an independent computation,
// activation reuse, and independence from the thread count.
#include "search/evaluator.h"

#include <gtest/gtest.h>

#include "runtime/llama.h"
#include "runtime/perplexity.h"
#include "tests/search/search_fixture.h"

namespace fqpack::search {
namespace {

TEST(CalibSet, CutsWholeChunksWithBosFirst) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < 50; ++i) tokens.push_back(100 + i);
  auto c = MakeCalibSet(tokens, 16, 40, 1);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->chunks(), 2);  // floor(40 / 16)
  EXPECT_EQ(c->scored(), 2 * 15);
  EXPECT_EQ(c->inputs[1][0], 1);
  EXPECT_EQ(c->targets[1][0], 116);
  EXPECT_EQ(c->inputs[1][5], 121);
  EXPECT_EQ(c->targets[0][15], 115);
  auto nobos = MakeCalibSet(tokens, 16, 40, -1);
  ASSERT_TRUE(nobos.ok());
  EXPECT_EQ(nobos->inputs[1][0], 116);
}

TEST(CalibSet, TooShortSaysWhatItNeeds) {
  std::vector<int32_t> tokens(100, 5);
  auto c = MakeCalibSet(tokens, 64, 256, 1);
  ASSERT_TRUE(c.status().IsInvalidArgument());
  EXPECT_NE(c.status().message().find("need 256 tokens"), std::string::npos)
      << c.status().message();
  EXPECT_NE(c.status().message().find("has 100"), std::string::npos) << c.status().message();
  EXPECT_TRUE(MakeCalibSet(tokens, 64, 10, 1).status().IsInvalidArgument());
}

class EvaluatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tiny_ = testing::ThreeQmLibrary();
    auto lib = Library::Build(tiny_->qms, {.include_embed = true});
    ASSERT_TRUE(lib.ok()) << lib.status().ToString();
    lib_ = std::make_unique<Library>(std::move(lib).value());
    tokens_ = testing::RandomTokens(3 * 24, 40, 11);
    auto c = MakeCalibSet(tokens_, 24, 72, 1);
    ASSERT_TRUE(c.ok());
    calib_ = *c;
  }

  std::unique_ptr<Evaluator> Make(int threads, bool reuse) {
    auto ev = Evaluator::Create(lib_.get(), &tiny_->source, calib_, {threads, reuse});
    EXPECT_TRUE(ev.ok()) << ev.status().ToString();
    return ev.ok() ? std::move(ev).value() : nullptr;
  }

  // Score of `state` computed independently: a freshly loaded model per
  // EQM, the KV-cache session, and perplexity.h's TokenKl / TokenNll.
  Score Reference(const EqmState& state) {
    ThreadPool pool(1);
    auto up = runtime::Model::Load(lib_->up().manifest, &tiny_->source, &pool);
    auto m = runtime::Model::Load(lib_->Manifest(state, "ref"), &tiny_->source, &pool);
    EXPECT_TRUE(up.ok() && m.ok());
    double kl = 0, nll = 0;
    int64_t n = 0;
    for (int64_t c = 0; c < calib_.chunks(); ++c) {
      runtime::Session su(up->get(), calib_.n_ctx, &pool), sm(m->get(), calib_.n_ctx, &pool);
      std::vector<float> lu, lm;
      EXPECT_TRUE(su.Eval(calib_.inputs[c], 0, &lu).ok());
      EXPECT_TRUE(sm.Eval(calib_.inputs[c], 0, &lm).ok());
      const size_t v = 40;
      for (int64_t j = 0; j + 1 < calib_.n_ctx; ++j) {
        std::span<const float> ru(lu.data() + j * v, v), rm(lm.data() + j * v, v);
        kl += runtime::TokenKl(ru, rm);
        nll += runtime::TokenNll(rm, calib_.targets[c][j + 1]);
        ++n;
      }
    }
    return {kl / n, nll / n};
  }

  std::unique_ptr<testing::TinyLibrary> tiny_;
  std::unique_ptr<Library> lib_;
  std::vector<int32_t> tokens_;
  CalibSet calib_;
};

TEST_F(EvaluatorTest, ScoresMatchAnIndependentComputation) {
  auto ev = Make(1, true);
  ASSERT_NE(ev, nullptr);
  const EqmState up = lib_->UpState();
  const Score ref_up = Reference(up);
  EXPECT_EQ(ev->up_score().kl, 0);
  EXPECT_NEAR(ev->up_score().nll, ref_up.nll, 1e-6 * ref_up.nll);
  EXPECT_NEAR(ref_up.kl, 0, 1e-12);

  // Two EQMs: one block matrix lowered, and everything lowered.
  EqmState one = up;
  one[lib_->MovableChains(up)[3]] = 2;
  const EqmState low = lib_->LowState();
  std::vector<EvalJob> jobs = {{&one, &up, &ev->up_states(), false},
                               {&low, nullptr, nullptr, false}};
  auto r = ev->Evaluate(jobs);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t k = 0; k < jobs.size(); ++k) {
    const Score ref = Reference(*jobs[k].state);
    EXPECT_GT(ref.kl, 0);
    EXPECT_NEAR((*r)[k].score.kl, ref.kl, 1e-5 * ref.kl) << k;
    EXPECT_NEAR((*r)[k].score.nll, ref.nll, 1e-6 * ref.nll) << k;
  }
}

TEST_F(EvaluatorTest, ReuseGivesTheScoresOfFullEvaluation) {
  auto with = Make(1, true);
  auto without = Make(1, false);
  ASSERT_TRUE(with && without);
  const EqmState up = lib_->UpState();
  // One child per chain and rung, each from QM(n_up)'s activations, and a
  // grandchild from a kept child.
  std::vector<EqmState> states;
  for (size_t i = 0; i < lib_->chains().size(); ++i) {
    for (int r = 1; r <= lib_->chains()[i].moves(); ++r) {
      EqmState s = up;
      s[i] = static_cast<uint8_t>(r);
      states.push_back(s);
    }
  }
  ASSERT_GT(states.size(), 20u);
  std::vector<Score> a, b;
  for (Evaluator* ev : {with.get(), without.get()}) {
    std::vector<EvalJob> jobs;
    for (const EqmState& s : states) jobs.push_back({&s, &up, &ev->up_states(), true});
    auto r = ev->Evaluate(jobs);
    ASSERT_TRUE(r.ok());
    // Grandchild: the second block's ffn_up lowered on top of jobs[0].
    EqmState g = states[0];
    int c = -1;
    for (size_t i = 0; i < lib_->chains().size(); ++i) {
      if (lib_->chains()[i].name == "blk.1.ffn_up.weight") c = static_cast<int>(i);
    }
    ASSERT_GE(c, 0);
    g[c] = 1;
    auto r2 = ev->Evaluate({{&g, &states[0], &(*r)[0].states, false}});
    ASSERT_TRUE(r2.ok());
    std::vector<Score>& out = ev == with.get() ? a : b;
    for (const EvalResult& e : *r) out.push_back(e.score);
    out.push_back((*r2)[0].score);
  }
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].kl, b[k].kl) << k;  // bit for bit
    EXPECT_EQ(a[k].nll, b[k].nll) << k;
  }
  // Reuse ran fewer blocks; without it every evaluation ran all of them.
  EXPECT_LT(with->stats().blocks_run, with->stats().blocks_full);
  EXPECT_EQ(without->stats().blocks_run, without->stats().blocks_full);
  EXPECT_EQ(with->stats().blocks_full, without->stats().blocks_full);
}

TEST_F(EvaluatorTest, FirstChangedLayer) {
  auto ev = Make(1, true);
  ASSERT_NE(ev, nullptr);
  const EqmState up = lib_->UpState();
  for (size_t i = 0; i < lib_->chains().size(); ++i) {
    const SlotChain& c = lib_->chains()[i];
    if (c.moves() == 0) continue;
    EqmState s = up;
    s[i] = 1;
    const int expected = c.kind == "embed" ? -1 : c.kind == "output" ? 2 : c.layer;
    EXPECT_EQ(ev->FirstChangedLayer(up, s), expected) << c.name;
  }
  EXPECT_EQ(ev->FirstChangedLayer(up, up), 2);
}

TEST_F(EvaluatorTest, ThreadCountDoesNotChangeScores) {
  auto one = Make(1, true);
  auto three = Make(3, true);
  ASSERT_TRUE(one && three);
  EXPECT_EQ(one->up_score().nll, three->up_score().nll);
  const EqmState up = lib_->UpState();
  std::vector<EqmState> states;
  for (int c : lib_->MovableChains(up)) {
    EqmState s = up;
    s[c] = 2;
    states.push_back(s);
  }
  std::vector<EvalJob> j1, j3;
  for (const EqmState& s : states) {
    j1.push_back({&s, &up, &one->up_states(), false});
    j3.push_back({&s, &up, &three->up_states(), false});
  }
  auto r1 = one->Evaluate(j1);
  auto r3 = three->Evaluate(j3);
  ASSERT_TRUE(r1.ok() && r3.ok());
  for (size_t k = 0; k < states.size(); ++k) {
    EXPECT_EQ((*r1)[k].score.kl, (*r3)[k].score.kl);
    EXPECT_EQ((*r1)[k].score.nll, (*r3)[k].score.nll);
  }
}

TEST_F(EvaluatorTest, CancelledEvaluationIsAborted) {
  auto ev = Make(2, true);
  ASSERT_NE(ev, nullptr);
  const EqmState low = lib_->LowState();
  auto r = ev->Evaluate({{&low, nullptr, nullptr, false}}, [] { return true; });
  EXPECT_TRUE(r.status().IsAborted());
}

}  // namespace
}  // namespace fqpack::search
