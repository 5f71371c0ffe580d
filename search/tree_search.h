// FlexQuant's tree search: a one-way walk from QM(n_up) to QM(n_low), one
// module per step, keeping #stem paths alive (a beam).
//
// Objective. An ensemble serves every memory budget between the footprints
// of QM(n_low) and QM(n_up), so a path is judged by the area under its
// metric-versus-footprint curve,
//   area = sum over steps i of metric_i * (footprint_{i-1} - footprint_i),
// the mean metric over all budgets times the range. The best path is the one
// with the smallest area. (Ordering independent moves by metric cost per
// byte, cheapest first, minimises this area when costs add up: the classic
// exchange argument. The search corrects that order where they do not.)
//
// One step. Each surviving path proposes its #branch best moves by
// sensitivity rank (RankMoves); every distinct child EQM is evaluated on the
// calibration tokens, reusing its parent's activations (SearchOptions::
// speedups: or a sibling's, and dropping a child as soon as its first chunks
// prove it cannot survive). A child reached from
// several paths is kept once, behind the parent that gives it the smallest
// area. Children are ranked by their estimated final area: the area so far
// plus the area of finishing the walk with the remaining moves in
// sensitivity order, each adding its sensitivity delta to the child's
// measured metric. The #stem lowest survive; ties go to more bytes saved,
// then to the state (slot by slot, lower rungs first), so the outcome never
// depends on timing. Every path makes one move per step, so after
// total_moves() steps all of them have arrived at QM(n_low) and one remains.
//
// Thread-safety: TreeSearch uses the Evaluator; one call at a time.
#ifndef FQPACK_SEARCH_TREE_SEARCH_H_
#define FQPACK_SEARCH_TREE_SEARCH_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "search/evaluator.h"
#include "search/ladder.h"
#include "search/sensitivity.h"

namespace fqpack::search {

struct SearchProgress {
  enum class Phase { kSensitivity, kSearch };
  Phase phase = Phase::kSensitivity;
  int64_t done = 0;  // sensitivity: EQM x chunk units; search: steps
  int64_t total = 0;
};

struct SearchOptions {
  int stem = 2;    // paths kept alive per step
  int branch = 4;  // moves each path proposes per step
  Metric metric = Metric::kKl;
  // Children's activations are kept for the next step when #stem x #branch
  // of them fit in this many bytes; otherwise the survivors are evaluated
  // again (same scores, more time).
  uint64_t max_state_bytes = uint64_t{1} << 30;
  // Exact speed-ups; false runs the plain search (to measure what they
  // save). The ensemble is the same either way, bit for bit:
  // - Wider reuse: each child starts from whichever kept EQM shares the
  //   longest run of unchanged layers with it: its parents, or the children
  //   of the step before (a child often differs from an evaluated sibling of
  //   its parent only in a later layer), kept one step longer when twice
  //   #stem x #branch of them fit in max_state_bytes.
  // - Early rejection: the #stem children that the sensitivity predicts
  //   best are scored first; the others a few chunks at a time. Per-chunk
  //   KL and NLL sums are never negative, so the chunks so far bound a
  //   child's metric from below, and its estimated area (increasing in the
  //   metric) too: once that bound is above the #stem-th best finished
  //   child's estimate, the child cannot survive and is dropped unfinished.
  bool speedups = true;
  // Polled often, from any thread; true stops the search with Aborted.
  std::function<bool()> cancelled;
  // Called from the calling thread (sensitivity: from worker threads, under
  // a lock).
  std::function<void(const SearchProgress&)> progress;
};

// One EQM of the ensemble.
struct EnsembleStep {
  EqmState state;
  int chain = -1;  // the slot (chain position) lowered to reach it; -1 for QM(n_up)
  uint64_t footprint = 0;
  Score score;
  double metric = 0;  // score.Get(options.metric)
};

// What one step of the search did (tests check #stem and #branch with it).
struct StepTrace {
  std::vector<EqmState> parents;        // the surviving paths expanded, best first
  std::vector<std::vector<int>> moves;  // per parent: the chains it proposed, in rank order
  int evaluated = 0;                    // distinct children evaluated
  int rejected = 0;                     // ... of them dropped unfinished (SearchOptions::speedups)
  std::vector<EqmState> survivors;      // best first
};

struct SearchResult {
  std::vector<EnsembleStep> steps;  // [0] is QM(n_up), back() QM(n_low)
  Sensitivity sensitivity;
  std::vector<StepTrace> trace;
  double area = 0;                 // of the chosen path (see the file comment)
  int64_t search_evaluations = 0;  // not counting the sensitivity analysis
  int64_t search_units = 0;        // (child, chunk) pairs scored by the search
  int64_t rejected_early = 0;      // children dropped unfinished
  double sensitivity_seconds = 0;
  double search_seconds = 0;
  bool kept_states = false;  // whether children's activations were kept
};

Result<SearchResult> TreeSearch(const Library& lib, Evaluator* evaluator,
                                const SearchOptions& options);

// The estimated area of finishing the walk from `state` at `metric` (see the
// file comment).
double RemainingArea(const Library& lib, const Sensitivity& sens, const EqmState& state,
                     double metric);

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_TREE_SEARCH_H_
