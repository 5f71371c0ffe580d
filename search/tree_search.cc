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

  const bool keep_siblings = options.speedups && result.kept_states &&
                             2 * node_bytes * static_cast<uint64_t>(options.stem) *
                                     static_cast<uint64_t>(options.branch) <=
                                 options.max_state_bytes;
  std::vector<Node> siblings;  // the last step's other finished children, with activations
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
    const size_t n_children = children.size();
    std::vector<Node> next(n_children);
    for (size_t k = 0; k < n_children; ++k) {
      next[k].state = children[k].state;
      next[k].footprint = lib.Footprint(next[k].state);
    }
    // The child's estimated final area at `metric`, and the parent that
    // gives it the smallest area so far (the first proposer on a tie).
    // Increasing in `metric`: every term is the metric plus a constant,
    // times a non-negative byte count.
    auto estimate_at = [&](size_t k, double metric, int* parent, int* chain, double* area) {
      const Node& n = next[k];
      double best = 0;
      int best_p = -1, best_c = -1;
      for (const auto& [p, c] : children[k].proposers) {
        const Node& par = beam[static_cast<size_t>(p)];
        const double a = par.area + metric * (static_cast<double>(par.footprint) -
                                              static_cast<double>(n.footprint));
        if (best_p < 0 || a < best) {
          best = a;
          best_p = p;
          best_c = c;
        }
      }
      if (parent != nullptr) *parent = best_p;
      if (chain != nullptr) *chain = best_c;
      if (area != nullptr) *area = best;
      return best + RemainingArea(lib, sens, n.state, metric);
    };
    std::vector<double> estimate(n_children, 0.0);
    std::vector<char> finished(n_children, 0);
    auto finish = [&](size_t k, const Score& score) {
      Node& n = next[k];
      n.score = score;
      n.metric = score.Get(options.metric);
      estimate[k] = estimate_at(k, n.metric, &n.parent, &n.chain, &n.area);
      finished[k] = 1;
    };
    // The kept EQM to start child k from: its first proposer, or with the
    // speed-ups whichever kept EQM leaves the most layers unchanged.
    auto source = [&](size_t k) {
      const Node* best = &beam[static_cast<size_t>(children[k].proposers[0].first)];
      if (!options.speedups) return best;
      int best_layer = evaluator->FirstChangedLayer(best->state, next[k].state);
      for (const std::vector<Node>* pool : {&beam, &siblings}) {
        for (const Node& cand : *pool) {
          if (cand.states.empty()) continue;
          const int l = evaluator->FirstChangedLayer(cand.state, next[k].state);
          if (l > best_layer) {
            best_layer = l;
            best = &cand;
          }
        }
      }
      return best;
    };
    auto job_for = [&](size_t k, int64_t begin, int64_t end) {
      const Node* from = source(k);
      EvalJob job;
      job.state = &next[k].state;
      job.parent_state = &from->state;
      job.parent_states = &from->states;
      job.keep_states = result.kept_states;
      job.chunk_begin = begin;
      job.chunk_end = end;
      return job;
    };
    const int64_t n_chunks = calib.chunks();
    if (!options.speedups) {
      std::vector<EvalJob> jobs;
      for (size_t k = 0; k < n_children; ++k) jobs.push_back(job_for(k, 0, -1));
      FQ_ASSIGN_OR_RETURN(std::vector<EvalResult> scored,
                          evaluator->Evaluate(jobs, options.cancelled));
      for (size_t k = 0; k < n_children; ++k) {
        next[k].states = std::move(scored[k].states);
        finish(k, scored[k].score);
      }
      result.search_units += static_cast<int64_t>(n_children) * n_chunks;
    } else {
      // Most promising first, by the sensitivity's prediction of the metric.
      std::vector<double> predicted(n_children);
      for (size_t k = 0; k < n_children; ++k) {
        const auto [p, c] = children[k].proposers[0];
        const Node& par = beam[static_cast<size_t>(p)];
        const int r = par.state[static_cast<size_t>(c)];
        const double m = par.metric + sens.Delta(c, r + 1) - sens.Delta(c, r);
        predicted[k] = estimate_at(k, m, nullptr, nullptr, nullptr);
      }
      std::vector<size_t> by_promise(n_children);
      for (size_t k = 0; k < n_children; ++k) by_promise[k] = k;
      std::stable_sort(by_promise.begin(), by_promise.end(),
                       [&](size_t a, size_t b) { return predicted[a] < predicted[b]; });
      // Per child: chunks scored so far and their sums, added in chunk
      // order exactly as Evaluate adds a whole range.
      std::vector<int64_t> at(n_children, 0);
      std::vector<double> kl_sum(n_children, 0.0), nll_sum(n_children, 0.0);
      std::vector<char> dropped(n_children, 0);
      const double scored_tokens = static_cast<double>(calib.scored());
      std::vector<size_t> batch(by_promise.begin(),
                                by_promise.begin() + std::min<size_t>(n_children, options.stem));
      int64_t span = n_chunks;  // the first batch in full: it sets the bar
      while (!batch.empty()) {
        std::vector<EvalJob> jobs;
        jobs.reserve(batch.size());
        for (size_t k : batch) jobs.push_back(job_for(k, at[k], std::min(n_chunks, at[k] + span)));
        FQ_ASSIGN_OR_RETURN(std::vector<EvalResult> scored,
                            evaluator->Evaluate(jobs, options.cancelled));
        for (size_t b = 0; b < batch.size(); ++b) {
          const size_t k = batch[b];
          EvalResult& got = scored[b];
          if (result.kept_states && next[k].states.empty()) {
            next[k].states.resize(static_cast<size_t>(n_chunks));
          }
          for (size_t i = 0; i < got.chunk_kl.size(); ++i) {
            const int64_t c = at[k] + static_cast<int64_t>(i);
            kl_sum[k] += got.chunk_kl[i];
            nll_sum[k] += got.chunk_nll[i];
            if (result.kept_states) {
              next[k].states[static_cast<size_t>(c)] =
                  std::move(got.states[static_cast<size_t>(c)]);
            }
          }
          at[k] += static_cast<int64_t>(got.chunk_kl.size());
          result.search_units += static_cast<int64_t>(got.chunk_kl.size());
          if (at[k] == n_chunks) {
            Score sc;
            sc.kl = kl_sum[k] / scored_tokens;
            sc.nll = nll_sum[k] / scored_tokens;
            finish(k, sc);
          }
        }
        // The bar: the #stem-th best finished estimate.
        std::vector<double> done_est;
        for (size_t k = 0; k < n_children; ++k) {
          if (finished[k]) done_est.push_back(estimate[k]);
        }
        const bool have_bar = done_est.size() >= static_cast<size_t>(options.stem);
        double bar = 0;
        if (have_bar) {
          std::nth_element(done_est.begin(), done_est.begin() + (options.stem - 1), done_est.end());
          bar = done_est[static_cast<size_t>(options.stem - 1)];
        }
        batch.clear();
        for (size_t k : by_promise) {
          if (finished[k] || dropped[k]) continue;
          if (have_bar && at[k] > 0) {
            Score lower;
            lower.kl = kl_sum[k] / scored_tokens;
            lower.nll = nll_sum[k] / scored_tokens;
            if (estimate_at(k, lower.Get(options.metric), nullptr, nullptr, nullptr) > bar) {
              dropped[k] = 1;
              next[k].states.clear();
              ++trace.rejected;
              continue;
            }
          }
          batch.push_back(k);
        }
        // Enough units per round to keep every thread busy, few enough to
        // stop a hopeless child early.
        const int64_t threads = evaluator->threads();
        span = batch.empty()
                   ? 1
                   : std::max<int64_t>(1, (threads + static_cast<int64_t>(batch.size()) - 1) /
                                              static_cast<int64_t>(batch.size()));
      }
      result.rejected_early += trace.rejected;
    }
    result.search_evaluations += static_cast<int64_t>(n_children);
    trace.evaluated = static_cast<int>(n_children);

    std::vector<size_t> order;
    for (size_t k = 0; k < next.size(); ++k) {
      if (finished[k]) order.push_back(k);
    }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (estimate[a] != estimate[b]) return estimate[a] < estimate[b];
      if (next[a].footprint != next[b].footprint) return next[a].footprint < next[b].footprint;
      return StateLess(next[a].state, next[b].state);
    });
    if (order.size() > static_cast<size_t>(options.stem)) order.resize(options.stem);

    std::vector<Node> survivors;
    survivors.reserve(order.size());
    for (size_t k : order) survivors.push_back(std::move(next[k]));
    // The other finished children stay one more step as sources (see
    // SearchOptions::speedups); the survivors' parents are in `beam` until then.
    std::vector<Node> kept_siblings;
    if (options.speedups && keep_siblings) {
      for (size_t k = 0; k < next.size(); ++k) {
        if (finished[k] && !next[k].states.empty()) kept_siblings.push_back(std::move(next[k]));
      }
    }
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
    siblings = std::move(kept_siblings);
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
