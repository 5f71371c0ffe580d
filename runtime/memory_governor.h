// The budget from the device: how much memory the operating system (or the
// host app) says is left, turned into budget requests for a residency
// manager, with a policy that does not make a noisy signal swap modules back
// and forth.
//
// Sources (runtime/memory_source.h) read /proc/meminfo's MemAvailable, the
// process's cgroup (v2 memory.max / memory.high against memory.current less
// its inactive file pages; v1 memory.limit_in_bytes against usage_in_bytes
// less total_inactive_file), and PSI (/proc/pressure/memory, the cgroup's
// memory.pressure). A host app without /proc (Android, iOS, macOS) reports
// what its platform tells it instead: ReportAvailableBytes,
// ReportPressure, ReportAndroidTrimLevel.
//
// What a source calls available does not include memory this process holds
// already, so the governor adds its own share back before it compares: the
// KV cache and scratch and the decoded (anonymous) module buffers always;
// the mapped module pages only for a cgroup, whose working set counts them
// (MemAvailable counts clean file pages as available, so they are in it).
//
//   effective = min over sources (available + own share) - reserve
//
// The policy (BudgetPolicy) then decides:
// - Down at once: when effective falls below what the current level needs
//   (its footprint plus overhead), the governor requests effective x (1 -
//   headroom) in the same poll, so a small further dip does not cost a second
//   transition.
// - Up only after a wait: a larger level is taken when effective / (1 +
//   hysteresis) covers it, that has held without a break for `dwell`, and
//   the last transition is at least `dwell` old.
// - Pressure: a PSI trigger or avg10 above its threshold, a host's warning,
//   or Android's TRIM_MEMORY_RUNNING_LOW and above (moderate) cap effective at
//   `pressure_step` of the current need (one step down per dwell while it
//   lasts); critical pressure (TRIM_MEMORY_RUNNING_CRITICAL, COMPLETE, a
//   macOS critical event, PSI full avg10 above its threshold) asks for the
//   smallest level. Normal pressure lifts the cap; going up still waits.
//
// PSI: where the kernel allows it the governor registers a trigger, "some
// 150000 1000000" (150 ms of stalls in 1 s; "some 300000 2000000" where
// only 2 s windows are allowed), and wakes as soon as it fires; pressure is
// moderate for `kPressureHoldSeconds` after a trigger, or while some avg10 >=
// kSomeAvg10Moderate; critical while full avg10 >= kFullAvg10Critical.
//
// Thread-safety: every public method may be called from any thread. Start
// runs a watcher thread that wakes every `poll_interval`, at once when a PSI
// trigger fires, and at once when a host reports; Stop (or the destructor)
// joins it.
#ifndef FQPACK_RUNTIME_MEMORY_GOVERNOR_H_
#define FQPACK_RUNTIME_MEMORY_GOVERNOR_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/memory_source.h"
#include "runtime/residency.h"
#include "schema/env.h"
#include "schema/status.h"

namespace fqpack::runtime {

enum class PressureLevel { kNormal, kModerate, kCritical };

constexpr double kSomeAvg10Moderate = 10.0;  // percent of time some task stalled on memory
constexpr double kFullAvg10Critical = 5.0;   // percent of time every task stalled on memory
constexpr double kPressureHoldSeconds = 1.0;
const char* PressureName(PressureLevel p);

// Android's ComponentCallbacks2.onTrimMemory levels as a pressure level:
// RUNNING_MODERATE (5) and the UI/background levels below MODERATE (20, 40)
// are normal for a process that keeps running; RUNNING_LOW (10) and MODERATE
// (60) are moderate; RUNNING_CRITICAL (15) and COMPLETE (80) critical.
PressureLevel PressureFromAndroidTrimLevel(int level);

// The reserve `--budget auto` keeps when none is given: 10% of the tighter
// total (MemTotal or the cgroup limit), at least 64 MiB and at most 1 GiB.
uint64_t DefaultReserve(uint64_t total);

struct BudgetPolicyOptions {
  uint64_t reserve = 0;     // 0: DefaultReserve of the tightest source
  double headroom = 0.05;   // going down, aim this fraction below effective
  double hysteresis = 0.10; // going up, effective must exceed the need by this
  double dwell_seconds = 2.0;
  double pressure_step = 0.80;  // moderate pressure caps effective at this x current need
};

// The decisions, free of clocks and threads (tests drive it step by step).
class BudgetPolicy {
 public:
  // `needs`: what each level needs (footprint + overhead), any order.
  BudgetPolicy(const BudgetPolicyOptions& options, std::vector<uint64_t> needs);

