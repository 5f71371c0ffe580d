#include "search/tree_search.h"

#include <algorithm>
#include <chrono>
#include <map>

namespace fqpack::search {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A path's end during the search.
struct Node {
  EqmState state;
  ChunkStates states;  // empty once no longer needed
  Score score;
  double metric = 0;
  uint64_t footprint = 0;
  double area = 0;  // so far
  int parent = -1;  // index in the previous level
  int chain = -1;
};

// What is kept of every level to trace the chosen path back.
struct Level {
  struct Entry {
    EqmState state;
    Score score;
    double metric;
    uint64_t footprint;
    int parent;
    int chain;
  };
  std::vector<Entry> entries;
};

// Slot by slot, lower rungs first. (A loop rather than vector's operator<,
// on which GCC 12 raises a false -Wstringop-overread.)
bool StateLess(const EqmState& a, const EqmState& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i] != b[i]) return a[i] < b[i];
  }
  return a.size() < b.size();
}

std::string StateKey(const EqmState& s) { return std::string(s.begin(), s.end()); }

}  // namespace

double RemainingArea(const Library& lib, const Sensitivity& sens, const EqmState& state,
                     double metric) {
  struct Move {
    bool held;
    double rate;
    uint64_t saved;
    int chain;
    int rung;
  };
  std::vector<Move> moves;
  const std::vector<SlotChain>& chains = lib.chains();
  for (size_t i = 0; i < chains.size(); ++i) {
    for (int r = state[i]; r < chains[i].moves(); ++r) {
      const uint64_t from = chains[i].rungs[static_cast<size_t>(r)].bytes;
      const uint64_t to = chains[i].rungs[static_cast<size_t>(r) + 1].bytes;
      moves.push_back({!chains[i].searched, MoveRate(lib, sens, static_cast<int>(i), r),
                       from > to ? from - to : 0, static_cast<int>(i), r});
    }
  }
  std::sort(moves.begin(), moves.end(), [](const Move& a, const Move& b) {
    if (a.held != b.held) return !a.held;
    if (a.rate != b.rate) return a.rate < b.rate;
    if (a.saved != b.saved) return a.saved > b.saved;
    if (a.chain != b.chain) return a.chain < b.chain;
    return a.rung < b.rung;
  });
  double m = metric, area = 0;
  for (const Move& mv : moves) {
    m += sens.Delta(mv.chain, mv.rung + 1) - sens.Delta(mv.chain, mv.rung);
    area += m * static_cast<double>(mv.saved);
  }
  return area;
}

