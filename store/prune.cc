#include "store/prune.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "schema/json.h"

namespace fqpack::store {
namespace {

Result<std::vector<int64_t>> MidQmIds(Store* store, const EnsembleInfo& e) {
  // Library labels (JSON array) minus up and low.
  FQ_ASSIGN_OR_RETURN(std::vector<QmInfo> qms, store->ListQms(e.model_id));
  FQ_ASSIGN_OR_RETURN(std::vector<std::string> library,
                      ParseJsonStringArray(e.library_json, "ensemble '" + e.name + "': library"));
  std::vector<int64_t> mids;
  for (const QmInfo& q : qms) {
    if (q.id == e.up_qm_id || q.id == e.low_qm_id) continue;
    if (std::find(library.begin(), library.end(), q.label) != library.end()) mids.push_back(q.id);
  }
  return mids;
}

Result<uint64_t> StoredBytes(Store* store) {
  auto lock = store->LockIndex();
  FQ_ASSIGN_OR_RETURN(int64_t n, store->db()->QueryInt("SELECT coalesce(sum(stored_bytes), 0) FROM blob"));
  return static_cast<uint64_t>(n);
}

}  // namespace

std::vector<ModuleKey> PrunePlan::pruned_keys() const {
  std::vector<ModuleKey> keys;
  for (size_t i = 0; i < n_pruned; ++i) keys.push_back(ranked[i].key);
  return keys;
}

Result<std::vector<PruneCandidate>> RankMidModules(Store* store, const EnsembleInfo& e) {
  FQ_ASSIGN_OR_RETURN(std::vector<int64_t> mids, MidQmIds(store, e));
  FQ_ASSIGN_OR_RETURN(std::vector<EqmInfo> eqms, store->ListEqms(e.id));
  if (eqms.size() < 2) return Status::InvalidArgument("ensemble '" + e.name + "' has fewer than two EQMs");
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
    auto lock = store->LockIndex();
    FQ_ASSIGN_OR_RETURN(Stmt st, store->db()->Prepare("SELECT DISTINCT hash, qm_id FROM qm_module"));
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      if (mid_set.count(st.ColumnInt(1)) != 0) continue;
      FQ_ASSIGN_OR_RETURN(ModuleKey k, ModuleKey::FromHex(st.ColumnText(0)));
      cands.erase(k);
    }
  }
  for (const EqmInfo& q : eqms) {
    auto lock = store->LockIndex();
    FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->index()->EqmModules(q.id));
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

