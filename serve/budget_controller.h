// Who chooses the memory budget of a served model: a fixed budget set over
// HTTP (or on the command line), or the memory the OS has free (auto). The
// controller turns each choice into ResidencyManager::RequestBudget and
// wakes the owner thread so an idle model moves at once; a generating one
// moves between two tokens (runtime/elastic.h).
//
// Ownership and thread-safety: the controller borrows the residency manager
// (which must outlive it) and may be called from any thread; `wake` is
// called on the thread that asked, after each request.
#ifndef FQPACK_SERVE_BUDGET_CONTROLLER_H_
#define FQPACK_SERVE_BUDGET_CONTROLLER_H_

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "runtime/residency.h"
#include "schema/status.h"

namespace fqpack::serve {

// The level a budget asked for.
struct BudgetChoice {
  uint64_t budget = 0;
  int level = -1;
  std::string label;  // "eqm:3"
  int step = -1;
  uint64_t footprint = 0;
};

struct BudgetState {
  // "fixed" (a budget in bytes), "auto" (the OS's free memory), or "none"
  // (the level chosen at start: the largest, or --eqm).
  std::string source;
  uint64_t budget = 0;  // the budget last requested; 0 for "none"
  runtime::ResidencyStats stats;
  uint64_t minimum_budget = 0;
  bool pending = false;  // requested, not yet applied by the owner
};

class BudgetController {
 public:
  BudgetController(runtime::ResidencyManager* residency, std::string initial_source,
                   std::function<void()> wake);
  ~BudgetController();
  BudgetController(const BudgetController&) = delete;
  BudgetController& operator=(const BudgetController&) = delete;

  // A budget in bytes from now on (and no more auto): InvalidArgument giving
  // the minimum when no level fits.
  Result<BudgetChoice> SetFixed(uint64_t bytes);
  // Follow the OS's free memory, keeping `reserve` bytes of it for others.
  // NotSupported: this build has no memory governor yet.
  Status SetAuto(uint64_t reserve);
  BudgetState State() const;
  // Ends auto mode (the governor's thread); the last budget stays.
  void Stop();

 private:
  runtime::ResidencyManager* residency_;
  std::function<void()> wake_;
  mutable std::mutex mu_;  // guards the fields below
  std::string source_;
  uint64_t budget_ = 0;
};

}  // namespace fqpack::serve

#endif  // FQPACK_SERVE_BUDGET_CONTROLLER_H_
