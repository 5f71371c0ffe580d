// Store: a directory holding an SQLite index (index.sqlite, schema in
// schema/store.sql) and a blob area (blobs/, one zstd file per module).
//
//   <dir>/index.sqlite   the index (WAL mode)
//   <dir>/blobs/xx/      module blobs, fanned out by the first hex byte
//   <dir>/tmp/           temp files of writers in progress
//   <dir>/LOCK           flock: writers share it, gc takes it exclusively
//
// Modules are stored once by key (store/module_key.h). Writers publish blob
// files first and then add every index row of an operation in one
// transaction, so a kill at any moment leaves either the old or the new
// index, plus at worst orphan files that `verify` reports and gc removes.
//
// Thread-safety: a Store may be used from several threads; its catalog
// serialises index access internally. Several processes may open the same
// store.
#ifndef FQPACK_STORE_STORE_H_
#define FQPACK_STORE_STORE_H_

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "schema/env.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/module_source.h"

namespace fqpack::store {

struct StoreOptions {
  // Weights compress little: on the ../shared ladders level 3 saves 0.04%
  // more than level 1 at half the speed, so imports use level 1.
  int zstd_level = 1;
  // Replaces XXH3-128 as the module key function (tests plant collisions).
  KeyFunction key_fn;
};

class Store;

// A reader's hold on the modules it is going to use: every blob file mapped
// at once, under the store's shared lock, so that a later gc (which unlinks
// files nothing references any more, e.g. after `rm`) cannot pull them away
// mid-run; the mappings keep the data readable until released.
//
// Thread-safety: Load may be called from several threads.
class PinnedModules : public ModuleSource {
 public:
  Result<ModuleData> Load(const ModuleKey& key) override;
  size_t size() const { return pins_.size(); }

 private:
  friend class Store;
  struct Pin {
    std::shared_ptr<MappedFile> file;
    ModuleDesc desc;
    uint64_t raw_bytes = 0;
  };
  std::unordered_map<ModuleKey, Pin, ModuleKeyHash> pins_;
};

// A QM or EQM ready to run: its manifest and its pinned modules.
struct PinnedModel {
  ModelManifest manifest;
  std::shared_ptr<PinnedModules> source;
};

class Store : public ModuleSource {
 public:
  // Creates a new, empty store at `dir` (the parent must exist). OK when
  // `dir` already is a store; InvalidArgument when it is something else.
  static Status Init(Env* env, const std::string& dir, bool* created = nullptr);
  // Opens an existing store. InvalidArgument when `dir` is not a store;
  // NotSupported when its schema is newer than this build knows.
  static Result<std::unique_ptr<Store>> Open(Env* env, const std::string& dir,
                                             const StoreOptions& options = {});
  ~Store() override;

  Env* env() const { return env_; }
  const std::string& dir() const { return dir_; }
  BlobStore* blobs() { return &blobs_; }
  const StoreOptions& options() const { return options_; }

  // The index: every query and write of its rows (store/catalog.h).
  Catalog& catalog() { return *catalog_; }

  // Process-level locks on <dir>/LOCK: writers (import, quantize, search,
  // rm) share it; gc holds it exclusively.
  Result<std::unique_ptr<FileLock>> WriterLock(bool wait = true);
  Result<std::unique_ptr<FileLock>> GcLock(bool wait = false);

  // Look-ups (see CatalogReader), forwarded to the catalog.
  Result<std::vector<ModelInfo>> ListModels();
  Result<ModelInfo> FindModel(const std::string& name);
  // The only model, when `name` is empty and the store holds exactly one.
  Result<ModelInfo> ResolveModel(const std::string& name);
  Result<std::vector<SlotInfo>> Slots(int64_t model_id);
  Result<std::vector<QmInfo>> ListQms(int64_t model_id);
  Result<QmInfo> FindQm(int64_t model_id, const std::string& label);
  Result<std::vector<ModuleRef>> QmModules(int64_t qm_id);
  Result<ModuleRef> FindBlob(const ModuleKey& key);
  Result<StoreStats> Stats();
  Result<std::vector<EnsembleInfo>> ListEnsembles(int64_t model_id);
  Result<EnsembleInfo> FindEnsemble(int64_t model_id, const std::string& name);
  Result<std::vector<EqmInfo>> ListEqms(int64_t ensemble_id);

  // What the runtime needs to run QM `label` of model `model`.
  Result<ModelManifest> QmManifest(const std::string& model, const std::string& label);
  // ... or step `step` of an ensemble.
  Result<ModelManifest> EqmManifest(int64_t ensemble_id, int step);

