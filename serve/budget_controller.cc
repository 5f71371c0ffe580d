#include "serve/budget_controller.h"

#include <utility>

namespace fqpack::serve {

BudgetController::BudgetController(Env* env, runtime::ResidencyManager* residency,
                                   std::string initial_source, runtime::GovernorOptions governor,
                                   std::function<void()> wake)
    : env_(env),
      residency_(residency),
      governor_options_(std::move(governor)),
      wake_(std::move(wake)),
      source_(std::move(initial_source)) {
  budget_ = residency_->stats().budget;
}

BudgetController::~BudgetController() { Stop(); }

Result<BudgetChoice> BudgetController::SetFixed(uint64_t bytes) {
  FQ_ASSIGN_OR_RETURN(int level, residency_->LevelForBudget(bytes));
  {
    std::lock_guard<std::mutex> l(mu_);
    // The governor stops first, so no request of its own follows this one.
    if (governor_) {
      governor_->Stop();
      governor_.reset();
    }
    FQ_RETURN_IF_ERROR(residency_->RequestBudget(bytes));
    source_ = "fixed";
    budget_ = bytes;
  }
  if (wake_) wake_();
  const runtime::ResidencyLevel& lv = residency_->levels()[static_cast<size_t>(level)];
  return BudgetChoice{bytes, level, lv.label, lv.step, lv.footprint};
}

Status BudgetController::SetAuto(uint64_t reserve) {
  runtime::GovernorOptions o = governor_options_;
  o.policy.reserve = reserve;
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<runtime::MemoryGovernor> g,
                      runtime::MemoryGovernor::Open(env_, residency_, o));
  g->set_on_request([this](uint64_t) {
    if (wake_) wake_();
  });
  std::lock_guard<std::mutex> l(mu_);
  if (governor_) {
    governor_->Stop();
    governor_.reset();
  }
  // Its first reading decides at once (down when the system is short).
  FQ_RETURN_IF_ERROR(g->Start());
  governor_ = std::move(g);
  source_ = "auto";
  return Status::OK();
}

void BudgetController::TransitionDone() {
  std::lock_guard<std::mutex> l(mu_);
  if (governor_) governor_->TransitionDone();
}

BudgetState BudgetController::State() const {
  BudgetState s;
  {
    std::lock_guard<std::mutex> l(mu_);
    s.source = source_;
    s.budget = budget_;
    if (governor_) {
      s.governor = governor_->state();
      s.budget = s.governor->requested;
    }
  }
  s.stats = residency_->stats();
  if (s.governor && s.budget == 0) s.budget = s.stats.budget;  // it has asked for nothing yet
  s.minimum_budget = residency_->MinimumBudget();
  s.pending = residency_->has_pending_budget();
  return s;
}

void BudgetController::Stop() {
  std::lock_guard<std::mutex> l(mu_);
  if (governor_) governor_->Stop();
  governor_.reset();
}

}  // namespace fqpack::serve
