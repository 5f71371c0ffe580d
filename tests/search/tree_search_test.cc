// TreeSearch on a tiny library: one-way steps of one module, #stem and
// #branch honoured, determinism, and a planted sensitive slot lowered last.
#include "search/tree_search.h"

#include <gtest/gtest.h>

#include <atomic>

#include "tests/search/search_fixture.h"

namespace fqpack::search {
namespace {

using testing::SearchSpec;
using testing::TypeId;

SearchOptions Opts(int stem, int branch) {
  SearchOptions o;
  o.stem = stem;
  o.branch = branch;
  return o;
}

class TreeSearchTest : public ::testing::Test {
 protected:
  void Build(bool include_embed, bool plant = false) {
    tiny_ = testing::ThreeQmLibrary();
    if (plant) {
      // Low's module of one slot is another matrix altogether (other random
      // weights): lowering that slot to it ruins the model.
      testing::TinyLlamaSpec donor = SearchSpec(TypeId(QType::kQ4_0));
      donor.seed = 99;
      tiny_->SwapSlot(2, kPlanted, donor);
    }
    auto lib = Library::Build(tiny_->qms, {.include_embed = include_embed});
    ASSERT_TRUE(lib.ok()) << lib.status().ToString();
    lib_ = std::make_unique<Library>(std::move(lib).value());
    auto c = MakeCalibSet(testing::RandomTokens(4 * 16, 40, 3), 16, 64, 1);
    ASSERT_TRUE(c.ok());
    calib_ = *c;
  }

  Result<SearchResult> Run(SearchOptions opts, int threads = 1) {
    auto ev = Evaluator::Create(lib_.get(), &tiny_->source, calib_, {threads, true});
    if (!ev.ok()) return ev.status();
    return TreeSearch(*lib_, ev->get(), opts);
  }

  // The move ranking, recomputed here from the sensitivity scores.
  std::vector<int> Ranked(const Sensitivity& sens, const EqmState& s) {
    struct K {
      double rate;
      uint64_t saved;
      int chain;
    };
    std::vector<K> keys;
    bool any_searched = false;
    for (size_t i = 0; i < s.size(); ++i) {
      any_searched |= lib_->chains()[i].searched && s[i] < lib_->chains()[i].moves();
    }
    for (size_t i = 0; i < s.size(); ++i) {
      const SlotChain& c = lib_->chains()[i];
      if (s[i] >= c.moves() || c.searched != any_searched) continue;
      const double m0 = sens.scores[i][s[i]].kl, m1 = sens.scores[i][s[i] + 1].kl;
      const uint64_t saved = c.rungs[s[i]].bytes - c.rungs[s[i] + 1].bytes;
      keys.push_back({(m1 - m0) / static_cast<double>(saved), saved, static_cast<int>(i)});
    }
    std::sort(keys.begin(), keys.end(), [](const K& a, const K& b) {
      if (a.rate != b.rate) return a.rate < b.rate;
      if (a.saved != b.saved) return a.saved > b.saved;
      return a.chain < b.chain;
    });
    std::vector<int> out;
    for (const K& k : keys) out.push_back(k.chain);
    return out;
  }

