// `fqpack search`, `fqpack report` and `fqpack ls --ensembles` as a user runs
// them: messages, exit codes, --json, plot files, and Ctrl-C.
#include <gtest/gtest.h>

#include "plot/plot.h"
#include "tests/search/search_fixture.h"
#include "tests/support/store_util.h"

namespace fqpack::search {
namespace {

using testing::RunCommand;

class SearchCliTest : public ::testing::Test {
 protected:
  // One store for the suite, holding the tiny model's three QMs.
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    store_ = tmp_->Join("store");
    for (const auto& [label, type] : std::vector<std::pair<std::string, QType>>{
             {"Q8_0", QType::kQ8_0}, {"Q5_0", QType::kQ5_0}, {"Q4_0", QType::kQ4_0}}) {
      const std::string f = testing::WriteTinyGguf(tmp_->Join("tiny-" + label + ".gguf"),
                                                   testing::SearchSpec(ToId(type)));
      std::string out;
      ASSERT_EQ(Fq("import " + f, &out), 0) << out;
    }
    const std::string text = testing::RandomText(600, 21);
    calib_ = tmp_->Join("calib.txt");
    eval_ = tmp_->Join("eval.txt");
    ASSERT_TRUE(PublishFile(Env::Default(), calib_,
                            ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
                    .ok());
    const std::string eval = testing::RandomText(600, 22);
    ASSERT_TRUE(PublishFile(Env::Default(), eval_,
                            ByteSpan(reinterpret_cast<const uint8_t*>(eval.data()), eval.size()))
                    .ok());
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }

  static int Fq(const std::string& args, std::string* out = nullptr, bool with_stderr = true) {
    return RunCommand(testing::FqpackBinary() + " --store " + store_ + " " + args +
                          (with_stderr ? " 2>&1" : " 2>/dev/null"),
                      out);
  }
  static std::string Search(const std::string& extra) {
    return "search --model tiny --up Q8_0 --low Q4_0 --calib " + calib_ + " --tokens 128 -c 32 " +
           extra;
  }

