// fqpack serve as a user runs it: it says where it listens, answers, logs
// each request, and exits 0 on SIGTERM and 130 on SIGINT.
#include <gtest/gtest.h>

#include "tests/support/test_util.h"

namespace fqpack::cli {
namespace {

using testing::RunCommand;

// GETs argv[1], retrying for 10 s while the server loads; prints the body.
constexpr const char* kClient =
    "import sys, time, urllib.request\n"
    "for i in range(200):\n"
    "    try:\n"
    "        print(urllib.request.urlopen(sys.argv[1]).read().decode())\n"
    "        break\n"
    "    except Exception:\n"
    "        time.sleep(0.05)\n";

class ServeCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string out;
    const std::string gguf = tmp_.Join("p-F16.gguf");
    ASSERT_EQ(Fq("synth --embd 64 --layers 1 --ff 128 --type F16 -o " + gguf, &out), 0) << out;
    ASSERT_EQ(Fq("import " + gguf, &out), 0) << out;
    ASSERT_EQ(Fq("pack -o " + pack_, &out), 0) << out;
  }
  int Fq(const std::string& args, std::string* out = nullptr) {
    return RunCommand(testing::FqpackBinary() + " --store " + store_ + " " + args + " 2>&1", out);
  }
  // Starts the server on a free port, waits until it is ready, GETs `path`
  // with python3's urllib, sends `signal` and prints the exit status.
  std::string Session(const std::string& flags, const std::string& path,
                      const std::string& signal) {
    const std::string log = tmp_.Join("serve.log");
    // The port is in the "listening on" line; the model may still be
    // loading then (503), so the client retries.
    const std::string script =
        testing::FqpackBinary() + " serve " + pack_ + " --port 0 " + flags + " 2>" + log +
        " & pid=$!\n" + "for i in $(seq 200); do grep -q '^listening on' " + log +
        " && break; sleep 0.05; done\n" + "url=$(sed -n 's/^listening on //p' " + log + ")\n" +
        "python3 -c '" + kClient + "' \"$url" + path + "\"\n" + "kill -" + signal +
        " $pid; wait $pid; echo \"exit $?\"\n" + "cat " + log + "\n";
    std::string out;
    RunCommand("sh -c '" + Escape(script) + "' 2>&1", &out);
    return out;
  }
  static std::string Escape(const std::string& s) {
    std::string o;
    for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return o;
  }
  testing::TempDir tmp_;
  std::string store_ = tmp_.Join("store");
  std::string pack_ = tmp_.Join("p.fqpack");
};

TEST_F(ServeCliTest, AnswersLogsAndExitsZeroOnSigterm) {
  const std::string out = Session("", "/health", "TERM");
  EXPECT_NE(out.find("{\"status\":\"ok\"}"), std::string::npos) << out;
  EXPECT_NE(out.find("exit 0"), std::string::npos) << out;
  EXPECT_NE(out.find("listening on http://127.0.0.1:"), std::string::npos) << out;
  EXPECT_NE(out.find("GET /health 200"), std::string::npos) << out;
}

TEST_F(ServeCliTest, ExitsWith130OnSigint) {
  const std::string out = Session("-q", "/v1/models", "INT");
  EXPECT_NE(out.find("\"id\":\"p\""), std::string::npos) << out;
  EXPECT_NE(out.find("exit 130"), std::string::npos) << out;
  EXPECT_EQ(out.find("GET /v1/models"), std::string::npos) << "-q logs nothing: " << out;
}

TEST_F(ServeCliTest, AnUnknownTemplateOrATooSmallBudgetIsExitCode2) {
  std::string out;
  EXPECT_EQ(Fq("serve " + pack_ + " --chat-template vicuna", &out), 2) << out;
  EXPECT_NE(out.find("unknown chat template 'vicuna' (known: llama2, llama3, chatml, gemma, phi3)"),
            std::string::npos)
      << out;
  EXPECT_EQ(Fq("serve " + pack_ + " --port 0 --budget 10", &out), 2) << out;
  EXPECT_NE(out.find("needs at least"), std::string::npos) << out;
}

}  // namespace
}  // namespace fqpack::cli
