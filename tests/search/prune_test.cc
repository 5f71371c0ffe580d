// gc --prune as a library call (search/prune.h): the repaired ensemble is a
// real one-module-per-step walk from QM(n_up) to QM(n_low) that uses no
// pruned module, storage falls as P rises, a dry run changes nothing, a
// second prune works on the partial mids, and --cap meets its cap.
#include "search/prune.h"

#include <gtest/gtest.h>

#include <set>

#include "store/gc.h"
#include "store/verify.h"
#include "tests/search/search_fixture.h"

namespace fqpack::search {
namespace {

class PruneEnsembleTest : public ::testing::Test {
 protected:
  // One searched store for the suite; each test prunes a copy.
  static void SetUpTestSuite() {
    template_ = new testing::TempDir();
    auto st = testing::TinyStore(template_->Join("store"), {{"Q8_0", QType::kQ8_0},
                                                            {"Q5_1", QType::kQ5_1},
                                                            {"Q4_1", QType::kQ4_1},
                                                            {"Q4_0", QType::kQ4_0}});
    SearchRequest r;
    r.model = "tiny";
    r.up = "Q8_0";
    r.mids = {"Q5_1", "Q4_1"};
    r.low = "Q4_0";
    const std::string text = testing::RandomText(400, 5);
    r.calib_text.assign(text.begin(), text.end());
    r.tokens = 64;
    r.n_ctx = 32;
    r.threads = 2;
    r.search.stem = 1;
    r.search.branch = 2;
    auto out = SearchEnsemble(st.get(), r);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
  }
  static void TearDownTestSuite() {
    delete template_;
    template_ = nullptr;
  }
  void SetUp() override {
    dir_ = tmp_.Join("store");
    ASSERT_EQ(testing::RunCommand("cp -a '" + template_->Join("store") + "' '" + dir_ + "'"), 0);
    store_ = std::move(store::Store::Open(Env::Default(), dir_).value());
    model_ = *store_->FindModel("tiny");
    ensemble_ = store_->ListEnsembles(model_.id)->front();
  }

  uint64_t StoredBytes() { return store_->Stats()->stored_bytes; }

  // Every EQM of the ensemble, in step order.
  std::vector<store::ModelManifest> Eqms() {
    std::vector<store::ModelManifest> out;
    const std::vector<store::EqmInfo> rows = *store_->ListEqms(ensemble_.id);
    for (const store::EqmInfo& q : rows) {
      auto m = store_->EqmManifest(ensemble_.id, q.step);
      EXPECT_TRUE(m.ok()) << m.status().ToString();
      if (m.ok()) out.push_back(*m);
    }
    return out;
  }

  // The ensemble runs from up to low one module at a time, never using `gone`.
  void ExpectAWalk(const std::set<store::ModuleKey>& gone) {
    const std::vector<store::ModelManifest> eqms = Eqms();
    ASSERT_GE(eqms.size(), 2u);
    const store::ModelManifest up = *store_->QmManifest("tiny", "Q8_0");
    const store::ModelManifest low = *store_->QmManifest("tiny", "Q4_0");
    for (size_t s = 0; s < up.slots.size(); ++s) {
      EXPECT_EQ(eqms.front().slots[s].key, up.slots[s].key) << up.slots[s].name;
      EXPECT_EQ(eqms.back().slots[s].key, low.slots[s].key) << low.slots[s].name;
    }
    for (size_t i = 0; i < eqms.size(); ++i) {
      for (const store::ManifestSlot& s : eqms[i].slots)
        EXPECT_EQ(gone.count(s.key), 0u) << "EQM " << i;
      if (i == 0) continue;
      int changed = 0;
      for (size_t s = 0; s < up.slots.size(); ++s)
        changed += eqms[i].slots[s].key != eqms[i - 1].slots[s].key;
      EXPECT_EQ(changed, 1) << "EQM " << i;
      EXPECT_LT(eqms[i].weight_bytes(), eqms[i - 1].weight_bytes()) << "EQM " << i;
    }
  }

