#include "store/store.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>

#include "schema/store_sql.h"

namespace fqpack::store {
namespace {

constexpr char kIndexName[] = "index.sqlite";
constexpr char kLockName[] = "LOCK";

std::string IndexPath(const std::string& dir) { return JoinPath(dir, kIndexName); }

// Brings an older index to the current schema in one transaction (the new
// tables of store.sql and the new user_version commit together, so a kill
// leaves the old version, which the next open upgrades again). Another
// process may be upgrading at the same moment: the version is read again
// under the write lock.
Status Upgrade(Db* db, int from) {
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  FQ_ASSIGN_OR_RETURN(int64_t now, db->QueryInt("PRAGMA user_version"));
  if (now >= schema::kStoreSchemaVersion) return Status::OK();
  const std::string_view sql = schema::StoreSqlUpgrade(static_cast<int>(now));
  if (sql.empty()) {
    return Status::NotSupported("no upgrade from store schema version " + std::to_string(from));
  }
  FQ_RETURN_IF_ERROR(db->Exec(sql));
  FQ_RETURN_IF_ERROR(db->Exec("PRAGMA user_version = " + std::to_string(schema::kStoreSchemaVersion)));
  return txn->Commit();
}

}  // namespace

Store::Store(Env* env, std::string dir, StoreOptions options, std::unique_ptr<Db> db)
    : env_(env),
      dir_(std::move(dir)),
      options_(std::move(options)),
      db_(std::move(db)),
      index_(db_.get(), dir_),
      blobs_(env, dir_, options_.zstd_level, options_.key_fn) {}

Store::~Store() = default;

Status Store::Init(Env* env, const std::string& dir, bool* created) {
  if (created != nullptr) *created = false;
  if (env->FileExists(dir) && !env->IsDirectory(dir)) {
    return Status::InvalidArgument(dir + ": exists and is not a directory");
  }
  if (env->FileExists(IndexPath(dir))) {
    // Already a store: opening it checks that it really is one.
    FQ_ASSIGN_OR_RETURN(auto existing, Open(env, dir));
    return Status::OK();
  }
  if (env->IsDirectory(dir)) {
    FQ_ASSIGN_OR_RETURN(std::vector<std::string> children, env->GetChildren(dir));
    for (const std::string& c : children) {
      if (c != "blobs" && c != "tmp" && c != kLockName && c.rfind(kIndexName, 0) != 0) {
        return Status::InvalidArgument(dir + ": directory is not empty and not an fqpack store (holds '" +
                                       c + "')");
      }
    }
  }
  FQ_RETURN_IF_ERROR(env->CreateDir(dir));
  BlobStore blobs(env, dir, 3, nullptr);
  FQ_RETURN_IF_ERROR(blobs.CreateLayout());

  // Build the index under a temp name and rename it into place: a store
  // either has a complete index or none.
  const std::string tmp = UniqueTempName(IndexPath(dir) + ".init");
  {
    FQ_ASSIGN_OR_RETURN(auto db, Db::Open(env, tmp, Db::Mode::kReadWriteCreate));
    FQ_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL"));
    FQ_RETURN_IF_ERROR(db->Exec("BEGIN"));
    FQ_RETURN_IF_ERROR(db->Exec(schema::kStoreSql));
    FQ_RETURN_IF_ERROR(
        db->Exec("PRAGMA user_version = " + std::to_string(schema::kStoreSchemaVersion)));
    FQ_RETURN_IF_ERROR(db->Exec("COMMIT"));
  }
  Status s = env->RenameFile(tmp, IndexPath(dir));
  if (!s.ok()) {
    (void)env->RemoveFile(tmp);
    return s;
  }
  FQ_RETURN_IF_ERROR(env->SyncDir(dir));
  if (created != nullptr) *created = true;
  return Status::OK();
}

Result<std::unique_ptr<Store>> Store::Open(Env* env, const std::string& dir,
                                           const StoreOptions& options) {
  if (!env->IsDirectory(dir)) {
    return Status::NotFound(dir + ": no store here (run `fqpack init`, or pass --store DIR)");
  }
  if (!env->FileExists(IndexPath(dir))) {
    return Status::InvalidArgument(dir + ": not an fqpack store (no " + kIndexName +
                                   "; run `fqpack init` to create one)");
  }
  FQ_ASSIGN_OR_RETURN(auto db, Db::Open(env, IndexPath(dir), Db::Mode::kReadWrite));
  Result<int64_t> version = db->QueryInt("PRAGMA user_version");
  if (!version.ok()) {
    return Status::InvalidArgument(IndexPath(dir) + ": not an fqpack store index (" +
                                   version.status().message() + ")");
  }
  if (*version == 0) {
    return Status::InvalidArgument(IndexPath(dir) + ": not an fqpack store index (schema version 0)");
  }
  if (*version > schema::kStoreSchemaVersion) {
    return Status::NotSupported(dir + ": store schema version " + std::to_string(*version) +
                                " is newer than this fqpack reads (" +
                                std::to_string(schema::kStoreSchemaVersion) + "); upgrade fqpack");
  }
  Result<int64_t> tables = db->QueryInt(
      "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
      "('blob','model','slot','qm','qm_module')");
  if (!tables.ok() || *tables != 5) {
    return Status::Corruption(IndexPath(dir) + ": index is missing tables of the store schema");
  }
  if (*version < schema::kStoreSchemaVersion) {
    FQ_RETURN_IF_ERROR(Upgrade(db.get(), static_cast<int>(*version)).WithContext(IndexPath(dir)));
  }
  FQ_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL"));
  return std::unique_ptr<Store>(new Store(env, dir, options, std::move(db)));
}

Result<std::unique_ptr<FileLock>> Store::WriterLock(bool wait) {
  return env_->LockFile(JoinPath(dir_, kLockName), LockMode::kShared, wait);
}

Result<std::unique_ptr<FileLock>> Store::GcLock(bool wait) {
  Result<std::unique_ptr<FileLock>> lock =
      env_->LockFile(JoinPath(dir_, kLockName), LockMode::kExclusive, wait);
  if (!lock.ok() && lock.status().IsBusy()) {
    return Status::Busy(dir_ + ": another fqpack process is writing to this store (gc needs it alone)");
  }
  return lock;
}

Result<std::vector<ModelInfo>> Store::ListModels() {
  auto lock = LockIndex();
  return index_.ListModels();
}
Result<ModelInfo> Store::FindModel(const std::string& name) {
  auto lock = LockIndex();
  return index_.FindModel(name);
}
Result<ModelInfo> Store::ResolveModel(const std::string& name) {
  auto lock = LockIndex();
  return index_.ResolveModel(name);
}
Result<std::vector<SlotInfo>> Store::Slots(int64_t model_id) {
  auto lock = LockIndex();
  return index_.Slots(model_id);
}
Result<std::vector<QmInfo>> Store::ListQms(int64_t model_id) {
  auto lock = LockIndex();
  return index_.ListQms(model_id);
}
Result<QmInfo> Store::FindQm(int64_t model_id, const std::string& label) {
  auto lock = LockIndex();
  return index_.FindQm(model_id, label);
}
Result<std::vector<ModuleRef>> Store::QmModules(int64_t qm_id) {
  auto lock = LockIndex();
  return index_.QmModules(qm_id);
}
Result<ModuleRef> Store::FindBlob(const ModuleKey& key) {
  auto lock = LockIndex();
  return index_.FindBlob(key);
}
Result<std::vector<EnsembleInfo>> Store::ListEnsembles(int64_t model_id) {
  auto lock = LockIndex();
  return index_.ListEnsembles(model_id);
}
Result<EnsembleInfo> Store::FindEnsemble(int64_t model_id, const std::string& name) {
  auto lock = LockIndex();
  return index_.FindEnsemble(model_id, name);
}
Result<std::vector<EqmInfo>> Store::ListEqms(int64_t ensemble_id) {
  auto lock = LockIndex();
  return index_.ListEqms(ensemble_id);
}
Result<ModelManifest> Store::QmManifest(const std::string& model, const std::string& label) {
  auto lock = LockIndex();
  return index_.QmManifest(model, label);
}
Result<ModelManifest> Store::EqmManifest(int64_t ensemble_id, int step) {
  auto lock = LockIndex();
  return index_.EqmManifest(ensemble_id, step);
}

Result<StoreStats> Store::Stats() {
  auto lock = LockIndex();
  StoreStats s;
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT count(*), coalesce(sum(raw_bytes),0), "
                                            "coalesce(sum(stored_bytes),0) FROM blob"));
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (row) {
    s.blobs = static_cast<uint64_t>(st.ColumnInt(0));
    s.unique_raw_bytes = static_cast<uint64_t>(st.ColumnInt(1));
    s.stored_bytes = static_cast<uint64_t>(st.ColumnInt(2));
  }
  FQ_ASSIGN_OR_RETURN(int64_t logical,
                      db_->QueryInt("SELECT coalesce(sum(b.raw_bytes),0) FROM qm_module m "
                                    "JOIN blob b ON b.hash = m.hash"));
  s.logical_bytes = static_cast<uint64_t>(logical);
  FQ_ASSIGN_OR_RETURN(int64_t refs, db_->QueryInt("SELECT (SELECT count(*) FROM qm_module) + "
                                                  "(SELECT count(*) FROM eqm_module)"));
  s.references = static_cast<uint64_t>(refs);
  return s;
}

