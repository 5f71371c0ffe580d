// The fqpack command as a user runs it: exit codes, messages, --json.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/quant/quant.h"
#include "schema/env.h"
#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "store/store.h"
#include "tests/support/test_util.h"

namespace fqpack::cli {
namespace {

using testing::RunCommand;

class CliTest : public ::testing::Test {
 protected:
  // Runs `fqpack --store <store> <args>`; stdout (and stderr when asked) in *out.
  int Fq(const std::string& args, std::string* out = nullptr, bool with_stderr = true) {
    std::string cmd = testing::FqpackBinary() + " --store " + store_ + " " + args +
                      (with_stderr ? " 2>&1" : " 2>/dev/null");
    return RunCommand(cmd, out);
  }
  std::string Model(const std::string& name, uint32_t type, uint32_t seed) {
    return testing::WriteGguf(tmp_.Join(name), testing::SmallLlama(type, seed));
  }
  testing::TempDir tmp_;
  std::string store_ = tmp_.Join("store");
};

TEST_F(CliTest, HelpListsTheCommands) {
  std::string out;
  EXPECT_EQ(Fq("--help", &out), 0);
  for (const char* c : {"init", "import", "ls", "verify", "export"})
    EXPECT_NE(out.find(c), std::string::npos) << c;
  EXPECT_EQ(Fq("no-such-command", &out), 2);
}

TEST_F(CliTest, ImportLsVerifyExport) {
  std::string out;
  ASSERT_EQ(Fq("init", &out), 0) << out;
  EXPECT_NE(out.find("Initialized"), std::string::npos);
  const std::string a = Model("tiny-F32.gguf", ToId(QType::kF32), 1);
  const std::string b = Model("tiny-Q8_0.gguf", ToId(QType::kQ8_0), 2);
  ASSERT_EQ(Fq("import " + a + " " + b, &out), 0) << out;
  EXPECT_NE(out.find("tiny/Q8_0"), std::string::npos) << out;
  ASSERT_EQ(Fq("import " + b, &out), 0) << out;
  EXPECT_NE(out.find("nothing to do"), std::string::npos) << out;

  ASSERT_EQ(Fq("ls --json", &out, false), 0);
  EXPECT_EQ(out.front(), '{');
  EXPECT_NE(out.find("\"name\": \"tiny\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"label\": \"Q8_0\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"dedup_ratio\""), std::string::npos) << out;
  ASSERT_EQ(Fq("ls", &out), 0);
  EXPECT_NE(out.find("model tiny"), std::string::npos) << out;

  ASSERT_EQ(Fq("verify", &out), 0) << out;
  EXPECT_NE(out.find("OK"), std::string::npos);
  ASSERT_EQ(Fq("verify --json", &out, false), 0) << out;
  EXPECT_NE(out.find("\"ok\": true"), std::string::npos) << out;

  const std::string exported = tmp_.Join("out.gguf");
  ASSERT_EQ(Fq("export --qm Q8_0 -o " + exported, &out), 0) << out;
  EXPECT_EQ(RunCommand("cmp " + exported + " " + b), 0);
  EXPECT_EQ(Fq("export --qm Q2_K -o " + exported, &out), 4) << out;
  EXPECT_NE(out.find("no QM 'Q2_K'"), std::string::npos) << out;
}

TEST_F(CliTest, VerifyFailsAndNamesTheDamagedBlob) {
  std::string out;
  ASSERT_EQ(Fq("import " + Model("d-Q8_0.gguf", ToId(QType::kQ8_0), 3), &out), 0) << out;
  // Damage one blob file.
  ASSERT_EQ(RunCommand("f=$(ls " + store_ +
                           "/blobs/*/*.zst | head -1); printf 'XX' | dd of=$f bs=1 seek=20 "
                           "conv=notrunc 2>/dev/null; echo $f",
                       &out),
            0);
  const std::string damaged = out.substr(0, out.find('\n'));
  EXPECT_EQ(Fq("verify", &out), 3) << out;
  EXPECT_NE(out.find(damaged), std::string::npos) << out;
  EXPECT_NE(out.find("FAILED"), std::string::npos) << out;
}

TEST_F(CliTest, BadInputGivesOneClearLineAndAMeaningfulExitCode) {
  std::string out;
  ASSERT_EQ(Fq("init", &out), 0);
  const std::string junk = tmp_.Join("junk.gguf");
  ASSERT_EQ(RunCommand("printf 'NOTAGGUFFILE' > " + junk), 0);
  EXPECT_EQ(Fq("import " + junk, &out), 3) << out;
  EXPECT_NE(out.find("junk.gguf: not a GGUF file"), std::string::npos) << out;
  EXPECT_EQ(Fq("import " + tmp_.Join("missing.gguf"), &out), 2) << out;
  // A directory that is not a store.
  std::string cmd = testing::FqpackBinary() + " --store " + tmp_.path() + " ls 2>&1";
  EXPECT_EQ(RunCommand(cmd, &out), 2) << out;
  EXPECT_NE(out.find("not an fqpack store"), std::string::npos) << out;
  cmd = testing::FqpackBinary() + " --store " + tmp_.Join("nowhere") + " ls 2>&1";
  EXPECT_EQ(RunCommand(cmd, &out), 4) << out;
}

}  // namespace
}  // namespace fqpack::cli

