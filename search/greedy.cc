#include "search/greedy.h"

#include <algorithm>
#include <chrono>
#include <queue>
#include <tuple>

namespace fqpack::search {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A hull segment of one curve: rungs from -> to, walked as one unit.
struct Segment {
  double rate;     // predicted cost per byte saved
  uint64_t saved;  // bytes
  int curve;
  int from, to;
};

// The queue's order: cheapest rate first, then more bytes, then the lower
// curve index, so the walk never depends on anything but the curves.
struct Later {
  bool operator()(const Segment& a, const Segment& b) const {
    return std::make_tuple(a.rate, -static_cast<double>(a.saved), a.curve) >
           std::make_tuple(b.rate, -static_cast<double>(b.saved), b.curve);
  }
};

}  // namespace

std::vector<int> LowerHull(const CostCurve& curve) {
  const int n = static_cast<int>(curve.bytes.size());
  std::vector<int> hull;
  if (n == 0) return hull;
  auto saved = [&](int r) { return static_cast<double>(curve.bytes[0] - curve.bytes[r]); };
  // From each vertex, the next one is the rung reached by the least slope
  // (the nearest on a tie, so collinear rungs stay vertices).
  int at = 0;
  hull.push_back(0);
  while (at < n - 1) {
    int best = at + 1;
    double best_slope = (curve.cost[best] - curve.cost[at]) / (saved(best) - saved(at));
    for (int r = at + 2; r < n; ++r) {
      const double slope = (curve.cost[r] - curve.cost[at]) / (saved(r) - saved(at));
      if (slope < best_slope) {
        best = r;
        best_slope = slope;
      }
    }
    hull.push_back(best);
    at = best;
  }
  return hull;
}

std::vector<int> GreedyOrder(const std::vector<CostCurve>& curves) {
  std::vector<std::vector<Segment>> segments(curves.size());
  for (size_t i = 0; i < curves.size(); ++i) {
    const CostCurve& c = curves[i];
    const std::vector<int> hull = LowerHull(c);
    for (size_t k = 1; k < hull.size(); ++k) {
      const int from = hull[k - 1], to = hull[k];
      const uint64_t saved = c.bytes[static_cast<size_t>(from)] - c.bytes[static_cast<size_t>(to)];
      const double rate = (c.cost[static_cast<size_t>(to)] - c.cost[static_cast<size_t>(from)]) /
                          static_cast<double>(saved);
      segments[i].push_back({rate, saved, static_cast<int>(i), from, to});
    }
  }
  std::vector<int> order;
  for (bool held : {false, true}) {
    // Each curve's next segment; a curve's hull slopes never fall, so its
    // segments leave the queue in its own order.
    std::priority_queue<Segment, std::vector<Segment>, Later> queue;
    std::vector<size_t> next(curves.size(), 0);
    for (size_t i = 0; i < curves.size(); ++i) {
      if (curves[i].held_back == held && !segments[i].empty()) queue.push(segments[i][0]);
    }
    while (!queue.empty()) {
      const Segment s = queue.top();
      queue.pop();
      for (int r = s.from; r < s.to; ++r) order.push_back(s.curve);
      const size_t i = static_cast<size_t>(s.curve);
      if (++next[i] < segments[i].size()) queue.push(segments[i][next[i]]);
    }
  }
  return order;
}

std::vector<CostCurve> CostCurves(const Library& lib, const Sensitivity& sens) {
  std::vector<CostCurve> curves;
  const std::vector<SlotChain>& chains = lib.chains();
  for (size_t i = 0; i < chains.size(); ++i) {
    CostCurve c;
    c.held_back = !chains[i].searched;
    for (size_t r = 0; r < chains[i].rungs.size(); ++r) {
      c.bytes.push_back(chains[i].rungs[r].bytes);
      c.cost.push_back(sens.Delta(static_cast<int>(i), static_cast<int>(r)));
    }
    curves.push_back(std::move(c));
  }
  return curves;
}

double PredictedArea(const std::vector<CostCurve>& curves, const std::vector<int>& order) {
  std::vector<size_t> rung(curves.size(), 0);
  double metric = 0, area = 0;
  for (int c : order) {
    const CostCurve& cv = curves[static_cast<size_t>(c)];
    size_t& r = rung[static_cast<size_t>(c)];
    metric += cv.cost[r + 1] - cv.cost[r];
    area += metric * static_cast<double>(cv.bytes[r] - cv.bytes[r + 1]);
    ++r;
  }
  return area;
}

Result<SearchResult> GreedySearch(const Library& lib, Evaluator* evaluator,
                                  const SearchOptions& options) {
  SearchResult result;
  const Clock::time_point t_sens = Clock::now();
  auto sens_progress = [&](int64_t done, int64_t total) {
    if (options.progress) {
      options.progress({SearchProgress::Phase::kSensitivity, done, total});
    }
  };
  FQ_ASSIGN_OR_RETURN(result.sensitivity, AnalyzeSensitivity(lib, evaluator, options.metric,
                                                             options.cancelled, sens_progress));
  result.sensitivity_seconds = SecondsSince(t_sens);

  const Clock::time_point t_walk = Clock::now();
  const std::vector<int> order = GreedyOrder(CostCurves(lib, result.sensitivity));
  const int total = lib.total_moves();
  if (static_cast<int>(order.size()) != total) {
    return Status::Corruption("greedy: " + std::to_string(order.size()) +
                              " moves, the library has " + std::to_string(total));
  }
  EnsembleStep first;
  first.state = lib.UpState();
  first.footprint = lib.Footprint(first.state);
  first.score = evaluator->up_score();
  first.metric = first.score.Get(options.metric);
  result.steps.push_back(first);
  // Only the current EQM's activations are kept: its successor differs in
  // one slot and recomputes from that slot's layer.
  ChunkStates states = evaluator->up_states();
  result.kept_states = true;
  for (int step = 1; step <= total; ++step) {
    if (options.cancelled && options.cancelled()) return Status::Aborted("interrupted");
    const EnsembleStep& prev = result.steps.back();
    const int c = order[static_cast<size_t>(step - 1)];
    const std::vector<int> movable = lib.MovableChains(prev.state);
    if (std::find(movable.begin(), movable.end(), c) == movable.end()) {
      return Status::Corruption("greedy: step " + std::to_string(step) + " moves slot " +
                                lib.chains()[static_cast<size_t>(c)].name +
                                ", which may not move there");
    }
    EnsembleStep s;
    s.state = prev.state;
    ++s.state[static_cast<size_t>(c)];
    s.chain = c;
    s.footprint = lib.Footprint(s.state);
    EvalJob job;
    job.state = &s.state;
    job.parent_state = &prev.state;
    job.parent_states = &states;
    job.keep_states = true;
    FQ_ASSIGN_OR_RETURN(std::vector<EvalResult> scored,
                        evaluator->Evaluate({job}, options.cancelled));
    s.score = scored[0].score;
    s.metric = s.score.Get(options.metric);
    states = std::move(scored[0].states);
    result.area +=
        s.metric * (static_cast<double>(prev.footprint) - static_cast<double>(s.footprint));
    result.steps.push_back(std::move(s));
    ++result.search_evaluations;
    if (options.progress) options.progress({SearchProgress::Phase::kSearch, step, total});
  }
  if (!lib.IsLow(result.steps.back().state)) {
    return Status::Corruption("greedy: the walk did not end at QM(n_low)");
  }
  result.search_seconds = SecondsSince(t_walk);
  return result;
}

}  // namespace fqpack::search
