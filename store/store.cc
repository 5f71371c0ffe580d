#include "store/store.h"

#include <algorithm>
#include <condition_variable>

#include "schema/store_sql.h"

namespace fqpack::store {
namespace {

constexpr char kIndexName[] = "index.sqlite";
constexpr char kLockName[] = "LOCK";

std::string IndexPath(const std::string& dir) { return JoinPath(dir, kIndexName); }

ModuleDesc ReadShape(const Stmt& st, int col) {
  ModuleDesc d;
  d.n_dims = static_cast<uint32_t>(st.ColumnInt(col));
  for (int i = 0; i < 4; ++i) d.ne[i] = static_cast<uint64_t>(st.ColumnInt(col + 1 + i));
  return d;
}

ModelInfo ReadModel(const Stmt& st) {
  ModelInfo m;
  m.id = st.ColumnInt(0);
  m.name = st.ColumnText(1);
  m.arch = st.ColumnText(2);
  m.hparams_json = st.ColumnText(3);
  m.gguf_version = static_cast<uint32_t>(st.ColumnInt(4));
  m.n_kv = static_cast<uint64_t>(st.ColumnInt(5));
  ByteSpan md = st.ColumnBlob(6);
  m.metadata.assign(md.begin(), md.end());
  m.created_at = st.ColumnText(7);
  return m;
}
constexpr char kModelColumns[] =
    "id, name, arch, hparams, gguf_version, n_kv, metadata, created_at";

QmInfo ReadQm(const Stmt& st) {
  QmInfo q;
  q.id = st.ColumnInt(0);
  q.model_id = st.ColumnInt(1);
  q.label = st.ColumnText(2);
  q.origin = st.ColumnText(3);
  q.bits_per_weight = st.ColumnDouble(4);
  q.weight_bytes = static_cast<uint64_t>(st.ColumnInt(5));
  q.partial = st.ColumnInt(6) != 0;
  q.params_json = st.ColumnText(7);
  q.source_name = st.ColumnText(8);
  q.source_sha256 = st.ColumnText(9);
  q.source_bytes = static_cast<uint64_t>(st.ColumnInt(10));
  q.created_at = st.ColumnText(11);
  return q;
}
constexpr char kQmColumns[] =
    "id, model_id, label, origin, bits_per_weight, weight_bytes, partial, params, source_name, "
    "source_sha256, source_bytes, created_at";

}  // namespace

Store::Store(Env* env, std::string dir, StoreOptions options, std::unique_ptr<Db> db)
    : env_(env),
      dir_(std::move(dir)),
      options_(std::move(options)),
      db_(std::move(db)),
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
    FQ_ASSIGN_OR_RETURN(auto db, Db::Open(tmp, Db::Mode::kReadWriteCreate));
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
  FQ_ASSIGN_OR_RETURN(auto db, Db::Open(IndexPath(dir), Db::Mode::kReadWrite));
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
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kModelColumns +
                                            " FROM model ORDER BY name"));
  std::vector<ModelInfo> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadModel(st));
  }
  return out;
}

Result<ModelInfo> Store::FindModel(const std::string& name) {
  {
    auto lock = LockIndex();
    FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kModelColumns +
                                              " FROM model WHERE name = ?"));
    st.BindAll(name);
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) return ReadModel(st);
  }
  FQ_ASSIGN_OR_RETURN(std::vector<ModelInfo> all, ListModels());
  std::string names;
  for (const ModelInfo& m : all) names += (names.empty() ? "" : ", ") + m.name;
  return Status::NotFound("no model '" + name + "' in " + dir_ +
                          (all.empty() ? " (the store is empty)" : " (models: " + names + ")"));
}

Result<ModelInfo> Store::ResolveModel(const std::string& name) {
  if (!name.empty()) return FindModel(name);
  FQ_ASSIGN_OR_RETURN(std::vector<ModelInfo> all, ListModels());
  if (all.size() == 1) return all[0];
  if (all.empty()) return Status::NotFound(dir_ + ": the store holds no model (run `fqpack import`)");
  std::string names;
  for (const ModelInfo& m : all) names += (names.empty() ? "" : ", ") + m.name;
  return Status::InvalidArgument("the store holds several models; name one with --model (" + names + ")");
}

