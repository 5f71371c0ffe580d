// fqpack against llama.cpp on the model zoo: the trained tinystories-3M
// re-expressed in other architectures' layouts (models/zoo/, see the data
// README), each file's perplexity against llama.cpp's
// (reference/llama_cpp_ppl_zoo.tsv: llama-perplexity -c 256 --chunks 60 on
// text/tinystories_val.ppl.txt), through the fqpack command, the same method
// as llama_cpp_parity_test.cc. Every row whose file is in the zoo runs; one
// test per family, so a failure names the architecture. Also `synth --arch`
// for every family and the exit code of an unknown architecture.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "schema/gguf.h"
#include "tests/support/test_util.h"

namespace fqpack {
namespace {

using testing::FqpackBinary;
using testing::JsonNumber;
using testing::Quote;
using testing::ReadText;
using testing::RunCommand;
using testing::TempDir;
using testing::TestDataPath;

struct ZooRow {
  std::string file;
  std::string text;
  int ctx = 0;
  int chunks = 0;
  double ppl = 0;
  double err = 0;
};

std::vector<ZooRow> ReadZooTable() {
  std::vector<ZooRow> rows;
  std::istringstream in(ReadText(TestDataPath("reference/llama_cpp_ppl_zoo.tsv")));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream row(line);
    ZooRow r;
    std::string ctx, chunks, ppl, err;
    if (std::getline(row, r.file, '\t') && std::getline(row, r.text, '\t') &&
        std::getline(row, ctx, '\t') && std::getline(row, chunks, '\t') &&
        std::getline(row, ppl, '\t') && std::getline(row, err, '\t')) {
      r.ctx = std::stoi(ctx);
      r.chunks = std::stoi(chunks);
      r.ppl = std::stod(ppl);
      r.err = std::stod(err);
      rows.push_back(r);
    }
  }
  return rows;
}

// Runs every row of `family` ("zoo-<family>-*.gguf") whose file exists;
// returns how many ran.
int CheckFamily(const std::string& family) {
  int ran = 0;
  for (const ZooRow& row : ReadZooTable()) {
    if (row.file.rfind("zoo-" + family + "-", 0) != 0) continue;
    const std::string path = TestDataPath("models/zoo/" + row.file);
    if (!std::filesystem::exists(path)) {
      std::printf("%s: no file yet, skipped\n", row.file.c_str());
      continue;
    }
    SCOPED_TRACE(row.file);
    TempDir dir;
    const std::string fq = FqpackBinary() + " --store " + Quote(dir.Join("store")) + " ";
    std::string out;
    EXPECT_EQ(RunCommand(fq + "-q import " + Quote(path) + " 2>&1", &out), 0) << out;
    EXPECT_EQ(RunCommand(fq + "--json ppl --text " + Quote(TestDataPath("text/" + row.text)) +
                             " -c " + std::to_string(row.ctx) + " --chunks " +
                             std::to_string(row.chunks) + " 2>/dev/null",
                         &out),
              0)
        << out;
    const double ppl = JsonNumber(out, "ppl"), err = JsonNumber(out, "ppl_err");
    EXPECT_EQ(JsonNumber(out, "chunks"), row.chunks);
    const double rel = std::abs(ppl - row.ppl) / row.ppl;
    std::printf("%s: PPL %.4f +/- %.5f, llama.cpp %.4f +/- %.5f, relative difference %.4f%%\n",
                row.file.c_str(), ppl, err, row.ppl, row.err, 100 * rel);
    EXPECT_LT(rel, 1e-3) << row.file << ": " << ppl << " vs llama.cpp " << row.ppl;
    EXPECT_NEAR(err, row.err, 1e-2 * row.err);
    ++ran;
  }
  return ran;
}

TEST(ZooParity, EveryRowNamesAZooFamily) {
  FQ_REQUIRE_TESTDATA();
  const std::vector<ZooRow> rows = ReadZooTable();
  EXPECT_GE(rows.size(), 12u);
  for (const ZooRow& r : rows) {
    bool known = false;
    for (const char* f : {"llama3", "qwen2", "qwen3", "gemma3", "phi3"}) {
      known = known || r.file.rfind("zoo-" + std::string(f) + "-", 0) == 0;
    }
    EXPECT_TRUE(known) << r.file << " is of a family no test below runs";
  }
}

TEST(ZooParity, Llama3WithRopeFreqs) {
  FQ_REQUIRE_TESTDATA();
  EXPECT_EQ(CheckFamily("llama3"), 3);
}

TEST(ZooParity, Qwen2) {
  FQ_REQUIRE_TESTDATA();
  EXPECT_EQ(CheckFamily("qwen2"), 3);
}

TEST(ZooParity, Qwen3) {
  FQ_REQUIRE_TESTDATA();
  EXPECT_EQ(CheckFamily("qwen3"), 3);
}

TEST(ZooParity, Gemma3) {
  FQ_REQUIRE_TESTDATA();
  EXPECT_EQ(CheckFamily("gemma3"), 3);
}

// No phi3 file yet (the runtime test checks phi3 against a scalar
// reference); the rows run as soon as the file and its row arrive.
TEST(ZooParity, Phi3WhenItsFileArrives) {
  FQ_REQUIRE_TESTDATA();
  CheckFamily("phi3");
}

// synth --arch writes a model of each family that the runtime then runs,
// and ls names its architecture.
TEST(SynthArch, EveryArchitectureImportsAndRuns) {
  for (const std::string arch : {"llama", "qwen2", "qwen3", "gemma3", "phi3"}) {
    SCOPED_TRACE(arch);
    TempDir dir;
    const std::string fq = FqpackBinary() + " --store " + Quote(dir.Join("store")) + " ";
    const std::string file = dir.Join(arch + ".gguf");
    // qwen3 and gemma3 with heads wider than n_embd / n_head, as theirs are.
    const std::string head = arch == "qwen3" || arch == "gemma3" ? " --head-dim 48" : "";
    std::string out;
    ASSERT_EQ(
        RunCommand(fq + "synth --arch " + arch + head +
                       " --embd 64 --heads 4 --kv-heads 2 --layers 7 --ff 96 --vocab 300 -o " +
                       Quote(file) + " 2>&1",
                   &out),
        0)
        << out;
    EXPECT_NE(out.find("synthetic " + arch), std::string::npos) << out;
    ASSERT_EQ(RunCommand(fq + "-q import " + Quote(file) + " 2>&1", &out), 0) << out;
    ASSERT_EQ(RunCommand(fq + "ls", &out), 0) << out;
    EXPECT_NE(out.find("(" + arch + ", "), std::string::npos) << out;
    EXPECT_EQ(RunCommand(fq + "run --prompt 'Once upon' -n 4 --temp 0 2>&1", &out), 0) << out;
  }
}

// Writes a small generated qwen2 GGUF to `path` with the command `fq`;
// returns its exit status.
int SynthSmallQwen2(const std::string& fq, const std::string& path, std::string* out) {
  return RunCommand(fq + "synth --arch qwen2 --embd 64 --heads 4 --kv-heads 2 --layers 2 --ff 96 " +
                        "--vocab 300 -o " + Quote(path) + " 2>&1",
                    out);
}

// A GGUF of an architecture the runtime does not know imports (the store
// keeps any GGUF) but does not run: exit code 5 (not supported), naming the
// model and the architecture.
TEST(SynthArch, UnknownArchitectureExitsNotSupported) {
  TempDir dir;
  const std::string fq = FqpackBinary() + " --store " + Quote(dir.Join("store")) + " ";
  const std::string qwen = dir.Join("q.gguf"), mamba = dir.Join("m.gguf");
  std::string out;
  ASSERT_EQ(SynthSmallQwen2(fq, qwen, &out), 0) << out;
  // "qwen2" -> "mamba" everywhere: the architecture and its keys' prefix.
  std::string bytes = ReadText(qwen);
  for (size_t at = bytes.find("qwen2"); at != std::string::npos; at = bytes.find("qwen2", at)) {
    bytes.replace(at, 5, "mamba");
  }
  std::ofstream(mamba, std::ios::binary) << bytes;
  ASSERT_EQ(RunCommand(fq + "-q import " + Quote(mamba) + " --model m 2>&1", &out), 0) << out;
  EXPECT_EQ(RunCommand(fq + "run --prompt hi -n 2 2>&1", &out), 5) << out;
  EXPECT_NE(out.find("m/F32: architecture 'mamba' is not supported"), std::string::npos) << out;
}

// A tensor of the wrong shape for its architecture (here a qwen2 q bias one
// element short): exit code 3 (corrupt), naming the tensor and both shapes.
TEST(SynthArch, AWrongShapeExitsCorruptNamingTheTensor) {
  TempDir dir;
  const std::string fq = FqpackBinary() + " --store " + Quote(dir.Join("store")) + " ";
  const std::string qwen = dir.Join("q.gguf"), bad = dir.Join("bad.gguf");
  std::string out;
  ASSERT_EQ(SynthSmallQwen2(fq, qwen, &out), 0) << out;
  const std::string bytes = ReadText(qwen);
  auto header =
      gguf::ParseFile(ByteSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), qwen);
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  testing::TestGguf g;
  g.metadata = header->metadata;
  for (const gguf::TensorInfo& t : header->tensors) {
    testing::TestTensor tt{t.name, {t.ne.begin(), t.ne.begin() + t.n_dims}, t.type, {}};
    if (t.name == "blk.1.attn_q.bias") tt.ne[0] -= 1;
    g.tensors.push_back(tt);
  }
  testing::FillRandom(&g, 7);
  testing::WriteGguf(bad, g);
  ASSERT_EQ(RunCommand(fq + "-q import " + Quote(bad) + " --model b 2>&1", &out), 0) << out;
  EXPECT_EQ(RunCommand(fq + "run --prompt hi -n 2 2>&1", &out), 3) << out;
  EXPECT_NE(out.find("blk.1.attn_q.bias"), std::string::npos) << out;
  EXPECT_NE(out.find("63"), std::string::npos) << out;
  EXPECT_NE(out.find("64"), std::string::npos) << out;
}

}  // namespace
}  // namespace fqpack
