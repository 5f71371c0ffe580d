#include "store/gc.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "schema/quant_types.h"
#include "store/gguf_import.h"
#include "tests/support/crash_loop.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

using testing::FaultInjectionEnv;

class GcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.Join("store");
    ASSERT_TRUE(Store::Init(Env::Default(), dir_).ok());
    auto s = Store::Open(Env::Default(), dir_);
    ASSERT_TRUE(s.ok());
    store_ = std::move(*s);
    testing::TestGguf a = testing::SmallLlama(ToId(QType::kF16), 1);
    testing::TestGguf b = testing::SmallLlama(ToId(QType::kQ8_0), 2);
    for (size_t i = 0; i < a.tensors.size(); ++i) {
      if (a.tensors[i].type == ToId(QType::kF32)) b.tensors[i].data = a.tensors[i].data;
    }
    a_ = testing::WriteGguf(tmp_.Join("g-F16.gguf"), a);
    b_ = testing::WriteGguf(tmp_.Join("g-Q8_0.gguf"), b);
    ASSERT_TRUE(ImportGguf(store_.get(), a_, {}).ok());
    ASSERT_TRUE(ImportGguf(store_.get(), b_, {}).ok());
    for (const auto& t : b.tensors) unique_to_b_ += t.type != ToId(QType::kF32) ? 1 : 0;
  }
  size_t Files() {
    auto f = store_->blobs()->ListFiles();
    return f.ok() ? f->size() : 0;
  }

  testing::TempDir tmp_;
  std::string dir_, a_, b_;
  std::unique_ptr<Store> store_;
  size_t unique_to_b_ = 0;
};

TEST_F(GcTest, RemovingAQmFreesExactlyItsOwnModules) {
  const size_t before = Files();
  auto rm = RemoveQm(store_.get(), "g", "Q8_0");
  ASSERT_TRUE(rm.ok()) << rm.status().ToString();
  EXPECT_EQ(rm->qms, 1u);
  EXPECT_EQ(Files(), before) << "rm drops references only";
  auto dry = Sweep(store_.get(), {true});
  ASSERT_TRUE(dry.ok());
  EXPECT_EQ(dry->blobs, unique_to_b_);
  EXPECT_EQ(Files(), before) << "a dry run deletes nothing";
  auto gc = Sweep(store_.get());
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  EXPECT_EQ(gc->blobs, unique_to_b_);
  EXPECT_GT(gc->blob_bytes, 0u);
  EXPECT_EQ(Files(), before - unique_to_b_);
  EXPECT_EQ(testing::VerifyErrors(dir_), "");
  // F16 still exports byte for byte; a second gc frees nothing.
  auto again = Sweep(store_.get());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->freed(), 0u);
  EXPECT_TRUE(store_->PinQm("g", "F16").ok());
}

TEST_F(GcTest, RemovesOrphansAndTempFiles) {
  ASSERT_TRUE(
      PublishFile(Env::Default(), dir_ + "/blobs/ab/" + std::string(32, 'a') + ".zst", Bytes{1, 2})
          .ok());
  ASSERT_TRUE(PublishFile(Env::Default(), dir_ + "/tmp/leftover", Bytes{3}).ok());
  auto gc = Sweep(store_.get());
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->blobs, 0u);
  EXPECT_EQ(gc->orphans, 2u);
  EXPECT_FALSE(Env::Default()->FileExists(dir_ + "/tmp/leftover"));
  EXPECT_EQ(testing::VerifyErrors(dir_), "");
}

