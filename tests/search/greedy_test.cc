// The greedy allocator: its walk against exhaustive search over small
// constructed ladders (least predicted area among all walks, least predicted
// cost at every prefix's footprint), a non-convex chain walked along its
// hull, a greedy ensemble of the real stories260K stored, reloaded and
// pruned, and `search --method greedy` with `report --plot --log-ppl` as a
// user runs them.
#include "search/greedy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <regex>

#include "quantize/pipeline.h"
#include "search/ensemble.h"
#include "search/prune.h"
#include "store/gguf_import.h"
#include "tests/search/search_fixture.h"
#include "tests/support/test_util.h"

namespace fqpack::search {
namespace {

CostCurve Curve(std::vector<uint64_t> bytes, std::vector<double> cost, bool held_back = false) {
  CostCurve c;
  c.bytes = std::move(bytes);
  c.cost = std::move(cost);
  c.held_back = held_back;
  return c;
}

// The least predicted area over every walk that lowers each curve rung by
// rung, held-back curves after all others: every interleaving, enumerated.
double ExhaustiveMinArea(const std::vector<CostCurve>& curves) {
  std::vector<size_t> rung(curves.size(), 0);
  std::vector<int> order;
  double best = std::numeric_limits<double>::infinity();
  size_t total = 0;
  for (const CostCurve& c : curves) total += c.bytes.size() - 1;
  std::function<void()> walk = [&] {
    if (order.size() == total) {
      best = std::min(best, PredictedArea(curves, order));
      return;
    }
    bool searched_left = false;
    for (size_t i = 0; i < curves.size(); ++i) {
      searched_left |= !curves[i].held_back && rung[i] + 1 < curves[i].bytes.size();
    }
    for (size_t i = 0; i < curves.size(); ++i) {
      if (rung[i] + 1 >= curves[i].bytes.size()) continue;
      if (curves[i].held_back && searched_left) continue;
      ++rung[i];
      order.push_back(static_cast<int>(i));
      walk();
      order.pop_back();
      --rung[i];
    }
  };
  walk();
  return best;
}

// Per prefix of `order`: bytes saved and predicted cost.
std::vector<std::pair<uint64_t, double>> Prefixes(const std::vector<CostCurve>& curves,
                                                  const std::vector<int>& order) {
  std::vector<size_t> rung(curves.size(), 0);
  uint64_t saved = 0;
  double cost = 0;
  std::vector<std::pair<uint64_t, double>> out;
  for (int c : order) {
    const CostCurve& cv = curves[static_cast<size_t>(c)];
    size_t& r = rung[static_cast<size_t>(c)];
    saved += cv.bytes[r] - cv.bytes[r + 1];
    cost += cv.cost[r + 1] - cv.cost[r];
    ++r;
    out.emplace_back(saved, cost);
  }
  return out;
}

// The least predicted cost of any allocation (one rung per curve) saving at
// least `saved` bytes: every allocation, enumerated.
double ExhaustiveMinCost(const std::vector<CostCurve>& curves, uint64_t saved) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> rung(curves.size(), 0);
  std::function<void(size_t, uint64_t, double)> pick = [&](size_t i, uint64_t s, double c) {
    if (i == curves.size()) {
      if (s >= saved) best = std::min(best, c);
      return;
    }
    for (size_t r = 0; r < curves[i].bytes.size(); ++r) {
      pick(i + 1, s + (curves[i].bytes[0] - curves[i].bytes[r]), c + curves[i].cost[r]);
    }
  };
  pick(0, 0, 0);
  return best;
}

TEST(LowerHull, KeepsAConvexCurveAndSkipsWhatLiesAbove) {
  // Rates 0.05, 0.2: convex, every rung a vertex.
  EXPECT_EQ(LowerHull(Curve({100, 60, 30}, {0, 2, 8})), (std::vector<int>{0, 1, 2}));
  // Collinear rungs (rates 0.1, 0.1) stay vertices.
  EXPECT_EQ(LowerHull(Curve({80, 50, 20}, {0, 3, 6})), (std::vector<int>{0, 1, 2}));
  // Rung 1 costs 5 for 20 bytes (0.25 per byte), rung 2 only 6 for 40 (0.15):
  // rung 1 lies above the hull.
  EXPECT_EQ(LowerHull(Curve({100, 80, 60, 40}, {0, 5, 6, 20})), (std::vector<int>{0, 2, 3}));
  // A cheaper far rung hides both middle ones.
  EXPECT_EQ(LowerHull(Curve({100, 80, 60, 40}, {0, 5, 9, 4})), (std::vector<int>{0, 3}));
  EXPECT_EQ(LowerHull(Curve({7}, {0})), (std::vector<int>{0}));
}

TEST(GreedyOrder, ConvexCurvesTheKnownOptimum) {
  const std::vector<CostCurve> curves = {
      Curve({100, 60, 30}, {0, 2, 8}),   // rates 0.05, 0.2
      Curve({80, 50, 20}, {0, 3, 6}),    // 0.1, 0.1
      Curve({60, 40, 30}, {0, 1.5, 4}),  // 0.075, 0.25
  };
  const std::vector<int> order = GreedyOrder(curves);
  EXPECT_EQ(order, (std::vector<int>{0, 2, 1, 1, 0, 2}));
  EXPECT_NEAR(PredictedArea(curves, order), ExhaustiveMinArea(curves), 1e-9);
  // Every prefix is the cheapest allocation saving at least as much.
  for (const auto& [saved, cost] : Prefixes(curves, order)) {
    EXPECT_NEAR(cost, ExhaustiveMinCost(curves, saved), 1e-9) << "saved " << saved;
  }
}

TEST(GreedyOrder, NonConvexChainWalksItsHull) {
  const std::vector<CostCurve> curves = {
      Curve({100, 80, 60, 40}, {0, 5, 6, 20}),  // hull 0 -> 2 (0.15), 2 -> 3 (0.7)
      Curve({50, 30}, {0, 4}),                  // 0.2
      Curve({90, 70, 50}, {0, 1, 5}),           // 0.05, 0.2
  };
  const std::vector<int> order = GreedyOrder(curves);
  // Curve 0 passes through rung 1 on its way to rung 2, in consecutive
  // steps; the 0.2 tie goes to the lower index.
  EXPECT_EQ(order, (std::vector<int>{2, 0, 0, 1, 2, 0}));
  const double best = ExhaustiveMinArea(curves);
  EXPECT_NEAR(PredictedArea(curves, order), best, 1e-9);
  // Ranking by the next rung alone (0.25 for curve 0's first move) waits
  // too long with curve 0 and ends with a larger area.
  EXPECT_GT(PredictedArea(curves, {2, 1, 2, 0, 0, 0}), best + 1);
  // Where curve 0 sits on a hull vertex the allocation is the optimal one.
  const auto prefixes = Prefixes(curves, order);
  for (size_t k : {0u, 2u, 3u, 4u, 5u}) {
    EXPECT_NEAR(prefixes[k].second, ExhaustiveMinCost(curves, prefixes[k].first), 1e-9)
        << "step " << k + 1;
  }
}

TEST(GreedyOrder, HeldBackCurvesMoveLast) {
  const std::vector<CostCurve> curves = {
      Curve({100, 10}, {0, 0.001}, true),  // the cheapest move, but held back
      Curve({50, 40, 30}, {0, 1, 3}),
      Curve({60, 50}, {0, 1.5}),
  };
  const std::vector<int> order = GreedyOrder(curves);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 1, 0}));
  EXPECT_NEAR(PredictedArea(curves, order), ExhaustiveMinArea(curves), 1e-9);
}

