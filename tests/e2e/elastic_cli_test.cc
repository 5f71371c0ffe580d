// fqpack run | ppl | export on a .fqpack, as a user runs them: budgets,
// budget traces, --eqm, the transition log, and the errors for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "runtime/elastic.h"
#include "tests/runtime/elastic_test_util.h"

namespace fqpack {
namespace {

using testing::ElasticLadder;
using testing::FqpackBinary;
using testing::JsonNumber;
using testing::JsonString;
using testing::RunCommand;

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class ElasticCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ladder_ = new ElasticLadder();
    pack_ = new std::string(ladder_->Pack(pack::Codec::kRaw, "cli.fqpack"));
    // Text the tiny vocabulary spells with its own tokens ("t5t17...").
    std::mt19937 rng(11);
    std::string text;
    for (int i = 0; i < 600; ++i) text += "t" + std::to_string(3 + rng() % 61);
    text_ = new std::string(ladder_->Join("text.txt"));
    EXPECT_TRUE(PublishFile(Env::Default(), *text_,
                            ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
                    .ok());
  }
  static void TearDownTestSuite() {
    delete ladder_;
    delete pack_;
    delete text_;
  }

  // Runs fqpack with stderr merged into *out unless `with_stderr` is false.
  int Fq(const std::string& args, std::string* out, bool with_stderr = true) {
    return RunCommand(FqpackBinary() + " -t 2 --store " + ladder_->store_dir() + " " + args +
                          (with_stderr ? " 2>&1" : " 2>/dev/null"),
                      out);
  }
  std::string WriteText(const std::string& name, const std::string& text) {
    const std::string path = ladder_->Join(name);
    EXPECT_TRUE(PublishFile(Env::Default(), path,
                            ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
                    .ok());
    return path;
  }
  // Levels and overhead of a generating run with -t 2, as the CLI sees them.
  std::unique_ptr<runtime::ElasticRuntime> Runtime(ThreadPool* pool) {
    runtime::ElasticOptions o;
    auto rt = runtime::ElasticRuntime::Open(Env::Default(), *pack_, o, pool);
    EXPECT_TRUE(rt.ok());
    return std::move(*rt);
  }

  static ElasticLadder* ladder_;
  static std::string* pack_;
  static std::string* text_;
};

ElasticLadder* ElasticCliTest::ladder_ = nullptr;
std::string* ElasticCliTest::pack_ = nullptr;
std::string* ElasticCliTest::text_ = nullptr;

TEST_F(ElasticCliTest, BudgetRunsTheLargestEqmThatFits) {
  ThreadPool pool(2);
  auto rt = Runtime(&pool);
  const auto& levels = rt->residency()->levels();
  const uint64_t overhead = rt->overhead().total();
  // Halfway between two footprints.
  const size_t want = levels.size() / 2;
  const uint64_t budget = overhead + (levels[want].footprint + levels[want - 1].footprint) / 2;
  std::string out;
  ASSERT_EQ(
      Fq("--json run " + *pack_ + " --budget " + std::to_string(budget) + " -p t5t9 -n 6 --temp 0",
         &out, false),
      0)
      << out;
  EXPECT_EQ(JsonString(out, "level"), "eqm:" + std::to_string(want)) << out;
  EXPECT_EQ(JsonNumber(out, "budget"), static_cast<double>(budget));
  EXPECT_EQ(JsonNumber(out, "resident_bytes"), static_cast<double>(levels[want].footprint));
  EXPECT_EQ(JsonNumber(out, "kv_cache_bytes") + JsonNumber(out, "scratch_bytes"),
            static_cast<double>(overhead));
  // The same tokens as naming that EQM.
  std::string by_eqm;
  ASSERT_EQ(Fq("--json run " + *pack_ + " --eqm " + std::to_string(want) + " -p t5t9 -n 6 --temp 0",
               &by_eqm, false),
            0);
  EXPECT_EQ(out.substr(out.find("\"tokens\"")).substr(0, 60),
            by_eqm.substr(by_eqm.find("\"tokens\"")).substr(0, 60));
  // Without --budget or --eqm: the largest.
  ASSERT_EQ(Fq("--json run " + *pack_ + " -p t5 -n 2", &out, false), 0) << out;
  EXPECT_EQ(JsonString(out, "level"), "eqm:0");
}

TEST_F(ElasticCliTest, BudgetAutoFollowsWhatTheSystemHasLeft) {
  ThreadPool pool(2);
  auto rt = Runtime(&pool);
  const int last = static_cast<int>(rt->residency()->levels().size()) - 1;
  std::string out;
  // A reserve larger than the machine's memory leaves nothing: the smallest
  // EQM, with a warning that says so.
  ASSERT_EQ(Fq("--json run " + *pack_ + " --budget auto:1TiB -p t5t9 -n 4 --temp 0", &out), 0)
      << out;
  EXPECT_NE(out.find("budget auto: meminfo"), std::string::npos) << out;
  EXPECT_NE(out.find("below the smallest EQM"), std::string::npos) << out;
  EXPECT_EQ(JsonString(out, "level"), "eqm:" + std::to_string(last)) << out;
  // A small reserve on a machine with room for this tiny model: the largest.
  ASSERT_EQ(Fq("--json run " + *pack_ + " --budget auto:64KiB -p t5t9 -n 4 --temp 0", &out, false),
            0)
      << out;
  EXPECT_EQ(JsonString(out, "level"), "eqm:0") << out;
  // perplexity too
  ASSERT_EQ(Fq("--json ppl " + *pack_ + " --budget auto:1TiB -f " + *text_ + " -c 32", &out, false),
            0)
      << out;
  EXPECT_EQ(Fq("run " + *pack_ + " --budget auto:lots -p t5 -n 1", &out), 2) << out;
  EXPECT_NE(out.find("--budget 'auto:lots': the reserve"), std::string::npos) << out;
  const std::string trace = WriteText("auto-trace.csv", "0,10MB\n");
  EXPECT_EQ(Fq("run " + *pack_ + " --budget auto --budget-trace " + trace + " -p t5 -n 1", &out), 2)
      << out;
  EXPECT_NE(out.find("drop --budget-trace"), std::string::npos) << out;
}

TEST_F(ElasticCliTest, BudgetTraceLogsEveryTransitionAndWritesThemAsJson) {
  ThreadPool pool(2);
  auto rt = Runtime(&pool);
  const auto& levels = rt->residency()->levels();
  const uint64_t overhead = rt->overhead().total();
  const size_t last = levels.size() - 1;
  const std::string trace =
      WriteText("trace.csv", "token_index,budget\n# a dip and back\n0," +
                                 std::to_string(levels[1].footprint + overhead) + "\n2," +
                                 std::to_string(levels[last].footprint + overhead) + "\n4," +
                                 std::to_string(levels[last / 2].footprint + overhead) + "B\n");
  const std::string tj = ladder_->Join("transitions.json");
  std::string out;
  ASSERT_EQ(Fq("run " + *pack_ + " --budget-trace " + trace +
                   " -p t5t9t11 -n 8 --temp 0 --transitions-json " + tj,
               &out),
            0)
      << out;
  // Token 0's budget chose the starting EQM: no transition for it.
  EXPECT_EQ(Count(out, "transition token"), 2u) << out;
  EXPECT_NE(out.find("transition token 2: eqm:1 -> eqm:" + std::to_string(last)), std::string::npos)
      << out;
  EXPECT_NE(out.find("transition token 4: eqm:" + std::to_string(last) +
                     " -> eqm:" + std::to_string(last / 2)),
            std::string::npos)
      << out;
  Bytes json = *ReadFileBytes(Env::Default(), tj);
  const std::string j(json.begin(), json.end());
  EXPECT_EQ(Count(j, "\"modules_swapped\""), 2u) << j;
  int differ = 0;
  for (size_t p = 0; p < levels[1].modules.size(); ++p)
    differ += levels[1].modules[p] != levels[last].modules[p];
  EXPECT_EQ(JsonNumber(j, "modules_swapped"), static_cast<double>(differ))
      << "only the modules that differ";
  ASSERT_EQ(Fq("--json run " + *pack_ + " --budget-trace " + trace + " -p t5t9t11 -n 8 --temp 0",
               &out, false),
            0);
  EXPECT_EQ(JsonNumber(out, "transition_count"), 2) << out;
  EXPECT_EQ(JsonString(out, "level"), "eqm:" + std::to_string(last / 2));
}

// -n past the context shifts it, also while a budget trace swaps modules.
// (The tiny model says EOS after 32 tokens from this prompt: past its 4
// prompt tokens and 28 free positions, so after one shift.)
TEST_F(ElasticCliTest, RunPastTheContextShiftsItUnderABudgetTrace) {
  ThreadPool pool(2);
  auto rt = Runtime(&pool);
  const auto& levels = rt->residency()->levels();
  const uint64_t overhead = rt->overhead().total();
  auto tokens = [](const std::string& json) {
    const size_t at = json.find("\"tokens\"");
    return json.substr(at, json.find(']', at) - at);
  };
  const std::string run = "--json run " + *pack_ + " -p t5t9 -n 100 -c 32 --temp 0";
  std::string out, again;
  ASSERT_EQ(Fq(run, &out, false), 0) << out;
  const double prompt = JsonNumber(out, "prompt_tokens");
  EXPECT_GT(JsonNumber(out, "generated_tokens"), 32 - prompt + 1) << out;
  EXPECT_NE(JsonString(out, "stop"), "context");
  EXPECT_GE(JsonNumber(out, "context_shifts"), 1) << out;
  ASSERT_EQ(Fq(run, &again, false), 0);
  EXPECT_EQ(tokens(out), tokens(again)) << "greedy output after a shift is deterministic";

  ASSERT_EQ(Fq(run + " --no-context-shift", &out, false), 0) << out;
  EXPECT_EQ(JsonString(out, "stop"), "context");
  EXPECT_EQ(JsonNumber(out, "generated_tokens"), 32 - prompt + 1);
  EXPECT_EQ(JsonNumber(out, "context_shifts"), 0);

  const std::string trace =
      WriteText("shift-trace.csv", "token_index,budget\n20," +
                                       std::to_string(levels.back().footprint + overhead) + "\n");
  ASSERT_EQ(Fq(run + " --budget-trace " + trace, &out, false), 0) << out;
  EXPECT_GT(JsonNumber(out, "generated_tokens"), 32 - prompt + 1) << out;
  EXPECT_GE(JsonNumber(out, "context_shifts"), 1) << out;
  EXPECT_EQ(JsonNumber(out, "transition_count"), 1) << out;
  // Without the JSON: a note says how many.
  ASSERT_EQ(Fq("run " + *pack_ + " -p t5t9 -n 100 -c 32 --temp 0 --keep -1", &out), 0) << out;
  EXPECT_NE(out.find("context shifts: "), std::string::npos) << out;
}

TEST_F(ElasticCliTest, PerplexityOfAnEqmEqualsTheStoreQmAndItsExportedGguf) {
  std::string a, b;
  ASSERT_EQ(Fq("ppl " + *pack_ + " --eqm 0 -f " + *text_ + " -c 16", &a, false), 0) << a;
  ASSERT_EQ(Fq("ppl --qm " + ladder_->labels()[0] + " -f " + *text_ + " -c 16", &b, false), 0) << b;
  EXPECT_EQ(a.substr(0, a.find("  (")), b.substr(0, b.find("  ("))) << a << b;
  EXPECT_NE(a.find("PPL = "), std::string::npos);

  // An EQM in the middle, exported, imported into a fresh store: same PPL.
  const int k = ladder_->n_eqms() / 3;
  const std::string gguf = ladder_->Join("eqm.gguf");
  std::string out;
  ASSERT_EQ(Fq("export " + *pack_ + " --eqm " + std::to_string(k) + " -o " + gguf, &out), 0) << out;
  const std::string other = ladder_->Join("other-store");
  ASSERT_EQ(RunCommand(FqpackBinary() + " --store " + other + " import --model x --label E " +
                           gguf + " 2>&1",
                       &out),
            0)
      << out;
  ASSERT_EQ(
      Fq("ppl " + *pack_ + " --eqm " + std::to_string(k) + " -f " + *text_ + " -c 16", &a, false),
      0)
      << a;
  ASSERT_EQ(RunCommand(FqpackBinary() + " -t 2 --store " + other + " ppl --qm E -f " + *text_ +
                           " -c 16 2>/dev/null",
                       &b),
            0)
      << b;
  EXPECT_EQ(a.substr(0, a.find("  (")), b.substr(0, b.find("  ("))) << a << b;
  // The middle EQM is neither end: its PPL differs from both.
  std::string low;
  ASSERT_EQ(Fq("ppl " + *pack_ + " --eqm " + std::to_string(ladder_->n_eqms() - 1) + " -f " +
                   *text_ + " -c 16",
               &low, false),
            0);
  EXPECT_NE(a.substr(0, a.find("  (")), low.substr(0, low.find("  (")));
}

TEST_F(ElasticCliTest, PerplexityFollowsATraceBetweenChunks) {
  ThreadPool pool(2);
  runtime::ElasticOptions o;
  o.workload = runtime::Workload::kPerplexity;
  o.n_ctx = 16;
  auto rt = runtime::ElasticRuntime::Open(Env::Default(), *pack_, o, &pool);
  ASSERT_TRUE(rt.ok());
  const auto& levels = (*rt)->residency()->levels();
  const uint64_t overhead = (*rt)->overhead().total();
  const std::string trace =
      WriteText("ppl-trace.csv", "0," + std::to_string(levels[0].footprint + overhead) + "\n32," +
                                     std::to_string(levels.back().footprint + overhead) + "\n");
  std::string out;
  ASSERT_EQ(Fq("--json ppl " + *pack_ + " --budget-trace " + trace + " -f " + *text_ +
                   " -c 16 --chunks 4",
               &out, false),
            0)
      << out;
  EXPECT_EQ(JsonNumber(out, "transition_count"), 1) << out;
  EXPECT_EQ(Count(out, "\"chunk\""), 4u) << out;
  EXPECT_EQ(JsonNumber(out, "token"), 32) << out;
}

TEST_F(ElasticCliTest, BadInputIsAClearError) {
  std::string out;
  // A budget below the smallest EQM gives the minimum.
  EXPECT_EQ(Fq("run " + *pack_ + " --budget 1KB -p t5 -n 2", &out), 2) << out;
  EXPECT_NE(out.find("below the smallest EQM"), std::string::npos) << out;
  EXPECT_NE(out.find("needs at least"), std::string::npos) << out;
  // Bad trace lines name their line.
  const std::string bad = WriteText("bad.csv", "token_index,budget\n0,5MB\n3;4MB\n");
  EXPECT_EQ(Fq("run " + *pack_ + " --budget-trace " + bad + " -p t5 -n 2", &out), 2) << out;
  EXPECT_NE(out.find("bad.csv:3:"), std::string::npos) << out;
  const std::string low = WriteText("low.csv", "0,5MB\n10,2KB\n");
  EXPECT_EQ(Fq("run " + *pack_ + " --budget-trace " + low + " -p t5 -n 2", &out), 2) << out;
  EXPECT_NE(out.find("low.csv:2:"), std::string::npos) << out;
  EXPECT_NE(out.find("needs at least"), std::string::npos) << out;
  // --eqm out of range.
  EXPECT_EQ(Fq("run " + *pack_ + " --eqm 999 -p t5 -n 2", &out), 2) << out;
  EXPECT_NE(out.find("EQM 999 is out of range"), std::string::npos) << out;
  EXPECT_NE(out.find("0.." + std::to_string(ladder_->n_eqms() - 1)), std::string::npos) << out;
  EXPECT_EQ(Fq("export " + *pack_ + " --eqm 999 -o " + ladder_->Join("x.gguf"), &out), 2) << out;
  EXPECT_NE(out.find("out of range"), std::string::npos) << out;
  // Budgets are for packs: a store QM has one size.
  EXPECT_EQ(Fq("run --qm F16 --budget 1MB -p t5 -n 2", &out), 2) << out;
  EXPECT_NE(out.find(".fqpack file"), std::string::npos) << out;
  EXPECT_EQ(Fq("ppl --qm F16 --budget-trace " + bad + " -f " + *text_, &out), 2) << out;
  EXPECT_NE(out.find(".fqpack file"), std::string::npos) << out;
  // Contradicting choices.
  EXPECT_EQ(Fq("run " + *pack_ + " --eqm 1 --budget 5MB -p t5", &out), 2) << out;
  EXPECT_EQ(Fq("run " + *pack_ + " --model tiny -p t5", &out), 2) << out;
  // Not a pack.
  EXPECT_EQ(Fq("run " + ladder_->gguf_paths()[0] + " -p t5", &out), 3) << out;
}

TEST_F(ElasticCliTest, ExportRefusesFqpackOwnTypesNamingATensor) {
  // A group-int QM of the same model, packed with the rest.
  testing::TempDir tmp;
  std::string out;
  const std::string store = tmp.Join("s");
  ASSERT_EQ(RunCommand(FqpackBinary() + " --store " + store + " import --model tiny --label F16 " +
                           ladder_->gguf_paths()[0] + " 2>&1",
                       &out),
            0)
      << out;
  ASSERT_EQ(RunCommand(FqpackBinary() + " -t 2 --store " + store +
                           " quantize --from F16 --bits 4 --label int4 2>&1",
                       &out),
            0)
      << out;
  const std::string pack = tmp.Join("q.fqpack");
  ASSERT_EQ(RunCommand(FqpackBinary() + " --store " + store + " pack -o " + pack + " 2>&1", &out),
            0)
      << out;
  EXPECT_EQ(RunCommand(FqpackBinary() + " export " + pack + " --qm int4 -o " + tmp.Join("q.gguf") +
                           " 2>&1",
                       &out),
            5)
      << out;
  EXPECT_NE(out.find("tensor '"), std::string::npos) << out;
  EXPECT_NE(out.find("GGUF cannot hold"), std::string::npos) << out;
  // The float QM of the same pack exports fine, and the int4 QM runs.
  EXPECT_EQ(RunCommand(
                FqpackBinary() + " export " + pack + " --qm F16 -o " + tmp.Join("f.gguf") + " 2>&1",
                &out),
            0)
      << out;
  EXPECT_EQ(RunCommand(FqpackBinary() + " -t 2 run " + pack + " --qm int4 -p t5 -n 3 2>&1", &out),
            0)
      << out;
}

}  // namespace
}  // namespace fqpack