Result<std::vector<SlotInfo>> Store::Slots(int64_t model_id) {
  auto lock = LockIndex();
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT idx, name, kind, layer, n_dims, ne0, ne1, ne2, ne3 "
                                            "FROM slot WHERE model_id = ? ORDER BY idx"));
  st.BindAll(model_id);
  std::vector<SlotInfo> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    SlotInfo s;
    s.idx = static_cast<int>(st.ColumnInt(0));
    s.name = st.ColumnText(1);
    s.kind = st.ColumnText(2);
    s.layer = st.ColumnIsNull(3) ? -1 : static_cast<int>(st.ColumnInt(3));
    s.shape = ReadShape(st, 4);
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<QmInfo>> Store::ListQms(int64_t model_id) {
  auto lock = LockIndex();
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kQmColumns +
                                            " FROM qm WHERE model_id = ? "
                                            "ORDER BY bits_per_weight DESC, label"));
  st.BindAll(model_id);
  std::vector<QmInfo> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadQm(st));
  }
  return out;
}

Result<QmInfo> Store::FindQm(int64_t model_id, const std::string& label) {
  FQ_ASSIGN_OR_RETURN(std::vector<QmInfo> all, ListQms(model_id));
  for (const QmInfo& q : all) {
    if (q.label == label) return q;
  }
  std::string labels;
  for (const QmInfo& q : all) labels += (labels.empty() ? "" : ", ") + q.label;
  return Status::NotFound("no QM '" + label + "'" +
                          (all.empty() ? " (the model has none)" : " (QMs: " + labels + ")"));
}

Result<std::vector<ModuleRef>> Store::QmModules(int64_t qm_id) {
  auto lock = LockIndex();
  FQ_ASSIGN_OR_RETURN(
      Stmt st, db_->Prepare("SELECT m.slot_idx, m.hash, b.qtype, b.n_dims, b.ne0, b.ne1, b.ne2, b.ne3, "
                            "b.raw_bytes, b.stored_bytes FROM qm_module m JOIN blob b ON b.hash = m.hash "
                            "WHERE m.qm_id = ? ORDER BY m.slot_idx"));
  st.BindAll(qm_id);
  std::vector<ModuleRef> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    ModuleRef r;
    r.slot_idx = static_cast<int>(st.ColumnInt(0));
    FQ_ASSIGN_OR_RETURN(r.key, ModuleKey::FromHex(st.ColumnText(1)));
    r.desc = ReadShape(st, 3);
    r.desc.qtype = static_cast<uint32_t>(st.ColumnInt(2));
    r.raw_bytes = static_cast<uint64_t>(st.ColumnInt(8));
    r.stored_bytes = static_cast<uint64_t>(st.ColumnInt(9));
    out.push_back(r);
  }
  return out;
}

Result<ModuleRef> Store::FindBlob(const ModuleKey& key) {
  auto lock = LockIndex();
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT qtype, n_dims, ne0, ne1, ne2, ne3, raw_bytes, "
                                            "stored_bytes FROM blob WHERE hash = ?"));
  st.BindAll(key.Hex());
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("module " + key.Hex() + " is not in " + dir_);
  ModuleRef r;
  r.slot_idx = -1;
  r.key = key;
  r.desc = ReadShape(st, 1);
  r.desc.qtype = static_cast<uint32_t>(st.ColumnInt(0));
  r.raw_bytes = static_cast<uint64_t>(st.ColumnInt(6));
  r.stored_bytes = static_cast<uint64_t>(st.ColumnInt(7));
  return r;
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

Result<ModelManifest> Store::QmManifest(const std::string& model, const std::string& label) {
  FQ_ASSIGN_OR_RETURN(ModelInfo m, ResolveModel(model));
  Result<QmInfo> qm = FindQm(m.id, label);
  if (!qm.ok()) return qm.status().WithContext("model '" + m.name + "'");
  if (qm->partial) {
    return Status::InvalidArgument("QM '" + label + "' of model '" + m.name +
                                   "' is partial (gc --prune removed some of its modules); run an "
                                   "EQM of the ensemble instead");
  }
  FQ_ASSIGN_OR_RETURN(std::vector<SlotInfo> slots, Slots(m.id));
  FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, QmModules(qm->id));
  ModelManifest out;
  out.model = m.name;
  out.label = qm->label;
  out.arch = m.arch;
  out.gguf_version = m.gguf_version;
  out.n_kv = m.n_kv;
  out.metadata = m.metadata;
  if (mods.size() != slots.size()) {
    return Status::Corruption("QM '" + label + "' has " + std::to_string(mods.size()) +
                              " modules for " + std::to_string(slots.size()) + " slots");
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    ManifestSlot ms;
    ms.idx = slots[i].idx;
    ms.name = slots[i].name;
    ms.kind = slots[i].kind;
    ms.layer = slots[i].layer;
    ms.desc = mods[i].desc;
    ms.key = mods[i].key;
    ms.bytes = mods[i].raw_bytes;
    out.slots.push_back(std::move(ms));
  }
  return out;
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
