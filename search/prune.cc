#include "search/prune.h"

#include <chrono>

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

}  // namespace

Result<PruneOutcome> PruneEnsemble(store::Store* store, const PruneRequest& request) {
  FQ_ASSIGN_OR_RETURN(store::ModelInfo model, store->ResolveModel(request.model));
  Result<store::EnsembleInfo> found =
      store->FindEnsemble(model.id, request.ensemble);  // "": the newest
  if (!found.ok()) return found.status().WithContext("model '" + model.name + "'");
  const store::EnsembleInfo ensemble = *found;

  PruneOutcome out;
  if (request.cap > 0) {
    FQ_ASSIGN_OR_RETURN(out.plan, store::PlanCap(store, ensemble, request.cap));
  } else {
    FQ_ASSIGN_OR_RETURN(out.plan, store::PlanPrune(store, ensemble, request.fraction));
  }
  out.metric = ensemble.params.String("metric");

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
    FQ_ASSIGN_OR_RETURN(req.search.metric, ParseMetric(out.metric));
    req.search.cancelled = request.cancelled;
    req.search.progress = request.progress;
    req.threads = request.threads;
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
