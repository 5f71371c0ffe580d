#include "serve/budget_controller.h"

#include <utility>

namespace fqpack::serve {

BudgetController::BudgetController(runtime::ResidencyManager* residency, std::string initial_source,
                                   std::function<void()> wake)
    : residency_(residency), wake_(std::move(wake)), source_(std::move(initial_source)) {
  budget_ = residency_->stats().budget;
}

BudgetController::~BudgetController() { Stop(); }

Result<BudgetChoice> BudgetController::SetFixed(uint64_t bytes) {
  FQ_ASSIGN_OR_RETURN(int level, residency_->LevelForBudget(bytes));
  {
    std::lock_guard<std::mutex> l(mu_);
    FQ_RETURN_IF_ERROR(residency_->RequestBudget(bytes));
    source_ = "fixed";
    budget_ = bytes;
  }
  if (wake_) wake_();
  const runtime::ResidencyLevel& lv = residency_->levels()[static_cast<size_t>(level)];
  return BudgetChoice{bytes, level, lv.label, lv.step, lv.footprint};
}

Status BudgetController::SetAuto(uint64_t reserve) {
  return Status::NotSupported(
      "an automatic budget needs the memory governor (runtime/memory_governor.h), which this "
      "build does not have yet; set a budget in bytes instead");
}

BudgetState BudgetController::State() const {
  BudgetState s;
  {
    std::lock_guard<std::mutex> l(mu_);
    s.source = source_;
    s.budget = budget_;
  }
  s.stats = residency_->stats();
  s.minimum_budget = residency_->MinimumBudget();
  s.pending = residency_->has_pending_budget();
  return s;
}

void BudgetController::Stop() {}

}  // namespace fqpack::serve
