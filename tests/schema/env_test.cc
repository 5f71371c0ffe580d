#include "schema/env.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/test_util.h"

namespace fqpack {
namespace {

TEST(Env, PublishFileWritesAtomicallyAndLeavesNoTemp) {
  testing::TempDir dir;
  Env* env = Env::Default();
  const std::string path = dir.Join("f");
  Bytes data = {1, 2, 3};
  ASSERT_TRUE(PublishFile(env, path, data).ok());
  EXPECT_EQ(*ReadFileBytes(env, path), data);
  EXPECT_EQ(env->GetChildren(dir.path())->size(), 1u);
}

TEST(Env, FailedPublishKeepsTheOldFile) {
  testing::TempDir dir;
  testing::FaultInjectionEnv env(Env::Default());
  const std::string path = dir.Join("f");
  ASSERT_TRUE(PublishFile(&env, path, Bytes{1}).ok());
  for (int step = 1; step <= 4; ++step) {
    env.FailAt(step);
    Status s = PublishFile(&env, path, Bytes{2, 2});
    EXPECT_FALSE(s.ok()) << step;
    env.Disarm();
    EXPECT_EQ(*ReadFileBytes(&env, path), Bytes{1}) << step;
  }
  EXPECT_EQ(env.GetChildren(dir.path())->size(), 1u) << "temp files are removed after a failure";
}

TEST(Env, MapFileReportsMissingFilesAsNotFound) {
  Result<MappedFile> f = Env::Default()->MapFile("/nonexistent/fqpack/file");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(f.status().IsNotFound());
  EXPECT_NE(f.status().message().find("/nonexistent/fqpack/file"), std::string::npos);
}

TEST(Env, EmptyFilesMapToEmptySpans) {
  testing::TempDir dir;
  ASSERT_TRUE(PublishFile(Env::Default(), dir.Join("e"), Bytes{}).ok());
  Result<MappedFile> f = Env::Default()->MapFile(dir.Join("e"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->size(), 0u);
}

TEST(Env, ExclusiveLockIsBusyWhileAnotherProcessHoldsIt) {
  testing::TempDir dir;
  const std::string lock_path = dir.Join("LOCK");
  int to_parent[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    auto lock = Env::Default()->LockFile(lock_path, LockMode::kShared, true);
    char c = lock.ok() ? 'y' : 'n';
    (void)!::write(to_parent[1], &c, 1);
    ::sleep(2);
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(to_parent[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto busy = Env::Default()->LockFile(lock_path, LockMode::kExclusive, false);
  EXPECT_TRUE(busy.status().IsBusy()) << busy.status().ToString();
  auto shared = Env::Default()->LockFile(lock_path, LockMode::kShared, false);
  EXPECT_TRUE(shared.ok()) << "shared locks coexist";
  int status;
  ::waitpid(pid, &status, 0);
  auto after = Env::Default()->LockFile(lock_path, LockMode::kExclusive, false);
  EXPECT_FALSE(after.ok()) << "our own shared lock still holds";
  shared = Status::Aborted("release");
  EXPECT_TRUE(Env::Default()->LockFile(lock_path, LockMode::kExclusive, false).ok());
}

TEST(Env, RandomRWFileReadsWritesAndTruncatesAnywhere) {
  testing::TempDir dir;
  Env* env = Env::Default();
  const std::string path = dir.Join("r");
  EXPECT_TRUE(env->OpenRandomRWFile(path, OpenMode::kReadWrite).status().IsNotFound());
  auto f = env->OpenRandomRWFile(path, OpenMode::kReadWriteCreate);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_TRUE((*f)->Write(4, Bytes{5, 6, 7}).ok());  // past the end: a hole of zeros
  ASSERT_TRUE((*f)->Write(0, Bytes{1, 2}).ok());
  EXPECT_EQ(*(*f)->Size(), 7u);
  uint8_t buf[16];
  size_t got = 0;
  ASSERT_TRUE((*f)->Read(1, sizeof(buf), buf, &got).ok());
  EXPECT_EQ(Bytes(buf, buf + got), (Bytes{2, 0, 0, 5, 6, 7}))
      << "a short read at the end is not an error";
  ASSERT_TRUE((*f)->Truncate(3).ok());
  ASSERT_TRUE((*f)->Sync().ok());
  ASSERT_TRUE((*f)->Close().ok());
  EXPECT_EQ(*ReadFileBytes(env, path), (Bytes{1, 2, 0}));
  auto ro = env->OpenRandomRWFile(path, OpenMode::kReadOnly);
  ASSERT_TRUE(ro.ok());
  EXPECT_FALSE((*ro)->Write(0, Bytes{9}).ok());
  ASSERT_TRUE((*ro)->Read(0, 3, buf, &got).ok());
  EXPECT_EQ(got, 3u);
}

// The durability model of a power cut (FaultInjectionEnv::DropUnsyncedData).
class PowerLoss : public ::testing::Test {
 protected:
  std::string Content(const std::string& name) {
    Result<Bytes> b = ReadFileBytes(Env::Default(), dir_.Join(name));
    return b.ok() ? std::string(b->begin(), b->end()) : "<missing>";
  }
  void Write(const std::string& name, const std::string& text, bool sync) {
    auto f = env_.NewWritableFile(dir_.Join(name));
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(
        (*f)->Append(ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size())).ok());
    if (sync) {
      ASSERT_TRUE((*f)->Sync().ok());
    }
    ASSERT_TRUE((*f)->Close().ok());
  }
  static Bytes B(const std::string& s) { return Bytes(s.begin(), s.end()); }

  testing::TempDir dir_;
  testing::FaultInjectionEnv env_{Env::Default()};
};

TEST_F(PowerLoss, KeepsWhatWasSyncedAndNothingElse) {
  ASSERT_TRUE(
      PublishFile(Env::Default(), dir_.Join("old"), B("durable")).ok());  // before the Env: durable
  Write("synced", "abc", true);
  Write("unsynced", "xyz", false);
  ASSERT_TRUE(env_.SyncDir(dir_.path()).ok());
  auto f = env_.NewWritableFile(dir_.Join("synced2"));
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append(B("12")).ok());
  ASSERT_TRUE((*f)->Sync().ok());
  ASSERT_TRUE((*f)->Append(B("34")).ok());
  ASSERT_TRUE(env_.SyncDir(dir_.path()).ok());
  Write("new", "made after the last directory fsync", true);
  env_.DropUnsyncedData();
  EXPECT_EQ(Content("old"), "durable");
  EXPECT_EQ(Content("synced"), "abc");
  EXPECT_EQ(Content("unsynced"), "");
  EXPECT_EQ(Content("synced2"), "12");
  EXPECT_EQ(Content("new"), "<missing>") << "its name was never made durable";
}

TEST_F(PowerLoss, UndoesRenamesAndRemovesNotYetDurable) {
  ASSERT_TRUE(PublishFile(Env::Default(), dir_.Join("a"), B("old a")).ok());
  ASSERT_TRUE(PublishFile(Env::Default(), dir_.Join("b"), B("old b")).ok());
  ASSERT_TRUE(PublishFile(Env::Default(), dir_.Join("c"), B("old c")).ok());
  Write("tmp", "new a", true);
  ASSERT_TRUE(env_.RenameFile(dir_.Join("tmp"), dir_.Join("a")).ok());
  ASSERT_TRUE(env_.RemoveFile(dir_.Join("b")).ok());
  ASSERT_TRUE(env_.RenameFile(dir_.Join("c"), dir_.Join("d")).ok());
  EXPECT_EQ(Content("a"), "new a");
  env_.DropUnsyncedData();
  EXPECT_EQ(Content("a"), "old a");
  EXPECT_EQ(Content("b"), "old b");
  EXPECT_EQ(Content("c"), "old c");
  EXPECT_EQ(Content("d"), "<missing>");
  EXPECT_EQ(Content("tmp"), "<missing>");
  // Made durable, the same changes survive.
  Write("tmp", "new a", true);
  ASSERT_TRUE(env_.RenameFile(dir_.Join("tmp"), dir_.Join("a")).ok());
  ASSERT_TRUE(env_.RemoveFile(dir_.Join("b")).ok());
  ASSERT_TRUE(env_.SyncDir(dir_.path()).ok());
  env_.DropUnsyncedData();
  EXPECT_EQ(Content("a"), "new a");
  EXPECT_EQ(Content("b"), "<missing>");
}

TEST_F(PowerLoss, PutsOverwrittenAndTruncatedBytesBack) {
  ASSERT_TRUE(PublishFile(Env::Default(), dir_.Join("db"), B("0123456789")).ok());
  auto f = env_.OpenRandomRWFile(dir_.Join("db"), OpenMode::kReadWrite);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Write(2, B("ab")).ok());
  ASSERT_TRUE((*f)->Sync().ok());  // "01ab456789" is durable
  ASSERT_TRUE((*f)->Write(0, B("XY")).ok());
  ASSERT_TRUE((*f)->Truncate(5).ok());
  ASSERT_TRUE((*f)->Write(4, B("ZZZZZZZZ")).ok());
  ASSERT_TRUE((*f)->Write(1, B("Q")).ok());
  ASSERT_TRUE((*f)->Close().ok());
  env_.DropUnsyncedData();
  EXPECT_EQ(Content("db"), "01ab456789");
}

TEST_F(PowerLoss, ADroppedSyncLeavesTheDataUnsyncedAndIsNoStep) {
  env_.DropFileSyncs("/blob");
  env_.FailAt(-1);
  Write("blob", "data", true);
  ASSERT_TRUE(env_.SyncDir(dir_.path()).ok());
  EXPECT_EQ(env_.sync_steps(), 1) << "only the directory fsync counted";
  env_.DropUnsyncedData();
  EXPECT_EQ(Content("blob"), "");
}

TEST(Env, PathHelpers) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(DirName("a/b/c"), "a/b");
  EXPECT_EQ(DirName("c"), ".");
  EXPECT_EQ(BaseName("a/b/c.gguf"), "c.gguf");
}

}  // namespace
}  // namespace fqpack
