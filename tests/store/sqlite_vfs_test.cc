// SQLite's files go through the Env the Db was opened with: every write and
// fsync of the database and its WAL is a FaultInjectionEnv step (so crash
// loops reach them), a new WAL's directory is fsynced, an Env error comes
// back as an IOError that names it, and closing one connection's files never
// drops the fcntl locks another connection of the process holds.
#include "store/sqlite_vfs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "store/sqlite.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

using testing::FaultInjectionEnv;

bool Logged(const std::vector<std::string>& log, const std::string& what) {
  return std::find(log.begin(), log.end(), what) != log.end();
}

std::string Joined(const std::vector<std::string>& log) {
  std::string s;
  for (const std::string& l : log) s += l + "\n";
  return s;
}

TEST(SqliteVfs, WritesAndFsyncsOfTheDatabaseAndItsWalAreEnvSteps) {
  testing::TempDir tmp;
  const std::string path = tmp.Join("t.sqlite");
  FaultInjectionEnv env(Env::Default());
  {
    auto db = Db::Open(&env, path, Db::Mode::kReadWriteCreate);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    ASSERT_TRUE((*db)->Exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL").ok());
    ASSERT_TRUE((*db)->Exec("CREATE TABLE t (x)").ok());
    env.FailAt(-1);  // restart the log: one transaction from here
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (1)").ok());
    const std::vector<std::string> commit = env.StepLog();
    EXPECT_TRUE(Logged(commit, "write " + path + "-wal")) << Joined(commit);
    EXPECT_TRUE(Logged(commit, "fsync " + path + "-wal")) << Joined(commit);
    env.FailAt(-1);
  }
  // The last close copies the WAL back into the database, fsyncs it, and
  // removes the WAL.
  const std::vector<std::string> close = env.StepLog();
  EXPECT_TRUE(Logged(close, "write " + path)) << Joined(close);
  EXPECT_TRUE(Logged(close, "fsync " + path)) << Joined(close);
  EXPECT_TRUE(Logged(close, "unlink " + path + "-wal")) << Joined(close);
}

TEST(SqliteVfs, ANewWalHasItsDirectoryFsyncedAfterItsFirstSync) {
  testing::TempDir tmp;
  const std::string path = tmp.Join("t.sqlite");
  FaultInjectionEnv env(Env::Default());
  auto db = Db::Open(&env, path, Db::Mode::kReadWriteCreate);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE(
      (*db)->Exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE t (x)").ok());
  const std::vector<std::string> log = env.StepLog();
  auto created = std::find(log.begin(), log.end(), "create " + path + "-wal");
  ASSERT_NE(created, log.end()) << Joined(log);
  auto synced = std::find(created, log.end(), "fsync " + path + "-wal");
  ASSERT_NE(synced, log.end()) << Joined(log);
  ASSERT_NE(synced + 1, log.end());
  EXPECT_EQ(*(synced + 1), "fsync dir " + tmp.path()) << Joined(log);
}

TEST(SqliteVfs, AFailedWriteIsAnIOErrorThatNamesTheEnvError) {
  testing::TempDir tmp;
  const std::string path = tmp.Join("t.sqlite");
  FaultInjectionEnv env(Env::Default());
  auto db = Db::Open(&env, path, Db::Mode::kReadWriteCreate);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x)").ok());
  env.FailAt(1, FaultInjectionEnv::Mode::kDiskFull);
  Status s = (*db)->Exec("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.message().find(path), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("No space left on device"), std::string::npos) << s.ToString();
  // Nothing was committed, and the connection still works.
  env.Disarm();
  EXPECT_EQ(*(*db)->QueryInt("SELECT count(*) FROM t"), 0);
  ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (2)").ok());
  EXPECT_EQ(*(*db)->QueryInt("SELECT count(*) FROM t"), 1);
}

TEST(SqliteVfs, OneVfsPerEnvRegisteredWhileADbUsesIt) {
  testing::TempDir tmp;
  FaultInjectionEnv a(Env::Default()), b(Env::Default());
  auto va = EnvVfs::Acquire(&a);
  auto va2 = EnvVfs::Acquire(&a);
  auto vb = EnvVfs::Acquire(&b);
  ASSERT_TRUE(va.ok() && va2.ok() && vb.ok());
  EXPECT_EQ(va->get(), va2->get());
  EXPECT_NE((*va)->name(), (*vb)->name());
}

// POSIX drops all of a process's fcntl locks on a file when it closes any
// descriptor of it. Connection A (one Env) reads in a transaction, so it
// holds SQLite's shared lock; connection B (another Env) opens, reads and
// closes the same database. Another process must still see A's lock. (It
// asks the kernel with F_GETLK: a forked SQLite would trust the lock table
// it inherited from this process instead.)
TEST(SqliteVfs, ClosingAnotherConnectionKeepsOurLocks) {
  testing::TempDir tmp;
  const std::string path = tmp.Join("t.sqlite");
  FaultInjectionEnv env_a(Env::Default()), env_b(Env::Default());
  {
    auto setup = Db::Open(&env_a, path, Db::Mode::kReadWriteCreate);
    ASSERT_TRUE(setup.ok());
    ASSERT_TRUE(
        (*setup)
            ->Exec("PRAGMA journal_mode = DELETE; CREATE TABLE t (x); INSERT INTO t VALUES (1)")
            .ok());
  }
  auto a = Db::Open(&env_a, path, Db::Mode::kReadWrite);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Exec("BEGIN").ok());
  EXPECT_EQ(*(*a)->QueryInt("SELECT count(*) FROM t"), 1);  // takes the shared lock
  auto shared_lock_seen_from_outside = [&] {
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open(path.c_str(), O_RDWR);
      // SQLite's shared-lock range (os_unix.c: SHARED_FIRST, SHARED_SIZE).
      struct flock lk = {};
      lk.l_type = F_WRLCK;
      lk.l_whence = SEEK_SET;
      lk.l_start = 0x40000002;
      lk.l_len = 510;
      if (fd < 0 || ::fcntl(fd, F_GETLK, &lk) != 0) ::_exit(2);
      ::_exit(lk.l_type != F_UNLCK ? 0 : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  };
  ASSERT_TRUE(shared_lock_seen_from_outside());
  {
    auto b = Db::Open(&env_b, path, Db::Mode::kReadWrite);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(*(*b)->QueryInt("SELECT count(*) FROM t"), 1);
  }
  EXPECT_TRUE(shared_lock_seen_from_outside()) << "closing B's files dropped A's lock";
  ASSERT_TRUE((*a)->Exec("COMMIT").ok());
  EXPECT_FALSE(shared_lock_seen_from_outside());
}

}  // namespace
}  // namespace fqpack::store
