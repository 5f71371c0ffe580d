// A crash at any moment of an import leaves a store that opens, verifies,
// has lost nothing it had committed, and takes the same import again. Three
// ways to crash: a fault-injecting Env that _exits at each file operation in
// turn (the page cache survives), one that also drops everything not yet
// durable at each fsync (a power cut: tests/support/crash_loop.h), and a real
// SIGKILL of the fqpack binary at random times. A last test proves that the
// power-cut loop has teeth: with the blob fsync or the directory fsync of
// BlobStore::Put skipped, it sees committed modules lost.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "schema/quant_types.h"
#include "store/gguf_export.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/support/crash_loop.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

using testing::CrashKind;
using testing::CrashLoop;
using testing::CrashPoint;

// A store holding QM F32 of a one-layer model ("c"), and a Q8_0 checkpoint
// of the same model (one module shared with F32) to import.
class ImportCrash : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = tmp_.Join("base");
    const std::string store = base_ + "/store";
    ASSERT_TRUE(Env::Default()->CreateDir(base_).ok());
    ASSERT_TRUE(Store::Init(testing::FastEnv(), store).ok());
    // One layer keeps the number of steps (and the test's time) small.
    testing::TestGguf f32 = testing::SmallLlama(ToId(QType::kF32), 1, 1);
    testing::TestGguf q8 = testing::SmallLlama(ToId(QType::kQ8_0), 2, 1);
    q8.tensors[1].data = f32.tensors[1].data;  // one shared module
    testing::WriteGguf(base_ + "/c-F32.gguf", f32);
    testing::WriteGguf(base_ + "/c-Q8_0.gguf", q8);
    {
      auto st = Store::Open(testing::FastEnv(), store);
      ASSERT_TRUE(st.ok());
      ASSERT_TRUE(ImportGguf(st->get(), base_ + "/c-F32.gguf", {}).ok());
    }
    before_ = testing::WithoutTimes(testing::SnapshotStore(store, false));
    const std::string done = tmp_.Join("done");
    testing::CopyTree(base_, done);
    ASSERT_TRUE(Import(testing::FastEnv(), done).ok());
    after_ = testing::WithoutTimes(testing::SnapshotStore(done + "/store", false));
    ASSERT_NE(before_, after_);
  }

  static Status Import(Env* env, const std::string& dir) {
    FQ_ASSIGN_OR_RETURN(auto store, Store::Open(env, dir + "/store"));
    ImportOptions opts;
    opts.threads = 1;  // one order of file operations
    return ImportGguf(store.get(), dir + "/c-Q8_0.gguf", opts).status();
  }

  // What a crash at `p` must leave in `dir`: see the file comment.
  std::string Check(const std::string& dir, const CrashPoint& p) const {
    const std::string store_dir = dir + "/store";
    std::string problems = testing::VerifyErrors(store_dir);
    const std::string snap = testing::WithoutTimes(testing::SnapshotStore(store_dir, false));
    if (p.after_op() ? snap != after_ : snap != before_ && snap != after_) {
      problems += "the index is neither as before nor as after the import\n";
    }
    auto store = Store::Open(testing::FastEnv(), store_dir);
    if (!store.ok()) return problems + store.status().ToString();
    auto same_export = [&](const std::string& label) {
      const std::string out = dir + "/out-" + label + ".gguf";
      Result<ExportResult> e = ExportQmGguf(store->get(), "c", label, out);
      if (!e.ok()) return "export " + label + ": " + e.status().ToString() + "\n";
      if (*ReadFileBytes(Env::Default(), out) !=
          *ReadFileBytes(Env::Default(), dir + "/c-" + label + ".gguf")) {
        return "QM " + label + " does not export byte for byte\n";
      }
      return std::string();
    };
    problems += same_export("F32");
    ImportOptions opts;
    opts.threads = 1;
    Result<ImportResult> again = ImportGguf(store->get(), dir + "/c-Q8_0.gguf", opts);
    if (!again.ok())
      return problems + "the import fails when run again: " + again.status().ToString();
    problems += same_export("Q8_0");
    store->reset();
    problems += testing::VerifyErrors(store_dir);
    if (testing::WithoutTimes(testing::SnapshotStore(store_dir, false)) != after_) {
      problems += "the import run again does not give the index of an uninterrupted import\n";
    }
    return problems;
  }

  CrashLoop Loop() const {
    CrashLoop loop;
    loop.base = base_;
    loop.op = Import;
    loop.check = [this](const std::string& dir, const CrashPoint& p) { return Check(dir, p); };
    return loop;
  }

  testing::TempDir tmp_;
  std::string base_, before_, after_;
};

