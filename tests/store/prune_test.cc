#include "store/prune.h"

#include <gtest/gtest.h>

#include <map>

#include "schema/quant_types.h"
#include "store/gc.h"
#include "store/gguf_import.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

// A model with up (F16), mid (Q8_0) and low (Q4_0) QMs, and an ensemble that
// moves every slot up -> mid in order, then every slot mid -> low.
class PruneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.Join("store");
    ASSERT_TRUE(Store::Init(Env::Default(), dir_).ok());
    store_ = std::move(Store::Open(Env::Default(), dir_).value());
    testing::TestGguf up = testing::SmallLlama(ToId(QType::kF16), 1);
    testing::TestGguf mid = testing::SmallLlama(ToId(QType::kQ8_0), 2);
    testing::TestGguf low = testing::SmallLlama(ToId(QType::kQ4_0), 3);
    for (size_t i = 0; i < up.tensors.size(); ++i) {
      if (up.tensors[i].type == ToId(QType::kF32))
        mid.tensors[i].data = low.tensors[i].data = up.tensors[i].data;
    }
    for (auto [g, name] :
         {std::pair{&up, "p-F16.gguf"}, {&mid, "p-Q8_0.gguf"}, {&low, "p-Q4_0.gguf"}}) {
      ASSERT_TRUE(ImportGguf(store_.get(), testing::WriteGguf(tmp_.Join(name), *g), {}).ok());
    }
    model_ = *store_->FindModel("p");
    for (const char* l : {"F16", "Q8_0", "Q4_0"}) {
      qm_[l] = *store_->FindQm(model_.id, l);
      mods_[l] = *store_->QmModules(qm_[l].id);
    }
    const size_t n = mods_["F16"].size();
    std::vector<int> level(n, 0);  // 0 up, 1 mid, 2 low
    std::vector<NewEqm> eqms;
    auto snapshot = [&](int step) {
      NewEqm q;
      q.step = step;
      for (size_t i = 0; i < n; ++i) {
        const char* l = level[i] == 0 ? "F16" : level[i] == 1 ? "Q8_0" : "Q4_0";
        q.modules.push_back(mods_[l][i].key);
        q.source_qm_ids.push_back(qm_[l].id);
        q.footprint += mods_[l][i].raw_bytes;
      }
      eqms.push_back(q);
    };
    int step = 0;
    snapshot(step++);
    for (int target = 1; target <= 2; ++target) {
      for (size_t i = 0; i < n; ++i) {
        if (mods_["F16"][i].desc.qtype == ToId(QType::kF32))
          continue;  // norms: same module everywhere
        level[i] = target;
        snapshot(step++);
      }
    }
    eqms_ = eqms;
    NewEnsemble e;
    e.model_id = model_.id;
    e.name = "e";
    e.up_qm_id = qm_["F16"].id;
    e.low_qm_id = qm_["Q4_0"].id;
    e.library = {"F16", "Q8_0", "Q4_0"};
    ASSERT_TRUE(store_->AddEnsemble(e, eqms).ok());
    ensemble_ = *store_->FindEnsemble(model_.id, "e");
  }

  testing::TempDir tmp_;
  std::string dir_;
  std::unique_ptr<Store> store_;
  ModelInfo model_;
  std::map<std::string, QmInfo> qm_;
  std::map<std::string, std::vector<ModuleRef>> mods_;
  std::vector<NewEqm> eqms_;
  EnsembleInfo ensemble_;
};

TEST_F(PruneTest, RanksMidModulesByLowWeightedUse) {
  auto ranked = RankMidModules(store_.get(), ensemble_);
  ASSERT_TRUE(ranked.ok()) << ranked.status().ToString();
  // Candidates: every Q8_0 matrix (the norms are shared with up and low).
  size_t matrices = 0;
  for (const auto& m : mods_["Q8_0"]) matrices += m.desc.qtype == ToId(QType::kQ8_0) ? 1 : 0;
  ASSERT_EQ(ranked->size(), matrices);
  // Independent computation of each score from the EQM list.
  const double f_up = static_cast<double>(eqms_.front().footprint),
               f_low = static_cast<double>(eqms_.back().footprint);
  for (const PruneCandidate& c : *ranked) {
    double expect = 0;
    for (const NewEqm& q : eqms_) {
      for (const ModuleKey& k : q.modules) {
        if (k == c.key) expect += 1 + (f_up - static_cast<double>(q.footprint)) / (f_up - f_low);
      }
    }
    expect /= static_cast<double>(eqms_.size());
    EXPECT_NEAR(c.score, expect, 1e-12);
  }
  for (size_t i = 1; i < ranked->size(); ++i) EXPECT_LE((*ranked)[i - 1].score, (*ranked)[i].score);
}

TEST_F(PruneTest, PruneMarksPartialReplacesTheEnsembleAndGcFrees) {
  auto plan = PlanPrune(store_.get(), ensemble_, 0.5);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->n_pruned, (plan->ranked.size() + 1) / 2);
  EXPECT_LT(plan->store_bytes_after, plan->store_bytes_before);
  // A trivial repair: the old EQMs that use no pruned module, renumbered.
  const std::vector<ModuleKey> gone = plan->pruned_keys();
  std::vector<NewEqm> kept;
  for (NewEqm q : eqms_) {
    bool uses = false;
    for (const ModuleKey& k : q.modules)
      uses = uses || std::find(gone.begin(), gone.end(), k) != gone.end();
    if (uses) continue;
    q.step = static_cast<int>(kept.size());
    kept.push_back(q);
  }
  ASSERT_TRUE(ApplyPrune(store_.get(), *plan, kept, JsonFields().Set("pruned", 0.5)).ok());
  EXPECT_TRUE(store_->FindQm(model_.id, "Q8_0")->partial);
  EXPECT_FALSE(store_->FindQm(model_.id, "F16")->partial);
  EXPECT_EQ(store_->ListEqms(ensemble_.id)->size(), kept.size());
  auto gc = Sweep(store_.get());
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->blobs, plan->n_pruned);
  EXPECT_EQ(store_->Stats()->stored_bytes, plan->store_bytes_after);
  EXPECT_EQ(testing::VerifyErrors(dir_), "");
  // A repair that still uses a pruned module is refused.
  auto plan2 = PlanPrune(store_.get(), ensemble_, 1.0);
  ASSERT_TRUE(plan2.ok());
  EXPECT_FALSE(ApplyPrune(store_.get(), *plan2, eqms_, JsonFields()).ok());
}

TEST_F(PruneTest, CapFindsTheSmallestPruningOrSaysByHowMuchItFails) {
  auto none = PlanCap(store_.get(), ensemble_, UINT64_MAX);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->n_pruned, 0u);
  auto all = PlanPrune(store_.get(), ensemble_, 1.0);
  ASSERT_TRUE(all.ok());
  auto some = PlanCap(store_.get(), ensemble_, all->store_bytes_before - 1);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->n_pruned, 1u);
  EXPECT_LE(some->store_bytes_after, all->store_bytes_before - 1);
  auto exact = PlanCap(store_.get(), ensemble_, all->store_bytes_after);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->n_pruned, all->ranked.size());
  auto impossible = PlanCap(store_.get(), ensemble_, all->store_bytes_after - 100);
  ASSERT_FALSE(impossible.ok());
  EXPECT_NE(impossible.status().message().find("100 bytes over the cap"), std::string::npos)
      << impossible.status().ToString();
}

}  // namespace
}  // namespace fqpack::store