TEST(GreedyOrder, RandomLaddersMatchExhaustiveSearch) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> rungs(2, 4), step(1, 40), held(0, 5);
  std::uniform_real_distribution<double> inc(0, 3);
  for (int trial = 0; trial < 150; ++trial) {
    std::vector<CostCurve> curves(3);
    for (CostCurve& c : curves) {
      const int n = rungs(rng);
      c.bytes = {200};
      c.cost = {0};
      for (int r = 1; r < n; ++r) {
        c.bytes.push_back(c.bytes.back() - static_cast<uint64_t>(step(rng)));
        c.cost.push_back(c.cost.back() + inc(rng));  // any shape, never cheaper
      }
      c.held_back = held(rng) == 0;
    }
    const std::vector<int> order = GreedyOrder(curves);
    size_t moves = 0;
    for (const CostCurve& c : curves) moves += c.bytes.size() - 1;
    ASSERT_EQ(order.size(), moves);
    EXPECT_NEAR(PredictedArea(curves, order), ExhaustiveMinArea(curves), 1e-9) << "trial " << trial;
  }
}

// A store holding stories260K's F32 checkpoint and int8/4/3/2 (g64, RTN).
std::unique_ptr<store::Store> Stories260KLadder(const std::string& dir) {
  EXPECT_TRUE(store::Store::Init(Env::Default(), dir).ok());
  auto st = store::Store::Open(Env::Default(), dir);
  EXPECT_TRUE(st.ok());
  store::ImportOptions io;
  io.threads = 2;
  auto imported = store::ImportGguf(
      st->get(), testing::TestDataPath("models/stories260K/stories260K-F32.gguf"), io);
  EXPECT_TRUE(imported.ok()) << imported.status().ToString();
  quantize::QuantizeRequest q;
  q.from = "F32";
  for (int bits : {8, 4, 3, 2}) q.targets.push_back({*quantize::GroupIntTarget(bits, 64), ""});
  q.threads = 2;
  auto made = quantize::QuantizeModel(st->get(), q);
  EXPECT_TRUE(made.ok()) << made.status().ToString();
  return std::move(st).value();
}