Result<int64_t> Store::AddEnsemble(const NewEnsemble& e, const std::vector<NewEqm>& eqms) {
  auto lock = LockIndex();
  FQ_ASSIGN_OR_RETURN(std::vector<SlotInfo> slots, index_.Slots(e.model_id));
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_.get()));
  FQ_ASSIGN_OR_RETURN(Stmt ins, db_->Prepare("INSERT INTO ensemble (model_id, name, up_qm_id, low_qm_id, library, "
                                             "params, calib_sha256, calib_text) VALUES (?,?,?,?,?,?,?,?)"));
  ins.BindAll(e.model_id, e.name, e.up_qm_id, e.low_qm_id, e.library_json, e.params_json, e.calib_sha256)
      .BindBlob(8, e.calib_text);
  Status s = ins.Run();
  if (!s.ok()) {
    if (s.IsInvalidArgument()) return Status::InvalidArgument("an ensemble named '" + e.name + "' already exists");
    return s;
  }
  const int64_t ensemble_id = db_->LastInsertRowid();
  FQ_ASSIGN_OR_RETURN(Stmt eqm, db_->Prepare("INSERT INTO eqm (ensemble_id, step, footprint, calib_metric, calib_ppl, "
                                             "calib_kl) VALUES (?,?,?,?,?,?)"));
  FQ_ASSIGN_OR_RETURN(Stmt mod, db_->Prepare("INSERT INTO eqm_module (eqm_id, slot_idx, hash, qm_id) VALUES (?,?,?,?)"));
  auto bind_metric = [](Stmt& st, int i, double v) {
    if (std::isnan(v)) st.BindNull(i); else st.Bind(i, v);
  };
  for (const NewEqm& q : eqms) {
    if (q.modules.size() != slots.size() || q.source_qm_ids.size() != slots.size()) {
      return Status::InvalidArgument("EQM " + std::to_string(q.step) + " has " + std::to_string(q.modules.size()) +
                                     " modules for " + std::to_string(slots.size()) + " slots");
    }
    eqm.BindAll(ensemble_id, q.step, q.footprint);
    bind_metric(eqm, 4, q.calib_metric);
    bind_metric(eqm, 5, q.calib_ppl);
    bind_metric(eqm, 6, q.calib_kl);
    FQ_RETURN_IF_ERROR(eqm.Run());
    const int64_t eqm_id = db_->LastInsertRowid();
    for (size_t i = 0; i < slots.size(); ++i) {
      mod.BindAll(eqm_id, slots[i].idx, q.modules[i].Hex());
      if (q.source_qm_ids[i] > 0) mod.Bind(4, q.source_qm_ids[i]); else mod.BindNull(4);
      Status ms = mod.Run();
      if (!ms.ok()) {
        return ms.IsInvalidArgument()
                   ? Status::InvalidArgument("EQM " + std::to_string(q.step) + " slot '" + slots[i].name +
                                             "': module " + q.modules[i].Hex() + " is not in the store")
                   : ms;
      }
    }
  }
  FQ_RETURN_IF_ERROR(txn->Commit());
  return ensemble_id;
}

