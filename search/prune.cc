#include "search/prune.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <set>

#include "search/report.h"

namespace fqpack::search {
namespace {

Result<int64_t> IntParam(const store::JsonFields& params, const std::string& key) {
  std::optional<int64_t> v = params.Int(key);
  if (!v) {
    return Status::Corruption("the ensemble's search parameters have no integer '" + key +
                              "': " + store::ToJson(params));
  }
  return *v;
}

struct Point {
  int step = 0;
  uint64_t footprint = 0;
  double metric = 0;
  double ppl = 0;
};

// The point with the largest footprint at or below `footprint`.
const Point* AtOrBelow(const std::vector<Point>& points, uint64_t footprint) {
  const Point* best = nullptr;
  for (const Point& p : points) {
    if (p.footprint <= footprint && (best == nullptr || p.footprint > best->footprint)) best = &p;
  }
  return best;
}

// The search that repairs `ensemble` (and, with sensitivity_only, the area
// ranking's sensitivity analysis): its own library, parameters and
// calibration text.
Result<SearchRequest> RepairRequest(store::Store* store, const store::ModelInfo& model,
                                    const store::EnsembleInfo& ensemble,
                                    const PruneRequest& request, Metric metric) {
  const std::vector<std::string>& labels = ensemble.library;
  if (labels.size() < 2) {
    return Status::Corruption("ensemble '" + ensemble.name +
                              "': its library names fewer than two QMs");
  }
  SearchRequest req;
  req.model = model.name;
  req.up = labels.front();
  req.low = labels.back();
  req.mids.assign(labels.begin() + 1, labels.end() - 1);
  req.name = ensemble.name;
  req.include_embed = ensemble.params.Bool("include_embed");
  FQ_ASSIGN_OR_RETURN(req.calib_text, store->catalog().CalibText(ensemble.id));
  FQ_ASSIGN_OR_RETURN(req.tokens, IntParam(ensemble.params, "tokens"));
  FQ_ASSIGN_OR_RETURN(req.n_ctx, IntParam(ensemble.params, "n_ctx"));
  // Only a greedy ensemble is repaired greedily; any other (no "method",
  // or a tool's own) the way it always was, by the tree search.
  req.method = ensemble.params.String("method") == SearchMethodName(SearchMethod::kGreedy)
                   ? SearchMethod::kGreedy
                   : SearchMethod::kTree;
  if (req.method == SearchMethod::kTree) {
    FQ_ASSIGN_OR_RETURN(int64_t stem, IntParam(ensemble.params, "stem"));
    FQ_ASSIGN_OR_RETURN(int64_t branch, IntParam(ensemble.params, "branch"));
    req.search.stem = static_cast<int>(stem);
    req.search.branch = static_cast<int>(branch);
  }
  req.search.metric = metric;
  req.search.cancelled = request.cancelled;
  req.search.progress = request.progress;
  req.threads = request.threads;
  req.allow_partial_mids = true;
  req.write = false;
  return req;
}

// The candidates of store::RankMidModules reordered by AreaPruneOrder; each
// one's score becomes its area increase per byte.
Result<std::vector<store::PruneCandidate>> RankByArea(store::Store* store,
                                                      const store::ModelInfo& model,
                                                      const store::EnsembleInfo& ensemble,
                                                      const PruneRequest& request, Metric metric) {
  FQ_ASSIGN_OR_RETURN(std::vector<store::PruneCandidate> cands,
                      store::RankMidModules(store, ensemble));
  FQ_ASSIGN_OR_RETURN(SearchRequest req, RepairRequest(store, model, ensemble, request, metric));
  req.sensitivity_only = true;
  FQ_ASSIGN_OR_RETURN(SearchOutcome sens, SearchEnsemble(store, req));
  const Sensitivity& s = sens.result.sensitivity;
  std::vector<PredictedChain> chains(sens.chains.size());
  std::map<store::ModuleKey, std::vector<std::pair<int, int>>> places;
  for (size_t i = 0; i < sens.chains.size(); ++i) {
    const SlotChain& c = sens.chains[i];
    chains[i].held = !c.searched;
    for (size_t r = 0; r < c.rungs.size(); ++r) {
      chains[i].bytes.push_back(c.rungs[r].bytes);
      chains[i].delta.push_back(s.Delta(static_cast<int>(i), static_cast<int>(r)));
      places[c.rungs[r].key].emplace_back(static_cast<int>(i), static_cast<int>(r));
    }
  }
  std::vector<AreaCandidate> area_cands;
  for (const store::PruneCandidate& c : cands) {
    AreaCandidate a;
    a.bytes = c.stored_bytes;
    if (auto it = places.find(c.key); it != places.end()) a.places = it->second;
    area_cands.push_back(std::move(a));
  }
  std::vector<double> cost;
  const std::vector<size_t> order = AreaPruneOrder(chains, area_cands, &cost);
  std::vector<store::PruneCandidate> ranked;
  for (size_t k = 0; k < order.size(); ++k) {
    ranked.push_back(cands[order[k]]);
    ranked.back().score = cost[k];
  }
  return ranked;
}

}  // namespace

const char* PruneRankingName(PruneRanking r) { return r == PruneRanking::kUses ? "uses" : "area"; }

Result<PruneRanking> ParsePruneRanking(const std::string& name) {
  if (name == "uses") return PruneRanking::kUses;
  if (name == "area") return PruneRanking::kArea;
  return Status::InvalidArgument("unknown ranking '" + name + "' (area or uses)");
}

double PredictedArea(const std::vector<PredictedChain>& chains,
                     const std::vector<std::vector<char>>& keep) {
  std::vector<size_t> at(chains.size(), 0);
  // The next kept rung below `r` of chain i (the last rung always).
  auto next_rung = [&](size_t i, size_t r) {
    const size_t last = chains[i].bytes.size() - 1;
    for (size_t n = r + 1; n < last; ++n) {
      if (keep[i][n]) return n;
    }
    return last;
  };
  double metric = 0, area = 0;
  for (;;) {
    bool any_searched = false;
    for (size_t i = 0; i < chains.size(); ++i) {
      if (!chains[i].held && at[i] + 1 < chains[i].bytes.size()) any_searched = true;
    }
    size_t best = chains.size(), best_to = 0;
    double best_rate = 0;
    uint64_t best_saved = 0;
    for (size_t i = 0; i < chains.size(); ++i) {
      if (chains[i].held == any_searched || at[i] + 1 >= chains[i].bytes.size()) continue;
      const size_t to = next_rung(i, at[i]);
      const uint64_t from_b = chains[i].bytes[at[i]], to_b = chains[i].bytes[to];
      const uint64_t saved = from_b > to_b ? from_b - to_b : 0;
      const double rate = (chains[i].delta[to] - chains[i].delta[at[i]]) /
                          static_cast<double>(std::max<uint64_t>(saved, 1));
      if (best == chains.size() || rate < best_rate || (rate == best_rate && saved > best_saved)) {
        best = i;
        best_to = to;
        best_rate = rate;
        best_saved = saved;
      }
    }
    if (best == chains.size()) break;
    metric += chains[best].delta[best_to] - chains[best].delta[at[best]];
    area += metric * static_cast<double>(best_saved);
    at[best] = best_to;
  }
  return area;
}

std::vector<size_t> AreaPruneOrder(const std::vector<PredictedChain>& chains,
                                   const std::vector<AreaCandidate>& candidates,
                                   std::vector<double>* cost) {
  std::vector<std::vector<char>> keep(chains.size());
  for (size_t i = 0; i < chains.size(); ++i) keep[i].assign(chains[i].bytes.size(), 1);
  auto set = [&](const AreaCandidate& c, char v) {
    for (const auto& [i, r] : c.places) {
      const size_t last = chains[static_cast<size_t>(i)].bytes.size() - 1;
      if (r > 0 && static_cast<size_t>(r) < last) {
        keep[static_cast<size_t>(i)][static_cast<size_t>(r)] = v;
      }
    }
  };
  std::vector<size_t> order;
  std::vector<char> gone(candidates.size(), 0);
  double area = PredictedArea(chains, keep);
  if (cost != nullptr) cost->clear();
  while (order.size() < candidates.size()) {
    size_t best = candidates.size();
    double best_cost = 0, best_area = 0;
    for (size_t k = 0; k < candidates.size(); ++k) {
      if (gone[k]) continue;
      set(candidates[k], 0);
      const double a = PredictedArea(chains, keep);
      set(candidates[k], 1);
      // Removing a rung never lowers the area in exact arithmetic; rounding
      // may, so a gain counts as nothing.
      const double c =
          std::max(0.0, a - area) / static_cast<double>(std::max<uint64_t>(candidates[k].bytes, 1));
      if (best == candidates.size() || c < best_cost ||
          (c == best_cost && candidates[k].bytes > candidates[best].bytes)) {
        best = k;
        best_cost = c;
        best_area = a;
      }
    }
    gone[best] = 1;
    set(candidates[best], 0);
    area = best_area;
    order.push_back(best);
    if (cost != nullptr) cost->push_back(best_cost);
  }
  return order;
}

Result<PruneOutcome> PruneEnsemble(store::Store* store, const PruneRequest& request) {
  FQ_ASSIGN_OR_RETURN(store::ModelInfo model, store->ResolveModel(request.model));
  Result<store::EnsembleInfo> found =
      store->FindEnsemble(model.id, request.ensemble);  // "": the newest
  if (!found.ok()) return found.status().WithContext("model '" + model.name + "'");
  const store::EnsembleInfo ensemble = *found;

  PruneOutcome out;
  out.metric = ensemble.params.String("metric");
  out.ranking = request.ranking;
  FQ_ASSIGN_OR_RETURN(const Metric metric, ParseMetric(out.metric));
  if (request.ranking == PruneRanking::kUses) {
    if (request.cap > 0) {
      FQ_ASSIGN_OR_RETURN(out.plan, store::PlanCap(store, ensemble, request.cap));
    } else {
      FQ_ASSIGN_OR_RETURN(out.plan, store::PlanPrune(store, ensemble, request.fraction));
    }
  } else {
    if (request.cap == 0 && !(request.fraction >= 0.0 && request.fraction <= 1.0)) {
      return Status::InvalidArgument("--prune takes a fraction from 0 to 1");
    }
    const auto t0 = std::chrono::steady_clock::now();
    FQ_ASSIGN_OR_RETURN(std::vector<store::PruneCandidate> ranked,
                        RankByArea(store, model, ensemble, request, metric));
    out.ranking_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    size_t n = 0;
    if (request.cap > 0) {
      // As store::PlanCap: the fewest first candidates that meet the cap.
      FQ_ASSIGN_OR_RETURN(uint64_t bytes, store->catalog().StoredBytes());
      while (bytes > request.cap && n < ranked.size()) bytes -= ranked[n++].stored_bytes;
      if (bytes > request.cap) {
        return Status::InvalidArgument("even with every n_mid-only module pruned the store holds " +
                                       std::to_string(bytes) +
                                       " bytes (QM(n_up), QM(n_low) and whatever else it holds): " +
                                       std::to_string(bytes - request.cap) + " bytes over the cap");
      }
    } else {
      n = static_cast<size_t>(std::llround(request.fraction * static_cast<double>(ranked.size())));
    }
    FQ_ASSIGN_OR_RETURN(out.plan, store::PlanFirst(store, ensemble, std::move(ranked), n));
  }

  // The quality at the library's footprints, before.
  const std::vector<std::string>& labels = ensemble.library;
  FQ_ASSIGN_OR_RETURN(std::vector<store::EqmInfo> eqms, store->ListEqms(ensemble.id));
  std::vector<Point> before;
  before.reserve(eqms.size());
  for (const store::EqmInfo& q : eqms) {
    before.push_back({q.step, q.footprint, q.calib_metric, q.calib_ppl});
  }
  out.eqms_before = before.size();
  for (const std::string& label : labels) {
    FQ_ASSIGN_OR_RETURN(store::QmInfo qm, store->FindQm(model.id, label));
    PruneQuality row;
    row.label = label;
    row.static_footprint = qm.weight_bytes;
    if (const Point* p = AtOrBelow(before, qm.weight_bytes)) {
      row.before_step = p->step;
      row.before_metric = p->metric;
      row.before_ppl = p->ppl;
    }
    out.quality.push_back(row);
  }

  std::vector<Point> after = before;
  if (out.plan.n_pruned > 0) {
    // Search the library again, without the modules that go.
    FQ_ASSIGN_OR_RETURN(SearchRequest req, RepairRequest(store, model, ensemble, request, metric));
    const std::vector<store::ModuleKey> gone = out.plan.pruned_keys();
    req.exclude.insert(gone.begin(), gone.end());
    req.allow_partial_mids = true;
    req.write = false;
    const auto t0 = std::chrono::steady_clock::now();
    FQ_ASSIGN_OR_RETURN(SearchOutcome repaired, SearchEnsemble(store, req));
    out.search_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    after.clear();
    for (const store::NewEqm& q : repaired.rows)
      after.push_back({q.step, q.footprint, q.calib_metric, q.calib_ppl});
    if (!request.dry_run) {
      FQ_RETURN_IF_ERROR(store::ApplyPrune(store, out.plan, repaired.rows, repaired.params));
      out.applied = true;
    }
  }
  out.eqms_after = after.size();
  for (PruneQuality& row : out.quality) {
    if (const Point* p = AtOrBelow(after, row.static_footprint)) {
      row.after_step = p->step;
      row.after_metric = p->metric;
      row.after_ppl = p->ppl;
    }
  }
  return out;
}

}  // namespace fqpack::search