TEST(GreedySearch, RealLibraryStepsOneModuleAtATimeAndReloadsIntact) {
  FQ_REQUIRE_TESTDATA();
  testing::TempDir tmp;
  std::unique_ptr<store::Store> st = Stories260KLadder(tmp.Join("s"));
  const std::vector<std::string> mids = {"int4-g64", "int3-g64"};
  SearchRequest req;
  req.up = "int8-g64";
  req.mids = mids;
  req.low = "int2-g64";
  req.name = "greedy";
  req.method = SearchMethod::kGreedy;
  req.calib_text = *ReadFileBytes(Env::Default(), testing::TestDataPath("text/tinystories.txt"));
  req.tokens = 512;
  req.threads = 2;
  auto out = SearchEnsemble(st.get(), req);
  ASSERT_TRUE(out.ok()) << out.status().ToString();

  auto lib = LoadLibrary(st.get(), "", req.up, mids, req.low, {});
  ASSERT_TRUE(lib.ok());
  const std::vector<EnsembleStep>& steps = out->result.steps;
  ASSERT_EQ(steps.size(), static_cast<size_t>(lib->total_moves()) + 1);
  EXPECT_GT(lib->total_moves(), 60);
  // The walk is the greedy order of the sensitivity analysis it ran.
  const std::vector<int> order = GreedyOrder(CostCurves(*lib, out->result.sensitivity));
  for (size_t i = 1; i < steps.size(); ++i) EXPECT_EQ(steps[i].chain, order[i - 1]) << i;
  EXPECT_EQ(out->params.String("method"), "greedy");
  EXPECT_FALSE(out->params.Int("stem").has_value());

  // From the store: QM(n_up) first, QM(n_low) last, one module per step,
  // footprints strictly falling, and the rows as the search made them.
  auto ens = st->FindEnsemble(st->ResolveModel("").value().id, "greedy");
  ASSERT_TRUE(ens.ok());
  EXPECT_EQ(ens->params.String("method"), "greedy");
  auto eqms = st->ListEqms(ens->id);
  ASSERT_TRUE(eqms.ok());
  ASSERT_EQ(eqms->size(), steps.size());
  auto up = st->QmManifest("stories260K", "int8-g64");
  auto low = st->QmManifest("stories260K", "int2-g64");
  ASSERT_TRUE(up.ok() && low.ok());
  store::ModelManifest prev;
  for (const store::EqmInfo& q : *eqms) {
    const size_t i = static_cast<size_t>(q.step);
    EXPECT_EQ(q.footprint, steps[i].footprint);
    EXPECT_EQ(q.calib_metric, steps[i].metric);
    EXPECT_EQ(q.calib_kl, steps[i].score.kl);
    auto man = st->EqmManifest(ens->id, q.step);
    ASSERT_TRUE(man.ok());
    EXPECT_EQ(man->weight_bytes(), q.footprint);
    for (size_t c = 0; c < lib->chains().size(); ++c) {
      const SlotChain& ch = lib->chains()[c];
      const store::ManifestSlot* s = man->Find(ch.name);
      ASSERT_NE(s, nullptr);
      EXPECT_EQ(s->key, ch.rungs[steps[i].state[c]].key) << ch.name << " step " << q.step;
    }
    const store::ModelManifest& want = i == 0 ? *up : i + 1 == steps.size() ? *low : *man;
    for (size_t s = 0; s < man->slots.size(); ++s) EXPECT_EQ(man->slots[s].key, want.slots[s].key);
    if (i > 0) {
      int changed = 0;
      for (size_t s = 0; s < man->slots.size(); ++s)
        changed += man->slots[s].key != prev.slots[s].key;
      EXPECT_EQ(changed, 1) << "step " << q.step;
      EXPECT_LT(q.footprint, prev.weight_bytes()) << "step " << q.step;
    }
    prev = *man;
  }

  // gc --prune repairs it greedily: still one module per step, still greedy.
  PruneRequest pr;
  pr.ensemble = "greedy";
  pr.fraction = 0.25;
  pr.threads = 2;
  auto pruned = PruneEnsemble(st.get(), pr);
  ASSERT_TRUE(pruned.ok()) << pruned.status().ToString();
  EXPECT_GT(pruned->plan.n_pruned, 0);
  EXPECT_EQ(pruned->eqms_after, pruned->eqms_before - static_cast<size_t>(pruned->plan.n_pruned));
  auto repaired = st->FindEnsemble(ens->model_id, "greedy");
  ASSERT_TRUE(repaired.ok());
  EXPECT_EQ(repaired->params.String("method"), "greedy");
  EXPECT_FALSE(repaired->params.Int("stem").has_value());
}

