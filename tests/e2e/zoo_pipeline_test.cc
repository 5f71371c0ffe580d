// The whole FlexQuant pipeline on families other than llama-2, as a user runs
// it: import a zoo model's three checkpoints, search an ensemble between
// Q8_0 and Q4_K_M, prune it, pack it, run the pack under a falling budget,
// export an EQM as a GGUF and read that back in a fresh store, and score
// per-token dynamic precision between the two QMs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/elastic.h"
#include "tests/support/test_util.h"

namespace fqpack {
namespace {

using testing::FqpackBinary;
using testing::JsonNumber;
using testing::JsonString;
using testing::RunCommand;
using testing::TestDataPath;

// A double written so that it reads back as the same double.
std::string Digits(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// "PPL = 8.1234 ..." up to the timing in parentheses.
std::string PplLine(const std::string& out) {
  const size_t at = out.find("PPL = ");
  if (at == std::string::npos) return "(no PPL in: " + out + ")";
  return out.substr(at, out.find("  (", at) - at);
}

class ZooPipeline : public ::testing::TestWithParam<std::string> {
 protected:
  int Fq(const std::string& store, const std::string& args, std::string* out,
         bool with_stderr = true) {
    return RunCommand(FqpackBinary() + " -t 2 --store " + store + " " + args +
                          (with_stderr ? " 2>&1" : " 2>/dev/null"),
                      out);
  }
};

TEST_P(ZooPipeline, ImportSearchPrunePackRunExport) {
  FQ_REQUIRE_TESTDATA();
  const std::string model = "zoo-" + GetParam();
  testing::TempDir tmp;
  const std::string store = tmp.Join("store");
  const std::string calib = TestDataPath("text/tinystories.txt");
  const std::string eval = TestDataPath("text/tinystories_val.txt");
  std::string out;

  // Import: one model, three QMs.
  std::string files;
  for (const char* label : {"F32", "Q8_0", "Q4_K_M"})
    files += " " + TestDataPath("models/zoo/" + model + "-" + label + ".gguf");
  ASSERT_EQ(Fq(store, "-q import" + files, &out), 0) << out;

  // Search and prune; the store verifies after each.
  ASSERT_EQ(
      Fq(store,
         "-q search --model " + model + " --up Q8_0 --low Q4_K_M --tokens 256 --calib " + calib,
         &out),
      0)
      << out;
  ASSERT_EQ(Fq(store, "-q gc --prune 0.5 --model " + model, &out), 0) << out;
  ASSERT_EQ(Fq(store, "verify", &out), 0) << out;

  // Dynamic precision between the same two QMs travels in the pack.
  ASSERT_EQ(Fq(store,
               "-q calibrate-dynamic --model " + model +
                   " --hi Q8_0 --lo Q4_K_M --tokens 1024 --calib " + calib,
               &out),
            0)
      << out;

  // Pack, and read its levels to build a falling budget.
  const std::string pack = tmp.Join(model + ".fqpack");
  ASSERT_EQ(Fq(store, "-q pack --model " + model + " -o " + pack, &out), 0) << out;
  ASSERT_EQ(Fq(store, "--json info " + pack, &out, false), 0) << out;
  EXPECT_EQ(JsonString(out, "arch"), GetParam() == "llama3" ? "llama" : GetParam()) << out;
  ThreadPool pool(2);
  auto rt = runtime::ElasticRuntime::Open(Env::Default(), pack, runtime::ElasticOptions{}, &pool);
  ASSERT_TRUE(rt.ok()) << rt.status().ToString();
  const auto& levels = (*rt)->residency()->levels();
  ASSERT_GE(levels.size(), 4u);
  const uint64_t overhead = (*rt)->overhead().total();
  const size_t last = levels.size() - 1;
  const std::string trace = tmp.Join("trace.csv");
  const std::string trace_text = "token_index,budget\n0," +
                                 std::to_string(levels[0].footprint + overhead) + "\n3," +
                                 std::to_string(levels[last / 2].footprint + overhead) + "\n6," +
                                 std::to_string(levels[last].footprint + overhead) + "\n";
  ASSERT_TRUE(
      PublishFile(Env::Default(), trace,
                  ByteSpan(reinterpret_cast<const uint8_t*>(trace_text.data()), trace_text.size()))
          .ok());
  ASSERT_EQ(Fq(store,
               "--json run " + pack + " --budget-trace " + trace +
                   " -p \"Once upon a time\" -n 10 --temp 0",
               &out, false),
            0)
      << out;
  EXPECT_EQ(JsonNumber(out, "transition_count"), 2) << out;
  EXPECT_EQ(JsonString(out, "level"), "eqm:" + std::to_string(last)) << out;
  EXPECT_EQ(JsonNumber(out, "generated_tokens"), 10) << out;

  // The middle EQM exported as a GGUF, imported into a fresh store: the
  // same perplexity as the pack gives it.
  const std::string k = std::to_string(last / 2);
  const std::string gguf = tmp.Join("eqm.gguf");
  ASSERT_EQ(Fq(store, "export " + pack + " --eqm " + k + " -o " + gguf, &out), 0) << out;
  const std::string other = tmp.Join("other");
  ASSERT_EQ(Fq(other, "-q import --model back --label E " + gguf, &out), 0) << out;
  std::string a, b;
  ASSERT_EQ(
      Fq(store, "ppl " + pack + " --eqm " + k + " -f " + eval + " -c 128 --chunks 4", &a, false), 0)
      << a;
  ASSERT_EQ(Fq(other, "ppl --qm E -f " + eval + " -c 128 --chunks 4", &b, false), 0) << b;
  EXPECT_EQ(PplLine(a), PplLine(b));
  EXPECT_EQ(PplLine(a).find("(no PPL"), std::string::npos) << a;

  // Per-token dynamic precision: at either QM's bits it is that QM
  // exactly; between them it switches per token.
  auto ppl_of = [&](const std::string& args, std::string* json) {
    EXPECT_EQ(Fq(store, "--json ppl " + pack + " " + args + " -f " + eval + " -c 128 --chunks 4",
                 json, false),
              0)
        << *json;
    return JsonNumber(*json, "ppl");
  };
  std::string json;
  const double hi = ppl_of("--qm Q8_0", &json), lo = ppl_of("--qm Q4_K_M", &json);
  ppl_of("--dynamic hi=Q8_0,lo=Q4_K_M --target-bits 6", &json);
  const double hi_bits = JsonNumber(json, "hi_bits"), lo_bits = JsonNumber(json, "lo_bits");
  EXPECT_GT(JsonNumber(json, "mean_bits"), lo_bits) << json;
  EXPECT_LT(JsonNumber(json, "mean_bits"), hi_bits) << json;
  // Equal up to the kernels' fp32 order: --dynamic runs one token at a
  // time, the static ppl a batch (the GEMM on the AVX-512 tier), and a
  // last-bit difference can flip an int8 activation code's rounding.
  constexpr double kKernelOrderPplRel = 3e-3;
  EXPECT_NEAR(ppl_of("--dynamic hi=Q8_0,lo=Q4_K_M --target-bits " + Digits(hi_bits), &json), hi,
              kKernelOrderPplRel * hi);
  EXPECT_NEAR(JsonNumber(json, "mean_bits"), hi_bits, 1e-3) << json;
  EXPECT_NEAR(ppl_of("--dynamic hi=Q8_0,lo=Q4_K_M --target-bits " + Digits(lo_bits), &json), lo,
              kKernelOrderPplRel * lo);
  EXPECT_NEAR(JsonNumber(json, "mean_bits"), lo_bits, 1e-3) << json;
}

INSTANTIATE_TEST_SUITE_P(Families, ZooPipeline, ::testing::Values("qwen2", "llama3"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace fqpack