  struct Decision {
    uint64_t request = 0;  // budget to request; 0: stay
    const char* reason = "";  // "down", "up", "pressure", "critical"
  };
  // One observation at time `now` (seconds, any origin, not decreasing):
  // `effective` bytes (after reserve; 0 when none), the pressure, and the
  // need of the level running now.
  Decision Observe(double now, uint64_t effective, PressureLevel pressure, uint64_t current_need);
  // Tells the policy a transition finished at `now` (for the dwell).
  void TransitionDone(double now);

 private:
  BudgetPolicyOptions options_;
  std::vector<uint64_t> needs_;  // ascending
  double up_since_ = -1;         // when the up condition started to hold
  double last_transition_ = -1e300;
  double last_pressure_step_ = -1e300;
};

struct GovernorOptions {
  BudgetPolicyOptions policy;
  double poll_interval = 0.1;  // seconds between readings of the sources
  std::string root;            // "" = the real file system; tests pass a fake /proc + cgroup tree
  bool os_sources = true;      // false: only what the host reports
  bool psi_trigger = true;     // wake on PSI triggers where the kernel allows them
  std::function<double()> clock;  // seconds; empty: the steady clock (tests pass their own)
};

// What the governor knows now (GET /v1/budget, metrics, logs).
struct GovernorState {
  std::string source;          // the tightest source last read ("meminfo", "cgroup2:/x", "host")
  uint64_t available = 0;      // its available bytes
  uint64_t effective = 0;      // after own share and reserve
  uint64_t reserve = 0;
  PressureLevel pressure = PressureLevel::kNormal;
  std::string trigger;         // "psi trigger: /proc/pressure/memory", "polling", "host"
  uint64_t requested = 0;      // last budget requested
  int64_t requests = 0;        // budgets requested so far
  std::string reason;          // why the last request was made ("down", "up", "pressure", "critical")
  bool below_minimum = false;  // effective is below the smallest level's need
  std::string error;           // the last source that failed to read, and why ("" when none)
};

class MemoryGovernor {
 public:
  // Reads the sources once (so a missing /proc/meminfo fails here, naming
  // it) and sizes the policy from `manager`'s levels and overhead. With
  // os_sources false only host reports count. `manager` must outlive it.
  static Result<std::unique_ptr<MemoryGovernor>> Open(Env* env, ResidencyManager* manager,
                                                      const GovernorOptions& options);
  ~MemoryGovernor();
  MemoryGovernor(const MemoryGovernor&) = delete;

  // One reading before any model is loaded (nothing of this process to add
  // back): what `--budget auto` starts at. NotFound / Corruption naming the
  // file when a source cannot be read.
  static Result<GovernorState> Probe(Env* env, const GovernorOptions& options);
  MemoryGovernor& operator=(const MemoryGovernor&) = delete;

  // Called after each budget request, from the watcher thread: an owner that
  // may be idle (a server between requests) wakes up and applies it with
  // ResidencyManager::ApplyPendingBudget. Set before Start.
  void set_on_request(std::function<void(uint64_t budget)> fn) { on_request_ = std::move(fn); }

  // Starts / stops the watcher thread.
  Status Start();
  void Stop();

  // One reading and decision now, on the calling thread (the watcher calls
  // it; tests call it with their own clock, `now` in seconds).
  Status PollOnce(double now);
  // The owner tells the governor a transition finished (for the dwell).
  void TransitionDone();

  // Host signals (any thread). iOS: os_proc_available_memory(); any other
  // figure of bytes this process may still take.
  void ReportAvailableBytes(uint64_t bytes);
  // macOS DISPATCH_MEMORYPRESSURE_NORMAL / WARN / CRITICAL, or any host's level.
  void ReportPressure(PressureLevel level);
  // Android onTrimMemory(level).
  void ReportAndroidTrimLevel(int level);

  GovernorState state() const;

 private:
  MemoryGovernor() = default;
  double Now() const;
  void Loop();

  Env* env_ = nullptr;
  ResidencyManager* manager_ = nullptr;
  GovernorOptions options_;
  std::vector<std::unique_ptr<MemorySource>> sources_;
  std::unique_ptr<PressureTrigger> trigger_;
  std::unique_ptr<BudgetPolicy> policy_;
  std::function<void(uint64_t)> on_request_;

  std::mutex poll_mu_;  // one PollOnce at a time (the watcher, host reports, tests)
  mutable std::mutex mu_;  // guards what follows
  std::condition_variable wake_;
  bool stop_ = false;
  bool kick_ = false;
  std::optional<uint64_t> host_available_;
  PressureLevel host_pressure_ = PressureLevel::kNormal;
  double psi_fired_at_ = -1e300;  // when the PSI trigger last fired
  int64_t seen_transitions_ = 0;
  GovernorState state_;
  std::thread thread_;
};

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_MEMORY_GOVERNOR_H_