Result<std::vector<DynamicModelInfo>> Store::ListDynamicModels(int64_t model_id) {
  auto lock = LockIndex();
  return index_.ListDynamicModels(model_id);
}

Result<DynamicModelInfo> Store::FindDynamicModel(int64_t model_id, const std::string& hi, const std::string& lo) {
  auto lock = LockIndex();
  return index_.FindDynamicModel(model_id, hi, lo);
}

Result<int64_t> Store::PutDynamicModel(const DynamicModelInfo& d) {
  auto lock = LockIndex();
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_.get()));
  {
    FQ_ASSIGN_OR_RETURN(Stmt del, db_->Prepare("DELETE FROM dynamic_model WHERE hi_qm_id = ? AND lo_qm_id = ?"));
    del.BindAll(d.hi_qm_id, d.lo_qm_id);
    FQ_RETURN_IF_ERROR(del.Run());
  }
  Bytes entropies;
  entropies.reserve(d.entropies.size() * 8);
  for (double h : d.entropies) PutF64(&entropies, h);
  FQ_ASSIGN_OR_RETURN(Stmt ins, db_->Prepare(
      "INSERT INTO dynamic_model (model_id, hi_qm_id, lo_qm_id, n_weights, hi_bytes, lo_bytes, target_bits, "
      "calib_bits, calib_tokens, calib_starts, entropies, calib_sha256, params) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  ins.BindAll(d.model_id, d.hi_qm_id, d.lo_qm_id, d.n_weights, d.hi_bytes, d.lo_bytes, d.target_bits, d.calib_bits,
              d.calib_tokens, d.calib_starts)
      .BindBlob(11, entropies)
      .Bind(12, d.calib_sha256)
      .Bind(13, d.params_json);
  FQ_RETURN_IF_ERROR(ins.Run());
  const int64_t id = db_->LastInsertRowid();
  FQ_ASSIGN_OR_RETURN(Stmt unit, db_->Prepare(
      "INSERT INTO dynamic_unit (dynamic_id, rank, name, layer, sensitivity, extra_bytes, threshold) "
      "VALUES (?,?,?,?,?,?,?)"));
  for (size_t r = 0; r < d.units.size(); ++r) {
    const DynamicUnitInfo& u = d.units[r];
    unit.BindAll(id, static_cast<int64_t>(r), u.name);
    if (u.layer >= 0) unit.Bind(4, u.layer); else unit.BindNull(4);
    unit.Bind(5, u.sensitivity).Bind(6, u.extra_bytes);
    if (std::isfinite(u.threshold)) unit.Bind(7, u.threshold); else unit.BindNull(7);
    FQ_RETURN_IF_ERROR(unit.Run());
  }
  FQ_RETURN_IF_ERROR(txn->Commit());
  return id;
}

