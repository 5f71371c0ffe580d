#include "runtime/memory_governor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

#include "schema/log.h"
#include "schema/units.h"

namespace fqpack::runtime {

const char* PressureName(PressureLevel p) {
  switch (p) {
    case PressureLevel::kNormal:
      return "normal";
    case PressureLevel::kModerate:
      return "moderate";
    case PressureLevel::kCritical:
      return "critical";
  }
  return "normal";
}

PressureLevel PressureFromAndroidTrimLevel(int level) {
  // ComponentCallbacks2: RUNNING_MODERATE 5, RUNNING_LOW 10, RUNNING_CRITICAL
  // 15, UI_HIDDEN 20, BACKGROUND 40, MODERATE 60, COMPLETE 80.
  if (level >= 80 || level == 15) return PressureLevel::kCritical;
  if (level >= 60 || level == 10) return PressureLevel::kModerate;
  return PressureLevel::kNormal;
}

uint64_t DefaultReserve(uint64_t total) {
  constexpr uint64_t kMin = uint64_t{64} << 20;
  constexpr uint64_t kMax = uint64_t{1} << 30;
  return std::clamp<uint64_t>(total / 10, kMin, kMax);
}

namespace {

// The tightest of several readings, compared after adding back this
// process's share (`adjusted`).
struct Tightest {
  bool any = false;
  uint64_t adjusted = 0;
  uint64_t available = 0;
  uint64_t total = 0;  // 0: unknown (a host's figure)
  std::string source;

