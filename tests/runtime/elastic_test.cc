#include "runtime/elastic.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "fqpack/fqpack.h"
#include "runtime/perplexity.h"
#include "runtime/sampler.h"
#include "tests/runtime/elastic_test_util.h"
#include "tests/support/store_util.h"

namespace fqpack::runtime {
namespace {

using testing::ElasticLadder;

TEST(BudgetTraceTest, ParsesUnitsHeaderCommentsAndBlankLines) {
  auto t = ParseBudgetTrace(
      "token_index,budget\n"
      "# start big\n"
      "0, 2MB\n"
      "\n"
      "120,450KB   # shrink\r\n"
      "120,1.5MiB\n"
      "300,1000\n",
      "t.csv");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->size(), 4u);
  EXPECT_EQ((*t)[0].token, 0);
  EXPECT_EQ((*t)[0].budget, 2000000u);
  EXPECT_EQ((*t)[0].line, 3);
  EXPECT_EQ((*t)[1].token, 120);
  EXPECT_EQ((*t)[1].budget, 450000u);
  EXPECT_EQ((*t)[1].line, 5);
  EXPECT_EQ((*t)[2].budget, 1572864u);
  EXPECT_EQ((*t)[3].budget, 1000u);
  // No header needed.
  EXPECT_EQ(ParseBudgetTrace("5,1K\n", "t")->front().budget, 1024u);
}

TEST(BudgetTraceTest, BadLinesNameTheLine) {
  struct Case {
    std::string text;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"token,budget\n0,1MB\n1;2MB\n", "t.csv:3: expected 'token_index,budget'"},
      {"0,1MB\n5,lots\n", "t.csv:2: budget 'lots'"},
      {"0,1MB\n# c\n-3,1MB\n", "t.csv:3: token index '-3'"},
      {"0,1MB\n10,1MB\n4,1MB\n", "t.csv:3: token index 4 comes after 10"},
      {"0,1MB,7\n", "t.csv:1: expected"},
      {"0,0\n", "t.csv:1: a budget must be more than 0"},
      {"x,1MB\n0,1MB\nabc,1MB\n", "t.csv:3: token index 'abc'"},
      {"# nothing\n\n", "t.csv: the trace holds no"},
      {"0,12QB\n", "t.csv:1: budget '12QB'"},
  };
  for (const Case& c : cases) {
    auto t = ParseBudgetTrace(c.text, "t.csv");
    ASSERT_FALSE(t.ok()) << c.text;
    EXPECT_TRUE(t.status().IsInvalidArgument());
    EXPECT_NE(t.status().message().find(c.expect), std::string::npos) << t.status().message();
  }
}

class ElasticTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ladder_ = new ElasticLadder();
    pack_path_ = new std::string(ladder_->Pack(pack::Codec::kAuto));
  }
  static void TearDownTestSuite() {
    delete ladder_;
    delete pack_path_;
  }

  std::unique_ptr<ElasticRuntime> Open(Workload workload, int64_t n_ctx,
                                       const LevelChoice& choice) {
    ElasticOptions o;
    o.workload = workload;
    o.n_ctx = n_ctx;
    auto rt = ElasticRuntime::Open(Env::Default(), *pack_path_, o, &pool_);
    EXPECT_TRUE(rt.ok()) << rt.status().ToString();
    Status s = (*rt)->Start(choice);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return std::move(*rt);
  }

  // A model of `level` of the pack, loaded on its own: the reference.
  std::unique_ptr<Model> StaticModel(ElasticRuntime* rt, int level) {
    auto e = rt->pack()->FindEnsemble("walk");
    auto m =
        rt->pack()->EqmManifest(e->id, rt->residency()->levels()[static_cast<size_t>(level)].step);
    EXPECT_TRUE(m.ok());
    auto model = Model::Load(*m, rt->pack(), &pool_);
    EXPECT_TRUE(model.ok()) << model.status().ToString();
    return std::move(*model);
  }

  static std::vector<int32_t> RandomTokens(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> t(n);
    for (int32_t& v : t) v = static_cast<int32_t>(3 + rng() % 61);
    return t;
  }

  static ElasticLadder* ladder_;
  static std::string* pack_path_;
  ThreadPool pool_{2};
};

