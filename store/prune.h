// FlexQuant pruning as garbage collection: rank the modules that only the
// ensemble's n_mid QMs hold by how the ensemble uses them, drop the lowest
// fraction (their QMs become partial), replace the ensemble by one repaired
// without them, all in one transaction; a sweep (gc.h) then frees the bytes.
//
// Ranking (README, "Pruning"): for a candidate module m, with N EQMs in the
// ensemble and F(e) the footprint of EQM e,
//   score(m) = (1/N) * sum over EQMs e that use m of (1 + (F_up - F(e)) / (F_up - F_low))
// so every use counts 1 and a use at the low-footprint end counts up to 2:
// modules the ensemble leans on when memory is tight are kept longest. The
// lowest scores go first; ties: the larger module first (more bytes freed),
// then the key. A candidate is a module that some n_mid QM of the ensemble
// holds and no other QM of the store does (so pruning it frees its bytes).
#ifndef FQPACK_STORE_PRUNE_H_
#define FQPACK_STORE_PRUNE_H_

#include <string>
#include <vector>

#include "store/store.h"

namespace fqpack::store {

struct PruneCandidate {
  ModuleKey key;
  int slot_idx = 0;
  std::vector<int64_t> qm_ids;  // the mid QMs that hold it
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
  int uses = 0;                  // EQMs that use it
  double low_weighted_uses = 0;  // sum of (F_up - F(e)) / (F_up - F_low) over those EQMs
  double score = 0;
};

// All candidates of the ensemble, in pruning order (first to go first).
Result<std::vector<PruneCandidate>> RankMidModules(Store* store, const EnsembleInfo& ensemble);

struct PrunePlan {
  EnsembleInfo ensemble;
  std::vector<PruneCandidate> ranked;  // every candidate, in pruning order
  size_t n_pruned = 0;                 // the first n_pruned of `ranked` go
  double fraction = 0;
  uint64_t store_bytes_before = 0;      // stored bytes of every blob of the store
  uint64_t store_bytes_after = 0;       // ... once the pruned modules are swept
  std::vector<int64_t> partial_qm_ids;  // mid QMs that lose modules
  std::vector<ModuleKey> pruned_keys() const;
};

// The plan that prunes the first `n` of `ranked` (a ranking of the
// ensemble's candidates, e.g. search's own), with its byte and QM totals.
Result<PrunePlan> PlanFirst(Store* store, const EnsembleInfo& ensemble,
                            std::vector<PruneCandidate> ranked, size_t n);

// Prune the fraction `p` (0..1) of the candidates (rounded to the nearest
// count).
Result<PrunePlan> PlanPrune(Store* store, const EnsembleInfo& ensemble, double p);

// The smallest pruning that brings the store's stored bytes to `cap` or
// below. InvalidArgument saying by how much when even pruning every
// candidate leaves the store above the cap.
Result<PrunePlan> PlanCap(Store* store, const EnsembleInfo& ensemble, uint64_t cap);

// Applies a plan in one transaction: the pruned modules leave their QMs
// (which are marked partial), and the ensemble's EQMs are replaced by
// `repaired` (which must not use a pruned module). The bytes are freed by
// the next Sweep.
Status ApplyPrune(Store* store, const PrunePlan& plan, const std::vector<NewEqm>& repaired,
                  const JsonFields& params);

}  // namespace fqpack::store

#endif  // FQPACK_STORE_PRUNE_H_
