// The report's numbers: granularity and storage against hand and
// independent computations, perplexities against runtime::Perplexity, the
// EQMs evaluated, and the JSON keys scripts rely on.
#include "search/report.h"

#include <gtest/gtest.h>

#include <set>

#include "runtime/perplexity.h"
#include "runtime/tokenizer.h"
#include "search/ensemble.h"
#include "tests/search/search_fixture.h"

namespace fqpack::search {
namespace {

TEST(Granularity, MedianAndMaxOfNeighbourSteps) {
  StepStats s = FootprintSteps({2, 10, 3, 7});  // steps 3, 4, 1
  EXPECT_EQ(s.steps, 3u);
  EXPECT_EQ(s.median, 3);
  EXPECT_EQ(s.max, 4u);
  s = FootprintSteps({10, 8, 4, 3, 1});  // steps 2, 4, 1, 2
  EXPECT_EQ(s.median, 2);
  s = FootprintSteps({10, 9, 5, 3, 0});  // steps 1, 4, 2, 3
  EXPECT_EQ(s.median, 2.5);
  EXPECT_EQ(FootprintSteps({5}).steps, 0u);

  const Granularity g = ComputeGranularity({100, 98, 97, 95, 94, 60}, {100, 80, 60});
  EXPECT_EQ(g.up_footprint, 100u);
  EXPECT_EQ(g.ensemble.median, 2);  // steps 2, 1, 2, 1, 34
  EXPECT_EQ(g.ensemble.max, 34u);
  EXPECT_EQ(g.library.median, 20);
  EXPECT_DOUBLE_EQ(g.ratio(), 10);
  EXPECT_DOUBLE_EQ(g.median_pct(), 2);
  EXPECT_DOUBLE_EQ(g.static_median_pct(), 20);
}

TEST(Report, BlankEndOfText) {
  const std::string in = "a\n<|endoftext|>\nb\r\n<|endoftext|>\r\n<|endoftext|> x\n<|endoftext|>";
  const std::string want = "a\n\nb\r\n\n<|endoftext|> x\n";
  const Bytes out =
      BlankEndOfText(ByteSpan(reinterpret_cast<const uint8_t*>(in.data()), in.size()));
  EXPECT_EQ(std::string(out.begin(), out.end()), want);
}

TEST(Report, BlankedValidationTextIsLlamaCppsPerplexityFile) {
  FQ_REQUIRE_TESTDATA();
  auto val = ReadFileBytes(Env::Default(), testing::TestDataPath("text/tinystories_val.txt"));
  auto ppl = ReadFileBytes(Env::Default(), testing::TestDataPath("text/tinystories_val.ppl.txt"));
  ASSERT_TRUE(val.ok() && ppl.ok());
  EXPECT_TRUE(BlankEndOfText(*val) == *ppl);
}

// One store with two ensembles for the suite: the tests only read it.
class ReportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    store_ = testing::TinyStore(
        tmp_->Join("s"), {{"Q8_0", QType::kQ8_0}, {"Q5_0", QType::kQ5_0}, {"Q4_0", QType::kQ4_0}});
    SearchRequest r;
    r.model = "tiny";
    r.up = "Q8_0";
    r.mids = {"Q5_0"};
    r.low = "Q4_0";
    const std::string text = testing::RandomText(300, 8);
    r.calib_text.assign(text.begin(), text.end());
    r.tokens = 96;
    r.n_ctx = 32;
    r.threads = 2;
    r.search.stem = 1;
    r.search.branch = 2;
    auto out = SearchEnsemble(store_.get(), r);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    // A second ensemble without the mid, for two curves.
    r.mids.clear();
    ASSERT_TRUE(SearchEnsemble(store_.get(), r).ok());
    const std::string eval = testing::RandomText(600, 9);
    eval_.assign(eval.begin(), eval.end());
  }

  static ReportOptions Options() {
    ReportOptions o;
    o.ensembles = {"Q8_0-Q5_0-Q4_0"};
    o.has_eval_text = true;
    o.eval_text = eval_;
    o.eval_name = "eval.txt";
    o.n_ctx = 32;
    o.max_chunks = 6;
    o.every = 7;
    o.threads = 2;
    return o;
  }

