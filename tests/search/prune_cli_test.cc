// `fqpack gc --prune P | --cap SIZE` as a user runs it: --dry-run and --json,
// a reader process working through a prune, a kill -9 at moments spread over
// the ~50 ms a prune of the tiny store takes (search, apply, sweep), leaving
// a store that verifies and still runs, and bad arguments.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/search/search_fixture.h"

namespace fqpack::search {
namespace {

using testing::RunCommand;

class PruneCliTest : public ::testing::Test {
 protected:
  // A searched store for the suite (two mids); each test works on a copy.
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    template_ = tmp_->Join("template");
    for (const auto& [label, type] :
         std::vector<std::pair<std::string, QType>>{{"Q8_0", QType::kQ8_0},
                                                    {"Q5_1", QType::kQ5_1},
                                                    {"Q4_1", QType::kQ4_1},
                                                    {"Q4_0", QType::kQ4_0}}) {
      const std::string f = testing::WriteTinyGguf(tmp_->Join("tiny-" + label + ".gguf"),
                                                   testing::SearchSpec(ToId(type)));
      std::string out;
      ASSERT_EQ(Fq(template_, "import " + f, &out), 0) << out;
    }
    const std::string text = testing::RandomText(600, 21);
    calib_ = tmp_->Join("calib.txt");
    ASSERT_TRUE(PublishFile(Env::Default(), calib_,
                            ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
                    .ok());
    std::string out;
    ASSERT_EQ(Fq(template_,
                 "search --model tiny --up Q8_0 --mid Q5_1,Q4_1 --low Q4_0 --calib " + calib_ +
                     " --tokens 64 -c 32 --stem 1 --branch 2",
                 &out),
              0)
        << out;
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }
  void SetUp() override {
    store_ = work_.Join("store");
    ASSERT_EQ(RunCommand("cp -a '" + template_ + "' '" + store_ + "'"), 0);
  }

  static int Fq(const std::string& store, const std::string& args, std::string* out = nullptr) {
    return RunCommand(testing::FqpackBinary() + " --store '" + store + "' " + args + " 2>&1", out);
  }
  int Fq(const std::string& args, std::string* out = nullptr) { return Fq(store_, args, out); }

  // The perplexity of QM `label` on the calibration text, as printed by --json.
  double Ppl(const std::string& label) {
    std::string out;
    EXPECT_EQ(Fq("--json ppl --model tiny --qm " + label + " --text " + calib_ + " -c 32", &out), 0)
        << out;
    const size_t at = out.find("\"ppl\":");
    EXPECT_NE(at, std::string::npos) << out;
    return at == std::string::npos ? 0 : std::atof(out.c_str() + at + 6);
  }

  uint64_t StoredBytes() {
    std::string out;
    EXPECT_EQ(Fq("--json ls", &out), 0) << out;
    const size_t at = out.rfind("\"stored_bytes\":");
    return at == std::string::npos ? 0 : std::strtoull(out.c_str() + at + 15, nullptr, 10);
  }

