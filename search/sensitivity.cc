#include "search/sensitivity.h"

#include <algorithm>

namespace fqpack::search {

double MoveRate(const Library& lib, const Sensitivity& sens, int chain, int rung) {
  const SlotChain& c = lib.chains()[static_cast<size_t>(chain)];
  const uint64_t from = c.rungs[static_cast<size_t>(rung)].bytes;
  const uint64_t to = c.rungs[static_cast<size_t>(rung) + 1].bytes;
  const double saved = from > to ? static_cast<double>(from - to) : 1.0;
  return (sens.Delta(chain, rung + 1) - sens.Delta(chain, rung)) / saved;
}

std::vector<int> RankMoves(const Library& lib, const Sensitivity& sens, const EqmState& state) {
  std::vector<int> moves = lib.MovableChains(state);
  struct Key {
    double rate;
    uint64_t saved;
    int chain;
  };
  std::vector<Key> keys;
  keys.reserve(moves.size());
  for (int c : moves) {
    const SlotChain& ch = lib.chains()[static_cast<size_t>(c)];
    const int r = state[static_cast<size_t>(c)];
    keys.push_back(
        {MoveRate(lib, sens, c, r),
         ch.rungs[static_cast<size_t>(r)].bytes - ch.rungs[static_cast<size_t>(r) + 1].bytes, c});
  }
  std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    if (a.rate != b.rate) return a.rate < b.rate;
    if (a.saved != b.saved) return a.saved > b.saved;
    return a.chain < b.chain;
  });
  std::vector<int> out;
  out.reserve(keys.size());
  for (const Key& k : keys) out.push_back(k.chain);
  return out;
}

Result<Sensitivity> AnalyzeSensitivity(const Library& lib, Evaluator* evaluator, Metric metric,
                                       const std::function<bool()>& cancelled,
                                       const std::function<void(int64_t, int64_t)>& progress) {
  Sensitivity sens;
  sens.metric = metric;
  const std::vector<SlotChain>& chains = lib.chains();
  sens.scores.resize(chains.size());
  std::vector<EqmState> states;
  std::vector<std::pair<size_t, size_t>> where;
  const EqmState up = lib.UpState();
  for (size_t i = 0; i < chains.size(); ++i) {
    sens.scores[i].assign(chains[i].rungs.size(), evaluator->up_score());
    for (size_t r = 1; r < chains[i].rungs.size(); ++r) {
      EqmState s = up;
      s[i] = static_cast<uint8_t>(r);
      states.push_back(std::move(s));
      where.emplace_back(i, r);
    }
  }
  std::vector<EvalJob> jobs;
  for (const EqmState& s : states) {
    EvalJob job;
    job.state = &s;
    job.parent_state = &up;
    job.parent_states = &evaluator->up_states();
    jobs.push_back(job);
  }
  FQ_ASSIGN_OR_RETURN(std::vector<EvalResult> results,
                      evaluator->Evaluate(jobs, cancelled, progress));
  for (size_t k = 0; k < results.size(); ++k) {
    sens.scores[where[k].first][where[k].second] = results[k].score;
  }
  sens.evaluations = static_cast<int64_t>(jobs.size());
  return sens;
}

}  // namespace fqpack::search