Result<std::shared_ptr<PinnedModules>> Store::Pin(const std::vector<ModuleKey>& keys) {
  auto pinned = std::make_shared<PinnedModules>();
  for (const ModuleKey& key : keys) {
    if (pinned->pins_.count(key) != 0) continue;
    FQ_ASSIGN_OR_RETURN(ModuleRef ref, FindBlob(key));
    const std::string path = blobs_.PathOf(key);
    Result<MappedFile> file = env_->MapFile(path);
    if (!file.ok()) {
      if (file.status().IsNotFound()) return Status::Corruption(path + ": blob of module " + key.Hex() + " is missing");
      return file.status();
    }
    PinnedModules::Pin pin;
    pin.file = std::make_shared<MappedFile>(std::move(*file));
    pin.desc = ref.desc;
    pin.raw_bytes = ref.raw_bytes;
    pinned->pins_.emplace(key, std::move(pin));
  }
  return pinned;
}

Result<PinnedModel> Store::PinManifest(const std::function<Result<ModelManifest>()>& read) {
  FQ_ASSIGN_OR_RETURN(auto lock, WriterLock());
  PinnedModel out;
  FQ_ASSIGN_OR_RETURN(out.manifest, read());
  std::vector<ModuleKey> keys;
  for (const ManifestSlot& s : out.manifest.slots) keys.push_back(s.key);
  FQ_ASSIGN_OR_RETURN(out.source, Pin(keys));
  return out;
}