  double Ppl(const store::ModelManifest& m) {
    ThreadPool pool(1);
    auto model = runtime::Model::Load(m, store_.get(), &pool);
    EXPECT_TRUE(model.ok());
    auto md = gguf::ParseMetadata(m.metadata, m.n_kv, "tiny");
    auto tok = runtime::Tokenizer::FromMetadata(*md);
    const std::string text(eval_.begin(), eval_.end());
    const std::vector<int32_t> tokens = tok->Encode(text, true);
    runtime::PerplexityOptions o;
    o.n_ctx = 32;
    o.bos = tok->bos();
    o.max_chunks = 6;
    auto r = runtime::Perplexity(**model, tokens, o, &pool);
    EXPECT_TRUE(r.ok());
    return r->ppl;
  }

  static void TearDownTestSuite() {
    store_.reset();
    delete tmp_;
    tmp_ = nullptr;
  }

  static testing::TempDir* tmp_;
  static std::unique_ptr<store::Store> store_;
  static Bytes eval_;
};

testing::TempDir* ReportTest::tmp_ = nullptr;
std::unique_ptr<store::Store> ReportTest::store_;
Bytes ReportTest::eval_;

TEST_F(ReportTest, NumbersAgainstIndependentComputations) {
  auto r = BuildReport(store_.get(), "tiny", Options());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->ensembles.size(), 1u);
  const EnsembleReport& e = r->ensembles[0];
  EXPECT_EQ(e.library, (std::vector<std::string>{"Q8_0", "Q5_0", "Q4_0"}));
  EXPECT_EQ(e.metric, "kl");
  EXPECT_EQ(r->chunks, 6);

  // Static points: the three QMs, largest first, with their footprints.
  ASSERT_EQ(r->statics.size(), 3u);
  EXPECT_EQ(r->statics[0].label, "Q8_0");
  EXPECT_EQ(r->statics[2].label, "Q4_0");
  auto ens = store_->FindEnsemble(1, "Q8_0-Q5_0-Q4_0");
  ASSERT_TRUE(ens.ok());

  // Storage: distinct module keys over every EQM, counted here.
  std::set<std::string> keys;
  uint64_t distinct = 0, per_footprint = 0;
  std::vector<uint64_t> fps;
  for (const EqmPoint& p : e.eqms) {
    auto m = store_->EqmManifest(ens->id, p.step);
    ASSERT_TRUE(m.ok());
    for (const auto& s : m->slots) {
      if (keys.insert(s.key.Hex()).second) distinct += s.bytes;
    }
    per_footprint += m->weight_bytes();
    fps.push_back(m->weight_bytes());
  }
  uint64_t library = 0;
  for (const StaticPoint& s : r->statics) library += s.footprint;
  EXPECT_EQ(e.storage.ensemble_bytes, distinct);
  EXPECT_EQ(e.storage.per_footprint_bytes, per_footprint);
  EXPECT_EQ(e.storage.library_bytes, library);
  EXPECT_LE(e.storage.ensemble_bytes, e.storage.library_bytes);
  EXPECT_DOUBLE_EQ(e.storage.ratio(), static_cast<double>(per_footprint) / distinct);
  EXPECT_EQ(e.granularity.ensemble.median, FootprintSteps(fps).median);

  // Evaluated: every 7th step, the last, and the EQM at or below each
  // static footprint; their perplexities are runtime::Perplexity's.
  std::set<int> want;
  for (const EqmPoint& p : e.eqms) {
    if (p.step % 7 == 0) want.insert(p.step);
  }
  want.insert(e.eqms.back().step);
  ASSERT_EQ(e.quality.size(), 3u);
  for (const QualityRow& q : e.quality) {
    int best = -1;
    for (const EqmPoint& p : e.eqms) {
      if (p.footprint <= q.static_footprint && (best < 0 || p.footprint > e.eqms[best].footprint)) {
        best = p.step;
      }
    }
    EXPECT_EQ(q.eqm_step, best) << q.label;
    want.insert(best);
  }
  std::set<int> got;
  for (const EqmPoint& p : e.eqms) {
    if (p.evaluated) got.insert(p.step);
  }
  EXPECT_EQ(got, want);
  const EqmPoint& mid = e.eqms[static_cast<size_t>(e.quality[1].eqm_step)];
  auto mid_m = store_->EqmManifest(ens->id, mid.step);
  ASSERT_TRUE(mid_m.ok());
  EXPECT_DOUBLE_EQ(mid.eval_ppl, Ppl(*mid_m));
  auto q5 = store_->QmManifest("tiny", "Q5_0");
  ASSERT_TRUE(q5.ok());
  EXPECT_DOUBLE_EQ(r->statics[1].eval_ppl, Ppl(*q5));
  EXPECT_DOUBLE_EQ(e.quality[1].delta_pct(), 100 * (mid.eval_ppl / r->statics[1].eval_ppl - 1));
  // Up and low are EQMs 0 and last: the same models, the same numbers.
  EXPECT_EQ(e.eqms.front().eval_ppl, r->statics[0].eval_ppl);
  EXPECT_EQ(e.eqms.back().eval_ppl, r->statics[2].eval_ppl);
}