  static testing::TempDir* template_;
  testing::TempDir tmp_;
  std::string dir_;
  std::unique_ptr<store::Store> store_;
  store::ModelInfo model_;
  store::EnsembleInfo ensemble_;
};

testing::TempDir* PruneEnsembleTest::template_ = nullptr;

PruneRequest Request(double p) {
  PruneRequest r;
  r.model = "tiny";
  r.fraction = p;
  r.threads = 2;
  return r;
}

TEST_F(PruneEnsembleTest, StorageFallsWithPAndEveryRepairIsAOneModuleWalk) {
  uint64_t previous = StoredBytes();
  size_t previous_pruned = 0;
  for (double p : {0.0, 0.25, 0.5, 0.75}) {
    SCOPED_TRACE("P = " + std::to_string(p));
    // Each P on its own copy of the searched store.
    store_.reset();
    ASSERT_EQ(testing::RunCommand("rm -rf '" + dir_ + "' && cp -a '" + template_->Join("store") +
                                  "' '" + dir_ + "'"),
              0);
    store_ = std::move(store::Store::Open(Env::Default(), dir_).value());
    auto out = PruneEnsemble(store_.get(), Request(p));
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_GE(out->plan.n_pruned, previous_pruned);
    EXPECT_EQ(out->applied, out->plan.n_pruned > 0);
    previous_pruned = out->plan.n_pruned;
    const std::vector<store::ModuleKey> keys = out->plan.pruned_keys();
    ExpectAWalk({keys.begin(), keys.end()});
    EXPECT_EQ(out->eqms_after, Eqms().size());
    if (p > 0) {
      EXPECT_GT(out->plan.n_pruned, 0u);
      EXPECT_LT(out->eqms_after, out->eqms_before);  // fewer rungs, fewer steps
      EXPECT_TRUE(store_->FindQm(model_.id, "Q5_1")->partial ||
                  store_->FindQm(model_.id, "Q4_1")->partial);
    }
    // The end points never change.
    EXPECT_EQ(out->quality.front().after_ppl, out->quality.front().before_ppl);
    EXPECT_EQ(out->quality.back().after_ppl, out->quality.back().before_ppl);

    auto swept = store::Sweep(store_.get());
    ASSERT_TRUE(swept.ok()) << swept.status().ToString();
    EXPECT_EQ(swept->blobs, out->plan.n_pruned);
    EXPECT_EQ(StoredBytes(), out->plan.store_bytes_after);
    EXPECT_LE(StoredBytes(), previous);
    if (p > 0) {
      EXPECT_LT(StoredBytes(), previous);
    }
    previous = StoredBytes();
    // Idempotent: a second gc frees nothing; the store verifies.
    auto again = store::Sweep(store_.get());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->freed(), 0u);
    auto v = store::VerifyStore(store_.get());
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->ok());
  }
}

TEST_F(PruneEnsembleTest, DryRunPredictsAndChangesNothing) {
  const std::vector<store::ModelManifest> before = Eqms();
  PruneRequest r = Request(0.5);
  r.dry_run = true;
  auto out = PruneEnsemble(store_.get(), r);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_FALSE(out->applied);
  EXPECT_GT(out->plan.n_pruned, 0u);
  EXPECT_LT(out->eqms_after, out->eqms_before);
  const std::vector<store::ModelManifest> after = Eqms();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    for (size_t s = 0; s < after[i].slots.size(); ++s)
      EXPECT_EQ(after[i].slots[s].key, before[i].slots[s].key);
  }
  EXPECT_FALSE(store_->FindQm(model_.id, "Q5_1")->partial);
  EXPECT_FALSE(store_->FindQm(model_.id, "Q4_1")->partial);
  store::SweepOptions dry;
  dry.dry_run = true;
  EXPECT_EQ(store::Sweep(store_.get(), dry)->blobs, 0u);
  // The same plan applied for real gives the rows the dry run predicted.
  auto real = PruneEnsemble(store_.get(), Request(0.5));
  ASSERT_TRUE(real.ok());
  EXPECT_EQ(real->eqms_after, out->eqms_after);
  for (size_t i = 0; i < out->quality.size(); ++i) {
    EXPECT_EQ(real->quality[i].after_step, out->quality[i].after_step);
    EXPECT_DOUBLE_EQ(real->quality[i].after_ppl, out->quality[i].after_ppl);
  }
}

TEST_F(PruneEnsembleTest, ASecondPruneWorksOnThePartialMids) {
  auto first = PruneEnsemble(store_.get(), Request(0.5));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = PruneEnsemble(store_.get(), Request(0.5));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_GT(second->plan.n_pruned, 0u);
  EXPECT_LT(second->plan.ranked.size(), first->plan.ranked.size());
  std::set<store::ModuleKey> gone;
  for (const auto& k : first->plan.pruned_keys()) gone.insert(k);
  for (const auto& k : second->plan.pruned_keys()) gone.insert(k);
  ExpectAWalk(gone);
  ASSERT_TRUE(store::Sweep(store_.get()).ok());
  EXPECT_TRUE(store::VerifyStore(store_.get())->ok());
}

TEST_F(PruneEnsembleTest, CapIsMetOrTheErrorSaysByHowMuch) {
  const uint64_t before = StoredBytes();
  auto all = store::PlanPrune(store_.get(), ensemble_, 1.0);
  ASSERT_TRUE(all.ok());
  const uint64_t floor = all->store_bytes_after;
  PruneRequest r = Request(0);
  r.cap = floor + (before - floor) / 2;
  auto out = PruneEnsemble(store_.get(), r);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_TRUE(store::Sweep(store_.get()).ok());
  EXPECT_LE(StoredBytes(), r.cap);
  EXPECT_GT(out->plan.n_pruned, 0u);
  EXPECT_LT(out->plan.n_pruned, out->plan.ranked.size());

  r.cap = floor - 1000;
  auto too_small = PruneEnsemble(store_.get(), r);
  ASSERT_FALSE(too_small.ok());
  EXPECT_NE(too_small.status().message().find("1000 bytes over the cap"), std::string::npos)
      << too_small.status().ToString();
}

