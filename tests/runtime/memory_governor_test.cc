// Budget sources on fake /proc and cgroup trees (v1, v2, hybrid, nested
// limits, namespaces), the policy's decisions step by step, and the
// governor driving a real residency manager from a fake tree, a fake PSI
// trigger and host reports.
#include "runtime/memory_governor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <string>
#include <vector>

#include "runtime/memory_source.h"
#include "tests/runtime/elastic_test_util.h"
#include "tests/support/test_util.h"

namespace fqpack::runtime {
namespace {

using testing::ElasticLadder;
using testing::TempDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// A fake file system root: files written under a temp directory.
class FakeTree {
 public:
  void Write(const std::string& path, const std::string& text) {
    std::string dir;
    size_t pos = 0;
    while ((pos = path.find('/', pos + 1)) != std::string::npos) {
      ASSERT_TRUE(Env::Default()->CreateDir(tmp_.path() + path.substr(0, pos)).ok());
    }
    ASSERT_TRUE(PublishFile(Env::Default(), tmp_.path() + path,
                            ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
                    .ok());
  }
  void Meminfo(uint64_t total_kb, uint64_t available_kb) {
    Write("/proc/meminfo", "MemTotal:       " + std::to_string(total_kb) +
                               " kB\nMemFree:          123456 kB\nMemAvailable:   " +
                               std::to_string(available_kb) + " kB\nBuffers:  1 kB\n");
  }
  void Pressure(const std::string& path, double some10, double full10) {
    Write(path, "some avg10=" + std::to_string(some10) +
                    " avg60=0.00 avg300=0.00 total=1234\nfull avg10=" + std::to_string(full10) +
                    " avg60=0.00 avg300=0.00 total=99\n");
  }
  const std::string& root() const { return tmp_.path(); }

 private:
  TempDir tmp_;
};

const char* kMountinfoV2 =
    "22 1 0:21 / / rw - ext4 /dev/root rw\n"
    "30 22 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
const char* kMountinfoHybrid =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(MemorySourceTest, ParsesMeminfoPressureAndStat) {
  auto m = ParseMeminfo("MemTotal: 2048 kB\nMemAvailable:   1024 kB\n", "mi");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->total, 2048u * 1024);
  EXPECT_EQ(m->available, 1024u * 1024);
  auto no_avail = ParseMeminfo("MemTotal: 2048 kB\nMemFree: 10 kB\n", "mi");
  EXPECT_TRUE(no_avail.status().IsCorruption());
  EXPECT_NE(no_avail.status().message().find("mi: no MemAvailable"), std::string::npos);
  EXPECT_TRUE(
      ParseMeminfo("MemTotal: 2048 kB\nMemAvailable: 1x kB\n", "mi").status().IsCorruption());
  EXPECT_TRUE(ParseMeminfo("MemTotal: 2048 kB\nMemAvailable: 99999999999999999 kB\n", "mi")
                  .status()
                  .IsCorruption());

  auto p = ParsePressure(
      "some avg10=12.50 avg60=3.00 avg300=1.00 total=42\nfull avg10=0.75 avg60=0 avg300=0 "
      "total=1\n",
      "psi");
  ASSERT_TRUE(p.ok());
  EXPECT_DOUBLE_EQ(p->some_avg10, 12.5);
  EXPECT_DOUBLE_EQ(p->full_avg10, 0.75);
  EXPECT_TRUE(ParsePressure("full avg10=1.00\n", "psi").status().IsCorruption());
  EXPECT_TRUE(ParsePressure("some avg10=abc\n", "psi").status().IsCorruption());
  EXPECT_TRUE(ParsePressure("some avg10=250\n", "psi").status().IsCorruption());

