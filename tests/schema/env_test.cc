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

TEST(Env, PathHelpers) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(DirName("a/b/c"), "a/b");
  EXPECT_EQ(DirName("c"), ".");
  EXPECT_EQ(BaseName("a/b/c.gguf"), "c.gguf");
}

}  // namespace
}  // namespace fqpack
