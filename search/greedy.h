// A greedy mixed-precision allocator: the baseline the tree search is
// measured against.
//
// From the sensitivity analysis alone (no evaluation decides anything), each
// slot's predicted cost curve is delta(r) (search/sensitivity.h) against the
// bytes saved, bytes(0) - bytes(r). The allocator starts at QM(n_up) and
// repeatedly takes the slot whose next move costs the least predicted metric
// per byte saved. That is optimal when the slots' costs add up and every
// curve is convex: each prefix of the walk then has the least predicted cost
// of all EQMs at most its footprint (a Lagrangian argument), and the walk has
// the least predicted area under the metric-versus-footprint curve (ordering
// by cost per byte is Smith's rule).
//
// A chain whose curve is not convex (a mid module that costs more than the
// next lower one would suggest) is walked along the lower convex hull of its
// curve: the rungs under the hull are passed through on the way to the next
// hull vertex, one module per step, as one unit whose rate is the hull
// segment's slope. For chains that is what the optimal order under
// precedence constraints does (Sidney's decomposition: the hull segments are
// the chain's ratio-maximal initial pieces), so the walk still has the least
// predicted area, and the EQMs at hull vertices are the optimal allocator's.
//
// Held-back slots (search/ladder.h) move after every searched slot, in the
// same order among themselves. Each EQM of the walk is then evaluated once
// on the calibration tokens, reusing the previous EQM's activations, so the
// stored ensemble carries measured metrics like the tree search's.
//
// Thread-safety: the pure functions are reentrant; GreedySearch uses the
// Evaluator, one call at a time.
#ifndef FQPACK_SEARCH_GREEDY_H_
#define FQPACK_SEARCH_GREEDY_H_

#include <cstdint>
#include <vector>

#include "search/evaluator.h"
#include "search/ladder.h"
#include "search/sensitivity.h"
#include "search/tree_search.h"

namespace fqpack::search {

// One slot's predicted cost curve: bytes[r] and cost[r] at rung r, bytes
// strictly decreasing, cost[0] the reference (usually 0).
struct CostCurve {
  std::vector<uint64_t> bytes;
  std::vector<double> cost;
  bool held_back = false;  // moves only after every other curve has ended
};

// The rungs on the lower convex hull of (bytes[0] - bytes[r], cost[r]): 0
// first, the last rung last. Of collinear vertices every one is kept, so a
// convex curve keeps all its rungs.
std::vector<int> LowerHull(const CostCurve& curve);

// The greedy walk over `curves`: per step, the index of the curve moved one
// rung down. Hull segments by slope ascending (ties: more bytes saved, then
// the lower curve index), the rungs of a segment consecutively; held-back
// curves after the others.
std::vector<int> GreedyOrder(const std::vector<CostCurve>& curves);

// Each chain's curve from the sensitivity analysis (cost = Delta).
std::vector<CostCurve> CostCurves(const Library& lib, const Sensitivity& sens);

// The area that `order` predicts from `curves`: the sum over steps of the
// predicted total cost after the step times the bytes the step saves (the
// tree search's objective, search/tree_search.h).
double PredictedArea(const std::vector<CostCurve>& curves, const std::vector<int>& order);

// Sensitivity analysis, the greedy walk, and one evaluation per EQM. Uses
// options.metric, cancelled and progress (stem and branch do not apply). The
// result's trace is empty; search_evaluations counts the walk's EQMs.
Result<SearchResult> GreedySearch(const Library& lib, Evaluator* evaluator,
                                  const SearchOptions& options);

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_GREEDY_H_
