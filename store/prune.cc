#include "store/prune.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace fqpack::store {
namespace {

Result<std::vector<int64_t>> MidQmIds(Store* store, const EnsembleInfo& e) {
  // Library labels (JSON array) minus up and low.
  FQ_ASSIGN_OR_RETURN(std::vector<QmInfo> qms, store->ListQms(e.model_id));
  const std::vector<std::string>& library = e.library;
  std::vector<int64_t> mids;
  for (const QmInfo& q : qms) {
    if (q.id == e.up_qm_id || q.id == e.low_qm_id) continue;
    if (std::find(library.begin(), library.end(), q.label) != library.end()) mids.push_back(q.id);
  }
  return mids;
}

Result<uint64_t> StoredBytes(Store* store) { return store->catalog().StoredBytes(); }

}  // namespace

std::vector<ModuleKey> PrunePlan::pruned_keys() const {
  std::vector<ModuleKey> keys;
  for (size_t i = 0; i < n_pruned; ++i) keys.push_back(ranked[i].key);
  return keys;
}

Result<std::vector<PruneCandidate>> RankMidModules(Store* store, const EnsembleInfo& e) {
  FQ_ASSIGN_OR_RETURN(std::vector<int64_t> mids, MidQmIds(store, e));
  FQ_ASSIGN_OR_RETURN(std::vector<EqmInfo> eqms, store->ListEqms(e.id));
  if (eqms.size() < 2)
    return Status::InvalidArgument("ensemble '" + e.name + "' has fewer than two EQMs");
  const double f_up = static_cast<double>(eqms.front().footprint);
  const double f_low = static_cast<double>(eqms.back().footprint);
  const double span = std::max(1.0, f_up - f_low);

  std::map<ModuleKey, PruneCandidate> cands;
  std::set<int64_t> mid_set(mids.begin(), mids.end());
  for (int64_t q : mids) {
    FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->QmModules(q));
    for (const ModuleRef& m : mods) {
      PruneCandidate& c = cands[m.key];
      c.key = m.key;
      c.slot_idx = m.slot_idx;
      c.raw_bytes = m.raw_bytes;
      c.stored_bytes = m.stored_bytes;
      c.qm_ids.push_back(q);
    }
  }
  // Held by any QM outside the mids (up, low, other QMs or models): not a
  // candidate, pruning it would free nothing.
  {
    FQ_ASSIGN_OR_RETURN(auto pairs, store->catalog().QmModulePairs());
    for (const auto& [k, qm_id] : pairs) {
      if (mid_set.count(qm_id) == 0) cands.erase(k);
    }
  }
  for (const EqmInfo& q : eqms) {
    FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->catalog().EqmModules(q.id));
    const double low_weight = (f_up - static_cast<double>(q.footprint)) / span;
    for (const ModuleRef& m : mods) {
      auto it = cands.find(m.key);
      if (it == cands.end()) continue;
      ++it->second.uses;
      it->second.low_weighted_uses += low_weight;
    }
  }
  std::vector<PruneCandidate> out;
  for (auto& [k, c] : cands) {
    c.score = (c.uses + c.low_weighted_uses) / static_cast<double>(eqms.size());
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const PruneCandidate& a, const PruneCandidate& b) {
    if (a.score != b.score) return a.score < b.score;
    if (a.stored_bytes != b.stored_bytes) return a.stored_bytes > b.stored_bytes;
    return a.key < b.key;
  });
  return out;
}

Result<PrunePlan> PlanFirst(Store* store, const EnsembleInfo& e, std::vector<PruneCandidate> ranked,
                            size_t n) {
  PrunePlan plan;
  plan.ensemble = e;
  plan.ranked = std::move(ranked);
  plan.n_pruned = n;
  plan.fraction =
      plan.ranked.empty() ? 0.0 : static_cast<double>(n) / static_cast<double>(plan.ranked.size());
  FQ_ASSIGN_OR_RETURN(plan.store_bytes_before, StoredBytes(store));
  plan.store_bytes_after = plan.store_bytes_before;
  std::set<int64_t> partial;
  for (size_t i = 0; i < n; ++i) {
    plan.store_bytes_after -= plan.ranked[i].stored_bytes;
    partial.insert(plan.ranked[i].qm_ids.begin(), plan.ranked[i].qm_ids.end());
  }
  plan.partial_qm_ids.assign(partial.begin(), partial.end());
  return plan;
}

Result<PrunePlan> PlanPrune(Store* store, const EnsembleInfo& e, double p) {
  if (!(p >= 0.0 && p <= 1.0))
    return Status::InvalidArgument("--prune takes a fraction from 0 to 1");
  FQ_ASSIGN_OR_RETURN(std::vector<PruneCandidate> ranked, RankMidModules(store, e));
  const size_t n = static_cast<size_t>(std::llround(p * static_cast<double>(ranked.size())));
  return PlanFirst(store, e, std::move(ranked), n);
}

Result<PrunePlan> PlanCap(Store* store, const EnsembleInfo& e, uint64_t cap) {
  FQ_ASSIGN_OR_RETURN(std::vector<PruneCandidate> ranked, RankMidModules(store, e));
  FQ_ASSIGN_OR_RETURN(uint64_t bytes, StoredBytes(store));
  size_t n = 0;
  while (bytes > cap && n < ranked.size()) bytes -= ranked[n++].stored_bytes;
  if (bytes > cap) {
    return Status::InvalidArgument("even with every n_mid-only module pruned the store holds " +
                                   std::to_string(bytes) +
                                   " bytes (QM(n_up), QM(n_low) and whatever else it "
                                   "holds): " +
                                   std::to_string(bytes - cap) + " bytes over the cap");
  }
  return PlanFirst(store, e, std::move(ranked), n);
}

Status ApplyPrune(Store* store, const PrunePlan& plan, const std::vector<NewEqm>& repaired,
                  const JsonFields& params) {
  const std::vector<ModuleKey> pruned = plan.pruned_keys();
  const std::set<ModuleKey> gone(pruned.begin(), pruned.end());
  for (const NewEqm& q : repaired) {
    for (const ModuleKey& k : q.modules) {
      if (gone.count(k) != 0) {
        return Status::InvalidArgument("the repaired EQM " + std::to_string(q.step) +
                                       " uses pruned module " + k.Hex());
      }
    }
  }
  FQ_ASSIGN_OR_RETURN(auto writer_lock, store->WriterLock());
  FQ_ASSIGN_OR_RETURN(std::vector<SlotInfo> slots, store->Slots(plan.ensemble.model_id));
  std::vector<std::pair<ModuleKey, int64_t>> dropped;
  for (size_t i = 0; i < plan.n_pruned; ++i) {
    for (int64_t q : plan.ranked[i].qm_ids) dropped.emplace_back(plan.ranked[i].key, q);
  }
  return store->catalog().ReplaceEqms(plan.ensemble.id, dropped, plan.partial_qm_ids, params, slots,
                                      repaired);
}

}  // namespace fqpack::store