// `fqpack search --method greedy` and `fqpack report --plot [--log-ppl]`.
class GreedyCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& [label, type] : std::vector<std::pair<std::string, QType>>{
             {"Q8_0", QType::kQ8_0}, {"Q5_0", QType::kQ5_0}, {"Q4_0", QType::kQ4_0}}) {
      const std::string f = testing::WriteTinyGguf(tmp_.Join("tiny-" + label + ".gguf"),
                                                   testing::SearchSpec(ToId(type)));
      std::string out;
      ASSERT_EQ(Fq("import " + f, &out), 0) << out;
    }
    for (const auto& [file, seed] : {std::pair{&calib_, 31u}, std::pair{&eval_, 32u}}) {
      *file = tmp_.Join(file == &calib_ ? "calib.txt" : "eval.txt");
      const std::string text = testing::RandomText(600, seed);
      ASSERT_TRUE(PublishFile(Env::Default(), *file,
                              ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
                      .ok());
    }
  }
  int Fq(const std::string& args, std::string* out = nullptr, bool with_stderr = true) {
    return testing::RunCommand(testing::FqpackBinary() + " --store " + store_ + " " + args +
                                   (with_stderr ? " 2>&1" : " 2>/dev/null"),
                               out);
  }
  std::string Search(const std::string& extra) {
    return "search --model tiny --up Q8_0 --mid Q5_0 --low Q4_0 --calib " + calib_ +
           " --tokens 128 -c 32 " + extra;
  }

  testing::TempDir tmp_;
  std::string store_ = tmp_.Join("store");
  std::string calib_, eval_;
};

// The y tick labels of an SVG plot (right-anchored text left of the plot
// area) with their heights, top to bottom.
std::vector<std::pair<double, std::string>> YTicks(const std::string& svg) {
  std::vector<std::pair<double, std::string>> ticks;
  const std::regex re(R"re(<text x="92\.0" y="([0-9.]+)" text-anchor="end"[^>]*>([^<]*)</text>)re");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator();
       ++it) {
    ticks.emplace_back(std::stod((*it)[1]), (*it)[2]);
  }
  std::sort(ticks.begin(), ticks.end());
  return ticks;
}