Result<PinnedModel> Store::PinQm(const std::string& model, const std::string& label) {
  return PinManifest([&] { return QmManifest(model, label); });
}

Result<PinnedModel> Store::PinEqm(int64_t ensemble_id, int step) {
  return PinManifest([&] { return EqmManifest(ensemble_id, step); });
}

Result<ModuleData> PinnedModules::Load(const ModuleKey& key) {
  auto it = pins_.find(key);
  if (it == pins_.end()) return Status::NotFound("module " + key.Hex() + " was not pinned");
  const Pin& pin = it->second;
  FQ_ASSIGN_OR_RETURN(Bytes raw, ZstdDecompress(pin.file->bytes(), pin.raw_bytes, pin.file->path()));
  if (ComputeModuleKey(pin.desc, raw) != key) {
    return Status::Corruption(pin.file->path() + ": content does not hash to its name");
  }
  return ModuleData::Owned(std::move(raw));
}

Result<ModuleData> Store::Load(const ModuleKey& key) {
  FQ_ASSIGN_OR_RETURN(ModuleRef ref, FindBlob(key));
  FQ_ASSIGN_OR_RETURN(Bytes raw, blobs_.Get(key, ref.desc, ref.raw_bytes));
  return ModuleData::Owned(std::move(raw));
}

QmWriter::QmWriter(Store* store, int64_t model_id, int n_slots)
    : store_(store), model_id_(model_id), entries_(static_cast<size_t>(n_slots)) {}

QmWriter::QmWriter(Store* store, NewModel model)
    : store_(store), new_model_(std::move(model)), entries_(new_model_->slots.size()) {}