TEST_F(GcTest, RefusesToRunBesideAWriter) {
  auto writer = store_->WriterLock();
  ASSERT_TRUE(writer.ok());
  pid_t pid = ::fork();
  if (pid == 0) {
    auto s = Store::Open(Env::Default(), dir_);
    ::_exit(s.ok() && Sweep(s->get()).status().IsBusy() ? 0 : 1);
  }
  int status;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(GcTest, RemoveModelDropsEverything) {
  auto rm = RemoveModel(store_.get(), "g");
  ASSERT_TRUE(rm.ok()) << rm.status().ToString();
  EXPECT_EQ(rm->qms, 2u);
  ASSERT_TRUE(Sweep(store_.get()).ok());
  EXPECT_EQ(Files(), 0u);
  EXPECT_EQ(store_->Stats()->blobs, 0u);
  EXPECT_TRUE(store_->FindModel("g").status().IsNotFound());
}

// A sweep failed or killed at any file operation (its index transaction's
// writes and fsyncs included) leaves a store that verifies with everything
// still referenced intact; the next sweep finishes.
TEST_F(GcTest, FailOrKillAtEveryStepOfASweep) {
  ASSERT_TRUE(RemoveQm(store_.get(), "g", "Q8_0").ok());
  ASSERT_TRUE(PublishFile(Env::Default(), dir_ + "/tmp/leftover", Bytes{3}).ok());
  store_.reset();
  const std::string base = tmp_.Join("base");
  testing::CopyTree(dir_, base);
  // Count the steps of one sweep (after the store is open: the faults are
  // armed there too).
  int64_t total = 0;
  {
    testing::TempDir t;
    testing::CopyTree(base, t.Join("s"));
    FaultInjectionEnv env(Env::Default());
    auto s = Store::Open(&env, t.Join("s"));
    env.FailAt(-1);
    ASSERT_TRUE(Sweep(s->get()).ok());
    total = env.steps();
  }
  ASSERT_GT(total, static_cast<int64_t>(unique_to_b_));
  testing::TempDir t;
  const std::string copy = t.Join("s");
  for (int64_t step = 1; step <= total; ++step) {
    // A kill at every step; a failure (the error path) at the first, middle
    // and last, which covers the row, file and directory operations.
    std::vector<FaultInjectionEnv::Mode> modes = {FaultInjectionEnv::Mode::kCrash};
    if (step == 1 || step == total / 2 || step == total)
      modes.push_back(FaultInjectionEnv::Mode::kFail);
    for (auto mode : modes) {
      testing::ResetTree(base, copy);
      pid_t pid = ::fork();
      if (pid == 0) {
        FaultInjectionEnv env(Env::Default());
        env.SetRealSyncs(false);
        auto s = Store::Open(&env, copy);
        env.FailAt(step, mode);
        ::_exit(s.ok() && !Sweep(s->get()).ok() ? 3 : 0);
      }
      int status;
      ::waitpid(pid, &status, 0);
      ASSERT_TRUE(WIFEXITED(status));
      EXPECT_EQ(WEXITSTATUS(status), mode == FaultInjectionEnv::Mode::kCrash ? 99 : 3)
          << "step " << step;
      EXPECT_EQ(testing::VerifyErrors(copy), "") << "step " << step;
      auto s = Store::Open(testing::FastEnv(), copy);
      ASSERT_TRUE(s.ok());
      ASSERT_TRUE((*s)->PinQm("g", "F16").ok()) << "step " << step;
      auto gc = Sweep(s->get());
      ASSERT_TRUE(gc.ok()) << gc.status().ToString();
      auto again = Sweep(s->get());
      EXPECT_EQ(again->freed(), 0u) << "step " << step;
      auto files = (*s)->blobs()->ListFiles();
      EXPECT_EQ(files->size(), (*s)->Stats()->blobs) << "step " << step;
    }
  }
  std::printf("gc sweep: %lld kill points\n", static_cast<long long>(total));
}

// A reader in another process pins its QM, a gc then removes everything
// (rm --model), and the reader still reads every module.
TEST_F(GcTest, AReaderKeepsWorkingThroughAGc) {
  int to_child[2], to_parent[2];
  ASSERT_EQ(::pipe(to_child), 0);
  ASSERT_EQ(::pipe(to_parent), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    auto s = Store::Open(Env::Default(), dir_);
    if (!s.ok()) ::_exit(1);
    auto pinned = (*s)->PinQm("g", "Q8_0");
    char c = pinned.ok() ? 'p' : 'x';
    (void)!::write(to_parent[1], &c, 1);
    (void)!::read(to_child[0], &c, 1);  // wait for the gc
    for (const ManifestSlot& slot : pinned->manifest.slots) {
      auto d = pinned->source->Load(slot.key);
      if (!d.ok() || d->size() != slot.bytes) ::_exit(2);
    }
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(to_parent[0], &c, 1), 1);
  ASSERT_EQ(c, 'p');
  ASSERT_TRUE(RemoveModel(store_.get(), "g").ok());
  auto gc = Sweep(store_.get());
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  EXPECT_EQ(Files(), 0u);
  (void)!::write(to_child[1], &c, 1);
  int status;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

}  // namespace
}  // namespace fqpack::store