namespace fqpack::cli {
namespace {

// synth --type T writes every matrix as T, made by T's reference quantizer
// from the very values the F32 file of the same seed holds: its bytes are
// the reference quantizer's of those values, row for row, whatever the
// threads did.
TEST(SynthCli, QuantizedMatricesAreTheReferenceQuantizerOfTheF32Values) {
  testing::TempDir tmp;
  std::string out;
  const std::string shape = " --embd 256 --ff 512 --layers 1 --heads 4 --kv-heads 2 --vocab 300";
  const std::string f32 = tmp.Join("s-F32.gguf");
  ASSERT_EQ(
      RunCommand(testing::FqpackBinary() + " -t 3 synth --seed 9" + shape + " -o " + f32 + " 2>&1",
                 &out),
      0)
      << out;
  Result<Bytes> base = ReadFileBytes(Env::Default(), f32);
  ASSERT_TRUE(base.ok());
  Result<gguf::Header> hb = gguf::ParseFile(*base, f32);
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  for (const QType q : {QType::kQ8_0, QType::kQ4_K, QType::kQ2_K}) {
    const runtime::quant::TypeTraits* traits = runtime::quant::FindTraits(ToId(q));
    const std::string path = tmp.Join("s-" + std::string(traits->name) + ".gguf");
    ASSERT_EQ(RunCommand(testing::FqpackBinary() + " -t 3 synth --seed 9 --type " +
                             std::string(traits->name) + shape + " -o " + path + " 2>&1",
                         &out),
              0)
        << out;
    EXPECT_NE(out.find(std::string(traits->name)), std::string::npos) << out;
    Result<Bytes> file = ReadFileBytes(Env::Default(), path);
    ASSERT_TRUE(file.ok());
    Result<gguf::Header> h = gguf::ParseFile(*file, path);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_EQ(h->tensors.size(), hb->tensors.size());
    int matrices = 0;
    for (size_t i = 0; i < h->tensors.size(); ++i) {
      const gguf::TensorInfo& t = h->tensors[i];
      SCOPED_TRACE(t.name);
      ASSERT_EQ(t.name, hb->tensors[i].name);
      if (t.n_dims == 1) {
        EXPECT_EQ(t.type, ToId(QType::kF32));
        continue;
      }
      ++matrices;
      ASSERT_EQ(t.type, ToId(q));
      const ByteSpan values = hb->TensorBytes(*base, i);
      Bytes expected(t.nbytes);
      traits->quantize(reinterpret_cast<const float*>(values.data()), expected.data(),
                       static_cast<int64_t>(t.n_elements()));
      const ByteSpan got = h->TensorBytes(*file, i);
      EXPECT_TRUE(std::equal(got.begin(), got.end(), expected.begin(), expected.end()));
    }
    EXPECT_EQ(matrices, 2 + 7);  // token_embd, output, and a block's seven
  }
  // A type synth cannot write: one line, usage exit code, no file.
  const std::string bad = tmp.Join("bad.gguf");
  EXPECT_EQ(RunCommand(
                testing::FqpackBinary() + " synth --type int4-g64" + shape + " -o " + bad + " 2>&1",
                &out),
            2);
  EXPECT_NE(out.find("int4-g64"), std::string::npos) << out;
  EXPECT_FALSE(Env::Default()->FileExists(bad));
}

}  // namespace
}  // namespace fqpack::cli
