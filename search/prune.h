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
// Two rankings choose what goes. `uses` is store/prune.h's (the paper's: how
// often, and how near the low end, the ensemble uses a module). `area` asks
// what the ensemble loses: it runs the sensitivity analysis once and models
// the walk the search would make from it (PredictedArea), then drops, one at
// a time, the candidate whose removal raises the area under that predicted
// metric-versus-footprint curve the least per byte freed, re-estimating
// after each. A rung that its neighbours make redundant (a Q6_K module
// between Q8_0 and Q5_K whose cost per byte lies on their line) costs
// almost nothing, however often the ensemble used it; a module whose rung
// has no stand-in near it costs much, however rarely it was used.
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

enum class PruneRanking { kUses, kArea };
const char* PruneRankingName(PruneRanking r);  // "uses", "area"
Result<PruneRanking> ParsePruneRanking(const std::string& name);

// One slot's chain as the area ranking models it: per rung, its bytes and
// its sensitivity delta (the metric with only this slot at this rung, minus
// QM(n_up)'s). Rung 0 and the last rung are never pruned.
struct PredictedChain {
  std::vector<uint64_t> bytes;
  std::vector<double> delta;
  bool held = false;  // moves only once every other chain is done (ladder.h)
};

// The area under the metric-versus-footprint curve of the walk the search
// would make with stem 1 and branch 1 over the rungs with keep[chain][rung]
// set (the first and last rungs always count as kept): from the top, take
// the move to the next kept rung of least delta increase per byte saved
// (ties: more bytes, then the lower chain), the metric adding up the
// deltas; area = sum over moves of metric after it x bytes it saves.
double PredictedArea(const std::vector<PredictedChain>& chains,
                     const std::vector<std::vector<char>>& keep);

// A module the area ranking may drop: the (chain, rung) places it holds
// (none when no chain uses it) and the bytes pruning it frees.
struct AreaCandidate {
  std::vector<std::pair<int, int>> places;
  uint64_t bytes = 0;
};

// Candidates in pruning order, greedily: each time the one whose removal
// raises PredictedArea the least per byte freed (ties: more bytes, then
// the lower index). `cost`, when given, receives each one's area increase
// per byte at the time it was chosen, in the same order.
std::vector<size_t> AreaPruneOrder(const std::vector<PredictedChain>& chains,
                                   const std::vector<AreaCandidate>& candidates,
                                   std::vector<double>* cost = nullptr);

struct PruneRequest {
  std::string model;     // "" when the store holds one model
  std::string ensemble;  // "" : the model's newest ensemble
  double fraction = 0;   // used when cap == 0
  uint64_t cap = 0;      // > 0: the smallest pruning that meets it
  bool dry_run = false;
  PruneRanking ranking = PruneRanking::kArea;
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
  PruneRanking ranking = PruneRanking::kArea;
  double ranking_seconds = 0;  // the area ranking's sensitivity analysis
  size_t eqms_before = 0;
  size_t eqms_after = 0;
  std::vector<PruneQuality> quality;
  double search_seconds = 0;
  bool applied = false;
};

Result<PruneOutcome> PruneEnsemble(store::Store* store, const PruneRequest& request);

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_PRUNE_H_