ElasticLadder* ElasticTest::ladder_ = nullptr;
std::string* ElasticTest::pack_path_ = nullptr;

TEST_F(ElasticTest, PerplexityOfOneEqmEqualsTheStaticRuntime) {
  auto rt = Open(Workload::kPerplexity, 16, {.eqm = 0});
  const std::vector<int32_t> tokens = RandomTokens(200, 3);
  auto er = rt->Perplexity(tokens, -1, {});
  ASSERT_TRUE(er.ok()) << er.status().ToString();
  // The same QM through the store and runtime::Perplexity.
  auto manifest = ladder_->store()->QmManifest("tiny", ladder_->labels().front());
  auto model = Model::Load(*manifest, ladder_->store(), &pool_);
  ASSERT_TRUE(model.ok());
  PerplexityOptions po;
  po.n_ctx = 16;
  po.bos = 1;
  auto ref = Perplexity(**model, tokens, po, &pool_);
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(er->total.ppl, ref->ppl);
  EXPECT_EQ(er->total.ppl_err, ref->ppl_err);
  EXPECT_EQ(er->total.scored, ref->scored);
  EXPECT_EQ(er->total.chunks, 12);
  EXPECT_TRUE(er->transitions.empty());
}

TEST_F(ElasticTest, SmallerPassesGiveTheSamePerplexityAndCostLessScratch) {
  const std::vector<int32_t> tokens = RandomTokens(200, 4);
  auto whole = Open(Workload::kPerplexity, 16, {.eqm = 2});
  ElasticOptions o;
  o.workload = Workload::kPerplexity;
  o.n_ctx = 16;
  o.n_batch = 5;  // passes that straddle the scored half
  auto split = ElasticRuntime::Open(Env::Default(), *pack_path_, o, &pool_);
  ASSERT_TRUE(split.ok());
  ASSERT_TRUE((*split)->Start({.eqm = 2}).ok());
  auto a = whole->Perplexity(tokens, -1, {});
  auto b = (*split)->Perplexity(tokens, -1, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->total.scored, b->total.scored);
  EXPECT_NEAR(a->total.nll, b->total.nll, 1e-6);
  EXPECT_LT((*split)->overhead().scratch, whole->overhead().scratch);
  EXPECT_EQ((*split)->overhead().kv_cache, whole->overhead().kv_cache);
  // A prompt longer than a pass goes in several passes, with the same tokens out.
  GenerateOptions go;
  go.n_predict = 6;
  go.sampling.temperature = 0;
  const std::vector<int32_t> prompt = RandomTokens(23, 8);
  std::vector<std::vector<int32_t>> outs;
  for (int64_t batch : {int64_t{4}, int64_t{64}}) {
    ElasticOptions g;
    g.n_batch = batch;
    auto rt = ElasticRuntime::Open(Env::Default(), *pack_path_, g, &pool_);
    ASSERT_TRUE(rt.ok());
    ASSERT_TRUE((*rt)->Start({.eqm = 0}).ok());
    auto r = (*rt)->Generate(prompt, go, {}, [](int32_t) { return Status::OK(); });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->generate.prompt_tokens, 23);
    outs.push_back(r->generate.tokens);
  }
  EXPECT_EQ(outs[0], outs[1]);
}

