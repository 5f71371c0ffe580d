// fqpack calibrate-dynamic, and run | ppl --dynamic on a store and on a
// .fqpack, as a user runs them on stories260K: the pack carries the model,
// both sources give the same numbers, the stats are reported, and bad input
// gets a clear error and exit code.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "tests/support/test_util.h"

namespace fqpack {
namespace {

using testing::FqpackBinary;
using testing::JsonNumber;
using testing::JsonString;
using testing::RunCommand;
using testing::TempDir;
using testing::TestDataPath;

class DynamicCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testing::TestDataDir().empty()) return;
    tmp_ = new TempDir();
    std::string out;
    const std::string models = TestDataPath("models/stories260K/stories260K-");
    ASSERT_EQ(Fq("init", &out), 0) << out;
    ASSERT_EQ(
        Fq("import " + models + "F16.gguf " + models + "Q4_K_M.gguf " + models + "Q2_K.gguf", &out),
        0)
        << out;
    // A pack from before the calibration, and one after.
    ASSERT_EQ(Fq("pack -o " + tmp_->Join("bare.fqpack"), &out), 0) << out;
    ASSERT_EQ(
        Fq("--json calibrate-dynamic --hi F16 --lo Q4_K_M --calib " +
               TestDataPath("text/tinystories.txt") + " -c 128 --tokens 1024 --target-bits 12",
           calib_json_ = new std::string(), false),
        0)
        << *calib_json_;
    ASSERT_EQ(Fq("pack -o " + tmp_->Join("dyn.fqpack"), &out), 0) << out;
  }
  static void TearDownTestSuite() {
    delete calib_json_;
    delete tmp_;
  }
  void SetUp() override { FQ_REQUIRE_TESTDATA(); }

  static int Fq(const std::string& args, std::string* out, bool with_stderr = true) {
    return RunCommand(FqpackBinary() + " -t 2 --store " + tmp_->Join("store") + " " + args +
                          (with_stderr ? " 2>&1" : " 2>/dev/null"),
                      out);
  }
  static std::string Eval() {
    return " --text " + TestDataPath("text/tinystories_val.ppl.txt") + " -c 128 --chunks 3";
  }

  static TempDir* tmp_;
  static std::string* calib_json_;
};

TempDir* DynamicCliTest::tmp_ = nullptr;
std::string* DynamicCliTest::calib_json_ = nullptr;

TEST_F(DynamicCliTest, CalibrationMeetsItsTargetAndRanksEveryUnit) {
  const std::string& j = *calib_json_;
  EXPECT_DOUBLE_EQ(JsonNumber(j, "target_bits"), 12);
  EXPECT_LE(JsonNumber(j, "calib_bits"), 12 + 1e-9);
  EXPECT_GT(JsonNumber(j, "calib_bits"), 11.9);
  EXPECT_EQ(JsonNumber(j, "calib_tokens"), 1024);
  for (const char* unit : {"blk.0", "blk.4", "output.weight", "token_embd.weight"}) {
    EXPECT_NE(j.find(std::string("\"") + unit + "\""), std::string::npos) << unit;
  }
}

TEST_F(DynamicCliTest, LsAndInfoListTheDynamicModel) {
  std::string out;
  ASSERT_EQ(Fq("ls", &out), 0) << out;
  EXPECT_NE(out.find("dynamic precision hi=F16,lo=Q4_K_M"), std::string::npos) << out;
  ASSERT_EQ(Fq("--json info " + tmp_->Join("dyn.fqpack"), &out, false), 0) << out;
  EXPECT_NE(out.find("\"hi\": \"F16\""), std::string::npos) << out;
  EXPECT_DOUBLE_EQ(JsonNumber(out, "target_bits"), 12);
  ASSERT_EQ(Fq("--json info " + tmp_->Join("bare.fqpack"), &out, false), 0) << out;
  EXPECT_NE(out.find("\"dynamic\": []"), std::string::npos) << out;
}