  void Offer(const std::string& name, uint64_t avail, uint64_t tot, uint64_t adj) {
    if (any && adj >= adjusted) return;
    any = true;
    adjusted = adj;
    available = avail;
    total = tot;
    source = name;
  }
  // The reserve: the one given, else the default for the binding total.
  uint64_t Reserve(const BudgetPolicyOptions& policy) const {
    if (policy.reserve > 0) return policy.reserve;
    return total > 0 ? DefaultReserve(total) : 0;
  }
};

}  // namespace

BudgetPolicy::BudgetPolicy(const BudgetPolicyOptions& options, std::vector<uint64_t> needs)
    : options_(options), needs_(std::move(needs)) {
  std::sort(needs_.begin(), needs_.end());
}

void BudgetPolicy::TransitionDone(double now) {
  last_transition_ = now;
  up_since_ = -1;
}

BudgetPolicy::Decision BudgetPolicy::Observe(double now, uint64_t effective, PressureLevel pressure,
                                             uint64_t current_need) {
  if (needs_.empty()) return {};
  const uint64_t min_need = needs_.front();
  if (pressure != PressureLevel::kNormal) up_since_ = -1;
  if (pressure == PressureLevel::kCritical) {
    if (current_need > min_need) return {min_need, "critical"};
    return {};
  }
  uint64_t cap = effective;
  const char* reason = "down";
  if (pressure == PressureLevel::kModerate && now - last_pressure_step_ >= options_.dwell_seconds &&
      current_need > min_need) {
    const auto stepped =
        static_cast<uint64_t>(static_cast<double>(current_need) * options_.pressure_step);
    if (stepped < cap) {
      cap = stepped;
      reason = "pressure";
      last_pressure_step_ = now;
    }
  }
  if (cap < current_need) {
    up_since_ = -1;
    if (current_need <= min_need) return {};  // nothing smaller to go to
    const auto aim = static_cast<uint64_t>(static_cast<double>(cap) * (1.0 - options_.headroom));
    return {std::max(aim, min_need), reason};
  }
  if (pressure != PressureLevel::kNormal) return {};
  const auto target =
      static_cast<uint64_t>(static_cast<double>(effective) / (1.0 + options_.hysteresis));
  // Is there a larger level the target covers?
  auto next = std::upper_bound(needs_.begin(), needs_.end(), current_need);
  if (next == needs_.end() || *next > target) {
    up_since_ = -1;
    return {};
  }
  if (up_since_ < 0) up_since_ = now;
  if (now - up_since_ >= options_.dwell_seconds &&
      now - last_transition_ >= options_.dwell_seconds) {
    up_since_ = -1;
    return {target, "up"};
  }
  return {};
}

Result<std::unique_ptr<MemoryGovernor>> MemoryGovernor::Open(Env* env, ResidencyManager* manager,
                                                             const GovernorOptions& options) {
  if (!manager->started()) {
    return Status::InvalidArgument("the memory governor needs a started residency manager");
  }
  std::unique_ptr<MemoryGovernor> g(new MemoryGovernor());
  g->env_ = env;
  g->manager_ = manager;
  g->options_ = options;
  if (options.os_sources) {
    FQ_ASSIGN_OR_RETURN(g->sources_, OpenSystemSources(env, options.root));
    if (options.psi_trigger) {
      // The tightest scope first: the cgroup's pressure, then the system's.
      std::vector<std::string> paths;
      for (auto it = g->sources_.rbegin(); it != g->sources_.rend(); ++it) {
        if (!(*it)->pressure_path().empty()) paths.push_back((*it)->pressure_path());
      }
      for (const std::string& path : paths) {
        for (const char* spec : {"some 150000 1000000", "some 300000 2000000"}) {
          auto trigger = env->OpenPressureTrigger(path, spec);
          if (trigger.ok()) {
            g->trigger_ = std::move(*trigger);
            g->state_.trigger = std::string("psi trigger \"") + spec + "\" on " + path;
            break;
          }
        }
        if (g->trigger_ != nullptr) break;
      }
    }
    if (g->trigger_ == nullptr) {
      g->state_.trigger =
          "polling every " +
          std::to_string(static_cast<int>(std::lround(options.poll_interval * 1000))) + " ms";
    }
  } else {
    g->state_.trigger = "host";
  }
  std::vector<uint64_t> needs;
  for (const ResidencyLevel& level : manager->levels()) {
    needs.push_back(level.footprint + manager->overhead());
  }
  g->policy_ = std::make_unique<BudgetPolicy>(options.policy, std::move(needs));
  g->seen_transitions_ = manager->stats().transitions;
  FQ_RETURN_IF_ERROR(g->PollOnce(g->Now()));
  return g;
}

MemoryGovernor::~MemoryGovernor() { Stop(); }

Result<GovernorState> MemoryGovernor::Probe(Env* env, const GovernorOptions& options) {
  FQ_ASSIGN_OR_RETURN(std::vector<std::unique_ptr<MemorySource>> sources,
                      OpenSystemSources(env, options.root));
  Tightest t;
  for (const std::unique_ptr<MemorySource>& source : sources) {
    FQ_ASSIGN_OR_RETURN(MemoryReading r, source->Read());
    t.Offer(r.source, r.available, r.total, r.available);
  }
  GovernorState st;
  st.source = t.source;
  st.available = t.available;
  st.reserve = t.Reserve(options.policy);
  st.effective = t.adjusted > st.reserve ? t.adjusted - st.reserve : 0;
  return st;
}

double MemoryGovernor::Now() const {
  if (options_.clock) return options_.clock();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Status MemoryGovernor::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return Status::OK();
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
  return Status::OK();
}

void MemoryGovernor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    kick_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MemoryGovernor::Loop() {
  const int poll_ms = std::max(1, static_cast<int>(std::lround(options_.poll_interval * 1000)));
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    Status s = PollOnce(Now());
    if (!s.ok()) Warn("memory governor: " + s.message());
    if (trigger_ != nullptr) {
      Result<bool> fired = trigger_->Wait(poll_ms);
      if (fired.ok() && *fired) {
        std::lock_guard<std::mutex> lock(mu_);
        psi_fired_at_ = Now();
      } else if (!fired.ok()) {
        Warn("memory governor: " + fired.status().message() + "; polling from now on");
        std::lock_guard<std::mutex> lock(mu_);
        trigger_.reset();
        state_.trigger = "polling";
      }
    } else {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_for(lock, std::chrono::milliseconds(poll_ms), [this] { return stop_ || kick_; });
      kick_ = false;
    }
  }
}

