// Helpers for the test suites: temp directories, the shared test data, a
// fault-injecting Env, and small GGUF files written on the spot.
#ifndef FQPACK_TESTS_SUPPORT_TEST_UTIL_H_
#define FQPACK_TESTS_SUPPORT_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
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
#define FQ_REQUIRE_TESTDATA()                                                           \
  do {                                                                                  \
    if (::fqpack::testing::TestDataDir().empty()) {                                     \
      GTEST_SKIP() << "FQ_TESTDATA is not set (CI sets it to ../shared/data); skipped"; \
    }                                                                                   \
  } while (0)

std::string TestDataPath(const std::string& relative);

// Runs a shell command; returns its exit status (the low byte of wait status).
int RunCommand(const std::string& command, std::string* output = nullptr);

// The fqpack binary under test.
std::string FqpackBinary();

// The whole file as a string ("" when unreadable).
std::string ReadText(const std::string& path);
// `s` in single quotes, for a shell command line.
std::string Quote(const std::string& s);

// The number after "key": in a JSON document such as `fqpack --json` prints
// (NaN when absent): the first occurrence, at any depth.
double JsonNumber(const std::string& json, const std::string& key);
// The string after "key": in a JSON document, unescaped (ASCII escapes and
// \u00XX); empty when absent.
std::string JsonString(const std::string& json, const std::string& key);

// Fails, kills or cuts the power at a chosen file operation, and keeps the
// model of what is durable that a power cut consults.
//
// Steps: every mutating operation counts one: create (NewWritableFile, or an
// OpenRandomRWFile that creates the file), append, write, truncate, sync (of
// either kind of file), rename, remove, mkdir, rmdir, sync-dir. SQLite's
// I/O comes through OpenRandomRWFile (store/sqlite_vfs.h), so it counts too.
// Sync and sync-dir are also counted as sync steps: with a power cut only
// they change what survives, so crashing before each of them (and once after
// the last) reaches every distinct durable state.
//
// The operation at the chosen step does not happen. kFail and kDiskFull
// return an IOError from it; kCrash _exits(99) as kill -9 would (the page
// cache survives: everything written so far stays); kPowerLoss first puts
// every file and name back to its durable state (DropUnsyncedData), then
// _exits(99).
//
// The durability model (leveldb's fault_injection_test, extended to renames
// and removes): a file's content is durable as of its last Sync: appends
// after it are cut off, and regions overwritten or truncated since are put
// back from pre-images saved at the write. A create, rename (judged by the
// target's directory), remove, mkdir or rmdir is durable once SyncDir ran on
// the directory holding the name: until then a power cut takes a created
// file away, moves a renamed file back (with the old target, if any, back
// as it durably was) and brings a removed file back with its durable
// content. Files that existed before this Env first touched them are
// durable as they were.
//
// Thread-safety: every method may be called from any thread; mutating
// operations are serialised (so a crash never lands between an operation
// and its bookkeeping).
class FaultInjectionEnv : public EnvWrapper {
 public:
  enum class Mode { kFail, kCrash, kDiskFull, kPowerLoss };
  explicit FaultInjectionEnv(Env* target);
  ~FaultInjectionEnv() override;

  // Arms the fault at the `step`-th operation from now (counters restart).
  void FailAt(int64_t step, Mode mode = Mode::kFail);
  // Arms it at the `n`-th sync step from now (counters restart).
  void FailAtSync(int64_t n, Mode mode);
  void Disarm();
  int64_t steps() const { return steps_; }
  int64_t sync_steps() const { return sync_steps_; }
  // What each step since the counters restarted did ("write <path>"...).
  std::vector<std::string> StepLog() const;

  // Sync() of files whose path contains `substring` (or SyncDir of such
  // directories) does nothing and is no step: the code behaves as if that
  // fsync were missing. For tests that prove a crash test has power.
  void DropFileSyncs(const std::string& substring);
  void DropDirSyncs(const std::string& substring);
  // false: Sync and SyncDir update only the durability model, without a
  // real fsync. Crash loops in forked children use it: what survives their
  // "power cut" is the model's decision, and real fsyncs would only cost time.
  void SetRealSyncs(bool real) { real_syncs_ = real; }

  // Puts every file and name this Env changed back to its durable state, as
  // a power cut would, and forgets what it knew (everything is durable
  // after). Open files must not be used afterwards.
  void DropUnsyncedData();
  // DropUnsyncedData, then _exit(99).
  [[noreturn]] void PowerLoss();

  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  Result<std::unique_ptr<RandomRWFile>> OpenRandomRWFile(const std::string& path,
                                                         OpenMode mode) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status RemoveFile(const std::string& path) override;
  Status RemoveDir(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  Status CreateDir(const std::string& path) override;

  struct Model;  // the durability model (test_util.cc)

 private:
  friend class FaultyWritableFile;
  friend class FaultyRandomRWFile;

  // Counts one step (mu_ held); a non-OK Status, an _exit, or a power cut
  // when this is the step to fail.
  Status Step(const std::string& what, bool sync = false);
  bool SyncDropped(const std::string& path, bool dir) const;
  void DropUnsyncedDataLocked();

  mutable std::mutex mu_;
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> sync_steps_{0};
  int64_t fail_at_ = -1;
  bool count_syncs_only_ = false;
  Mode mode_ = Mode::kFail;
  bool real_syncs_ = true;
  std::vector<std::string> drop_file_syncs_;
  std::vector<std::string> drop_dir_syncs_;
  std::vector<std::string> log_;
  std::unique_ptr<Model> model_;
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