TEST_F(DynamicCliTest, ABudgetHoldsOnlyTheHiCopiesThatFit) {
  const std::string run =
      "--json run " + tmp_->Join("dyn.fqpack") +
      " --dynamic hi=F16,lo=Q4_K_M --prompt 'Once upon a time' -n 8 --temp 0 --budget ";
  std::string out;
  // Too small for the lo QM alone: the error gives the minimum.
  EXPECT_EQ(Fq(run + "100KB", &out), 2) << out;
  EXPECT_NE(out.find("below what --dynamic needs for Q4_K_M alone"), std::string::npos) << out;
  const size_t at = out.find(": ", out.find("alone")) + 2;
  const uint64_t floor = std::strtoull(out.c_str() + at, nullptr, 10);
  ASSERT_GT(floor, 0u) << out;
  double previous_units = -1, previous_bytes = -1;
  for (uint64_t extra :
       {uint64_t{0}, uint64_t{150} << 10, uint64_t{350} << 10, uint64_t{8} << 20}) {
    SCOPED_TRACE("budget = minimum + " + std::to_string(extra));
    ASSERT_EQ(Fq(run + std::to_string(floor + extra), &out, false), 0) << out;
    const double units = JsonNumber(out, "switchable_units");
    const double copies = JsonNumber(out, "hi_copy_bytes");
    EXPECT_LE(copies, static_cast<double>(extra));
    EXPECT_EQ(JsonNumber(out, "resident_bytes"), JsonNumber(out, "lo_bytes") + copies);
    EXPECT_GE(units, previous_units);
    EXPECT_GE(copies, previous_bytes);
    if (extra == 0) {
      EXPECT_EQ(units, 0);
    }
    previous_units = units;
    previous_bytes = copies;
  }
  EXPECT_EQ(previous_units, JsonNumber(out, "units"));  // room for every hi copy
  // A budget needs the pack: a store QM has no budget to follow.
  EXPECT_EQ(Fq("run --dynamic hi=F16,lo=Q4_K_M --prompt x -n 1 --budget 1MB", &out), 2) << out;
  EXPECT_NE(out.find("--budget with --dynamic runs a .fqpack file"), std::string::npos) << out;
}

TEST_F(DynamicCliTest, PackAndStoreGiveTheSameDynamicPerplexity) {
  std::string from_store, from_pack;
  ASSERT_EQ(Fq("--json ppl --dynamic hi=F16,lo=Q4_K_M" + Eval(), &from_store, false), 0)
      << from_store;
  ASSERT_EQ(Fq("--json ppl " + tmp_->Join("dyn.fqpack") + " --dynamic hi=F16,lo=Q4_K_M" + Eval(),
               &from_pack, false),
            0)
      << from_pack;
  EXPECT_EQ(JsonNumber(from_store, "ppl"), JsonNumber(from_pack, "ppl"));
  EXPECT_EQ(JsonNumber(from_store, "mean_bits"), JsonNumber(from_pack, "mean_bits"));
  EXPECT_GT(JsonNumber(from_pack, "mean_bits"), JsonNumber(from_pack, "lo_bits"));
  EXPECT_LT(JsonNumber(from_pack, "mean_bits"), JsonNumber(from_pack, "hi_bits"));
  EXPECT_GT(JsonNumber(from_pack, "hi_copy_bytes"), 0);
  EXPECT_EQ(JsonNumber(from_pack, "resident_bytes"),
            JsonNumber(from_pack, "lo_bytes") + JsonNumber(from_pack, "hi_copy_bytes"));

  // At hi's own bits: static hi's perplexity, to the last digit.
  std::string hi, dyn_hi;
  ASSERT_EQ(Fq("--json ppl --qm F16" + Eval(), &hi, false), 0) << hi;
  char target[64];
  std::snprintf(target, sizeof(target), "%.17g", JsonNumber(from_pack, "hi_bits"));
  ASSERT_EQ(Fq("--json ppl " + tmp_->Join("dyn.fqpack") +
                   " --dynamic hi=F16,lo=Q4_K_M --target-bits " + target + Eval(),
               &dyn_hi, false),
            0)
      << dyn_hi;
  EXPECT_EQ(JsonNumber(hi, "ppl"), JsonNumber(dyn_hi, "ppl"));
  EXPECT_EQ(JsonNumber(dyn_hi, "mean_hi_share"), 1);
}