  static testing::TempDir* tmp_;
  static std::string template_, calib_;
  testing::TempDir work_;
  std::string store_;
};

testing::TempDir* PruneCliTest::tmp_ = nullptr;
std::string PruneCliTest::template_, PruneCliTest::calib_;

TEST_F(PruneCliTest, DryRunSaysWhatWouldGoAndChangesNothing) {
  const uint64_t before = StoredBytes();
  std::string out;
  ASSERT_EQ(Fq("gc --prune 0.5 --dry-run", &out), 0) << out;
  EXPECT_NE(out.find("would prune "), std::string::npos) << out;
  EXPECT_NE(out.find("calibration perplexity at the static footprints"), std::string::npos) << out;
  ASSERT_EQ(Fq("--json gc --prune 0.5 --dry-run", &out), 0) << out;
  EXPECT_NE(out.find("\"applied\":false"), std::string::npos) << out;
  EXPECT_EQ(out.find("\"pruned\":0,"), std::string::npos) << out;
  EXPECT_EQ(StoredBytes(), before);
  ASSERT_EQ(Fq("ls", &out), 0);
  EXPECT_EQ(out.find("partial"), std::string::npos) << out;

  ASSERT_EQ(Fq("--json gc --prune 0.5", &out), 0) << out;
  EXPECT_NE(out.find("\"applied\":true"), std::string::npos) << out;
  EXPECT_LT(StoredBytes(), before);
  ASSERT_EQ(Fq("ls", &out), 0);
  EXPECT_NE(out.find("(partial)"), std::string::npos) << out;
  ASSERT_EQ(Fq("--json report --model tiny --no-eval", &out), 0) << out;
  EXPECT_NE(out.find("\"partial\": true"), std::string::npos) << out;
  ASSERT_EQ(Fq("verify", &out), 0) << out;
  // A second gc frees nothing.
  ASSERT_EQ(Fq("--json gc", &out), 0) << out;
  EXPECT_NE(out.find("\"freed_bytes\":0"), std::string::npos) << out;
}

TEST_F(PruneCliTest, CapIsMetOnTheStore) {
  const uint64_t before = StoredBytes();
  const uint64_t cap = before - 2000;
  std::string out;
  ASSERT_EQ(Fq("gc --cap " + std::to_string(cap), &out), 0) << out;
  EXPECT_LE(StoredBytes(), cap);
  EXPECT_NE(Fq("gc --cap 1KB", &out), 0);
  EXPECT_NE(out.find("over the cap"), std::string::npos) << out;
}

TEST_F(PruneCliTest, AReaderProcessKeepsWorkingThroughAPrune) {
  const double up = Ppl("Q8_0");
  const double low = Ppl("Q4_0");
  // Thirty perplexity runs of QM(n_up) in another process, while gc prunes.
  const std::string log = work_.Join("reader.log");
  const std::string reader = "for i in $(seq 30); do " + testing::FqpackBinary() + " --store '" +
                             store_ + "' --json ppl --model tiny --qm Q8_0 --text " + calib_ +
                             " -c 32 >> '" + log + "' 2>&1; echo \"rc=$?\" >> '" + log + "'; done";
  ASSERT_EQ(RunCommand("(" + reader + ") & " + testing::FqpackBinary() + " --store '" + store_ +
                       "' -q gc --prune 0.75 --wait > /dev/null 2>&1; rc=$?; wait; exit $rc"),
            0);
  std::string text;
  ASSERT_EQ(RunCommand("cat '" + log + "'", &text), 0);
  size_t runs = 0;
  for (size_t at = text.find("rc="); at != std::string::npos; at = text.find("rc=", at + 1)) {
    EXPECT_EQ(text[at + 3], '0') << text;
    ++runs;
  }
  EXPECT_EQ(runs, 30u);
  for (size_t at = text.find("\"ppl\":"); at != std::string::npos;
       at = text.find("\"ppl\":", at + 1)) {
    EXPECT_DOUBLE_EQ(std::atof(text.c_str() + at + 6), up);
  }
  EXPECT_DOUBLE_EQ(Ppl("Q8_0"), up);
  EXPECT_DOUBLE_EQ(Ppl("Q4_0"), low);
  std::string out;
  EXPECT_EQ(Fq("verify", &out), 0) << out;
}

TEST_F(PruneCliTest, AKillAtAnyMomentLeavesAStoreThatVerifiesAndRuns) {
  const double up = Ppl("Q8_0");
  const double low = Ppl("Q4_0");
  for (int delay_ms : {2, 5, 10, 20, 30, 40, 50, 70, 120}) {
    SCOPED_TRACE("kill after " + std::to_string(delay_ms) + " ms");
    ASSERT_EQ(RunCommand(testing::FqpackBinary() + " --store '" + store_ +
                         "' -q gc --prune 0.5 > /dev/null 2>&1 & pid=$!; sleep " +
                         std::to_string(delay_ms / 1000.0) +
                         "; kill -9 $pid 2>/dev/null; wait $pid; true"),
              0);
    std::string out;
    ASSERT_EQ(Fq("verify", &out), 0) << out;
    EXPECT_DOUBLE_EQ(Ppl("Q8_0"), up);
    EXPECT_DOUBLE_EQ(Ppl("Q4_0"), low);
    ASSERT_EQ(Fq("--json report --model tiny --no-eval", &out), 0) << out;
  }
  // A gc that finishes afterwards leaves nothing behind.
  std::string out;
  ASSERT_EQ(Fq("-q gc --prune 0.5", &out), 0) << out;
  ASSERT_EQ(Fq("--json gc", &out), 0) << out;
  EXPECT_NE(out.find("\"freed_bytes\":0"), std::string::npos) << out;
  ASSERT_EQ(Fq("verify", &out), 0) << out;
}

TEST_F(PruneCliTest, BadArgumentsAreClearErrors) {
  std::string out;
  EXPECT_EQ(Fq("gc --prune 1.5", &out), 2) << out;
  EXPECT_NE(Fq("gc --prune 0.5 --cap 1MB", &out), 0);
  EXPECT_NE(out.find("not both"), std::string::npos) << out;
  EXPECT_NE(Fq("gc --prune 0.5 --ensemble nope", &out), 0);
  EXPECT_NE(out.find("nope"), std::string::npos) << out;
  EXPECT_NE(Fq("gc --model tiny", &out), 0);
  EXPECT_NE(out.find("--prune or --cap"), std::string::npos) << out;
  EXPECT_NE(Fq("gc --cap lots", &out), 0);
  EXPECT_NE(out.find("--cap 'lots'"), std::string::npos) << out;
}

}  // namespace
}  // namespace fqpack::search
