#include "store/gc.h"

#include <algorithm>
#include <set>

namespace fqpack::store {
namespace {

Result<int64_t> Count(Db* db, const std::string& sql, int64_t id) {
  FQ_ASSIGN_OR_RETURN(Stmt st, db->Prepare(sql));
  st.BindAll(id);
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt(0) : 0;
}

Status Exec1(Db* db, const std::string& sql, int64_t id, size_t* changed = nullptr) {
  FQ_ASSIGN_OR_RETURN(Stmt st, db->Prepare(sql));
  st.BindAll(id);
  FQ_RETURN_IF_ERROR(st.Run());
  if (changed != nullptr) *changed += static_cast<size_t>(db->Changes());
  return Status::OK();
}

Status DropEnsembleRows(Db* db, int64_t ensemble_id, RemoveResult* r) {
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM eqm_module WHERE eqm_id IN (SELECT id FROM eqm WHERE ensemble_id = ?)",
                           ensemble_id, &r->references));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM eqm WHERE ensemble_id = ?", ensemble_id, &r->eqms));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM ensemble WHERE id = ?", ensemble_id, &r->ensembles));
  return Status::OK();
}

Status DropQmRows(Db* db, int64_t qm_id, RemoveResult* r) {
  FQ_RETURN_IF_ERROR(Exec1(db, "UPDATE eqm_module SET qm_id = NULL WHERE qm_id = ?", qm_id));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM qm_module WHERE qm_id = ?", qm_id, &r->references));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM qm WHERE id = ?", qm_id, &r->qms));
  return Status::OK();
}

}  // namespace

Result<RemoveResult> RemoveQm(Store* store, const std::string& model, const std::string& label) {
  FQ_ASSIGN_OR_RETURN(auto lock, store->WriterLock());
  FQ_ASSIGN_OR_RETURN(ModelInfo m, store->ResolveModel(model));
  FQ_ASSIGN_OR_RETURN(QmInfo q, store->FindQm(m.id, label));
  auto index_lock = store->LockIndex();
  Db* db = store->db();
  FQ_ASSIGN_OR_RETURN(int64_t users, Count(db, "SELECT count(*) FROM ensemble WHERE up_qm_id = ?1 OR low_qm_id = ?1", q.id));
  if (users > 0) {
    return Status::InvalidArgument("QM '" + label + "' is the n_up or n_low of " + std::to_string(users) +
                                   " ensemble(s); remove them first (fqpack rm --ensemble NAME)");
  }
  RemoveResult r;
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  FQ_RETURN_IF_ERROR(DropQmRows(db, q.id, &r));
  FQ_RETURN_IF_ERROR(txn->Commit());
  return r;
}

Result<RemoveResult> RemoveEnsemble(Store* store, const std::string& model, const std::string& name) {
  FQ_ASSIGN_OR_RETURN(auto lock, store->WriterLock());
  FQ_ASSIGN_OR_RETURN(ModelInfo m, store->ResolveModel(model));
  if (name.empty()) return Status::InvalidArgument("name the ensemble to remove");
  FQ_ASSIGN_OR_RETURN(EnsembleInfo e, store->FindEnsemble(m.id, name));
  auto index_lock = store->LockIndex();
  RemoveResult r;
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(store->db()));
  FQ_RETURN_IF_ERROR(DropEnsembleRows(store->db(), e.id, &r));
  FQ_RETURN_IF_ERROR(txn->Commit());
  return r;
}

Result<RemoveResult> RemoveModel(Store* store, const std::string& model) {
  FQ_ASSIGN_OR_RETURN(auto lock, store->WriterLock());
  if (model.empty()) return Status::InvalidArgument("name the model to remove");
  FQ_ASSIGN_OR_RETURN(ModelInfo m, store->FindModel(model));
  FQ_ASSIGN_OR_RETURN(std::vector<EnsembleInfo> ensembles, store->ListEnsembles(m.id));
  FQ_ASSIGN_OR_RETURN(std::vector<QmInfo> qms, store->ListQms(m.id));
  auto index_lock = store->LockIndex();
  Db* db = store->db();
  RemoveResult r;
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  for (const EnsembleInfo& e : ensembles) FQ_RETURN_IF_ERROR(DropEnsembleRows(db, e.id, &r));
  for (const QmInfo& q : qms) FQ_RETURN_IF_ERROR(DropQmRows(db, q.id, &r));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM slot WHERE model_id = ?", m.id));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM model WHERE id = ?", m.id));
  FQ_RETURN_IF_ERROR(txn->Commit());
  r.model = true;
  return r;
}