  auto v = ParseStatValue("anon 10\ninactive_file 4096\nactive_file 7\n", "inactive_file", "st");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 4096u);
  EXPECT_TRUE(ParseStatValue("anon 10\n", "inactive_file", "st").status().IsCorruption());
}

TEST(MemorySourceTest, MeminfoSourceReadsMemAvailableAndPsi) {
  FakeTree t;
  t.Meminfo(8 * 1024 * 1024, 3 * 1024 * 1024);
  t.Pressure("/proc/pressure/memory", 2.5, 0.5);
  auto s = OpenMeminfoSource(Env::Default(), t.root());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto r = (*s)->Read();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, "meminfo");
  EXPECT_EQ(r->available, uint64_t{3} << 30);
  EXPECT_EQ(r->total, uint64_t{8} << 30);
  EXPECT_FALSE(r->counts_own_mapped);
  ASSERT_TRUE(r->pressure.has_value());
  EXPECT_DOUBLE_EQ(r->pressure->some_avg10, 2.5);
  // It follows the file.
  t.Meminfo(8 * 1024 * 1024, 1024 * 1024);
  EXPECT_EQ((*s)->Read()->available, uint64_t{1} << 30);
}

TEST(MemorySourceTest, MissingOrDamagedMeminfoNamesTheFile) {
  FakeTree t;
  t.Write("/proc/other", "x");
  auto s = OpenMeminfoSource(Env::Default(), t.root());
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsNotFound());
  EXPECT_NE(s.status().message().find("/proc/meminfo"), std::string::npos);
  t.Write("/proc/meminfo", "garbage\n");
  s = OpenMeminfoSource(Env::Default(), t.root());
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsCorruption());
  EXPECT_NE(s.status().message().find("/proc/meminfo: no MemAvailable"), std::string::npos);
}

TEST(MemorySourceTest, CgroupV2SubtractsInactiveFilesAndTakesTheTightestOfMaxAndHigh) {
  FakeTree t;
  t.Meminfo(16 * 1024 * 1024, 12 * 1024 * 1024);
  t.Write("/proc/self/cgroup", "0::/app.slice/llm.service\n");
  t.Write("/proc/self/mountinfo", kMountinfoV2);
  const std::string cg = "/sys/fs/cgroup/app.slice/llm.service";
  t.Write(cg + "/memory.max", std::to_string(1024 * kMiB) + "\n");
  t.Write(cg + "/memory.high", std::to_string(900 * kMiB) + "\n");
  t.Write(cg + "/memory.current", std::to_string(700 * kMiB) + "\n");
  t.Write(cg + "/memory.stat",
          "anon 300000\nfile 400000\ninactive_file " + std::to_string(200 * kMiB) + "\n");
  t.Pressure(cg + "/memory.pressure", 0, 0);
  t.Write("/sys/fs/cgroup/app.slice/memory.max", "max\n");
  t.Write("/sys/fs/cgroup/app.slice/memory.current", "1\n");
  auto s = OpenCgroupSource(Env::Default(), t.root());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_NE(*s, nullptr);
  EXPECT_EQ((*s)->name(), "cgroup2:/app.slice/llm.service");
  EXPECT_EQ((*s)->pressure_path(), t.root() + cg + "/memory.pressure");
  auto r = (*s)->Read();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // high 900 MiB - (700 MiB current - 200 MiB inactive files) = 400 MiB.
  EXPECT_EQ(r->available, 400 * kMiB);
  EXPECT_EQ(r->total, 900 * kMiB);
  EXPECT_TRUE(r->counts_own_mapped);
  // Page cache read by the process moves memory.current but not the working set.
  t.Write(cg + "/memory.current", std::to_string(800 * kMiB) + "\n");
  t.Write(cg + "/memory.stat", "inactive_file " + std::to_string(300 * kMiB) + "\n");
  EXPECT_EQ((*s)->Read()->available, 400 * kMiB);
  // Over the limit: nothing available, not a wrap-around.
  t.Write(cg + "/memory.current", std::to_string(2000 * kMiB) + "\n");
  EXPECT_EQ((*s)->Read()->available, 0u);
}

TEST(MemorySourceTest, CgroupV2LimitOnAnAncestorBinds) {
  FakeTree t;
  t.Write("/proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  t.Write("/proc/self/mountinfo", kMountinfoV2);
  const std::string pod = "/sys/fs/cgroup/kubepods/pod1";
  t.Write(pod + "/ctr/memory.max", "max\n");
  t.Write(pod + "/ctr/memory.current", std::to_string(50 * kMiB) + "\n");
  t.Write(pod + "/ctr/memory.stat", "inactive_file 0\n");
  t.Write(pod + "/memory.max", std::to_string(256 * kMiB) + "\n");
  t.Write(pod + "/memory.current", std::to_string(200 * kMiB) + "\n");
  t.Write(pod + "/memory.stat", "inactive_file " + std::to_string(8 * kMiB) + "\n");
  auto s = OpenCgroupSource(Env::Default(), t.root());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_NE(*s, nullptr);
  auto r = (*s)->Read();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, "cgroup2:/kubepods/pod1");
  EXPECT_EQ(r->available, (256 - 192) * kMiB);
}

