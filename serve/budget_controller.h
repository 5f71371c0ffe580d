// Who chooses the memory budget of a served model: a fixed budget set over
// HTTP (or on the command line), or the memory the OS has free (auto: a
// runtime::MemoryGovernor, runtime/memory_governor.h). The controller turns
// each choice into ResidencyManager::RequestBudget and wakes the owner
// thread so an idle model moves at once; a generating one moves between two
// tokens (runtime/elastic.h).
//
// Ownership and thread-safety: the controller borrows the residency manager
// (which must outlive it) and owns the governor while in auto mode. Every
// method may be called from any thread; `wake` is called on the thread that
// asked (the governor's watcher thread in auto mode), after each request.
#ifndef FQPACK_SERVE_BUDGET_CONTROLLER_H_
#define FQPACK_SERVE_BUDGET_CONTROLLER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/memory_governor.h"
#include "runtime/residency.h"
#include "schema/env.h"
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
  bool pending = false;                            // requested, not yet applied by the owner
  std::optional<runtime::GovernorState> governor;  // in auto mode
};

class BudgetController {
 public:
  // `governor` is the template of auto mode's governor (its root, poll
  // interval, policy; SetAuto sets the reserve).
  BudgetController(Env* env, runtime::ResidencyManager* residency, std::string initial_source,
                   runtime::GovernorOptions governor, std::function<void()> wake);
  ~BudgetController();
  BudgetController(const BudgetController&) = delete;
  BudgetController& operator=(const BudgetController&) = delete;

  // A budget in bytes from now on (and no more auto): InvalidArgument giving
  // the minimum when no level fits.
  Result<BudgetChoice> SetFixed(uint64_t bytes);
  // Follow the OS's free memory, keeping `reserve` bytes of it for others
  // (0: the governor's default). Errors of the governor's sources (NotFound
  // naming a file it cannot read) leave the mode as it was.
  Status SetAuto(uint64_t reserve);
  // The owner thread finished a transition (the governor waits a dwell
  // before going up again).
  void TransitionDone();
  BudgetState State() const;
  // Ends auto mode (joins the governor's thread); the last budget stays.
  void Stop();

 private:
  Env* env_;
  runtime::ResidencyManager* residency_;
  runtime::GovernorOptions governor_options_;
  std::function<void()> wake_;
  mutable std::mutex mu_;  // guards the fields below
  std::string source_;
  uint64_t budget_ = 0;
  std::unique_ptr<runtime::MemoryGovernor> governor_;
};

}  // namespace fqpack::serve

#endif  // FQPACK_SERVE_BUDGET_CONTROLLER_H_