  static testing::TempDir* tmp_;
  static std::string store_, calib_, eval_;
};

testing::TempDir* SearchCliTest::tmp_ = nullptr;
std::string SearchCliTest::store_, SearchCliTest::calib_, SearchCliTest::eval_;

TEST_F(SearchCliTest, BadInputGivesOneClearLineBeforeAnyWork) {
  std::string out;
  EXPECT_EQ(Fq("search --model tiny --up Q9 --low Q4_0 --calib " + calib_, &out), 4) << out;
  EXPECT_NE(out.find("no QM 'Q9'"), std::string::npos) << out;
  EXPECT_NE(out.find("Q8_0, Q5_0, Q4_0"), std::string::npos) << out;
  EXPECT_EQ(Fq("search --model nope --up Q8_0 --low Q4_0 --calib " + calib_, &out), 4) << out;
  EXPECT_EQ(Fq("search --model tiny --up Q4_0 --low Q8_0 --calib " + calib_, &out), 2) << out;
  EXPECT_NE(out.find("higher precision"), std::string::npos) << out;
  EXPECT_EQ(
      Fq("search --model tiny --up Q8_0 --low Q4_0 -c 32 --tokens 100000 --calib " + calib_, &out),
      2)
      << out;
  EXPECT_NE(out.find("too short"), std::string::npos) << out;
  EXPECT_NE(out.find("the text has"), std::string::npos) << out;
  EXPECT_EQ(Fq(Search("--metric mse"), &out), 2) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;  // message + help hint
}

TEST_F(SearchCliTest, SearchListReportAndPlot) {
  std::string out;
  ASSERT_EQ(Fq(Search("--mid Q5_0 --stem 2 --branch 3 --name e1"), &out), 0) << out;
  EXPECT_NE(out.find("ensemble e1:"), std::string::npos) << out;
  EXPECT_NE(out.find("one module per step"), std::string::npos) << out;
  ASSERT_EQ(Fq(Search("--name e1"), &out), 2) << out;
  EXPECT_NE(out.find("already has an ensemble named 'e1'"), std::string::npos) << out;

  ASSERT_EQ(Fq("ls --ensembles --json", &out, false), 0) << out;
  EXPECT_NE(out.find("\"name\": \"e1\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"median_step\""), std::string::npos) << out;
  ASSERT_EQ(Fq("ls --ensembles", &out), 0) << out;
  EXPECT_NE(out.find("Q8_0>Q5_0>Q4_0"), std::string::npos) << out;
  EXPECT_NE(out.find("stem=2 branch=3"), std::string::npos) << out;

  const std::string png = tmp_->Join("e1.png"), svg = tmp_->Join("e1.svg"),
                    csv = tmp_->Join("e1.csv");
  ASSERT_EQ(Fq("report --model tiny -e e1 -f " + eval_ + " -c 32 --every 4 --json --plot " + png +
                   " --csv " + csv,
               &out, false),
            0)
      << out;
  for (const char* key : {"\"eqms\"", "\"static\"", "\"granularity\"", "\"storage\"",
                          "\"per_footprint_bytes\"", "\"eval_ppl\"", "\"quality\""}) {
    EXPECT_NE(out.find(key), std::string::npos) << key;
  }
  auto png_bytes = ReadFileBytes(Env::Default(), png);
  ASSERT_TRUE(png_bytes.ok());
  EXPECT_EQ(std::string(png_bytes->begin() + 1, png_bytes->begin() + 4), "PNG");
  auto csv_bytes = ReadFileBytes(Env::Default(), csv);
  ASSERT_TRUE(csv_bytes.ok());
  EXPECT_EQ(std::string(csv_bytes->begin(), csv_bytes->begin() + 6), "curve,");

  ASSERT_EQ(Fq("report --model tiny -e e1 -f " + eval_ + " -c 32 --every 4 --plot " + svg, &out), 0)
      << out;
  EXPECT_NE(out.find("quality at the static footprints"), std::string::npos) << out;
  EXPECT_NE(out.find("granularity"), std::string::npos) << out;
  auto svg_bytes = ReadFileBytes(Env::Default(), svg);
  ASSERT_TRUE(svg_bytes.ok());
  EXPECT_NE(std::string(svg_bytes->begin(), svg_bytes->end()).find("ensemble e1"),
            std::string::npos);
  EXPECT_EQ(Fq("report --model tiny -e e1 -f " + eval_ + " -c 32 --plot x.gif", &out), 2) << out;
}

TEST_F(SearchCliTest, CtrlCStopsTheSearchAndWritesNothing) {
  FQ_REQUIRE_TESTDATA();
  // A search that takes minutes: the real 3M model, many tokens.
  testing::TempDir tmp;
  const std::string dir = tmp.Join("store");
  std::string out;
  ASSERT_EQ(
      RunCommand(testing::FqpackBinary() + " --store " + dir + " -q import " +
                     testing::TestDataPath("models/tinystories-3M/tinystories-3M-Q8_0.gguf") + " " +
                     testing::TestDataPath("models/tinystories-3M/tinystories-3M-Q2_K.gguf") +
                     " 2>&1",
                 &out),
      0)
      << out;
  const std::string before = testing::SnapshotStore(dir);
  const std::string cmd = testing::FqpackBinary() + " --store " + dir +
                          " search --up Q8_0 --low Q2_K --tokens 16384 -t 1 --calib " +
                          testing::TestDataPath("text/tinystories.txt");
  ASSERT_EQ(
      RunCommand("(" + cmd + " 2>&1 & pid=$!; sleep 2; kill -INT $pid; wait $pid; echo rc=$?)",
                 &out),
      0);
  EXPECT_NE(out.find("rc=130"), std::string::npos) << out;
  EXPECT_NE(out.find("interrupted; nothing was written"), std::string::npos) << out;
  EXPECT_EQ(testing::SnapshotStore(dir), before);
  EXPECT_EQ(testing::VerifyErrors(dir), "");
}

}  // namespace
}  // namespace fqpack::search
