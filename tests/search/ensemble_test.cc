// SearchEnsemble: the ensemble as rows in the store, written in one
// transaction or not at all, and the errors a bad request gives before any
// work.
#include "search/ensemble.h"

#include <gtest/gtest.h>

#include <atomic>

#include "schema/sha256.h"
#include "tests/search/search_fixture.h"
#include "tests/support/store_util.h"

namespace fqpack::search {
namespace {

class SearchEnsembleTest : public ::testing::Test {
 protected:
  // One store for the suite (imports fsync every file); each test works on
  // a copy.
  static void SetUpTestSuite() {
    template_ = new testing::TempDir();
    testing::TinyStore(template_->Join("store"),
                       {{"Q8_0", QType::kQ8_0}, {"Q5_0", QType::kQ5_0}, {"Q4_0", QType::kQ4_0}});
  }
  static void TearDownTestSuite() {
    delete template_;
    template_ = nullptr;
  }
  void SetUp() override {
    dir_ = tmp_.Join("store");
    ASSERT_EQ(testing::RunCommand("cp -a '" + template_->Join("store") + "' '" + dir_ + "'"), 0);
    auto st = store::Store::Open(Env::Default(), dir_);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    store_ = std::move(st).value();
  }

  SearchRequest Request() {
    SearchRequest r;
    r.model = "tiny";
    r.up = "Q8_0";
    r.mids = {"Q5_0"};
    r.low = "Q4_0";
    const std::string text = testing::RandomText(400, 5);
    r.calib_text.assign(text.begin(), text.end());
    r.tokens = 128;
    r.n_ctx = 32;
    r.threads = 2;
    r.search.stem = 2;
    r.search.branch = 3;
    return r;
  }

  static testing::TempDir* template_;
  testing::TempDir tmp_;
  std::string dir_;
  std::unique_ptr<store::Store> store_;
};

testing::TempDir* SearchEnsembleTest::template_ = nullptr;

TEST_F(SearchEnsembleTest, WritesTheEnsembleAsRows) {
  SearchRequest req = Request();
  auto out = SearchEnsemble(store_.get(), req);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->name, "Q8_0-Q5_0-Q4_0");
  EXPECT_EQ(out->chunks, 4);

  auto model = store_->FindModel("tiny");
  ASSERT_TRUE(model.ok());
  auto e = store_->FindEnsemble(model->id, out->name);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(store::ToJson(e->library), "[\"Q8_0\",\"Q5_0\",\"Q4_0\"]");
  EXPECT_EQ(e->calib_sha256, Sha256::HexOf(req.calib_text));
  EXPECT_NE(store::ToJson(e->params).find("\"stem\":2"), std::string::npos)
      << store::ToJson(e->params);
  EXPECT_NE(store::ToJson(e->params).find("\"metric\":\"kl\""), std::string::npos);
  EXPECT_EQ(e->params.Int("stem"), 2);
  EXPECT_EQ(e->params.String("metric"), "kl");
  auto up = store_->FindQm(model->id, "Q8_0");
  auto low = store_->FindQm(model->id, "Q4_0");
  ASSERT_TRUE(up.ok() && low.ok());
  EXPECT_EQ(e->up_qm_id, up->id);
  EXPECT_EQ(e->low_qm_id, low->id);

  auto eqms = store_->ListEqms(e->id);
  ASSERT_TRUE(eqms.ok());
  ASSERT_EQ(eqms->size(), out->result.steps.size());
  auto up_m = store_->QmManifest("tiny", "Q8_0");
  auto low_m = store_->QmManifest("tiny", "Q4_0");
  ASSERT_TRUE(up_m.ok() && low_m.ok());
  store::ModelManifest prev;
  for (size_t i = 0; i < eqms->size(); ++i) {
    const store::EqmInfo& q = (*eqms)[i];
    EXPECT_EQ(q.step, static_cast<int>(i));
    EXPECT_EQ(q.footprint, out->result.steps[i].footprint);
    EXPECT_EQ(q.calib_kl, out->result.steps[i].score.kl);
    EXPECT_EQ(q.calib_metric, q.calib_kl);
    EXPECT_DOUBLE_EQ(q.calib_ppl, out->result.steps[i].score.ppl());
    auto m = store_->EqmManifest(e->id, q.step);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->weight_bytes(), q.footprint);
    if (i == 0) {
      for (size_t s = 0; s < m->slots.size(); ++s) EXPECT_EQ(m->slots[s].key, up_m->slots[s].key);
    } else {
      int changed = 0;
      for (size_t s = 0; s < m->slots.size(); ++s) changed += m->slots[s].key != prev.slots[s].key;
      EXPECT_EQ(changed, 1) << "step " << i;
    }
    prev = *m;
  }
  for (size_t s = 0; s < prev.slots.size(); ++s) EXPECT_EQ(prev.slots[s].key, low_m->slots[s].key);