  static constexpr const char* kPlanted = "blk.0.attn_v.weight";
  std::unique_ptr<testing::TinyLibrary> tiny_;
  std::unique_ptr<Library> lib_;
  CalibSet calib_;
};

TEST_F(TreeSearchTest, WalksOneModuleAtATimeFromUpToLow) {
  Build(false);
  auto r = Run(Opts(2, 3));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::vector<EnsembleStep>& steps = r->steps;
  ASSERT_EQ(steps.size(), static_cast<size_t>(lib_->total_moves() + 1));
  EXPECT_EQ(steps.front().state, lib_->UpState());
  EXPECT_EQ(steps.back().state, lib_->LowState());
  EXPECT_EQ(steps.front().score.kl, 0);
  double area = 0;
  for (size_t i = 1; i < steps.size(); ++i) {
    int changed = 0, moved = -1;
    for (size_t k = 0; k < steps[i].state.size(); ++k) {
      if (steps[i].state[k] != steps[i - 1].state[k]) {
        ++changed;
        moved = static_cast<int>(k);
        EXPECT_EQ(steps[i].state[k], steps[i - 1].state[k] + 1);  // one-way, one rung
      }
    }
    ASSERT_EQ(changed, 1) << "step " << i;
    EXPECT_EQ(steps[i].chain, moved);
    EXPECT_LT(steps[i].footprint, steps[i - 1].footprint);
    EXPECT_EQ(steps[i].footprint, lib_->Footprint(steps[i].state));
    EXPECT_EQ(steps[i].metric, steps[i].score.kl);
    // The embedding and output matrix move only once every matrix is done.
    if (!lib_->chains()[moved].searched) {
      for (size_t k = 0; k < steps[i - 1].state.size(); ++k) {
        if (lib_->chains()[k].searched) {
          EXPECT_EQ(steps[i - 1].state[k], lib_->chains()[k].moves());
        }
      }
    }
    area += steps[i].metric *
            (static_cast<double>(steps[i - 1].footprint) - static_cast<double>(steps[i].footprint));
  }
  EXPECT_NEAR(r->area, area, 1e-12 * std::max(1.0, area));
  EXPECT_EQ(lib_->chains()[steps.back().chain].searched, false);
}

TEST_F(TreeSearchTest, HonoursStemAndBranch) {
  Build(false);
  const int stem = 2, branch = 3;
  auto r = Run(Opts(stem, branch));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->trace.size(), static_cast<size_t>(lib_->total_moves()));
  int64_t evaluated = 0;
  for (size_t t = 0; t < r->trace.size(); ++t) {
    const StepTrace& st = r->trace[t];
    ASSERT_GE(st.parents.size(), 1u);
    ASSERT_LE(st.parents.size(), static_cast<size_t>(stem));
    if (t == 0) {
      EXPECT_EQ(st.parents.size(), 1u);
    } else {
      EXPECT_EQ(st.parents, r->trace[t - 1].survivors);
    }
    for (size_t p = 0; p < st.parents.size(); ++p) {
      std::vector<int> want = Ranked(r->sensitivity, st.parents[p]);
      if (want.size() > static_cast<size_t>(branch)) want.resize(branch);
      EXPECT_EQ(st.moves[p], want) << "step " << t + 1 << " parent " << p;
    }
    EXPECT_LE(st.evaluated, static_cast<int>(st.parents.size()) * branch);
    EXPECT_LE(st.survivors.size(), static_cast<size_t>(stem));
    EXPECT_LE(st.survivors.size(), static_cast<size_t>(st.evaluated));
    evaluated += st.evaluated;
  }
  EXPECT_EQ(r->search_evaluations, evaluated);
  // Two paths were really kept alive most of the way.
  EXPECT_EQ(r->trace[1].parents.size(), 2u);
  EXPECT_EQ(r->sensitivity.evaluations, lib_->total_moves());
}

TEST_F(TreeSearchTest, Stem1Branch1IsTheSensitivityGreedyWalk) {
  Build(false);
  auto r = Run(Opts(1, 1));
  ASSERT_TRUE(r.ok());
  EqmState s = lib_->UpState();
  for (size_t i = 1; i < r->steps.size(); ++i) {
    const std::vector<int> ranked = Ranked(r->sensitivity, s);
    ASSERT_FALSE(ranked.empty());
    EXPECT_EQ(r->steps[i].chain, ranked.front()) << "step " << i;
    ++s[ranked.front()];
    EXPECT_EQ(r->trace[i - 1].evaluated, 1);
  }
}

TEST_F(TreeSearchTest, SameEnsembleTwiceAndWithOneOrTwoThreads) {
  Build(true);
  SearchOptions opts = Opts(3, 4);
  auto a = Run(opts, 1);
  auto b = Run(opts, 1);
  auto c = Run(opts, 2);
  SearchOptions no_keep = opts;
  no_keep.max_state_bytes = 0;  // survivors evaluated again instead
  auto d = Run(no_keep, 2);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_TRUE(a->kept_states);
  EXPECT_FALSE(d->kept_states);
  for (const SearchResult* x : {&*b, &*c, &*d}) {
    ASSERT_EQ(x->steps.size(), a->steps.size());
    for (size_t i = 0; i < a->steps.size(); ++i) {
      EXPECT_EQ(x->steps[i].state, a->steps[i].state) << i;
      EXPECT_EQ(x->steps[i].score.kl, a->steps[i].score.kl) << i;
      EXPECT_EQ(x->steps[i].score.nll, a->steps[i].score.nll) << i;
    }
    EXPECT_EQ(x->area, a->area);
  }
}

TEST_F(TreeSearchTest, PlantedSensitiveSlotIsLoweredLast) {
  Build(true, true);
  int planted = -1;
  for (size_t i = 0; i < lib_->chains().size(); ++i) {
    if (lib_->chains()[i].name == kPlanted) planted = static_cast<int>(i);
  }
  ASSERT_GE(planted, 0);
  ASSERT_EQ(lib_->chains()[planted].moves(), 2);
  for (int stem : {1, 2}) {
    auto r = Run(Opts(stem, 4));
    ASSERT_TRUE(r.ok());
    // Its sensitivity to the planted module dwarfs every other slot's.
    const double planted_kl = r->sensitivity.scores[planted][2].kl;
    for (size_t i = 0; i < lib_->chains().size(); ++i) {
      if (static_cast<int>(i) == planted) continue;
      for (const Score& s : r->sensitivity.scores[i]) EXPECT_LT(s.kl * 5, planted_kl);
    }
    EXPECT_EQ(r->steps.back().chain, planted) << "stem " << stem;
    // Its first, harmless move happened long before.
    for (size_t i = 1; i + 1 < r->steps.size(); ++i) {
      EXPECT_LE(r->steps[i].state[planted], 1) << i;
    }
  }
}

TEST_F(TreeSearchTest, CancelledSearchIsAborted) {
  Build(false);
  std::atomic<int> polls{0};
  SearchOptions opts = Opts(2, 2);
  opts.cancelled = [&] { return ++polls > 200; };
  auto r = Run(opts);
  EXPECT_TRUE(r.status().IsAborted()) << r.status().ToString();
  EXPECT_TRUE(Run(Opts(0, 2)).status().IsInvalidArgument());
}

TEST_F(TreeSearchTest, RemainingAreaAddsSensitivityDeltasInRankOrder) {
  Build(false);
  // Every chain at its end but two searched chains one move short.
  EqmState s = lib_->LowState();
  std::vector<int> open;
  for (size_t i = 0; i < s.size() && open.size() < 2; ++i) {
    if (lib_->chains()[i].searched && lib_->chains()[i].moves() > 0) {
      --s[i];
      open.push_back(static_cast<int>(i));
    }
  }
  Sensitivity sens;
  sens.metric = Metric::kKl;
  for (const SlotChain& c : lib_->chains()) sens.scores.emplace_back(c.rungs.size(), Score{});
  // Chain a costs 0.5 for its last move, chain b 0.1.
  const int a = open[0], b = open[1];
  sens.scores[a].back().kl = sens.scores[a][s[a]].kl + 0.5;
  sens.scores[b].back().kl = sens.scores[b][s[b]].kl + 0.1;
  const auto saved = [&](int c) {
    return static_cast<double>(lib_->chains()[c].rungs[s[c]].bytes -
                               lib_->chains()[c].rungs[s[c] + 1].bytes);
  };
  const double ra = 0.5 / saved(a), rb = 0.1 / saved(b);
  const double m = 2.0;
  const double want = ra < rb ? (m + 0.5) * saved(a) + (m + 0.6) * saved(b)
                              : (m + 0.1) * saved(b) + (m + 0.6) * saved(a);
  EXPECT_NEAR(RemainingArea(*lib_, sens, s, m), want, 1e-9 * want);
  EXPECT_EQ(RemainingArea(*lib_, sens, lib_->LowState(), m), 0);
}

// The speed-ups (reuse across siblings, early rejection) must not change the
// ensemble: the same steps, scores and area with and without them, on
// libraries of 3, 4 and 6 QMs (more rungs: more steps and more siblings).
TEST(TreeSearchSpeedups, SameEnsembleWithAndWithoutAtSeveralRungs) {
  const std::vector<std::vector<std::pair<const char*, QType>>> ladders = {
      {{"Q8_0", QType::kQ8_0}, {"Q5_0", QType::kQ5_0}, {"Q4_0", QType::kQ4_0}},
      {{"Q8_0", QType::kQ8_0},
       {"Q5_1", QType::kQ5_1},
       {"Q4_1", QType::kQ4_1},
       {"Q4_0", QType::kQ4_0}},
      {{"F16", QType::kF16},
       {"Q8_0", QType::kQ8_0},
       {"Q5_1", QType::kQ5_1},
       {"Q5_0", QType::kQ5_0},
       {"Q4_1", QType::kQ4_1},
       {"Q4_0", QType::kQ4_0}}};
  for (const auto& ladder : ladders) {
    testing::TinyLibrary tiny;
    for (const auto& [label, type] : ladder) tiny.AddQm(label, SearchSpec(TypeId(type), 3));
    auto lib = Library::Build(tiny.qms, {.include_embed = true});
    ASSERT_TRUE(lib.ok()) << lib.status().ToString();
    auto calib = MakeCalibSet(testing::RandomTokens(6 * 16, 40, 5), 16, 96, 1);
    ASSERT_TRUE(calib.ok());
    std::vector<SearchResult> runs;
    int64_t rejected = 0;
    for (bool speedups : {false, true}) {
      auto ev = Evaluator::Create(&*lib, &tiny.source, *calib, {2, true});
      ASSERT_TRUE(ev.ok()) << ev.status().ToString();
      SearchOptions opts = Opts(2, 4);
      opts.speedups = speedups;
      auto r = TreeSearch(*lib, ev->get(), opts);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      if (speedups) rejected = r->rejected_early;
      runs.push_back(std::move(r).value());
    }
    const SearchResult& a = runs[0];
    const SearchResult& b = runs[1];
    EXPECT_EQ(a.rejected_early, 0);
    EXPECT_LE(b.search_units, a.search_units);
    EXPECT_EQ(b.search_units<a.search_units, rejected> 0);
    ASSERT_EQ(a.steps.size(), static_cast<size_t>(lib->total_moves()) + 1) << ladder.size();
    ASSERT_EQ(b.steps.size(), a.steps.size()) << ladder.size() << " QMs";
    for (size_t i = 0; i < a.steps.size(); ++i) {
      EXPECT_EQ(b.steps[i].state, a.steps[i].state) << ladder.size() << " QMs, step " << i;
      EXPECT_EQ(b.steps[i].score.kl, a.steps[i].score.kl) << i;
      EXPECT_EQ(b.steps[i].score.nll, a.steps[i].score.nll) << i;
    }
    EXPECT_EQ(b.area, a.area);
    for (size_t i = 0; i < a.trace.size(); ++i) {
      EXPECT_EQ(b.trace[i].survivors, a.trace[i].survivors) << i;
    }
  }
}

}  // namespace
}  // namespace fqpack::search