  // Adds an ensemble and its EQMs in one transaction; returns its id.
  // Every module must be in the store already.
  Result<int64_t> AddEnsemble(const NewEnsemble& ensemble, const std::vector<NewEqm>& eqms);

  // Dynamic precision models (see CatalogReader). PutDynamicModel stores one,
  // replacing the model of the same (hi, lo) pair, in one transaction; its
  // units in rank order. Returns its id.
  Result<std::vector<DynamicModelInfo>> ListDynamicModels(int64_t model_id);
  Result<DynamicModelInfo> FindDynamicModel(int64_t model_id, const std::string& hi,
                                            const std::string& lo);
  Result<int64_t> PutDynamicModel(const DynamicModelInfo& model);

  // Pins the modules of `keys` (see PinnedModules).
  Result<std::shared_ptr<PinnedModules>> Pin(const std::vector<ModuleKey>& keys);
  // Reads a QM's or an EQM's manifest and pins its modules, both under the
  // shared lock, so what was read is what is held.
  Result<PinnedModel> PinQm(const std::string& model, const std::string& label);
  Result<PinnedModel> PinEqm(int64_t ensemble_id, int step);

  // ModuleSource: a module's verified bytes.
  Result<ModuleData> Load(const ModuleKey& key) override;

 private:
  Store(Env* env, std::string dir, StoreOptions options, std::unique_ptr<Catalog> catalog);
  Result<PinnedModel> PinManifest(const std::function<Result<ModelManifest>()>& read);

  Env* env_;
  std::string dir_;
  StoreOptions options_;
  std::unique_ptr<Catalog> catalog_;
  BlobStore blobs_;
};

// Adds one QM (and, for the first checkpoint of a model, the model and its
// slots). Add() publishes each module's blob file unless the store holds
// the same module already (bytes compared on a key hit: a collision is an
// error, never an alias); Commit() writes all index rows in one transaction.
// Nothing is visible in the index before Commit().
//
// Thread-safety: Add may be called from several threads at once.
class QmWriter {
 public:
  struct NewModel {
    std::string name;
    std::string arch;
    JsonFields hparams;
    uint32_t gguf_version = 3;
    uint64_t n_kv = 0;
    Bytes metadata;
    std::vector<SlotInfo> slots;
  };
  struct NewQm {
    std::string label;
    std::string origin = "import";
    JsonFields params;
    std::string source_name;
    std::string source_sha256;
    uint64_t source_bytes = 0;
    // For rewriting the source GGUF byte for byte (import only).
    bool has_gguf_layout = false;
    uint32_t gguf_version = 3;
    uint64_t alignment = 32;
    uint64_t n_kv = 0;
    Bytes metadata;
  };
  struct Staged {
    ModuleKey key;
    uint64_t raw_bytes = 0;
    uint64_t stored_bytes = 0;
    bool reused = false;  // the store (or this writer) already had it
  };

  // For a QM of an existing model.
  QmWriter(Store* store, int64_t model_id, int n_slots);
  // For the first QM of a new model.
  QmWriter(Store* store, NewModel model);

  Result<Staged> Add(int slot_idx, const ModuleDesc& desc, ByteSpan bytes, int64_t file_pos = -1,
                     int64_t file_offset = -1);
  // Writes the rows; returns the new QM's id.
  Result<int64_t> Commit(const NewQm& qm);

  // After a failed Add or Commit: removes the blob files this writer
  // published, unless another writer is active (then they stay as orphans
  // for gc). The caller must have released its writer lock.
  void Abandon();

  uint64_t new_stored_bytes() const { return new_stored_bytes_; }
  uint64_t new_blobs() const { return new_blobs_; }

 private:
  struct Entry {
    bool set = false;
    Staged staged;
    ModuleDesc desc;
    int64_t file_pos = -1;
    int64_t file_offset = -1;
  };

  Store* store_;
  int64_t model_id_ = 0;
  std::optional<NewModel> new_model_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Entry> entries_;
  // Keys some thread of this writer is adding right now.
  std::vector<ModuleKey> in_flight_;
  // Keys this writer published (no index row yet): desc and size.
  std::vector<std::pair<ModuleKey, ModuleDesc>> published_;
  // Keys whose blob file this writer set out to write (published or not).
  std::vector<ModuleKey> attempted_;
  uint64_t new_stored_bytes_ = 0;
  uint64_t new_blobs_ = 0;
};

}  // namespace fqpack::store

#endif  // FQPACK_STORE_STORE_H_