TEST(MemorySourceTest, CgroupNamespaceMountsTheOwnCgroupAsRoot) {
  FakeTree t;
  t.Write("/proc/self/cgroup", "0::/\n");
  t.Write("/proc/self/mountinfo",
          "30 22 0:27 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n");
  t.Write("/sys/fs/cgroup/memory.max", std::to_string(512 * kMiB) + "\n");
  t.Write("/sys/fs/cgroup/memory.current", std::to_string(100 * kMiB) + "\n");
  t.Write("/sys/fs/cgroup/memory.stat", "inactive_file 0\n");
  auto s = OpenCgroupSource(Env::Default(), t.root());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_NE(*s, nullptr);
  EXPECT_EQ((*s)->Read()->available, 412 * kMiB);
}

TEST(MemorySourceTest, CgroupV1OnAHybridSystem) {
  FakeTree t;
  // The unified hierarchy holds the process but has no memory limit; the
  // v1 memory controller has one.
  t.Write("/proc/self/cgroup", "4:memory:/jobs/42\n1:cpu:/\n0::/\n");
  t.Write("/proc/self/mountinfo", kMountinfoHybrid);
  const std::string cg = "/sys/fs/cgroup/memory/jobs/42";
  t.Write(cg + "/memory.limit_in_bytes", std::to_string(600 * kMiB) + "\n");
  t.Write(cg + "/memory.usage_in_bytes", std::to_string(450 * kMiB) + "\n");
  t.Write(cg + "/memory.stat",
          "cache 1\ninactive_file 5\ntotal_inactive_file " + std::to_string(50 * kMiB) + "\n");
  t.Write("/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes", "9223372036854771712\n");
  t.Write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  t.Write("/sys/fs/cgroup/unified/memory.stat", "inactive_file 0\n");
  auto s = OpenCgroupSource(Env::Default(), t.root());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_NE(*s, nullptr);
  auto r = (*s)->Read();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, "cgroup1:/jobs/42");
  EXPECT_EQ(r->available, 200 * kMiB);
  EXPECT_EQ(r->total, 600 * kMiB);
  EXPECT_FALSE(r->pressure.has_value());
}

TEST(MemorySourceTest, NoLimitAnywhereMeansNoCgroupSource) {
  FakeTree t;
  t.Meminfo(1024 * 1024, 512 * 1024);
  t.Write("/proc/self/cgroup", "4:memory:/\n0::/\n");
  t.Write("/proc/self/mountinfo", kMountinfoHybrid);
  t.Write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  t.Write("/sys/fs/cgroup/unified/cgroup.procs", "1\n");
  auto s = OpenCgroupSource(Env::Default(), t.root());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*s, nullptr);
  auto all = OpenSystemSources(Env::Default(), t.root());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
}

TEST(MemorySourceTest, DamagedCgroupFileNamesIt) {
  FakeTree t;
  t.Write("/proc/self/cgroup", "0::/x\n");
  t.Write("/proc/self/mountinfo", kMountinfoV2);
  t.Write("/sys/fs/cgroup/x/memory.max", "lots\n");
  auto s = OpenCgroupSource(Env::Default(), t.root());
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsCorruption());
  EXPECT_NE(s.status().message().find("/sys/fs/cgroup/x/memory.max"), std::string::npos);
}

TEST(MemorySourceTest, TheRealSystemReads) {
  // Whatever this machine is, meminfo is there and sane.
  auto all = OpenSystemSources(Env::Default(), "");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  auto r = (*all)[0]->Read();
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->total, 0u);
  EXPECT_LE(r->available, r->total);
}

// ---------------------------------------------------------------- policy