Result<QmWriter::Staged> QmWriter::Add(int slot_idx, const ModuleDesc& desc, ByteSpan bytes,
                                       int64_t file_pos, int64_t file_offset) {
  if (slot_idx < 0 || static_cast<size_t>(slot_idx) >= entries_.size()) {
    return Status::InvalidArgument("slot index " + std::to_string(slot_idx) + " out of range");
  }
  FQ_ASSIGN_OR_RETURN(uint64_t expected, desc.nbytes());
  if (expected != bytes.size()) {
    return Status::InvalidArgument("module of type " + std::to_string(desc.qtype) + " shape " +
                                   desc.ShapeString() + " needs " + std::to_string(expected) +
                                   " bytes, got " + std::to_string(bytes.size()));
  }
  BlobStore* blobs = store_->blobs();
  Staged staged;
  staged.key = blobs->key_fn()(desc, bytes);
  staged.raw_bytes = bytes.size();

  auto same_as_stored = [&](const ModuleDesc& stored_desc, uint64_t stored_raw) -> Result<bool> {
    if (!(stored_desc == desc) || stored_raw != bytes.size()) return false;
    FQ_ASSIGN_OR_RETURN(Bytes existing, blobs->Get(staged.key, stored_desc, stored_raw));
    return std::equal(existing.begin(), existing.end(), bytes.begin(), bytes.end());
  };
  auto collision = [&]() {
    return Status::Corruption("module key collision: " + staged.key.Hex() +
                              " already names different bytes; refusing to alias two modules");
  };

  // One thread per key at a time within this writer, so that two slots
  // with the same new module publish it once; the heavy work (compare,
  // compress, write) runs outside the lock.
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return std::find(in_flight_.begin(), in_flight_.end(), staged.key) == in_flight_.end();
    });
    in_flight_.push_back(staged.key);
  }
  std::optional<ModuleDesc> mine;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, d] : published_) {
      if (k == staged.key) mine = d;
    }
  }
  auto work = [&]() -> Status {
    if (mine) {
      FQ_ASSIGN_OR_RETURN(uint64_t n, mine->nbytes());
      FQ_ASSIGN_OR_RETURN(bool same, same_as_stored(*mine, n));
      if (!same) return collision();
      staged.reused = true;
      return Status::OK();
    }
    Result<ModuleRef> existing = store_->FindBlob(staged.key);
    if (existing.ok()) {
      FQ_ASSIGN_OR_RETURN(bool same, same_as_stored(existing->desc, existing->raw_bytes));
      if (!same) return collision();
      staged.reused = true;
      staged.stored_bytes = existing->stored_bytes;
      return Status::OK();
    }
    if (!existing.status().IsNotFound()) return existing.status();
    {
      // Remembered before the write: a Put that fails after its rename
      // still leaves a file for Abandon to remove.
      std::lock_guard<std::mutex> lock(mu_);
      attempted_.push_back(staged.key);
    }
    FQ_ASSIGN_OR_RETURN(staged.stored_bytes, blobs->Put(staged.key, bytes));
    return Status::OK();
  };
  Status s = work();
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), staged.key));
  cv_.notify_all();
  FQ_RETURN_IF_ERROR(s);
  if (!staged.reused) {
    published_.emplace_back(staged.key, desc);
    new_stored_bytes_ += staged.stored_bytes;
    ++new_blobs_;
  }
  entries_[slot_idx] = {true, staged, desc, file_pos, file_offset};
  return staged;
}

void QmWriter::Abandon() {
  std::lock_guard<std::mutex> guard(mu_);
  if (attempted_.empty()) return;
  // Another writer may be about to reference a file we published (same
  // module, no row yet): delete only when we are alone in the store.
  Result<std::unique_ptr<FileLock>> alone = store_->GcLock(false);
  if (!alone.ok()) return;
  for (const ModuleKey& key : attempted_) {
    if (store_->FindBlob(key).status().IsNotFound()) (void)store_->blobs()->Remove(key);
  }
  attempted_.clear();
}