TEST_F(ReportTest, JsonAndPlotCoverEveryCurve) {
  ReportOptions o = Options();
  o.ensembles = {"Q8_0-Q5_0-Q4_0", "Q8_0-Q4_0"};
  o.every = 1000;
  auto r = BuildReport(store_.get(), "tiny", o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->ensembles.size(), 2u);
  const std::string json = ReportJson(*r);
  for (const char* key :
       {"\"eqms\"", "\"static\"", "\"granularity\"", "\"median_step\"", "\"max_step\"",
        "\"static_median_step\"", "\"ratio\"", "\"storage\"", "\"ensemble_bytes\"",
        "\"library_bytes\"", "\"per_footprint_bytes\"", "\"curves\"", "\"eval_ppl\"",
        "\"calib_metric\"", "\"footprint\"", "\"quality\""}) {
    EXPECT_NE(json.find(key), std::string::npos) << key;
  }
  size_t curves = 0;
  for (size_t at = json.find("\"name\""); at != std::string::npos;
       at = json.find("\"name\"", at + 1)) {
    ++curves;
  }
  EXPECT_EQ(curves, 2u);
  const PlotSpec plot = ReportPlot(*r);
  ASSERT_EQ(plot.series.size(), 3u);  // two curves and the static points
  EXPECT_EQ(plot.series[2].points.size(), 3u);
  EXPECT_EQ(plot.series[2].points[0].label, "Q8_0");
  EXPECT_NE(plot.x_label.find("KiB"), std::string::npos);  // a tiny model
  EXPECT_NE(plot.y_label.find("-c 32"), std::string::npos);
}

TEST_F(ReportTest, WithoutEvaluationAndWithoutEvalText) {
  ReportOptions o = Options();
  o.evaluate = false;
  auto r = BuildReport(store_.get(), "tiny", o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->evaluations, 0);
  for (const EqmPoint& p : r->ensembles[0].eqms) EXPECT_FALSE(p.evaluated);
  EXPECT_GT(ReportPlot(*r).series[0].points.size(), 2u);  // calibration perplexity

  o = Options();
  o.has_eval_text = false;
  o.max_chunks = 2;
  auto c = BuildReport(store_.get(), "tiny", o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->eval_text, "calibration text of Q8_0-Q5_0-Q4_0");

  o = Options();
  o.ensembles = {"nope"};
  EXPECT_TRUE(BuildReport(store_.get(), "tiny", o).status().IsNotFound());
  o = Options();
  o.eval_text = Bytes(10, 'a');
  EXPECT_TRUE(BuildReport(store_.get(), "tiny", o).status().IsInvalidArgument());
}

}  // namespace
}  // namespace fqpack::search
