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

}  // namespace
}  // namespace fqpack::search