TEST_F(ImportCrash, KillAtEveryFileOperation) {
  auto r = testing::RunCrashLoop(Loop(), CrashKind::kKill);
  EXPECT_TRUE(r.failures.empty()) << r.Summary();
  EXPECT_GT(r.steps, 10);
  std::printf("import: %lld kill points (of %lld steps)\n", static_cast<long long>(r.points),
              static_cast<long long>(r.steps));
}

TEST_F(ImportCrash, PowerLossAtEveryFsync) {
  auto r = testing::RunCrashLoop(Loop(), CrashKind::kPowerLoss);
  EXPECT_TRUE(r.failures.empty()) << r.Summary();
  EXPECT_GT(r.sync_steps, 4);
  std::printf("import: %lld power-loss points (%lld sync steps + after)\n",
              static_cast<long long>(r.points), static_cast<long long>(r.sync_steps));
}

// PowerLossAtEveryFsync passes because BlobStore::Put syncs the blob before
// its rename and the fan-out directory after it. Without either, committed
// modules vanish or come back empty after a power cut, and the same loop
// says so (a kill, which keeps the page cache, would never notice).
TEST_F(ImportCrash, PowerLossLoopCatchesAMissingFsync) {
  const std::string blob_tmp = "/store/tmp/";
  const std::string blob_dirs = "/store/blobs/";
  for (bool dir_sync : {false, true}) {
    SCOPED_TRACE(dir_sync ? "no fsync of the blob directory" : "no fsync of the blob file");
    CrashLoop loop = Loop();
    loop.configure = [&](testing::FaultInjectionEnv* env) {
      if (dir_sync) {
        env->DropDirSyncs(blob_dirs);
      } else {
        env->DropFileSyncs(blob_tmp);
      }
    };
    auto lost = testing::RunCrashLoop(loop, CrashKind::kPowerLoss);
    ASSERT_TRUE(lost.dry_run_ok) << lost.Summary();
    EXPECT_FALSE(lost.failures.empty()) << "a power cut after the commit must find modules missing";
    bool blob_lost = false;
    for (const std::string& f : lost.failures)
      blob_lost = blob_lost || f.find(".zst") != std::string::npos;
    EXPECT_TRUE(blob_lost) << lost.Summary();
    const std::string first =
        lost.failures.empty() ? "" : lost.failures[0].substr(0, lost.failures[0].find('\n'));
    std::printf(
        "import without the %s fsync: %zu of %lld power-loss points lose data, e.g.\n  %s\n",
        dir_sync ? "blob directory" : "blob file", lost.failures.size(),
        static_cast<long long>(lost.points), first.c_str());
  }
}

TEST(Crash, SigkillOfTheImportCommandAtRandomMoments) {
  testing::TempDir tmp;
  const std::string dir = tmp.Join("store");
  ASSERT_TRUE(Store::Init(Env::Default(), dir).ok());
  // Big enough that an import takes a while (a few MB of incompressible data).
  const std::string file = testing::WriteGguf(tmp.Join("big-Q8_0.gguf"),
                                              testing::SmallLlama(ToId(QType::kQ8_0), 3, 8, 768));
  const std::string bin = testing::FqpackBinary();
  auto spawn = [&](const std::string& store_dir, const std::string& model) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(bin.c_str(), bin.c_str(), "--quiet", "--threads", "1", "--store", store_dir.c_str(),
              "import", "--model", model.c_str(), file.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  };
  // How long a whole import takes here, to kill inside that window.
  ASSERT_TRUE(Store::Init(Env::Default(), tmp.Join("timing")).ok());
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  ::waitpid(spawn(tmp.Join("timing"), "t"), &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "status " << status << " running " << bin;
  const auto full =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  std::mt19937 rng(11);
  int killed = 0;
  for (int round = 0; round < 8; ++round) {
    pid_t pid = spawn(dir, "m" + std::to_string(round % 2));
    std::this_thread::sleep_for(full * (0.05 + 0.9 * (rng() % 1000) / 1000.0));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) ++killed;
    EXPECT_EQ(testing::VerifyErrors(dir), "") << "round " << round;
  }
  EXPECT_GT(killed, 0) << "no import was killed mid-way: the test proves nothing";
  // Finish both imports and check the result.
  for (const char* model : {"m0", "m1"}) {
    auto store = Store::Open(Env::Default(), dir);
    ImportOptions opts;
    opts.model = model;
    auto r = ImportGguf(store->get(), file, opts);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  EXPECT_EQ(testing::VerifyErrors(dir), "");
  std::printf("killed %d of 8 imports mid-way\n", killed);
}

}  // namespace
}  // namespace fqpack::store