Result<SearchResult> TreeSearch(const Library& lib, Evaluator* evaluator,
                                const SearchOptions& options) {
  if (options.stem < 1 || options.branch < 1) {
    return Status::InvalidArgument("--stem and --branch must be at least 1");
  }
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
  const Sensitivity& sens = result.sensitivity;

  const Clock::time_point t_search = Clock::now();
  const runtime::Hparams& hp = evaluator->hparams();
  const CalibSet& calib = evaluator->calib();
  // Activations of one EQM: every layer's input for every chunk, in floats.
  const uint64_t node_bytes = static_cast<uint64_t>(calib.tokens()) *
                              static_cast<uint64_t>(hp.n_embd) *
                              static_cast<uint64_t>(hp.n_layer + 1) * sizeof(float);
  result.kept_states =
      node_bytes * static_cast<uint64_t>(options.stem) * static_cast<uint64_t>(options.branch) <=
      options.max_state_bytes;

  std::vector<Node> beam(1);
  beam[0].state = lib.UpState();
  beam[0].states = evaluator->up_states();
  beam[0].score = evaluator->up_score();
  beam[0].metric = beam[0].score.Get(options.metric);
  beam[0].footprint = lib.Footprint(beam[0].state);
  std::vector<Level> levels(1);
  levels[0].entries.push_back(
      {beam[0].state, beam[0].score, beam[0].metric, beam[0].footprint, -1, -1});

  const int total = lib.total_moves();
  for (int step = 1; step <= total; ++step) {
    if (options.cancelled && options.cancelled()) return Status::Aborted("interrupted");
    StepTrace trace;
    // Distinct children in proposal order, each with the parents proposing it.
    struct Child {
      EqmState state;
      std::vector<std::pair<int, int>> proposers;  // (parent index, chain)
    };
    std::vector<Child> children;
    std::map<std::string, size_t> index;
    for (size_t p = 0; p < beam.size(); ++p) {
      trace.parents.push_back(beam[p].state);
      std::vector<int> ranked = RankMoves(lib, sens, beam[p].state);
      if (ranked.size() > static_cast<size_t>(options.branch)) ranked.resize(options.branch);
      for (int c : ranked) {
        EqmState s = beam[p].state;
        ++s[static_cast<size_t>(c)];
        auto [it, fresh] = index.emplace(StateKey(s), children.size());
        if (fresh) children.push_back({std::move(s), {}});
        children[it->second].proposers.emplace_back(static_cast<int>(p), c);
      }
      trace.moves.push_back(std::move(ranked));
    }
    if (children.empty()) {
      return Status::Corruption("search: no move left at step " + std::to_string(step) + " of " +
                                std::to_string(total));
    }
    std::vector<EvalJob> jobs;
    for (const Child& ch : children) {
      const Node& parent = beam[static_cast<size_t>(ch.proposers[0].first)];
      EvalJob job;
      job.state = &ch.state;
      job.parent_state = &parent.state;
      job.parent_states = &parent.states;
      job.keep_states = result.kept_states;
      jobs.push_back(job);
    }
    FQ_ASSIGN_OR_RETURN(std::vector<EvalResult> scored,
                        evaluator->Evaluate(jobs, options.cancelled));
    result.search_evaluations += static_cast<int64_t>(jobs.size());
    trace.evaluated = static_cast<int>(jobs.size());

    std::vector<Node> next;
    std::vector<double> estimate;
    for (size_t k = 0; k < children.size(); ++k) {
      Node n;
      n.state = children[k].state;
      n.score = scored[k].score;
      n.metric = n.score.Get(options.metric);
      n.footprint = lib.Footprint(n.state);
      n.states = std::move(scored[k].states);
      // The parent giving the smallest area (the first proposer on a tie).
      double best = 0;
      for (const auto& [p, c] : children[k].proposers) {
        const Node& par = beam[static_cast<size_t>(p)];
        const double area = par.area + n.metric * (static_cast<double>(par.footprint) -
                                                   static_cast<double>(n.footprint));
        if (n.parent < 0 || area < best) {
          best = area;
          n.parent = p;
          n.chain = c;
        }
      }
      n.area = best;
      estimate.push_back(n.area + RemainingArea(lib, sens, n.state, n.metric));
      next.push_back(std::move(n));
    }
    std::vector<size_t> order(next.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (estimate[a] != estimate[b]) return estimate[a] < estimate[b];
      if (next[a].footprint != next[b].footprint) return next[a].footprint < next[b].footprint;
      return StateLess(next[a].state, next[b].state);
    });
    if (order.size() > static_cast<size_t>(options.stem)) order.resize(options.stem);

    std::vector<Node> survivors;
    survivors.reserve(order.size());
    for (size_t k : order) survivors.push_back(std::move(next[k]));
    if (!result.kept_states) {
      // Evaluate the survivors again, now keeping their activations.
      std::vector<EvalJob> again;
      for (const Node& n : survivors) {
        const Node& parent = beam[static_cast<size_t>(n.parent)];
        again.push_back({&n.state, &parent.state, &parent.states, true});
      }
      FQ_ASSIGN_OR_RETURN(std::vector<EvalResult> rescored,
                          evaluator->Evaluate(again, options.cancelled));
      for (size_t k = 0; k < survivors.size(); ++k) {
        survivors[k].states = std::move(rescored[k].states);
      }
    }
    Level level;
    for (const Node& n : survivors) {
      trace.survivors.push_back(n.state);
      level.entries.push_back({n.state, n.score, n.metric, n.footprint, n.parent, n.chain});
    }
    levels.push_back(std::move(level));
    result.trace.push_back(std::move(trace));
    beam = std::move(survivors);
    if (options.progress) options.progress({SearchProgress::Phase::kSearch, step, total});
  }
  if (beam.size() != 1 || !lib.IsLow(beam[0].state)) {
    return Status::Corruption("search: the walk did not end at QM(n_low)");
  }
  result.area = beam[0].area;

  // The chosen path, traced back from QM(n_low).
  result.steps.resize(levels.size());
  int at = 0;
  for (size_t l = levels.size(); l-- > 0;) {
    const Level::Entry& e = levels[l].entries[static_cast<size_t>(at)];
    EnsembleStep& s = result.steps[l];
    s.state = e.state;
    s.chain = e.chain;
    s.footprint = e.footprint;
    s.score = e.score;
    s.metric = e.metric;
    at = e.parent;
  }
  result.search_seconds = SecondsSince(t_search);
  return result;
}

}  // namespace fqpack::search
