// Helpers for the test suites: temp directories, the shared test data, a
// fault-injecting Env, and small GGUF files written on the spot.
#ifndef FQPACK_TESTS_SUPPORT_TEST_UTIL_H_
#define FQPACK_TESTS_SUPPORT_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "schema/env.h"
#include "schema/gguf.h"

namespace fqpack::testing {

// A fresh directory under $TMPDIR, removed with everything in it on
// destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return JoinPath(path_, name); }

 private:
  std::string path_;
};

// $FQ_TESTDATA, or "" when unset or missing.
std::string TestDataDir();

// Skips the current test (with a message) when FQ_TESTDATA is not set.
#define FQ_REQUIRE_TESTDATA()                                                            \
  do {                                                                                   \
    if (::fqpack::testing::TestDataDir().empty()) {                                      \
      GTEST_SKIP() << "FQ_TESTDATA is not set (CI sets it to ../shared/data); skipped"; \
    }                                                                                    \
  } while (0)

std::string TestDataPath(const std::string& relative);

// Runs a shell command; returns its exit status (the low byte of wait status).
int RunCommand(const std::string& command, std::string* output = nullptr);

// The fqpack binary under test.
std::string FqpackBinary();

// Fails or "crashes" file operations on demand. Each mutating operation
// (append, sync, rename, remove, sync-dir, create) counts as one step; when
// the count reaches `fail_at`, the operation fails with IOError (or, with
// crash mode, the process _exits at once, as a kill -9 would leave it).
class FaultInjectionEnv : public EnvWrapper {
 public:
  enum class Mode { kFail, kCrash, kDiskFull };
  explicit FaultInjectionEnv(Env* target) : EnvWrapper(target) {}

  void FailAt(int64_t step, Mode mode = Mode::kFail) {
    fail_at_ = step;
    mode_ = mode;
    steps_ = 0;
  }
  void Disarm() { fail_at_ = -1; }
  int64_t steps() const { return steps_; }

  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status RemoveFile(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  Status CreateDir(const std::string& path) override;

  // Counts one step; a non-OK Status when this step is the one to fail.
  Status Step(const std::string& what);

 private:
  std::atomic<int64_t> steps_{0};
  int64_t fail_at_ = -1;
  Mode mode_ = Mode::kFail;
};

// Builds small GGUF files for tests.
struct TestTensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type = 0;
  Bytes data;  // empty: random bytes of the right size
};

struct TestGguf {
  uint32_t version = 3;
  gguf::Metadata metadata;
  std::vector<TestTensor> tensors;
  uint64_t alignment = 32;
};

// Random bytes of the right size for each tensor without data (seeded).
void FillRandom(TestGguf* g, uint32_t seed);
// The encoded file.
Bytes EncodeGguf(const TestGguf& g);
// Writes it; returns the path.
std::string WriteGguf(const std::string& path, const TestGguf& g);
// A small llama-shaped checkpoint (metadata + tensors of the given type).
TestGguf SmallLlama(uint32_t weight_type, uint32_t seed, int n_layers = 2, int n_embd = 64);

}  // namespace fqpack::testing

#endif  // FQPACK_TESTS_SUPPORT_TEST_UTIL_H_