TEST_F(DynamicCliTest, RunReportsSpeedBitsAndTheHiUnitHistogram) {
  std::string out;
  ASSERT_EQ(Fq("run " + tmp_->Join("dyn.fqpack") +
                   " --dynamic hi=F16,lo=Q4_K_M -p 'Once upon a time' -n 40 --temp 0",
               &out),
            0)
      << out;
  EXPECT_NE(out.find("tokens/s"), std::string::npos) << out;
  EXPECT_NE(out.find("bits per weight per token"), std::string::npos) << out;
  EXPECT_NE(out.find("hi units per token (of 7"), std::string::npos) << out;
  EXPECT_NE(out.find("resident weights"), std::string::npos) << out;
  std::string json;
  ASSERT_EQ(Fq("--json run --dynamic hi=F16,lo=Q4_K_M -p 'Once upon a time' -n 40 --temp 0", &json,
               false),
            0)
      << json;
  const size_t at = json.find("\"hi_units_histogram\":");
  ASSERT_NE(at, std::string::npos) << json;
  // One count per k = 0..7, summing to the tokens decided.
  const std::string hist =
      json.substr(json.find('[', at) + 1, json.find(']', at) - json.find('[', at) - 1);
  double sum = 0;
  int n = 0;
  for (size_t p = 0; p < hist.size();) {
    char* end;
    sum += std::strtod(hist.c_str() + p, &end);
    ++n;
    p = static_cast<size_t>(end - hist.c_str());
    p = hist.find_first_of("0123456789", p);
  }
  EXPECT_EQ(n, 8) << hist;
  // "tokens" of the dynamic object (the top-level one lists the token ids).
  EXPECT_EQ(sum, JsonNumber(json.substr(json.find("\"dynamic\":")), "tokens"));
  EXPECT_GT(JsonNumber(json, "tokens_per_second"), 0);
}

TEST_F(DynamicCliTest, BadInputGetsAClearError) {
  struct Case {
    std::string args;
    int code;
    std::string message;
  };
  const std::string eval = Eval();
  const Case cases[] = {
      {"ppl --dynamic hi=Q4_K_M,lo=F16" + eval, 2, "not of higher precision"},
      {"calibrate-dynamic --hi Q4_K_M --lo F16 --calib " + TestDataPath("text/tinystories.txt"), 2,
       "not of higher precision"},
      {"ppl --dynamic hi=F16,lo=Q4_K_M --target-bits 3" + eval, 2, "below lo's"},
      {"ppl --dynamic hi=F16,lo=Q4_K_M --target-bits 40" + eval, 2, "above hi's"},
      {"calibrate-dynamic --hi F16 --lo Q4_K_M --target-bits 40 --calib " +
           TestDataPath("text/tinystories.txt"),
       2, "above hi's"},
      {"ppl " + tmp_->Join("bare.fqpack") + " --dynamic hi=F16,lo=Q4_K_M" + eval, 4,
       "calibrate-dynamic"},
      {"run --dynamic hi=F16,lo=Q2_K -n 3", 4, "run `fqpack calibrate-dynamic --hi F16 --lo Q2_K"},
      {"run --dynamic F16 -n 3", 2, "expected hi=LABEL,lo=LABEL"},
      {"run --dynamic hi=F16,lo=Q9 -n 3", 4, "Q9"},
      {"run --dynamic hi=F16,lo=Q4_K_M --qm F16 -n 3", 2, "does not combine"},
      {"ppl --qm F16 --target-bits 5" + eval, 2, "--target-bits goes with --dynamic"},
  };
  for (const Case& c : cases) {
    std::string out;
    EXPECT_EQ(Fq(c.args, &out), c.code) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.message), std::string::npos) << c.args << "\n" << out;
    EXPECT_NE(out.find("fqpack: error:"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace fqpack