TEST(BudgetPolicyTest, DownAtOnceUpAfterTheDwellWithHysteresis) {
  BudgetPolicyOptions o;
  o.headroom = 0.05;
  o.hysteresis = 0.10;
  o.dwell_seconds = 2.0;
  BudgetPolicy p(o, {300, 100, 200});
  // Plenty, at the top: stay.
  EXPECT_EQ(p.Observe(0.0, 1000, PressureLevel::kNormal, 300).request, 0u);
  // Below the current need: down in the same observation, with headroom.
  auto d = p.Observe(0.1, 250, PressureLevel::kNormal, 300);
  EXPECT_EQ(d.request, 237u);  // 250 x 0.95
  EXPECT_STREQ(d.reason, "down");
  p.TransitionDone(0.2);
  // Back to 320: 320 / 1.1 = 290 < 300, so no way up (hysteresis).
  for (double t = 0.3; t < 10; t += 0.5) {
    EXPECT_EQ(p.Observe(t, 320, PressureLevel::kNormal, 200).request, 0u) << t;
  }
  // 340 / 1.1 = 309 covers 300, but only after 2 s without a break.
  EXPECT_EQ(p.Observe(10.0, 340, PressureLevel::kNormal, 200).request, 0u);
  EXPECT_EQ(p.Observe(11.0, 340, PressureLevel::kNormal, 200).request, 0u);
  EXPECT_EQ(p.Observe(11.5, 320, PressureLevel::kNormal, 200).request, 0u);  // a dip resets it
  EXPECT_EQ(p.Observe(12.0, 340, PressureLevel::kNormal, 200).request, 0u);
  EXPECT_EQ(p.Observe(13.9, 340, PressureLevel::kNormal, 200).request, 0u);
  auto up = p.Observe(14.0, 340, PressureLevel::kNormal, 200);
  EXPECT_EQ(up.request, 309u);
  EXPECT_STREQ(up.reason, "up");
}

TEST(BudgetPolicyTest, UpWaitsForTheDwellAfterATransition) {
  BudgetPolicyOptions o;
  o.dwell_seconds = 2.0;
  o.hysteresis = 0.0;
  BudgetPolicy p(o, {100, 200});
  p.TransitionDone(5.0);
  EXPECT_EQ(p.Observe(4.0 + 2.5, 500, PressureLevel::kNormal, 100).request, 0u);
  EXPECT_EQ(p.Observe(6.9, 500, PressureLevel::kNormal, 100).request, 0u);
  EXPECT_EQ(p.Observe(8.6, 500, PressureLevel::kNormal, 100).request, 500u);
}

TEST(BudgetPolicyTest, AtTheSmallestLevelThereIsNothingToAskFor) {
  BudgetPolicy p(BudgetPolicyOptions{}, {100, 200});
  EXPECT_EQ(p.Observe(0, 10, PressureLevel::kNormal, 100).request, 0u);
  // Below everything from the top: the smallest level.
  EXPECT_EQ(p.Observe(1, 10, PressureLevel::kNormal, 200).request, 100u);
}

TEST(BudgetPolicyTest, PressureStepsDownOncePerDwellAndCriticalGoesToTheBottom) {
  BudgetPolicyOptions o;
  o.dwell_seconds = 1.0;
  o.pressure_step = 0.8;
  o.headroom = 0.0;
  BudgetPolicy p(o, {100, 150, 200, 250, 300});
  auto d = p.Observe(0.0, 10000, PressureLevel::kModerate, 300);
  EXPECT_EQ(d.request, 240u);
  EXPECT_STREQ(d.reason, "pressure");
  EXPECT_EQ(p.Observe(0.5, 10000, PressureLevel::kModerate, 200).request, 0u);  // within the dwell
  EXPECT_EQ(p.Observe(1.0, 10000, PressureLevel::kModerate, 200).request, 160u);
  // Pressure gone: going up waits the dwell.
  EXPECT_EQ(p.Observe(1.5, 10000, PressureLevel::kNormal, 150).request, 0u);
  EXPECT_EQ(p.Observe(3.6, 10000, PressureLevel::kNormal, 150).request, 9090u);
  auto c = p.Observe(4.0, 10000, PressureLevel::kCritical, 300);
  EXPECT_EQ(c.request, 100u);
  EXPECT_STREQ(c.reason, "critical");
  EXPECT_EQ(p.Observe(4.1, 10000, PressureLevel::kCritical, 100).request, 0u);
}