Result<SweepResult> Sweep(Store* store, const SweepOptions& options) {
  FQ_ASSIGN_OR_RETURN(auto lock, store->GcLock(options.wait));
  SweepResult r;
  Env* env = store->env();
  BlobStore* blobs = store->blobs();

  // 1. Rows of unreferenced blobs go, in one transaction.
  std::vector<ModuleKey> dead;
  std::set<ModuleKey> live;
  {
    auto index_lock = store->LockIndex();
    Db* db = store->db();
    FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
    FQ_ASSIGN_OR_RETURN(Stmt st, db->Prepare(
        "SELECT hash, stored_bytes FROM blob WHERE hash NOT IN "
        "(SELECT hash FROM qm_module UNION SELECT hash FROM eqm_module) ORDER BY hash"));
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      FQ_ASSIGN_OR_RETURN(ModuleKey k, ModuleKey::FromHex(st.ColumnText(0)));
      dead.push_back(k);
      r.blob_bytes += static_cast<uint64_t>(st.ColumnInt(1));
    }
    r.blobs = dead.size();
    if (!options.dry_run && !dead.empty()) {
      FQ_ASSIGN_OR_RETURN(Stmt del, db->Prepare("DELETE FROM blob WHERE hash = ?"));
      for (const ModuleKey& k : dead) {
        del.BindAll(k.Hex());
        FQ_RETURN_IF_ERROR(del.Run());
      }
      FQ_RETURN_IF_ERROR(txn->Commit());
    }
    FQ_ASSIGN_OR_RETURN(Stmt all, db->Prepare("SELECT hash FROM blob"));
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, all.Step());
      if (!row) break;
      FQ_ASSIGN_OR_RETURN(ModuleKey k, ModuleKey::FromHex(all.ColumnText(0)));
      live.insert(k);
    }
  }
  if (options.dry_run) {
    // Still count the orphans that a real sweep would remove.
    live.insert(dead.begin(), dead.end());
  }

  // 2. Files: every file without a live row (the blobs just dropped and
  // orphans of earlier interruptions), then temp files. Nothing can be
  // writing: we hold the lock exclusively.
  std::set<std::string> dirs;
  FQ_ASSIGN_OR_RETURN(auto files, blobs->ListFiles());
  for (const auto& f : files) {
    const bool is_live = f.valid_name && live.count(f.key) != 0 && blobs->PathOf(f.key) == f.path;
    if (is_live) continue;
    const bool was_row = f.valid_name && std::find(dead.begin(), dead.end(), f.key) != dead.end();
    Result<uint64_t> size = env->GetFileSize(f.path);
    if (!was_row) {
      ++r.orphans;
      if (size.ok()) r.orphan_bytes += *size;
    }
    if (options.dry_run) continue;
    Status s = env->RemoveFile(f.path);
    if (!s.ok() && !s.IsNotFound()) return s;
    dirs.insert(DirName(f.path));
  }
  Result<std::vector<std::string>> tmp = env->GetChildren(blobs->tmp_dir());
  if (tmp.ok()) {
    for (const std::string& t : *tmp) {
      const std::string path = JoinPath(blobs->tmp_dir(), t);
      ++r.orphans;
      if (Result<uint64_t> size = env->GetFileSize(path); size.ok()) r.orphan_bytes += *size;
      if (options.dry_run) continue;
      Status s = env->RemoveFile(path);
      if (!s.ok() && !s.IsNotFound()) return s;
      dirs.insert(blobs->tmp_dir());
    }
  }
  for (const std::string& d : dirs) FQ_RETURN_IF_ERROR(env->SyncDir(d));
  return r;
}

}  // namespace fqpack::store