Status MemoryGovernor::PollOnce(double now) {
  std::lock_guard<std::mutex> poll_lock(poll_mu_);
  const ResidencyStats stats = manager_->stats();
  if (stats.transitions != seen_transitions_) {
    seen_transitions_ = stats.transitions;
    policy_->TransitionDone(now);
  }
  // This process's share of what the sources count as used (file comment).
  const uint64_t anon = stats.owned_bytes + stats.overhead_bytes;
  const uint64_t mapped =
      stats.resident_bytes > stats.owned_bytes ? stats.resident_bytes - stats.owned_bytes : 0;

  GovernorState next;
  Tightest t;
  PressureLevel pressure = PressureLevel::kNormal;
  Status status;
  for (const std::unique_ptr<MemorySource>& source : sources_) {
    Result<MemoryReading> r = source->Read();
    if (!r.ok()) {
      next.error = r.status().message();
      status = r.status();
      continue;
    }
    t.Offer(r->source, r->available, r->total,
            r->available + anon + (r->counts_own_mapped ? mapped : 0));
    if (r->pressure.has_value()) {
      if (r->pressure->full_avg10 >= kFullAvg10Critical) {
        pressure = PressureLevel::kCritical;
      } else if (r->pressure->some_avg10 >= kSomeAvg10Moderate) {
        pressure = std::max(pressure, PressureLevel::kModerate);
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (host_available_.has_value()) {
      t.Offer("host", *host_available_, 0, *host_available_ + anon);
    }
    pressure = std::max(pressure, host_pressure_);
    if (now - psi_fired_at_ < kPressureHoldSeconds) {
      pressure = std::max(pressure, PressureLevel::kModerate);
    }
    next.trigger = state_.trigger;
    next.requested = state_.requested;
    next.requests = state_.requests;
    next.reason = state_.reason;
  }
  if (!t.any) {
    // Nothing to go on (every source failed, or a host that has not
    // reported yet): keep the budget in force.
    std::lock_guard<std::mutex> lock(mu_);
    next.source = state_.source;
    next.pressure = pressure;
    state_ = std::move(next);
    return status;
  }
  next.source = t.source;
  next.available = t.available;
  next.reserve = t.Reserve(options_.policy);
  next.effective = t.adjusted > next.reserve ? t.adjusted - next.reserve : 0;
  next.pressure = pressure;
  const uint64_t current_need = stats.footprint + stats.overhead_bytes;
  const BudgetPolicy::Decision d = policy_->Observe(now, next.effective, pressure, current_need);
  next.below_minimum = next.effective < manager_->MinimumBudget();
  if (d.request > 0) {
    Status s = manager_->RequestBudget(std::max(d.request, manager_->MinimumBudget()));
    if (s.ok()) {
      next.requested = std::max(d.request, manager_->MinimumBudget());
      ++next.requests;
      next.reason = d.reason;
    } else {
      status = s;
    }
  }
  const uint64_t requested = next.requested;
  const bool asked = d.request > 0 && status.ok();
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = std::move(next);
  }
  if (asked && on_request_) on_request_(requested);
  return status;
}

void MemoryGovernor::TransitionDone() {
  std::lock_guard<std::mutex> poll_lock(poll_mu_);
  policy_->TransitionDone(Now());
  seen_transitions_ = manager_->stats().transitions;
}

void MemoryGovernor::ReportAvailableBytes(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    host_available_ = bytes;
  }
  Status s = PollOnce(Now());
  if (!s.ok()) Warn("memory governor: " + s.message());
}

void MemoryGovernor::ReportPressure(PressureLevel level) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    host_pressure_ = level;
  }
  Status s = PollOnce(Now());
  if (!s.ok()) Warn("memory governor: " + s.message());
}

void MemoryGovernor::ReportAndroidTrimLevel(int level) {
  ReportPressure(PressureFromAndroidTrimLevel(level));
}

GovernorState MemoryGovernor::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

}  // namespace fqpack::runtime