  // Each module row names the first library QM that holds it.
  EXPECT_EQ(testing::IndexQueryInt(
                dir_,
                "SELECT count(*) FROM eqm_module m JOIN eqm x ON x.id = m.eqm_id "
                "LEFT JOIN qm_module q ON q.qm_id = m.qm_id AND q.slot_idx = m.slot_idx "
                "WHERE x.ensemble_id = " +
                    std::to_string(e->id) + " AND (q.hash IS NULL OR q.hash != m.hash)"),
            0);
  EXPECT_EQ(testing::VerifyErrors(dir_), "");
}

TEST_F(SearchEnsembleTest, InterruptionLeavesTheStoreAsItWas) {
  store_.reset();
  const std::string before = testing::SnapshotStore(dir_);
  auto st = store::Store::Open(Env::Default(), dir_);
  ASSERT_TRUE(st.ok());
  for (int after : {1, 50, 400}) {
    SearchRequest req = Request();
    std::atomic<int> polls{0};
    req.search.cancelled = [&] { return ++polls > after; };
    auto out = SearchEnsemble(st->get(), req);
    EXPECT_TRUE(out.status().IsAborted()) << after << ": " << out.status().ToString();
  }
  st->reset();
  EXPECT_EQ(testing::SnapshotStore(dir_), before);
}

TEST_F(SearchEnsembleTest, AFailedWriteLeavesNoRows) {
  // The rows of a finished search, the last EQM naming a module the store
  // does not hold: AddEnsemble fails after inserting the earlier EQMs.
  auto lib = LoadLibrary(store_.get(), "tiny", "Q8_0", {}, "Q4_0", {});
  ASSERT_TRUE(lib.ok());
  SearchResult r;
  EqmState s = lib->UpState();
  r.steps.push_back({s, -1, lib->Footprint(s), {}, 0});
  for (int c : lib->MovableChains(s)) {
    s[c] = 1;
    r.steps.push_back({s, c, lib->Footprint(s), {}, 0});
  }
  std::vector<store::NewEqm> rows = EqmRows(*lib, r);
  ASSERT_GT(rows.size(), 3u);
  rows.back().modules[3].bytes[0] ^= 0xff;
  store::NewEnsemble e;
  e.model_id = store_->FindModel("tiny")->id;
  e.name = "broken";
  e.up_qm_id = lib->up().qm_id;
  e.low_qm_id = lib->low().qm_id;
  for (const LibraryQm& q : lib->qms()) e.library.push_back(q.label);
  store_.reset();
  const std::string before = testing::SnapshotStore(dir_);
  auto st = store::Store::Open(Env::Default(), dir_);
  ASSERT_TRUE(st.ok());
  auto id = (*st)->AddEnsemble(e, rows);
  EXPECT_FALSE(id.ok());
  st->reset();
  EXPECT_EQ(testing::SnapshotStore(dir_), before);
}

TEST_F(SearchEnsembleTest, BadRequestsFailBeforeAnyWork) {
  std::atomic<int> evaluations{0};
  auto run = [&](SearchRequest req) {
    req.search.cancelled = [&] {
      ++evaluations;
      return false;
    };
    return SearchEnsemble(store_.get(), req).status();
  };
  SearchRequest r = Request();
  r.model = "nope";
  EXPECT_TRUE(run(r).IsNotFound());
  r = Request();
  r.up = "Q9";
  Status s = run(r);
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_NE(s.message().find("Q8_0, Q5_0, Q4_0"), std::string::npos) << s.message();
  r = Request();
  std::swap(r.up, r.low);
  r.mids.clear();
  EXPECT_TRUE(run(r).IsInvalidArgument());
  r = Request();
  r.tokens = 100000;
  s = run(r);
  ASSERT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("too short"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("need 100000"), std::string::npos) << s.message();
  r = Request();
  r.search.stem = 0;
  EXPECT_TRUE(run(r).IsInvalidArgument());
  EXPECT_EQ(evaluations.load(), 0);

  // A second ensemble of the same name is refused up front.
  ASSERT_TRUE(SearchEnsemble(store_.get(), Request()).ok());
  const int before = evaluations.load();
  s = run(Request());
  ASSERT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("already has an ensemble"), std::string::npos) << s.message();
  EXPECT_EQ(evaluations.load(), before);
}

}  // namespace
}  // namespace fqpack::search