TEST(BudgetPolicyTest, AndroidTrimLevelsAndTheDefaultReserve) {
  EXPECT_EQ(PressureFromAndroidTrimLevel(5), PressureLevel::kNormal);
  EXPECT_EQ(PressureFromAndroidTrimLevel(10), PressureLevel::kModerate);
  EXPECT_EQ(PressureFromAndroidTrimLevel(15), PressureLevel::kCritical);
  EXPECT_EQ(PressureFromAndroidTrimLevel(20), PressureLevel::kNormal);
  EXPECT_EQ(PressureFromAndroidTrimLevel(40), PressureLevel::kNormal);
  EXPECT_EQ(PressureFromAndroidTrimLevel(60), PressureLevel::kModerate);
  EXPECT_EQ(PressureFromAndroidTrimLevel(80), PressureLevel::kCritical);
  EXPECT_EQ(DefaultReserve(uint64_t{8} << 30), (uint64_t{8} << 30) / 10);
  EXPECT_EQ(DefaultReserve(uint64_t{100} << 20), uint64_t{64} << 20);
  EXPECT_EQ(DefaultReserve(uint64_t{64} << 30), uint64_t{1} << 30);
}

// ---------------------------------------------------------------- governor

// A PSI trigger the test fires by hand.
class FakeTrigger : public PressureTrigger {
 public:
  explicit FakeTrigger(std::atomic<int>* pending) : pending_(pending) {}
  Result<bool> Wait(int timeout_ms) override {
    for (int i = 0; i < timeout_ms; ++i) {
      if (pending_->exchange(0) > 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  const std::string& path() const override { return path_; }

 private:
  std::atomic<int>* pending_;
  std::string path_ = "fake";
};

class TriggerEnv : public EnvWrapper {
 public:
  TriggerEnv() : EnvWrapper(Env::Default()) {}
  Result<std::unique_ptr<PressureTrigger>> OpenPressureTrigger(const std::string& path,
                                                               const std::string& spec) override {
    specs.push_back(path + " " + spec);
    if (refuse_first && specs.size() == 1) return Status::NotSupported("window refused");
    return std::unique_ptr<PressureTrigger>(new FakeTrigger(&pending));
  }
  std::vector<std::string> specs;
  bool refuse_first = false;
  std::atomic<int> pending{0};
};

class GovernorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ladder_ = new ElasticLadder(); }
  static void TearDownTestSuite() {
    delete ladder_;
    ladder_ = nullptr;
  }
  void SetUp() override {
    static const std::string path = ladder_->Pack(pack::Codec::kRaw, "gov.fqpack");
    auto p = pack::PackReader::Open(Env::Default(), path);
    ASSERT_TRUE(p.ok());
    pack_ = std::move(*p);
    auto m = ResidencyManager::Open(pack_.get(), {});
    ASSERT_TRUE(m.ok());
    manager_ = std::move(*m);
    manager_->set_overhead(1000);
    ASSERT_TRUE(manager_->Start(0).ok());
    for (const ResidencyLevel& l : manager_->levels()) needs_.push_back(l.footprint + 1000);
    std::sort(needs_.begin(), needs_.end());
  }
  // Options that read the fake tree `t`, keep a reserve of 1 MiB and run on
  // the test's clock.
  GovernorOptions Options(const FakeTree& t) {
    GovernorOptions o;
    o.root = t.root();
    o.policy.reserve = kMiB;
    o.clock = [this] { return now_; };
    return o;
  }
  // Applies what the governor asked for, as an owner thread does.
  int Apply() {
    auto r = manager_->ApplyPendingBudget();
    EXPECT_TRUE(r.ok());
    return manager_->level();
  }
  uint64_t CurrentNeed() const { return manager_->levels()[manager_->level()].footprint + 1000; }
  // Sets MemAvailable in a fake tree so that effective = `effective` bytes
  // for a reserve of 1 MiB (the manager's mapped pages count as available).
  void SetEffective(FakeTree* t, uint64_t effective) {
    const uint64_t own = manager_->stats().owned_bytes + manager_->stats().overhead_bytes;
    const uint64_t available = effective + kMiB - own;
    t->Write("/proc/meminfo",
             "MemTotal: 8388608 kB\nMemAvailable: " + std::to_string(available) + "\n");
  }

  static ElasticLadder* ladder_;
  std::unique_ptr<pack::PackReader> pack_;
  std::unique_ptr<ResidencyManager> manager_;
  std::vector<uint64_t> needs_;
  double now_ = 100;
};
ElasticLadder* GovernorTest::ladder_ = nullptr;

TEST_F(GovernorTest, FollowsMemAvailableDownAtOnceAndUpAfterTheDwell) {
  FakeTree t;
  SetEffective(&t, needs_.back() * 2);
  GovernorOptions o = Options(t);
  o.policy.dwell_seconds = 2;
  auto g = MemoryGovernor::Open(Env::Default(), manager_.get(), o);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(Apply(), 0);
  EXPECT_EQ((*g)->state().source, "meminfo");
  EXPECT_EQ((*g)->state().effective, needs_.back() * 2);
  EXPECT_EQ((*g)->state().trigger.find("polling"), 0u) << (*g)->state().trigger;

  // Memory falls to just under the middle level's need.
  const uint64_t mid = needs_[needs_.size() / 2];
  SetEffective(&t, mid + 10);
  now_ += 0.1;
  ASSERT_TRUE((*g)->PollOnce(now_).ok());
  EXPECT_EQ((*g)->state().reason, "down");
  Apply();
  EXPECT_LE(CurrentNeed(), mid + 10);
  const int low = manager_->level();
  EXPECT_GT(low, 0);
  // Back up: nothing for the dwell, then the top.
  SetEffective(&t, needs_.back() * 2);
  for (int i = 0; i < 19; ++i) {
    now_ += 0.1;
    ASSERT_TRUE((*g)->PollOnce(now_).ok());
    EXPECT_EQ(Apply(), low) << i;
  }
  now_ += 0.25;
  ASSERT_TRUE((*g)->PollOnce(now_).ok());
  EXPECT_EQ((*g)->state().reason, "up");
  EXPECT_EQ(Apply(), 0);
  EXPECT_EQ((*g)->state().requests, 2);
}

TEST_F(GovernorTest, ACgroupLimitTighterThanMeminfoBinds) {
  FakeTree t;
  SetEffective(&t, needs_.back() * 4);
  t.Write("/proc/self/cgroup", "0::/llm\n");
  t.Write("/proc/self/mountinfo", kMountinfoV2);
  // Limit so that only the smallest level fits: the working set counts the
  // manager's mapped pages, which the governor adds back.
  const uint64_t mapped = manager_->stats().resident_bytes;
  const uint64_t limit = needs_.front() + kMiB + 5 * kMiB;
  t.Write("/sys/fs/cgroup/llm/memory.max", std::to_string(limit) + "\n");
  t.Write("/sys/fs/cgroup/llm/memory.current", std::to_string(5 * kMiB + mapped + 1000) + "\n");
  t.Write("/sys/fs/cgroup/llm/memory.stat", "inactive_file 0\n");
  GovernorOptions o = Options(t);
  o.policy.headroom = 0;
  auto g = MemoryGovernor::Open(Env::Default(), manager_.get(), o);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->state().source, "cgroup2:/llm");
  EXPECT_EQ((*g)->state().effective, needs_.front());
  EXPECT_EQ(manager_->levels()[Apply()].footprint + 1000, needs_.front());
}

