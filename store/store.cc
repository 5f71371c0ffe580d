#include "store/store.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>

namespace fqpack::store {
namespace {

constexpr char kIndexName[] = "index.sqlite";
constexpr char kLockName[] = "LOCK";

std::string IndexPath(const std::string& dir) { return JoinPath(dir, kIndexName); }

}  // namespace

Store::Store(Env* env, std::string dir, StoreOptions options, std::unique_ptr<Catalog> catalog)
    : env_(env),
      dir_(std::move(dir)),
      options_(std::move(options)),
      catalog_(std::move(catalog)),
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
        return Status::InvalidArgument(
            dir + ": directory is not empty and not an fqpack store (holds '" + c + "')");
      }
    }
  }
  FQ_RETURN_IF_ERROR(env->CreateDir(dir));
  BlobStore blobs(env, dir, 3, nullptr);
  FQ_RETURN_IF_ERROR(blobs.CreateLayout());

  // Build the index under a temp name and rename it into place: a store
  // either has a complete index or none.
  const std::string tmp = UniqueTempName(IndexPath(dir) + ".init");
  FQ_RETURN_IF_ERROR(Catalog::CreateIndex(env, tmp));
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
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<Catalog> catalog,
                      Catalog::OpenIndex(env, IndexPath(dir), dir));
  return std::unique_ptr<Store>(new Store(env, dir, options, std::move(catalog)));
}

Result<std::unique_ptr<FileLock>> Store::WriterLock(bool wait) {
  return env_->LockFile(JoinPath(dir_, kLockName), LockMode::kShared, wait);
}

Result<std::unique_ptr<FileLock>> Store::GcLock(bool wait) {
  Result<std::unique_ptr<FileLock>> lock =
      env_->LockFile(JoinPath(dir_, kLockName), LockMode::kExclusive, wait);
  if (!lock.ok() && lock.status().IsBusy()) {
    return Status::Busy(dir_ +
                        ": another fqpack process is writing to this store (gc needs it alone)");
  }
  return lock;
}

Result<std::vector<ModelInfo>> Store::ListModels() { return catalog_->ListModels(); }
Result<ModelInfo> Store::FindModel(const std::string& name) { return catalog_->FindModel(name); }
Result<ModelInfo> Store::ResolveModel(const std::string& name) {
  return catalog_->ResolveModel(name);
}
Result<std::vector<SlotInfo>> Store::Slots(int64_t model_id) { return catalog_->Slots(model_id); }
Result<std::vector<QmInfo>> Store::ListQms(int64_t model_id) { return catalog_->ListQms(model_id); }
Result<QmInfo> Store::FindQm(int64_t model_id, const std::string& label) {
  return catalog_->FindQm(model_id, label);
}
Result<std::vector<ModuleRef>> Store::QmModules(int64_t qm_id) {
  return catalog_->QmModules(qm_id);
}
Result<ModuleRef> Store::FindBlob(const ModuleKey& key) { return catalog_->FindBlob(key); }
Result<std::vector<EnsembleInfo>> Store::ListEnsembles(int64_t model_id) {
  return catalog_->ListEnsembles(model_id);
}
Result<EnsembleInfo> Store::FindEnsemble(int64_t model_id, const std::string& name) {
  return catalog_->FindEnsemble(model_id, name);
}
Result<std::vector<EqmInfo>> Store::ListEqms(int64_t ensemble_id) {
  return catalog_->ListEqms(ensemble_id);
}
Result<ModelManifest> Store::QmManifest(const std::string& model, const std::string& label) {
  return catalog_->QmManifest(model, label);
}
Result<ModelManifest> Store::EqmManifest(int64_t ensemble_id, int step) {
  return catalog_->EqmManifest(ensemble_id, step);
}
Result<StoreStats> Store::Stats() { return catalog_->Stats(); }
Result<int64_t> Store::AddEnsemble(const NewEnsemble& e, const std::vector<NewEqm>& eqms) {
  return catalog_->AddEnsemble(e, eqms);
}
Result<std::vector<DynamicModelInfo>> Store::ListDynamicModels(int64_t model_id) {
  return catalog_->ListDynamicModels(model_id);
}
Result<DynamicModelInfo> Store::FindDynamicModel(int64_t model_id, const std::string& hi,
                                                 const std::string& lo) {
  return catalog_->FindDynamicModel(model_id, hi, lo);
}
Result<int64_t> Store::PutDynamicModel(const DynamicModelInfo& d) {
  return catalog_->PutDynamicModel(d);
}

Result<std::shared_ptr<PinnedModules>> Store::Pin(const std::vector<ModuleKey>& keys) {
  auto pinned = std::make_shared<PinnedModules>();
  for (const ModuleKey& key : keys) {
    if (pinned->pins_.count(key) != 0) continue;
    FQ_ASSIGN_OR_RETURN(ModuleRef ref, FindBlob(key));
    const std::string path = blobs_.PathOf(key);
    Result<MappedFile> file = env_->MapFile(path);
    if (!file.ok()) {
      if (file.status().IsNotFound())
        return Status::Corruption(path + ": blob of module " + key.Hex() + " is missing");
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
  FQ_ASSIGN_OR_RETURN(Bytes raw,
                      ZstdDecompress(pin.file->bytes(), pin.raw_bytes, pin.file->path()));
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
      return Status::InvalidArgument("QM '" + qm.label + "': slot " + std::to_string(i) +
                                     " has no module");
    }
  }
  NewQmRows rows;
  rows.label = qm.label;
  rows.origin = qm.origin;
  rows.params = qm.params;
  rows.source_name = qm.source_name;
  rows.source_sha256 = qm.source_sha256;
  rows.source_bytes = qm.source_bytes;
  if (qm.has_gguf_layout)
    rows.layout = QmGgufLayout{qm.gguf_version, qm.alignment, qm.n_kv, qm.metadata};
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    ModuleRef r;
    r.slot_idx = static_cast<int>(i);
    r.key = e.staged.key;
    r.desc = e.desc;
    r.raw_bytes = e.staged.raw_bytes;
    r.stored_bytes = e.staged.stored_bytes;
    r.file_pos = e.file_pos;
    r.file_offset = e.file_offset;
    rows.modules.push_back(r);
    if (!e.staged.reused) rows.new_blobs.push_back(r);
  }
  std::optional<NewModelRows> model;
  if (new_model_) {
    const NewModel& m = *new_model_;
    model = NewModelRows{m.name, m.arch, m.hparams, m.gguf_version, m.n_kv, m.metadata, m.slots};
  }
  FQ_ASSIGN_OR_RETURN(auto ids,
                      store_->catalog().AddQm(model ? &*model : nullptr, model_id_, rows));
  const int64_t model_id = ids.first, qm_id = ids.second;
  model_id_ = model_id;
  return qm_id;
}

}  // namespace fqpack::store
