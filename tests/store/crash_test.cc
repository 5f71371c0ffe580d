// A kill at any moment of an import leaves a store that opens, verifies, and
// takes the same import again. Two ways to kill: a fault-injecting Env that
// _exits at the Nth file operation (every step, deterministic), and a real
// SIGKILL of the fqpack binary at random times.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "schema/quant_types.h"
#include "store/gguf_export.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

using testing::FaultInjectionEnv;

// Runs an import in a child process whose Env crashes at step `crash_at`.
// Returns the child's exit status (99 when it crashed as asked).
int ImportInChild(const std::string& dir, const std::string& file, int64_t crash_at, int64_t* steps) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    FaultInjectionEnv env(Env::Default());
    env.FailAt(crash_at, FaultInjectionEnv::Mode::kCrash);
    auto store = Store::Open(&env, dir);
    int rc = 1;
    if (store.ok()) {
      ImportOptions opts;
      opts.threads = 1;
      rc = ImportGguf(store->get(), file, opts).ok() ? 0 : 2;
    }
    int64_t n = env.steps();
    (void)!::write(fds[1], &n, sizeof(n));
    ::_exit(rc);
  }
  ::close(fds[1]);
  int64_t n = -1;
  (void)!::read(fds[0], &n, sizeof(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (steps != nullptr) *steps = n;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Crash, KillAtEveryFileOperationOfAnImport) {
  testing::TempDir tmp;
  const std::string dir = tmp.Join("store");
  ASSERT_TRUE(Store::Init(Env::Default(), dir).ok());
  // One layer keeps the number of steps (and the test's time) small.
  const std::string base =
      testing::WriteGguf(tmp.Join("c-F32.gguf"), testing::SmallLlama(ToId(QType::kF32), 1, 1));
  testing::TestGguf next_g = testing::SmallLlama(ToId(QType::kQ8_0), 2, 1);
  next_g.tensors[1].data = testing::SmallLlama(ToId(QType::kF32), 1, 1).tensors[1].data;  // one shared module
  const std::string next = testing::WriteGguf(tmp.Join("c-Q8_0.gguf"), next_g);
  {
    auto store = Store::Open(Env::Default(), dir);
    ASSERT_TRUE(ImportGguf(store->get(), base, {}).ok());
  }
  // A dry run counts the steps of the import.
  testing::TempDir count_tmp;
  ASSERT_EQ(std::system(("cp -a " + dir + " " + count_tmp.Join("s")).c_str()), 0);
  int64_t total = 0;
  ASSERT_EQ(ImportInChild(count_tmp.Join("s"), next, -1, &total), 0);
  ASSERT_GT(total, 10);

  const std::string committed = testing::SnapshotStore(dir, false);
  for (int64_t step = 1; step <= total; ++step) {
    testing::TempDir run;
    const std::string copy = run.Join("s");
    ASSERT_EQ(std::system(("cp -a " + dir + " " + copy).c_str()), 0);
    ASSERT_EQ(ImportInChild(copy, next, step, nullptr), 99) << "step " << step;
    // Nothing committed before was lost, the store verifies, and the same
    // import then succeeds.
    EXPECT_EQ(testing::SnapshotStore(copy, false), committed) << "step " << step;
    EXPECT_EQ(testing::VerifyErrors(copy), "") << "step " << step;
    auto store = Store::Open(Env::Default(), copy);
    ASSERT_TRUE(store.ok());
    auto again = ImportGguf(store->get(), next, {});
    ASSERT_TRUE(again.ok()) << "step " << step << ": " << again.status().ToString();
    EXPECT_EQ(testing::VerifyErrors(copy), "") << "step " << step;
    const std::string out = run.Join("out.gguf");
    ASSERT_TRUE(ExportQmGguf(store->get(), "c", "Q8_0", out).ok());
    EXPECT_EQ(*ReadFileBytes(Env::Default(), out), *ReadFileBytes(Env::Default(), next)) << "step " << step;
  }
}

TEST(Crash, SigkillOfTheImportCommandAtRandomMoments) {
  testing::TempDir tmp;
  const std::string dir = tmp.Join("store");
  ASSERT_TRUE(Store::Init(Env::Default(), dir).ok());
  // Big enough that an import takes a while (a few MB of incompressible data).
  const std::string file =
      testing::WriteGguf(tmp.Join("big-Q8_0.gguf"), testing::SmallLlama(ToId(QType::kQ8_0), 3, 8, 768));
  const std::string bin = testing::FqpackBinary();
  auto spawn = [&](const std::string& store_dir, const std::string& model) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(bin.c_str(), bin.c_str(), "--quiet", "--threads", "1", "--store", store_dir.c_str(), "import",
              "--model", model.c_str(), file.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  };
  // How long a whole import takes here, to kill inside that window.
  ASSERT_TRUE(Store::Init(Env::Default(), tmp.Join("timing")).ok());
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  ::waitpid(spawn(tmp.Join("timing"), "t"), &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << " running " << bin;
  const auto full = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
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