TEST_F(GovernorTest, APsiTriggerWakesItAndStepsDown) {
  FakeTree t;
  SetEffective(&t, needs_.back() * 2);
  t.Pressure("/proc/pressure/memory", 0, 0);
  TriggerEnv env;
  env.refuse_first = true;  // a 1 s window refused: it falls back to 2 s
  GovernorOptions o = Options(t);
  o.clock = {};  // real time: the watcher thread runs
  o.policy.dwell_seconds = 0.05;
  o.poll_interval = 1;  // only the trigger can wake it in time
  std::atomic<uint64_t> asked{0};
  auto g = MemoryGovernor::Open(&env, manager_.get(), o);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ASSERT_EQ(env.specs.size(), 2u);
  EXPECT_EQ(env.specs[0], t.root() + "/proc/pressure/memory some 150000 1000000");
  EXPECT_EQ(env.specs[1], t.root() + "/proc/pressure/memory some 300000 2000000");
  EXPECT_NE((*g)->state().trigger.find("some 300000 2000000"), std::string::npos);
  (*g)->set_on_request([&](uint64_t b) { asked = b; });
  ASSERT_TRUE((*g)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(asked.load(), 0u);
  env.pending = 1;
  for (int i = 0; i < 100 && asked.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  (*g)->Stop();
  ASSERT_GT(asked.load(), 0u);
  EXPECT_EQ((*g)->state().pressure, PressureLevel::kModerate);
  EXPECT_EQ((*g)->state().reason, "pressure");
  Apply();
  EXPECT_LE(CurrentNeed(), static_cast<uint64_t>(0.8 * static_cast<double>(needs_.back())));
}

TEST_F(GovernorTest, PsiAveragesRaiseThePressure) {
  FakeTree t;
  SetEffective(&t, needs_.back() * 2);
  t.Pressure("/proc/pressure/memory", 0, 0);
  GovernorOptions o = Options(t);
  o.psi_trigger = false;
  auto g = MemoryGovernor::Open(Env::Default(), manager_.get(), o);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)->state().pressure, PressureLevel::kNormal);
  t.Pressure("/proc/pressure/memory", 30.0, 1.0);
  ASSERT_TRUE((*g)->PollOnce(now_ += 0.1).ok());
  EXPECT_EQ((*g)->state().pressure, PressureLevel::kModerate);
  t.Pressure("/proc/pressure/memory", 60.0, 20.0);
  ASSERT_TRUE((*g)->PollOnce(now_ += 0.1).ok());
  EXPECT_EQ((*g)->state().pressure, PressureLevel::kCritical);
  EXPECT_EQ((*g)->state().reason, "critical");
  Apply();
  EXPECT_EQ(CurrentNeed(), needs_.front());
}

