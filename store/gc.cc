#include "store/gc.h"

#include <algorithm>
#include <set>

namespace fqpack::store {
namespace {

void Add(const RemovedRows& rows, RemoveResult* r) {
  r->qms += rows.qms;
  r->ensembles += rows.ensembles;
  r->eqms += rows.eqms;
  r->references += rows.references;
}

}  // namespace

Result<RemoveResult> RemoveQm(Store* store, const std::string& model, const std::string& label) {
  FQ_ASSIGN_OR_RETURN(auto lock, store->WriterLock());
  FQ_ASSIGN_OR_RETURN(ModelInfo m, store->ResolveModel(model));
  FQ_ASSIGN_OR_RETURN(QmInfo q, store->FindQm(m.id, label));
  FQ_ASSIGN_OR_RETURN(int64_t users, store->catalog().EnsemblesOnQm(q.id));
  if (users > 0) {
    return Status::InvalidArgument("QM '" + label + "' is the n_up or n_low of " +
                                   std::to_string(users) +
                                   " ensemble(s); remove them first (fqpack rm --ensemble NAME)");
  }
  RemovedRows rows;
  FQ_RETURN_IF_ERROR(store->catalog().RemoveQm(q.id, &rows));
  RemoveResult r;
  Add(rows, &r);
  return r;
}

Result<RemoveResult> RemoveEnsemble(Store* store, const std::string& model,
                                    const std::string& name) {
  FQ_ASSIGN_OR_RETURN(auto lock, store->WriterLock());
  FQ_ASSIGN_OR_RETURN(ModelInfo m, store->ResolveModel(model));
  if (name.empty()) return Status::InvalidArgument("name the ensemble to remove");
  FQ_ASSIGN_OR_RETURN(EnsembleInfo e, store->FindEnsemble(m.id, name));
  RemovedRows rows;
  FQ_RETURN_IF_ERROR(store->catalog().RemoveEnsemble(e.id, &rows));
  RemoveResult r;
  Add(rows, &r);
  return r;
}

Result<RemoveResult> RemoveModel(Store* store, const std::string& model) {
  FQ_ASSIGN_OR_RETURN(auto lock, store->WriterLock());
  if (model.empty()) return Status::InvalidArgument("name the model to remove");
  FQ_ASSIGN_OR_RETURN(ModelInfo m, store->FindModel(model));
  FQ_ASSIGN_OR_RETURN(std::vector<EnsembleInfo> ensembles, store->ListEnsembles(m.id));
  FQ_ASSIGN_OR_RETURN(std::vector<QmInfo> qms, store->ListQms(m.id));
  std::vector<int64_t> ensemble_ids, qm_ids;
  for (const EnsembleInfo& e : ensembles) ensemble_ids.push_back(e.id);
  for (const QmInfo& q : qms) qm_ids.push_back(q.id);
  RemovedRows rows;
  FQ_RETURN_IF_ERROR(store->catalog().RemoveModel(m.id, ensemble_ids, qm_ids, &rows));
  RemoveResult r;
  Add(rows, &r);
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
    std::vector<std::pair<ModuleKey, uint64_t>> dead_rows;
    std::vector<ModuleKey> live_keys;
    FQ_RETURN_IF_ERROR(store->catalog().SweepBlobRows(!options.dry_run, &dead_rows, &live_keys));
    for (const auto& [k, bytes] : dead_rows) {
      dead.push_back(k);
      r.blob_bytes += bytes;
    }
    r.blobs = dead.size();
    live.insert(live_keys.begin(), live_keys.end());
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