// A redundant rung: chain 0's rung 1 lies on the line from rung 0 to rung 2
// (the same delta per byte), so dropping it only coarsens the curve; chain
// 1's rung 1 is a real step down (a small delta for many bytes, then a
// large one). The area ranking drops the redundant rung first although it
// frees fewer bytes, and dropping it raises the predicted area by exactly
// the granularity lost: (delta(2) - delta(1)) x bytes(0 -> 1).
TEST(AreaRanking, DropsTheRungItsNeighboursMakeRedundantFirst) {
  std::vector<PredictedChain> chains(2);
  chains[0].bytes = {100, 90, 80, 40};
  chains[0].delta = {0, 0.01, 0.02, 1.0};
  chains[1].bytes = {100, 60, 40};
  chains[1].delta = {0, 0.05, 1.0};
  const std::vector<std::vector<char>> all = {{1, 1, 1, 1}, {1, 1, 1}};
  // By hand: the walk takes chain 0 to rung 2 (0.001/byte), chain 1 to
  // rung 1 (0.00125/byte), chain 1 to rung 2 (0.0475/byte), chain 0 to
  // rung 3 (0.0245/byte comes before it). Moves in order, metric after each
  // times bytes saved:
  //   0.01*10 + 0.02*10 + 0.07*40 + 1.05*40 + 2.0*20 = 85.1
  EXPECT_NEAR(PredictedArea(chains, all), 85.1, 1e-9);
  std::vector<std::vector<char>> no_redundant = all;
  no_redundant[0][1] = 0;
  EXPECT_NEAR(PredictedArea(chains, no_redundant) - PredictedArea(chains, all), (0.02 - 0.01) * 10,
              1e-9);
  std::vector<AreaCandidate> cands(3);
  cands[0].places = {{1, 1}};  // the real step: 40 bytes
  cands[0].bytes = 40;
  cands[1].places = {{0, 1}};  // the redundant rung: 10 bytes
  cands[1].bytes = 10;
  cands[2].places = {{0, 2}};  // chain 0's middle: 40 bytes
  cands[2].bytes = 40;
  std::vector<double> cost;
  const std::vector<size_t> order = AreaPruneOrder(chains, cands, &cost);
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0], 1u);
  EXPECT_NEAR(cost[0], 0.1 / 10, 1e-9);
  // The real step goes last: without it chain 1 jumps 60 bytes at 1.0.
  EXPECT_EQ(order[2], 0u);
  for (size_t k = 1; k < cost.size(); ++k) EXPECT_GE(cost[k], 0.0);
}

// A module no chain uses (a mid's module that is not smaller than the rung
// above it) costs nothing and goes first, the larger of two such first.
TEST(AreaRanking, UnusedModulesGoFirstLargestFirst) {
  std::vector<PredictedChain> chains(1);
  chains[0].bytes = {100, 50, 10};
  chains[0].delta = {0, 0.1, 1.0};
  std::vector<AreaCandidate> cands(3);
  cands[0].places = {{0, 1}};
  cands[0].bytes = 50;
  cands[1].bytes = 7;
  cands[2].bytes = 9;
  const std::vector<size_t> order = AreaPruneOrder(chains, cands);
  EXPECT_EQ(order, (std::vector<size_t>{2, 1, 0}));
}

// --rank uses is store/prune.h's ranking unchanged; --rank area prunes a
// permutation of the same candidates and the repair is still a walk.
TEST_F(PruneEnsembleTest, BothRankingsPruneTheSameCandidates) {
  auto uses_order = store::RankMidModules(store_.get(), ensemble_);
  ASSERT_TRUE(uses_order.ok()) << uses_order.status().ToString();
  PruneRequest r = Request(0.5);
  r.dry_run = true;
  r.ranking = PruneRanking::kUses;
  auto uses = PruneEnsemble(store_.get(), r);
  ASSERT_TRUE(uses.ok()) << uses.status().ToString();
  ASSERT_EQ(uses->plan.ranked.size(), uses_order->size());
  for (size_t i = 0; i < uses_order->size(); ++i) {
    EXPECT_EQ(uses->plan.ranked[i].key, (*uses_order)[i].key) << i;
  }
  r.ranking = PruneRanking::kArea;
  r.dry_run = false;
  auto area = PruneEnsemble(store_.get(), r);
  ASSERT_TRUE(area.ok()) << area.status().ToString();
  std::set<store::ModuleKey> a, b;
  for (const auto& c : area->plan.ranked) a.insert(c.key);
  for (const auto& c : *uses_order) b.insert(c.key);
  EXPECT_EQ(a, b);
  EXPECT_EQ(area->plan.n_pruned, uses->plan.n_pruned);
  const std::vector<store::ModuleKey> gone = area->plan.pruned_keys();
  ExpectAWalk(std::set<store::ModuleKey>(gone.begin(), gone.end()));
}

}  // namespace
}  // namespace fqpack::search
