// fqpack rm / gc / pack / info / verify FILE as a user runs them.
#include <gtest/gtest.h>

#include "schema/quant_types.h"
#include "tests/support/test_util.h"

namespace fqpack::cli {
namespace {

using testing::RunCommand;

class PackGcCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string out;
    ASSERT_EQ(Fq("import " +
                     testing::WriteGguf(tmp_.Join("p-F16.gguf"),
                                        testing::SmallLlama(ToId(QType::kF16), 1)) +
                     " " +
                     testing::WriteGguf(tmp_.Join("p-Q8_0.gguf"),
                                        testing::SmallLlama(ToId(QType::kQ8_0), 2)),
                 &out),
              0)
        << out;
  }
  int Fq(const std::string& args, std::string* out = nullptr, bool with_stderr = true) {
    return RunCommand(testing::FqpackBinary() + " --store " + store_ + " " + args +
                          (with_stderr ? " 2>&1" : " 2>/dev/null"),
                      out);
  }
  testing::TempDir tmp_;
  std::string store_ = tmp_.Join("store");
};

TEST_F(PackGcCliTest, PackInfoVerify) {
  std::string out;
  const std::string pack = tmp_.Join("p.fqpack");
  ASSERT_EQ(Fq("pack -o " + pack, &out), 0) << out;
  EXPECT_NE(out.find("QMs: F16, Q8_0"), std::string::npos) << out;
  ASSERT_EQ(Fq("info " + pack, &out), 0) << out;
  EXPECT_NE(out.find("model p"), std::string::npos) << out;
  ASSERT_EQ(Fq("info --json " + pack, &out, false), 0) << out;
  EXPECT_NE(out.find("\"codecs\""), std::string::npos) << out;
  ASSERT_EQ(Fq("verify " + pack, &out), 0) << out;
  // Damage one payload byte: verify fails naming the file, exit code 3.
  ASSERT_EQ(RunCommand("printf 'Z' | dd of=" + pack + " bs=1 seek=200 conv=notrunc 2>/dev/null"),
            0);
  EXPECT_EQ(Fq("verify " + pack, &out), 3) << out;
  EXPECT_NE(out.find(pack), std::string::npos) << out;
  // Not a pack at all.
  EXPECT_EQ(Fq("info " + tmp_.Join("p-F16.gguf"), &out), 3) << out;
  EXPECT_NE(out.find("not an fqpack file"), std::string::npos) << out;
  EXPECT_EQ(Fq("pack --codec lzma -o " + pack, &out), 2) << out;
}

TEST_F(PackGcCliTest, RmThenGcFreesBytesAndASecondGcFreesNothing) {
  std::string out;
  ASSERT_EQ(Fq("rm --qm Q8_0", &out), 0) << out;
  ASSERT_EQ(Fq("gc --dry-run --json", &out, false), 0) << out;
  EXPECT_NE(out.find("\"dry_run\":true"), std::string::npos) << out;
  ASSERT_EQ(Fq("gc", &out), 0) << out;
  EXPECT_NE(out.find("freed"), std::string::npos) << out;
  EXPECT_EQ(out.find("freed 0 B"), std::string::npos) << out;
  ASSERT_EQ(Fq("gc", &out), 0) << out;
  EXPECT_NE(out.find("freed 0 B"), std::string::npos) << out;
  ASSERT_EQ(Fq("verify", &out), 0) << out;
  EXPECT_EQ(Fq("rm --qm Q8_0", &out), 4) << out;
  EXPECT_EQ(Fq("rm --qm F16 --ensemble x", &out), 2) << out;
}

}  // namespace
}  // namespace fqpack::cli
