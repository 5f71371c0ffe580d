// `fqpack gc --prune P | --cap SIZE` as a library call: plan which n_mid
// modules go (store/prune.h ranks them), repair the ensemble by searching
// its library again without them, and apply both in one transaction; the
// caller then sweeps (store/gc.h) to free the bytes.
//
// The repair re-runs the tree search with the parameters and calibration
// text the ensemble was built with (its row keeps both), over the same QMs
// with the pruned modules taken out of their slots' chains, so the repaired
// ensemble still steps down one module at a time from QM(n_up) to QM(n_low).
// Its calibration metric at each static QM's footprint, before and after,
// is the predicted quality change (`--dry-run` runs the search and applies
// nothing).
//
// Thread-safety: like SearchEnsemble, one call per Store at a time.
#ifndef FQPACK_SEARCH_PRUNE_H_
#define FQPACK_SEARCH_PRUNE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "search/ensemble.h"
#include "store/prune.h"

namespace fqpack::search {

struct PruneRequest {
  std::string model;     // "" when the store holds one model
  std::string ensemble;  // "" : the model's newest ensemble
  double fraction = 0;   // used when cap == 0
  uint64_t cap = 0;      // > 0: the smallest pruning that meets it
  bool dry_run = false;
  int threads = 1;
  std::function<bool()> cancelled;
  std::function<void(const SearchProgress&)> progress;
};

// The ensemble at one static QM's footprint, before and after.
struct PruneQuality {
  std::string label;
  uint64_t static_footprint = 0;
  int before_step = -1;  // the EQM at or below the footprint; -1: none
  double before_metric = 0;
  double before_ppl = 0;  // calibration perplexity
  int after_step = -1;
  double after_metric = 0;
  double after_ppl = 0;
  double ppl_change_pct() const { return 100.0 * (after_ppl / before_ppl - 1.0); }
};

struct PruneOutcome {
  store::PrunePlan plan;
  std::string metric;  // "kl" or "ppl": what *_metric holds
  size_t eqms_before = 0;
  size_t eqms_after = 0;
  std::vector<PruneQuality> quality;
  double search_seconds = 0;
  bool applied = false;
};

Result<PruneOutcome> PruneEnsemble(store::Store* store, const PruneRequest& request);

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_PRUNE_H_