TEST_F(GreedyCliTest, GreedySearchReportAndLogPlot) {
  std::string out;
  ASSERT_EQ(Fq(Search("--method greedy --name g --json"), &out, false), 0) << out;
  EXPECT_NE(out.find("\"method\": \"greedy\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"ensemble\": \"g\""), std::string::npos) << out;
  ASSERT_EQ(Fq(Search("--name t"), &out), 0) << out;
  EXPECT_EQ(Fq(Search("--method beam --name x"), &out), 2) << out;
  ASSERT_EQ(Fq("search --help", &out), 0);
  EXPECT_NE(out.find("--method"), std::string::npos) << out;
  ASSERT_EQ(Fq("report --help", &out), 0);
  EXPECT_NE(out.find("--log-ppl"), std::string::npos) << out;
  ASSERT_EQ(Fq("ls --ensembles", &out), 0) << out;
  EXPECT_NE(out.find("method=greedy"), std::string::npos) << out;

  // The greedy ensemble survives gc, packs and runs like any other.
  ASSERT_EQ(Fq("gc", &out), 0) << out;
  ASSERT_EQ(Fq("verify", &out), 0) << out;
  ASSERT_EQ(Fq("report --model tiny -e g --no-eval --json", &out, false), 0) << out;
  EXPECT_NE(out.find("\"method\": \"greedy\""), std::string::npos) << out;
  const std::string pack = tmp_.Join("g.fqpack");
  ASSERT_EQ(Fq("pack --model tiny -e g -o " + pack, &out), 0) << out;
  ASSERT_EQ(Fq("--json run " + pack + " --eqm 3 -p ab -n 4 --temp 0", &out, false), 0) << out;
  EXPECT_NE(out.find("\"eqm:3\""), std::string::npos) << out;

  const std::string lin = tmp_.Join("lin.svg"), log = tmp_.Join("log.svg");
  const std::string report = "report --model tiny -e t -e g -f " + eval_ + " -c 32 --every 3 ";
  ASSERT_EQ(Fq(report + "--plot " + lin, &out), 0) << out;
  ASSERT_EQ(Fq(report + "--plot " + log + " --log-ppl", &out), 0) << out;
  const Bytes lin_bytes = *ReadFileBytes(Env::Default(), lin);
  const Bytes log_bytes = *ReadFileBytes(Env::Default(), log);
  const std::string lin_svg(lin_bytes.begin(), lin_bytes.end());
  const std::string log_svg(log_bytes.begin(), log_bytes.end());
  for (const std::string& svg : {lin_svg, log_svg}) {
    EXPECT_NE(svg.find(">ensemble t (tree search, "), std::string::npos);
    EXPECT_NE(svg.find(">ensemble g (greedy, "), std::string::npos);
    EXPECT_NE(svg.find(">static QMs<"), std::string::npos);
    EXPECT_NE(svg.find(">Q5_0<"), std::string::npos);
  }
  EXPECT_EQ(lin_svg.find("log scale"), std::string::npos);
  EXPECT_NE(log_svg.find("log scale"), std::string::npos);
  // Pixels per unit of perplexity between the top three ticks, upper pair
  // over lower pair: 1 on a linear axis; on a log axis the ratio of the
  // pairs' log spans per unit, which is below 1.
  for (const std::string* svg : {&lin_svg, &log_svg}) {
    const auto ticks = YTicks(*svg);
    ASSERT_GE(ticks.size(), 3u) << *svg;
    const double v0 = std::stod(ticks[0].second), v1 = std::stod(ticks[1].second),
                 v2 = std::stod(ticks[2].second);
    ASSERT_GT(v0, v1);  // top first
    ASSERT_GT(v1, v2);
    const double ratio = ((ticks[1].first - ticks[0].first) / (v0 - v1)) /
                         ((ticks[2].first - ticks[1].first) / (v1 - v2));
    if (svg == &lin_svg) {
      EXPECT_NEAR(ratio, 1, 0.003);
    } else {
      const double want = (std::log(v0 / v1) / (v0 - v1)) / (std::log(v1 / v2) / (v1 - v2));
      EXPECT_LT(want, 0.999);
      EXPECT_NEAR(ratio, want, 0.003);
    }
  }
}

}  // namespace
}  // namespace fqpack::search
