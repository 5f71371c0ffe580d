// FlexQuant's sensitivity analysis: for every slot and every lower module of
// its chain, the calibration metric of QM(n_up) with only that slot lowered
// to that module. A move of a slot from rung a to rung b (a < b) is then
// estimated to cost delta(b) - delta(a) in the metric, where delta(r) is the
// measured metric at rung r minus QM(n_up)'s, and to save bytes(a) -
// bytes(b). Moves are ranked by estimated cost per byte saved, cheapest
// first.
//
// Thread-safety: the functions are reentrant; an Evaluator is used by one
// caller at a time.
#ifndef FQPACK_SEARCH_SENSITIVITY_H_
#define FQPACK_SEARCH_SENSITIVITY_H_

#include <functional>
#include <vector>

#include "search/evaluator.h"
#include "search/ladder.h"

namespace fqpack::search {

struct Sensitivity {
  Metric metric = Metric::kKl;
  // scores[chain][rung]: the score with only that chain at that rung;
  // [chain][0] is QM(n_up)'s score.
  std::vector<std::vector<Score>> scores;
  int64_t evaluations = 0;

  // delta(r) above, in the metric.
  double Delta(int chain, int rung) const {
    return scores[static_cast<size_t>(chain)][static_cast<size_t>(rung)].Get(metric) -
           scores[static_cast<size_t>(chain)][0].Get(metric);
  }
};

// The estimated metric increase per byte saved of moving `chain` from `rung`
// to rung + 1. A move that saves no bytes ranks as if it saved one.
double MoveRate(const Library& lib, const Sensitivity& sens, int chain, int rung);

// Ranks the moves available in `state` (Library::MovableChains): by
// MoveRate ascending; ties by more bytes saved, then by chain position.
// Returns chain positions.
std::vector<int> RankMoves(const Library& lib, const Sensitivity& sens, const EqmState& state);

// Evaluates every lower rung of every chain that moves (one EQM each,
// reusing QM(n_up)'s activations up to the slot's layer).
Result<Sensitivity> AnalyzeSensitivity(
    const Library& lib, Evaluator* evaluator, Metric metric,
    const std::function<bool()>& cancelled = nullptr,
    const std::function<void(int64_t done, int64_t total)>& progress = nullptr);

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_SENSITIVITY_H_