TEST_F(ElasticTest, PerplexityFollowsTheTraceBetweenChunks) {
  auto rt = Open(Workload::kPerplexity, 16, {});
  ResidencyManager* m = rt->residency();
  const auto& levels = m->levels();
  const int last = static_cast<int>(levels.size()) - 1;
  auto budget_of = [&](int level) {
    return levels[static_cast<size_t>(level)].footprint + m->overhead();
  };
  // Token 40 falls inside chunk 2 ([32, 48)): it applies from chunk 3.
  std::vector<BudgetChange> trace = {{0, budget_of(last / 2), 1},
                                     {40, budget_of(last), 2},
                                     {64, budget_of(last) + 1, 3},
                                     {96, budget_of(1), 4}};
  const std::vector<int> expected_level = {last / 2, last / 2, last / 2, last, last,
                                           last,     1,        1,        1,    1};
  const std::vector<int32_t> tokens = RandomTokens(160, 9);
  std::vector<TransitionRecord> seen;
  auto er =
      rt->Perplexity(tokens, -1, trace, {}, [&](const TransitionRecord& t) { seen.push_back(t); });
  ASSERT_TRUE(er.ok()) << er.status().ToString();
  ASSERT_EQ(er->chunks.size(), expected_level.size());
  // Three changes of level (the 64 change keeps the same level).
  ASSERT_EQ(er->transitions.size(), 3u);
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(er->transitions[0].token, 0);
  EXPECT_EQ(er->transitions[1].token, 48);
  EXPECT_EQ(er->transitions[2].token, 96);
  EXPECT_EQ(er->transitions[2].to, 1);
  MeanAccumulator all;
  for (size_t c = 0; c < er->chunks.size(); ++c) {
    const ChunkResult& cr = er->chunks[c];
    EXPECT_EQ(cr.level, expected_level[c]) << "chunk " << c;
    // The chunk scored by a model of that level loaded on its own.
    auto model = StaticModel(rt.get(), expected_level[c]);
    Session s(model.get(), 16, &pool_);
    std::vector<int32_t> input(tokens.begin() + static_cast<long>(c * 16),
                               tokens.begin() + static_cast<long>(c * 16 + 16));
    input[0] = 1;
    std::vector<float> logits;
    ASSERT_TRUE(s.Eval(input, 8, &logits).ok());
    MeanAccumulator acc;
    for (int j = 8; j < 15; ++j) {
      const double v = TokenNll(std::span<const float>(logits.data() + (j - 8) * 64, 64),
                                tokens[c * 16 + j + 1]);
      acc.Add(v);
      all.Add(v);
    }
    EXPECT_EQ(cr.nll, acc.mean()) << "chunk " << c;
  }
  EXPECT_EQ(er->total.nll, all.mean());
}