Result<int64_t> QmWriter::Commit(const NewQm& qm) {
  std::lock_guard<std::mutex> guard(mu_);
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!entries_[i].set) {
      return Status::InvalidArgument("QM '" + qm.label + "': slot " + std::to_string(i) + " has no module");
    }
  }
  auto lock = store_->LockIndex();
  Db* db = store_->db();
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  int64_t model_id = model_id_;
  if (new_model_) {
    const NewModel& m = *new_model_;
    FQ_ASSIGN_OR_RETURN(Stmt ins, db->Prepare("INSERT INTO model (name, arch, hparams, gguf_version, "
                                              "n_kv, metadata) VALUES (?, ?, ?, ?, ?, ?)"));
    ins.BindAll(m.name, m.arch, m.hparams_json, m.gguf_version, m.n_kv).BindBlob(6, m.metadata);
    Status s = ins.Run();
    if (!s.ok()) {
      if (s.IsInvalidArgument()) return Status::InvalidArgument("a model named '" + m.name + "' already exists");
      return s;
    }
    model_id = db->LastInsertRowid();
    FQ_ASSIGN_OR_RETURN(Stmt slot, db->Prepare("INSERT INTO slot (model_id, idx, name, kind, layer, "
                                               "n_dims, ne0, ne1, ne2, ne3) VALUES (?,?,?,?,?,?,?,?,?,?)"));
    for (const SlotInfo& si : m.slots) {
      slot.BindAll(model_id, si.idx, si.name, si.kind);
      if (si.layer >= 0) slot.Bind(5, si.layer); else slot.BindNull(5);
      slot.Bind(6, si.shape.n_dims);
      for (int d = 0; d < 4; ++d) slot.Bind(7 + d, si.shape.ne[d]);
      FQ_RETURN_IF_ERROR(slot.Run());
    }
  }
  FQ_ASSIGN_OR_RETURN(Stmt blob, db->Prepare("INSERT OR IGNORE INTO blob (hash, qtype, n_dims, ne0, ne1, "
                                             "ne2, ne3, raw_bytes, stored_bytes, codec) "
                                             "VALUES (?,?,?,?,?,?,?,?,?,'zstd')"));
  for (const Entry& e : entries_) {
    if (e.staged.reused) continue;
    blob.BindAll(e.staged.key.Hex(), e.desc.qtype, e.desc.n_dims, e.desc.ne[0], e.desc.ne[1],
                 e.desc.ne[2], e.desc.ne[3], e.staged.raw_bytes, e.staged.stored_bytes);
    FQ_RETURN_IF_ERROR(blob.Run());
  }
  uint64_t weight_bytes = 0, elements = 0;
  for (const Entry& e : entries_) {
    weight_bytes += e.staged.raw_bytes;
    elements += e.desc.n_elements();
  }
  const double bpw = elements == 0 ? 0.0 : 8.0 * static_cast<double>(weight_bytes) / static_cast<double>(elements);
  FQ_ASSIGN_OR_RETURN(Stmt ins, db->Prepare(
      "INSERT INTO qm (model_id, label, origin, bits_per_weight, weight_bytes, params, source_name, "
      "source_sha256, source_bytes, gguf_version, alignment, n_kv, metadata) "
      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  ins.BindAll(model_id, qm.label, qm.origin, bpw, weight_bytes);
  if (qm.params_json.empty()) ins.BindNull(6); else ins.Bind(6, qm.params_json);
  if (qm.source_name.empty()) ins.BindNull(7); else ins.Bind(7, qm.source_name);
  if (qm.source_sha256.empty()) ins.BindNull(8); else ins.Bind(8, qm.source_sha256);
  ins.Bind(9, qm.source_bytes);
  if (qm.has_gguf_layout) {
    ins.Bind(10, qm.gguf_version).Bind(11, qm.alignment).Bind(12, qm.n_kv).BindBlob(13, qm.metadata);
  } else {
    ins.BindNull(10).BindNull(11).BindNull(12).BindNull(13);
  }
  Status s = ins.Run();
  if (!s.ok()) {
    if (s.IsInvalidArgument()) {
      return Status::InvalidArgument("the model already has a QM labelled '" + qm.label +
                                     "' (choose another with --label)");
    }
    return s;
  }
  const int64_t qm_id = db->LastInsertRowid();
  FQ_ASSIGN_OR_RETURN(Stmt mod, db->Prepare("INSERT INTO qm_module (qm_id, slot_idx, hash, file_pos, "
                                            "file_offset) VALUES (?,?,?,?,?)"));
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    mod.BindAll(qm_id, static_cast<int64_t>(i), e.staged.key.Hex());
    if (e.file_pos >= 0) mod.Bind(4, e.file_pos); else mod.BindNull(4);
    if (e.file_offset >= 0) mod.Bind(5, e.file_offset); else mod.BindNull(5);
    FQ_RETURN_IF_ERROR(mod.Run());
  }
  FQ_RETURN_IF_ERROR(txn->Commit());
  model_id_ = model_id;
  return qm_id;
}

}  // namespace fqpack::store
