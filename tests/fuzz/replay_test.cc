// fuzz_replay_tests: every fuzz target's entry, linked into one program,
// replays the committed seed corpus (tests/fuzz/corpus/<target>/) and every
// crash input kept as a regression (tests/fuzz/regressions/<target>/), so a
// fixed crash stays fixed in the plain build, without clang or libFuzzer.
// Also checks the pack mutator: its re-layout keeps a pack valid, and its
// mutants get past the checksums.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "pack/reader.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/pack_mutator.h"

namespace fqpack::fuzz {

namespace {

std::map<std::string, FuzzEntry>& Registry() {
  static std::map<std::string, FuzzEntry> targets;
  return targets;
}

}  // namespace

bool RegisterTarget(const char* name, FuzzEntry entry) {
  Registry()[name] = entry;
  return true;
}

namespace {

const std::vector<std::string> kTargets = {"fuzz_budget_trace", "fuzz_gguf", "fuzz_gguf_import",
                                           "fuzz_json",         "fuzz_pack", "fuzz_tokenizer"};

// The input files of a corpus or regression directory, sorted; notes
// (README*, dotfiles) are not inputs.
std::vector<std::string> Inputs(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name[0] == '.' || name.rfind("README", 0) == 0) continue;
    out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Bytes ReadInput(const std::string& path) {
  Result<Bytes> b = ReadFileBytes(Env::Default(), path);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? *b : Bytes();
}

std::string CorpusDir(const std::string& target) {
  return std::string(FQ_FUZZ_SOURCE_DIR) + "/corpus/" + target;
}

class FuzzReplay : public ::testing::TestWithParam<std::string> {};

TEST_P(FuzzReplay, CorpusAndRegressionsRunClean) {
  const std::string target = GetParam();
  auto it = Registry().find(target);
  ASSERT_NE(it, Registry().end()) << target << " is not linked into fuzz_replay_tests";
  const std::vector<std::string> corpus = Inputs(CorpusDir(target));
  EXPECT_FALSE(corpus.empty()) << "no seed corpus in " << CorpusDir(target);
  std::vector<std::string> files = corpus;
  for (const std::string& f : Inputs(std::string(FQ_FUZZ_SOURCE_DIR) + "/regressions/" + target)) {
    files.push_back(f);
  }
  for (const std::string& path : files) {
    SCOPED_TRACE(path);
    // A crash kills the program before gtest can say which input did it.
    std::fprintf(stderr, "replaying %s\n", path.c_str());
    const Bytes input = ReadInput(path);
    EXPECT_EQ(it->second(input.data(), input.size()), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay, ::testing::ValuesIn(kTargets),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(FuzzTargets, EveryLinkedTargetIsReplayed) {
  for (const auto& [name, entry] : Registry()) {
    EXPECT_NE(std::find(kTargets.begin(), kTargets.end(), name), kTargets.end()) << name;
  }
  EXPECT_EQ(Registry().size(), kTargets.size());
}

std::vector<Bytes> SeedPacks() {
  std::vector<Bytes> out;
  for (const std::string& path : Inputs(CorpusDir("fuzz_pack"))) out.push_back(ReadInput(path));
  return out;
}

Status OpenPack(const Bytes& file) {
  MemoryFileEnv env;
  const std::string path = JoinPath(ScratchDir(), "mutant.fqpack");
  env.SetFile(path, file);
  return pack::PackReader::Open(&env, path).status();
}

TEST(PackMutator, RelaidOutSeedsStillOpen) {
  for (const Bytes& seed : SeedPacks()) {
    ASSERT_TRUE(OpenPack(seed).ok()) << OpenPack(seed).ToString();
    const std::optional<PackParts> parts = SplitPack(seed);
    ASSERT_TRUE(parts.has_value());
    const Bytes again = JoinPack(parts->payloads, parts->gap, parts->index);
    EXPECT_EQ(again, seed);
    std::mt19937_64 rng(1);
    Result<Bytes> index = MutateIndex(parts->index, &rng);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
  }
}

// The mutants also go through fuzz_pack's entry: a short fuzzing run of the
// pack reader in every build.
TEST(PackMutator, MutantsGetPastTheChecksums) {
  // libFuzzer's byte mutations stand in as one flipped byte.
  std::mt19937 flips(7);
  const ByteMutator flip = [&](uint8_t* data, size_t size, size_t) {
    if (size > 0) data[flips() % size] ^= static_cast<uint8_t>(1 + flips() % 255);
    return size;
  };
  for (const Bytes& seed : SeedPacks()) {
    int checksum_failures = 0, opened = 0;
    const int kMutants = 200;
    for (int i = 0; i < kMutants; ++i) {
      Bytes buf = seed;
      buf.resize(2 * seed.size());
      buf.resize(MutatePack(buf.data(), seed.size(), buf.size(), static_cast<unsigned>(i), flip));
      const Status s = OpenPack(buf);
      opened += s.ok();
      Registry()["fuzz_pack"](buf.data(), buf.size());
      checksum_failures += s.message().find("checksum") != std::string::npos;
    }
    // About 1 in 16 mutants is a plain byte flip, which a checksum catches.
    EXPECT_LT(checksum_failures, kMutants / 5);
    EXPECT_GT(opened, kMutants / 10);
  }
}

}  // namespace
}  // namespace fqpack::fuzz