TEST_F(ElasticTest, GenerationSwapsBetweenTokensExactlyWhereTheTraceSays) {
  const int low = static_cast<int>(ladder_->n_eqms()) - 1;
  auto rt = Open(Workload::kGenerate, 64, {.eqm = 0});
  const auto& levels = rt->residency()->levels();
  const uint64_t overhead = rt->residency()->overhead();
  std::vector<BudgetChange> trace = {{5, levels[static_cast<size_t>(low)].footprint + overhead, 2}};
  GenerateOptions go;
  go.n_predict = 12;
  go.sampling.temperature = 0;
  const std::vector<int32_t> prompt = {1, 7, 20, 33};
  std::vector<int32_t> got;
  auto r = rt->Generate(prompt, go, trace, [&](int32_t t) {
    got.push_back(t);
    return Status::OK();
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->transitions.size(), 1u);
  EXPECT_EQ(r->transitions[0].token, 5);
  EXPECT_EQ(r->transitions[0].to, low);

  // Reference: a model of EQM 0 loaded on its own, greedy, and after the
  // 5th token every slot set to the lowest EQM's module by hand.
  auto model = StaticModel(rt.get(), 0);
  auto e = rt->pack()->FindEnsemble("walk");
  auto low_manifest = rt->pack()->EqmManifest(e->id, low);
  Session s(model.get(), 64, &pool_);
  std::vector<float> logits;
  ASSERT_TRUE(s.Eval(prompt, prompt.size() - 1, &logits).ok());
  std::vector<int32_t> want;
  for (int i = 0; i < 12; ++i) {
    const int32_t t = Sampler::Argmax(logits);
    if (t == 2 || t == 1) break;
    want.push_back(t);
    if (want.size() == 5) {
      for (const auto& slot : low_manifest->slots) {
        auto data = rt->pack()->Load(slot.key);
        ASSERT_TRUE(data.ok());
        ASSERT_TRUE(model->SetSlot(slot.idx, *data, slot.desc).ok());
      }
    }
    ASSERT_TRUE(s.Decode(t, &logits).ok());
  }
  EXPECT_EQ(got, want);
  EXPECT_GE(got.size(), 6u)
      << "the trace must take effect mid-generation for this test to mean anything";
}

TEST_F(ElasticTest, ABudgetFromAnotherThreadLandsBetweenTokens) {
  auto rt = Open(Workload::kGenerate, 64, {});
  ResidencyManager* m = rt->residency();
  const uint64_t minimum = m->MinimumBudget();
  std::atomic<int> tokens{0};
  std::atomic<bool> done{false};
  std::thread setter([&] {
    while (tokens.load() < 3 && !done.load()) std::this_thread::yield();
    EXPECT_TRUE(m->RequestBudget(minimum).ok());
    EXPECT_TRUE(m->RequestBudget(minimum - 1).IsInvalidArgument());
  });
  std::thread reader([&] {
    while (!done.load()) (void)m->stats();
  });
  GenerateOptions go;
  go.n_predict = 40;
  go.sampling.temperature = 0;
  auto r = rt->Generate(std::vector<int32_t>{1, 9}, go, {}, [&](int32_t) {
    ++tokens;
    // Give the setter a chance to run between tokens.
    if (tokens.load() == 3) {
      for (int i = 0; i < 1000 && !m->has_pending_budget(); ++i)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return Status::OK();
  });
  done = true;
  setter.join();
  reader.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  if (r->generate.generated <= 3) GTEST_SKIP() << "the model stopped before the budget arrived";
  ASSERT_EQ(r->transitions.size(), 1u);
  EXPECT_EQ(r->transitions[0].token, 3);
  EXPECT_EQ(m->stats().level, static_cast<int>(m->levels().size()) - 1);
  EXPECT_EQ(m->stats().budget, minimum);
}

TEST_F(ElasticTest, TraceBelowTheMinimumIsRefusedBeforeRunningWithItsLine) {
  auto rt = Open(Workload::kGenerate, 64, {});
  const uint64_t minimum = rt->residency()->MinimumBudget();
  std::vector<BudgetChange> trace = {{0, minimum * 2, 2}, {10, minimum - 1, 3}};
  Status s = rt->CheckTrace(trace, "trace.csv");
  ASSERT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("trace.csv:3: budget"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(std::to_string(minimum)), std::string::npos) << s.message();
}

TEST_F(ElasticTest, StartRejectsOutOfRangeAndTooSmallChoices) {
  ElasticOptions o;
  auto rt = ElasticRuntime::Open(Env::Default(), *pack_path_, o, &pool_);
  ASSERT_TRUE(rt.ok());
  EXPECT_TRUE((*rt)->Start({.eqm = 1000}).IsInvalidArgument());
  EXPECT_TRUE((*rt)->Start({.budget = 10}).IsInvalidArgument());
  EXPECT_TRUE((*rt)->Start({.qm = "Q3_K"}).IsInvalidArgument());
  // The overhead counts the KV cache and scratch of this context.
  EXPECT_EQ((*rt)->overhead().kv_cache, KvCacheBytes((*rt)->residency()->hparams(), 64));
  EXPECT_EQ((*rt)->residency()->overhead(), (*rt)->overhead().total());
}

// The public API, used as an application would.
TEST_F(ElasticTest, PublicApiGeneratesFollowsBudgetsAndReportsStats) {
  auto model = ElasticModel::Open(*pack_path_, {.threads = 2});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ElasticStats s = (*model)->Stats();
  EXPECT_EQ(s.step, 0);
  EXPECT_EQ(s.levels, ladder_->n_eqms());
  EXPECT_GT(s.overhead_bytes, 0u);
  EXPECT_EQ(s.weight_bytes + s.overhead_bytes, s.largest_budget);
  // Idle: a budget applies at once.
  ASSERT_TRUE((*model)->SetBudget(s.minimum_budget).ok());
  s = (*model)->Stats();
  EXPECT_EQ(s.step, ladder_->n_eqms() - 1);
  EXPECT_EQ(s.weight_bytes + s.overhead_bytes, s.minimum_budget);
  EXPECT_EQ(s.transitions, 1);
  Status too_small = (*model)->SetBudget(s.minimum_budget - 1);
  EXPECT_TRUE(too_small.IsInvalidArgument());
  // From another thread while generating.
  std::atomic<int> pieces{0};
  std::thread setter([&] {
    while (pieces.load() < 2) std::this_thread::yield();
    EXPECT_TRUE((*model)->SetBudget(s.largest_budget).ok());
  });
  auto text = (*model)->Generate({.prompt = "t5 t9", .max_tokens = 30, .temperature = 0},
                                 [&](std::string_view) {
                                   if (++pieces == 2)
                                     std::this_thread::sleep_for(std::chrono::milliseconds(50));
                                   return true;
                                 });
  if (pieces.load() < 2) pieces = 2;  // let the setter finish even if the text ended early
  setter.join();
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_FALSE(text->empty());
  s = (*model)->Stats();
  EXPECT_EQ(s.step, 0) << "the budget set mid-generation or right after it took effect";
  EXPECT_EQ(s.transitions, 2);
  EXPECT_EQ((*model)->Transitions().size(), 2u);
  // Stopping early is not an error.
  int n = 0;
  auto stopped = (*model)->Generate({.prompt = "", .max_tokens = 30},
                                    [&](std::string_view) { return ++n < 3; });
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_LE(n, 3);
}

// A host app's memory signals through the public API: an idle model moves
// at once going down, and up only after the dwell, with nobody calling it.
TEST_F(ElasticTest, PublicApiFollowsHostReports) {
  auto model = ElasticModel::Open(*pack_path_, {.threads = 2});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const ElasticStats start = (*model)->Stats();
  // The reserve: what the host wants left over, here a whole largest budget.
  ASSERT_TRUE((*model)->FollowHostReports(/*reserve=*/start.largest_budget).ok());
  EXPECT_TRUE((*model)->Memory().following);
  EXPECT_EQ((*model)->Memory().source, "");  // nothing reported yet
  EXPECT_EQ((*model)->Stats().step, 0);
  // iOS-style bytes: almost nothing left besides what this process holds
  // (added back), and less than the reserve: only the smallest EQM fits.
  (*model)->ReportAvailableBytes(10);
  EXPECT_EQ((*model)->Memory().source, "host");
  EXPECT_EQ((*model)->Stats().step, ladder_->n_eqms() - 1);
  // Plenty again: not before the dwell...
  (*model)->ReportAvailableBytes(start.largest_budget * 4);
  EXPECT_GE((*model)->Memory().budget, start.largest_budget * 3);
  EXPECT_EQ((*model)->Stats().step, ladder_->n_eqms() - 1);
  // ...then by itself (the watcher polls every 100 ms; the dwell is 2 s).
  for (int i = 0; i < 60 && (*model)->Stats().step != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ((*model)->Stats().step, 0);
  // Android's RUNNING_CRITICAL: the smallest, whatever the bytes say.
  (*model)->ReportAndroidTrimLevel(15);
  EXPECT_EQ((*model)->Memory().pressure, MemoryPressure::kCritical);
  EXPECT_EQ((*model)->Stats().step, ladder_->n_eqms() - 1);
  // SetBudget takes over again.
  ASSERT_TRUE((*model)->SetBudget(start.largest_budget).ok());
  EXPECT_FALSE((*model)->Memory().following);
  (*model)->ReportAndroidTrimLevel(80);  // ignored: nobody follows
  EXPECT_EQ((*model)->Stats().step, 0);
  // The OS path opens on this machine.
  ASSERT_TRUE((*model)->FollowSystemMemory(uint64_t{1} << 40).ok());
  EXPECT_EQ((*model)->Memory().source.substr(0, 7).find("meminfo") == 0 ||
                (*model)->Memory().source.rfind("cgroup", 0) == 0,
            true);
  // A reserve of 1 TiB leaves nothing. The first reading is applied by
  // whichever thread takes the model first, the caller or the watcher, so
  // wait for it rather than race the watcher.
  for (int i = 0; i < 50 && (*model)->Stats().step != ladder_->n_eqms() - 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ((*model)->Stats().step, ladder_->n_eqms() - 1);
}

// The real ladder of ../shared: walk Q8_0 -> Q4_K_M -> Q2_K.
TEST(ElasticRealModelTest, EndsOfAWalkOverTheTinystoriesLadderAreItsQms) {
  FQ_REQUIRE_TESTDATA();
  testing::TempDir tmp;
  std::vector<std::string> labels = {"Q8_0", "Q4_K_M", "Q2_K"};
  std::vector<std::string> ggufs;
  for (const auto& l : labels) {
    ggufs.push_back(testing::TestDataPath("models/tinystories-3M/tinystories-3M-" + l + ".gguf"));
  }
  auto st = testing::StoreWithImports(tmp.Join("store"), ggufs);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto n = testing::AddWalkEnsemble(st->get(), "tinystories-3M", labels, "walk");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  const std::string path = tmp.Join("ts.fqpack");
  pack::PackOptions po;
  ASSERT_TRUE(pack::WritePack(st->get(), po, path).ok());
  ThreadPool pool(2);
  ElasticOptions o;
  o.workload = Workload::kPerplexity;
  o.n_ctx = 128;
  auto rt = ElasticRuntime::Open(Env::Default(), path, o, &pool);
  ASSERT_TRUE(rt.ok()) << rt.status().ToString();
  ASSERT_TRUE((*rt)->Start({.eqm = 0}).ok());
  // Q8_0's output matrix is its token embedding byte for byte: one module,
  // held once, counted once.
  {
    auto q8 = (*st)->QmManifest("tinystories-3M", "Q8_0");
    std::set<store::ModuleKey> keys;
    uint64_t distinct = 0;
    for (const auto& s : q8->slots) {
      if (keys.insert(s.key).second) distinct += s.bytes;
    }
    EXPECT_LT(keys.size(), q8->slots.size());
    EXPECT_EQ((*rt)->residency()->levels()[0].footprint, distinct);
    EXPECT_EQ((*rt)->residency()->resident_bytes(), distinct);
  }
  auto text = ReadFileBytes(Env::Default(), testing::TestDataPath("text/tinystories_val.ppl.txt"));
  ASSERT_TRUE(text.ok());
  const std::vector<int32_t> tokens = (*rt)->tokenizer().Encode(
      std::string_view(reinterpret_cast<const char*>(text->data()), 20000), true);
  PerplexityOptions ppo;
  ppo.n_ctx = 128;
  ppo.bos = 1;
  ppo.max_chunks = 3;
  for (int step : {0, *n - 1, 0}) {
    ASSERT_TRUE((*rt)->residency()->TransitionTo(*(*rt)->residency()->LevelOfStep(step)).ok());
    auto er = (*rt)->Perplexity(tokens, 3, {});
    ASSERT_TRUE(er.ok());
    const std::string label = step == 0 ? "Q8_0" : "Q2_K";
    auto model = Model::Load(*(*st)->QmManifest("tinystories-3M", label), st->get(), &pool);
    ASSERT_TRUE(model.ok());
    auto ref = Perplexity(**model, tokens, ppo, &pool);
    ASSERT_TRUE(ref.ok());
    EXPECT_EQ(er->total.ppl, ref->ppl) << label;
  }
}

}  // namespace
}  // namespace fqpack::runtime