TEST_F(GovernorTest, HostReportsDriveItWithoutTheOs) {
  GovernorOptions o;
  o.os_sources = false;
  o.policy.reserve = 0;
  o.policy.dwell_seconds = 1;
  o.clock = [this] { return now_; };
  auto g = MemoryGovernor::Open(Env::Default(), manager_.get(), o);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->state().trigger, "host");
  EXPECT_EQ((*g)->state().requests, 0);  // nothing reported yet: nothing asked
  // iOS: os_proc_available_memory() says only the smallest level fits.
  const uint64_t own = manager_->stats().owned_bytes + manager_->stats().overhead_bytes;
  (*g)->ReportAvailableBytes(needs_.front() - own + 10);
  EXPECT_EQ((*g)->state().source, "host");
  EXPECT_EQ(manager_->levels()[Apply()].footprint + 1000, needs_.front());
  // Plenty again, and Android says RUNNING_CRITICAL: stays at the bottom.
  (*g)->ReportAvailableBytes(needs_.back() * 10);
  (*g)->ReportAndroidTrimLevel(15);
  EXPECT_EQ((*g)->state().pressure, PressureLevel::kCritical);
  now_ += 5;
  (*g)->ReportPressure(PressureLevel::kCritical);
  EXPECT_EQ(CurrentNeed(), needs_.front());
  // macOS: back to normal; up after the dwell.
  (*g)->ReportPressure(PressureLevel::kNormal);
  now_ += 1.5;
  ASSERT_TRUE((*g)->PollOnce(now_).ok());
  EXPECT_EQ(Apply(), 0);
}

TEST_F(GovernorTest, ASourceThatBreaksKeepsTheBudgetAndSaysWhy) {
  FakeTree t;
  SetEffective(&t, needs_.back() * 2);
  GovernorOptions o = Options(t);
  auto g = MemoryGovernor::Open(Env::Default(), manager_.get(), o);
  ASSERT_TRUE(g.ok());
  t.Write("/proc/meminfo", "MemTotal: 1 kB\n");
  Status s = (*g)->PollOnce(now_ += 0.1);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE((*g)->state().error.find("no MemAvailable"), std::string::npos);
  EXPECT_EQ(Apply(), 0);
}

}  // namespace
}  // namespace fqpack::runtime