namespace {

Result<PrunePlan> MakePlan(Store* store, const EnsembleInfo& e, std::vector<PruneCandidate> ranked, size_t n) {
  PrunePlan plan;
  plan.ensemble = e;
  plan.ranked = std::move(ranked);
  plan.n_pruned = n;
  plan.fraction = plan.ranked.empty() ? 0.0 : static_cast<double>(n) / static_cast<double>(plan.ranked.size());
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

}  // namespace

Result<PrunePlan> PlanPrune(Store* store, const EnsembleInfo& e, double p) {
  if (!(p >= 0.0 && p <= 1.0)) return Status::InvalidArgument("--prune takes a fraction from 0 to 1");
  FQ_ASSIGN_OR_RETURN(std::vector<PruneCandidate> ranked, RankMidModules(store, e));
  const size_t n = static_cast<size_t>(std::llround(p * static_cast<double>(ranked.size())));
  return MakePlan(store, e, std::move(ranked), n);
}

Result<PrunePlan> PlanCap(Store* store, const EnsembleInfo& e, uint64_t cap) {
  FQ_ASSIGN_OR_RETURN(std::vector<PruneCandidate> ranked, RankMidModules(store, e));
  FQ_ASSIGN_OR_RETURN(uint64_t bytes, StoredBytes(store));
  size_t n = 0;
  while (bytes > cap && n < ranked.size()) bytes -= ranked[n++].stored_bytes;
  if (bytes > cap) {
    return Status::InvalidArgument("even with every n_mid-only module pruned the store holds " +
                                   std::to_string(bytes) + " bytes (QM(n_up), QM(n_low) and whatever else it "
                                   "holds): " + std::to_string(bytes - cap) + " bytes over the cap");
  }
  return MakePlan(store, e, std::move(ranked), n);
}

Status ApplyPrune(Store* store, const PrunePlan& plan, const std::vector<NewEqm>& repaired,
                  const std::string& params_json) {
  const std::vector<ModuleKey> pruned = plan.pruned_keys();
  const std::set<ModuleKey> gone(pruned.begin(), pruned.end());
  for (const NewEqm& q : repaired) {
    for (const ModuleKey& k : q.modules) {
      if (gone.count(k) != 0) {
        return Status::InvalidArgument("the repaired EQM " + std::to_string(q.step) + " uses pruned module " + k.Hex());
      }
    }
  }
  FQ_ASSIGN_OR_RETURN(auto writer_lock, store->WriterLock());
  FQ_ASSIGN_OR_RETURN(std::vector<SlotInfo> slots, store->Slots(plan.ensemble.model_id));
  auto lock = store->LockIndex();
  Db* db = store->db();
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  {
    FQ_ASSIGN_OR_RETURN(Stmt del, db->Prepare("DELETE FROM qm_module WHERE hash = ? AND qm_id = ?"));
    for (size_t i = 0; i < plan.n_pruned; ++i) {
      for (int64_t q : plan.ranked[i].qm_ids) {
        del.BindAll(plan.ranked[i].key.Hex(), q);
        FQ_RETURN_IF_ERROR(del.Run());
      }
    }
    FQ_ASSIGN_OR_RETURN(Stmt mark, db->Prepare("UPDATE qm SET partial = 1 WHERE id = ?"));
    for (int64_t q : plan.partial_qm_ids) {
      mark.BindAll(q);
      FQ_RETURN_IF_ERROR(mark.Run());
    }
  }
  // The repaired EQMs replace the old ones of the same ensemble.
  const int64_t e = plan.ensemble.id;
  for (const char* sql : {"DELETE FROM eqm_module WHERE eqm_id IN (SELECT id FROM eqm WHERE ensemble_id = ?)",
                          "DELETE FROM eqm WHERE ensemble_id = ?"}) {
    FQ_ASSIGN_OR_RETURN(Stmt st, db->Prepare(sql));
    st.BindAll(e);
    FQ_RETURN_IF_ERROR(st.Run());
  }
  {
    FQ_ASSIGN_OR_RETURN(Stmt st, db->Prepare("UPDATE ensemble SET params = ? WHERE id = ?"));
    st.BindAll(params_json, e);
    FQ_RETURN_IF_ERROR(st.Run());
  }
  FQ_ASSIGN_OR_RETURN(Stmt eqm, db->Prepare("INSERT INTO eqm (ensemble_id, step, footprint, calib_metric, calib_ppl, "
                                            "calib_kl) VALUES (?,?,?,?,?,?)"));
  FQ_ASSIGN_OR_RETURN(Stmt mod, db->Prepare("INSERT INTO eqm_module (eqm_id, slot_idx, hash, qm_id) VALUES (?,?,?,?)"));
  for (const NewEqm& q : repaired) {
    if (q.modules.size() != slots.size() || q.source_qm_ids.size() != slots.size()) {
      return Status::InvalidArgument("repaired EQM " + std::to_string(q.step) + " does not cover every slot");
    }
    eqm.BindAll(e, q.step, q.footprint);
    for (int c = 0; c < 3; ++c) {
      const double v = c == 0 ? q.calib_metric : (c == 1 ? q.calib_ppl : q.calib_kl);
      if (std::isnan(v)) eqm.BindNull(4 + c); else eqm.Bind(4 + c, v);
    }
    FQ_RETURN_IF_ERROR(eqm.Run());
    const int64_t id = db->LastInsertRowid();
    for (size_t i = 0; i < slots.size(); ++i) {
      mod.BindAll(id, slots[i].idx, q.modules[i].Hex());
      if (q.source_qm_ids[i] > 0) mod.Bind(4, q.source_qm_ids[i]); else mod.BindNull(4);
      FQ_RETURN_IF_ERROR(mod.Run());
    }
  }
  return txn->Commit();
}

}  // namespace fqpack::store
