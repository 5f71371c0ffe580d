// The catalog: the typed data model of an fqpack index, and the only code
// that runs SQL on it. Two indexes hold the same tables (schema/store.sql;
// what each column means and the keys of every JSON column:
// schema/store.md): a store's index.sqlite (Catalog, read-write) and the
// index image inside a .fqpack (PackCatalog, read-only). Both answer the
// same reads (CatalogReader), so "which module does each slot of this QM or
// EQM use" has one implementation for the store and for a device.
// PackIndexWriter builds a pack's index image from typed rows.
//
// Rows come back as records; JSON columns come back typed (JsonFields, a
// list of labels), decoded and encoded by one codec (store/catalog_codec.h).
// A row that is not what fqpack writes (a malformed JSON column, a bad
// module key, an impossible shape) is Corruption naming the index, the row
// and the column; nothing here throws on file contents.
//
// Thread-safety: every method may be called from several threads; each
// serialises on the catalog's own lock. No lock or connection is handed out.
#ifndef FQPACK_STORE_CATALOG_H_
#define FQPACK_STORE_CATALOG_H_

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "schema/coding.h"
#include "schema/env.h"
#include "schema/status.h"
#include "store/module_source.h"

namespace fqpack::store {

class Db;  // store/sqlite.h: private to store/ and pack/

// A scalar member of a JSON column, or an array of strings (the only
// shapes fqpack writes). null is std::monostate.
using JsonValue = std::variant<std::monostate, bool, int64_t, uint64_t, double, std::string,
                               std::vector<std::string>>;

// The members of a JSON object column, in the order they were written (so a
// row read and written again keeps its exact text). Keys per column:
// schema/store.md.
class JsonFields {
 public:
  // Replaces the member `key` in place, or appends it.
  JsonFields& Set(const std::string& key, JsonValue value);
  // nullptr when absent.
  const JsonValue* Find(const std::string& key) const;
  bool Has(const std::string& key) const { return Find(key) != nullptr; }
  // The string member `key`; "" when absent or not a string.
  std::string String(const std::string& key) const;
  // The integer member `key`; nullopt when absent, not an integer or above
  // INT64_MAX.
  std::optional<int64_t> Int(const std::string& key) const;
  // True only when member `key` is the boolean true.
  bool Bool(const std::string& key) const;

  bool empty() const { return members_.empty(); }
  size_t size() const { return members_.size(); }
  const std::vector<std::pair<std::string, JsonValue>>& members() const { return members_; }
  bool operator==(const JsonFields& other) const = default;

 private:
  std::vector<std::pair<std::string, JsonValue>> members_;
};

// The codec's compact JSON text of a JSON column's value: what the index
// stores, and what `--json` output embeds.
std::string ToJson(const JsonFields& fields);
std::string ToJson(const std::vector<std::string>& labels);

struct SlotInfo {
  int idx = 0;
  std::string name;
  std::string kind;
  int layer = -1;
  ModuleDesc shape;  // qtype unused
};

struct ModelInfo {
  int64_t id = 0;
  std::string name;
  std::string arch;
  JsonFields hparams;  // column hparams: the scalar "<arch>.*" GGUF metadata, prefix dropped
  uint32_t gguf_version = 3;
  uint64_t n_kv = 0;
  Bytes metadata;
  std::string created_at;
};

struct QmInfo {
  int64_t id = 0;
  int64_t model_id = 0;
  std::string label;
  std::string origin;  // "import" or "quantize"
  double bits_per_weight = 0;
  uint64_t weight_bytes = 0;
  bool partial = false;
  JsonFields params;  // column params (NULL: empty): how `quantize` made it
  std::string source_name;
  std::string source_sha256;
  uint64_t source_bytes = 0;
  std::string created_at;
};

// What `export` needs to write an imported QM's source GGUF back byte for
// byte (the qm row's layout columns); absent for a quantized QM.
struct QmGgufLayout {
  uint32_t gguf_version = 3;
  uint64_t alignment = 32;
  uint64_t n_kv = 0;
  Bytes metadata;
};

struct ModuleRef {
  int slot_idx = 0;
  ModuleKey key;
  ModuleDesc desc;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
  // qm_module: the QM. eqm_module: the library QM the module came from (0:
  // not recorded).
  int64_t qm_id = 0;
  // qm_module only: position and offset in the source file (-1: none).
  int64_t file_pos = -1;
  int64_t file_offset = -1;
};

struct EnsembleInfo {
  int64_t id = 0;
  int64_t model_id = 0;
  std::string name;
  int64_t up_qm_id = 0;
  int64_t low_qm_id = 0;
  std::vector<std::string> library;  // QM labels, highest precision first
  JsonFields params;                 // search parameters
  std::string calib_sha256;
  std::string created_at;
};

struct EqmInfo {
  int64_t id = 0;
  int64_t ensemble_id = 0;
  int step = 0;
  uint64_t footprint = 0;
  double calib_metric = NAN;  // NaN when not recorded
  double calib_ppl = NAN;
  double calib_kl = NAN;
};

struct NewEnsemble {
  int64_t model_id = 0;
  std::string name;
  int64_t up_qm_id = 0;
  int64_t low_qm_id = 0;
  std::vector<std::string> library;
  JsonFields params;
  std::string calib_sha256;
  Bytes calib_text;
};

struct NewEqm {
  int step = 0;
  uint64_t footprint = 0;
  double calib_metric = NAN;
  double calib_ppl = NAN;
  double calib_kl = NAN;
  // One per slot, in slot order: the module and the library QM it came from.
  std::vector<ModuleKey> modules;
  std::vector<int64_t> source_qm_ids;
};

// A unit of a dynamic precision model (schema/store.sql, dynamic_unit).
struct DynamicUnitInfo {
  int rank = 0;      // 0 = most sensitive
  std::string name;  // "blk.3", or a tensor name outside the blocks
  int layer = -1;
  double sensitivity = 0;  // mean KL(P_hi || P) in nats when only this unit runs lo
  int64_t extra_bytes =
      0;  // hi bytes minus lo bytes of its slots (a mixed QM may make it negative)
  double threshold = INFINITY;  // runs hi when the previous entropy >= this; +inf: never
};

// A precision requirement model for a pair of QMs (schema/store.sql,
// dynamic_model; what it means: runtime/dynamic.h).
struct DynamicModelInfo {
  int64_t id = 0;
  int64_t model_id = 0;
  int64_t hi_qm_id = 0;
  int64_t lo_qm_id = 0;
  std::string hi_label;
  std::string lo_label;
  uint64_t n_weights = 0;
  uint64_t hi_bytes = 0;
  uint64_t lo_bytes = 0;
  double target_bits = 0;
  double calib_bits = 0;
  int64_t calib_tokens = 0;
  int64_t calib_starts = 0;
  std::vector<double> entropies;  // ascending, nats
  std::string calib_sha256;
  JsonFields params;  // calibration parameters
  std::string created_at;
  std::vector<DynamicUnitInfo> units;  // by rank

  double hi_bits() const {
    return n_weights == 0 ? 0 : 8.0 * static_cast<double>(hi_bytes) / n_weights;
  }
  double lo_bits() const {
    return n_weights == 0 ? 0 : 8.0 * static_cast<double>(lo_bytes) / n_weights;
  }
};

// Reads shared by a store's index and a pack's.
class CatalogReader {
 public:
  virtual ~CatalogReader();
  CatalogReader(const CatalogReader&) = delete;
  CatalogReader& operator=(const CatalogReader&) = delete;

  // Names the index in messages (a store directory or a pack file).
  const std::string& where() const { return where_; }

  Result<std::vector<ModelInfo>> ListModels();
  Result<ModelInfo> FindModel(const std::string& name);
  // The only model, when `name` is empty and the index holds exactly one.
  Result<ModelInfo> ResolveModel(const std::string& name);
  Result<std::vector<SlotInfo>> Slots(int64_t model_id);
  Result<std::vector<QmInfo>> ListQms(int64_t model_id);
  Result<QmInfo> FindQm(int64_t model_id, const std::string& label);
  // The source GGUF layout of QM `qm_id`; nullopt when it has none.
  Result<std::optional<QmGgufLayout>> QmLayout(int64_t qm_id);
  Result<std::vector<ModuleRef>> QmModules(int64_t qm_id);
  Result<ModuleRef> FindBlob(const ModuleKey& key);
  Result<std::vector<EnsembleInfo>> ListEnsembles(int64_t model_id);
  // "" = the newest.
  Result<EnsembleInfo> FindEnsemble(int64_t model_id, const std::string& name);
  Result<EnsembleInfo> EnsembleById(int64_t ensemble_id);
  Result<std::vector<EqmInfo>> ListEqms(int64_t ensemble_id);
  Result<std::vector<ModuleRef>> EqmModules(int64_t eqm_id);

  Result<ModelManifest> QmManifest(const std::string& model, const std::string& label);
  Result<ModelManifest> EqmManifest(int64_t ensemble_id, int step);

  // The dynamic precision models of a model (units included), and the one
  // for QMs `hi` and `lo`: NotFound, saying to run `fqpack calibrate-dynamic`,
  // when there is none (also in a pack written before schema version 2).
  Result<std::vector<DynamicModelInfo>> ListDynamicModels(int64_t model_id);
  Result<DynamicModelInfo> FindDynamicModel(int64_t model_id, const std::string& hi,
                                            const std::string& lo);

  // PRAGMA integrity_check's complaints (empty when sound) and the number
  // of rows whose foreign key names a missing row.
  Result<std::vector<std::string>> IntegrityProblems();
  Result<int64_t> BrokenReferences();

 protected:
  CatalogReader(std::unique_ptr<Db> db, std::string where);

  Result<ModelManifest> Manifest(const ModelInfo& m, const std::string& label,
                                 const std::vector<ModuleRef>& mods);
  Result<std::vector<ModuleRef>> ModuleRefs(bool eqm, int64_t id);

  std::recursive_mutex mu_;
  std::unique_ptr<Db> db_;
  std::string where_;
};

// Totals for `ls`: what the QMs would take stored whole, and what the store
// holds.
struct StoreStats {
  uint64_t logical_bytes = 0;  // sum over QMs of their module bytes
  uint64_t unique_raw_bytes = 0;
  uint64_t stored_bytes = 0;  // sum of blob file sizes
  uint64_t blobs = 0;
  uint64_t references = 0;  // qm_module + eqm_module rows
};

// Per-model totals for `ls`.
struct ModelTotals {
  uint64_t logical = 0;        // raw bytes of its QMs stored whole
  uint64_t unique_raw = 0;     // distinct modules of its QMs and EQMs
  uint64_t unique_stored = 0;  // their blob files
};

// A new QM's rows (QmWriter::Commit).
struct NewModelRows {
  std::string name;
  std::string arch;
  JsonFields hparams;
  uint32_t gguf_version = 3;
  uint64_t n_kv = 0;
  Bytes metadata;
  std::vector<SlotInfo> slots;
};
struct NewQmRows {
  std::string label;
  std::string origin = "import";
  JsonFields params;  // empty: NULL
  std::string source_name;
  std::string source_sha256;
  uint64_t source_bytes = 0;
  std::optional<QmGgufLayout> layout;
  // One per slot, in slot order; `new_blobs` rows are inserted unless present.
  std::vector<ModuleRef> modules;
  std::vector<ModuleRef> new_blobs;
};

// Rows that RemoveQm/RemoveEnsemble/RemoveModel dropped.
struct RemovedRows {
  size_t qms = 0;
  size_t ensembles = 0;
  size_t eqms = 0;
  size_t references = 0;  // qm_module + eqm_module rows
};

// The checks of `fqpack verify` that are queries.
struct CatalogCheck {
  std::vector<std::string> integrity;          // integrity_check complaints
  std::vector<std::string> broken_references;  // "table T row R references a missing row of P"
  std::vector<std::pair<std::string, std::string>>
      shape_mismatches;                                        // ("qm L" / "eqm S", slot name)
  std::vector<std::pair<std::string, std::string>> uncovered;  // ("qm L", "M modules for N slots")
  uint64_t references_checked = 0;
};

// A blob row as `verify` sees it: the key text unparsed.
struct BlobRow {
  std::string hash;
  ModuleDesc desc;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
};

// A store's index (index.sqlite). Writes are one transaction each.
class Catalog : public CatalogReader {
 public:
  // Writes a new, empty index of the current schema at `path` (one
  // transaction; the caller renames it into place).
  static Status CreateIndex(Env* env, const std::string& path);
  // Opens the index at `path` of the store `dir` for reading and writing:
  // checks that it is a store index this version reads and brings an older
  // schema up to date.
  static Result<std::unique_ptr<Catalog>> OpenIndex(Env* env, const std::string& path,
                                                    const std::string& dir);
  // Takes over an open connection to a store index.
  Catalog(std::unique_ptr<Db> db, std::string where);

  Result<StoreStats> Stats();
  Result<ModelTotals> Totals(int64_t model_id);
  // Sum of the stored bytes of every blob.
  Result<uint64_t> StoredBytes();
  // Raw and stored bytes of the distinct modules the ensemble's EQMs use.
  Result<std::pair<uint64_t, uint64_t>> EnsembleModuleBytes(int64_t ensemble_id);
  // The calibration text the ensemble was searched on; NotFound when it
  // keeps none.
  Result<Bytes> CalibText(int64_t ensemble_id);
  // Every distinct (module, QM) pair of qm_module.
  Result<std::vector<std::pair<ModuleKey, int64_t>>> QmModulePairs();
  // The lowest slot index at which any QM or EQM uses each module.
  Result<std::map<ModuleKey, int>> FirstSlots();
  // How many ensembles build on the QM as their n_up or n_low.
  Result<int64_t> EnsemblesOnQm(int64_t qm_id);

  // Adds a QM (and, with `model`, its new model and slots) in one
  // transaction; returns (model id, QM id). `model_id` names the existing
  // model when `model` is null.
  Result<std::pair<int64_t, int64_t>> AddQm(const NewModelRows* model, int64_t model_id,
                                            const NewQmRows& qm);
  // Adds an ensemble and its EQMs in one transaction; returns its id.
  Result<int64_t> AddEnsemble(const NewEnsemble& ensemble, const std::vector<NewEqm>& eqms);
  // Stores a dynamic model, replacing the one of the same (hi, lo) pair.
  Result<int64_t> PutDynamicModel(const DynamicModelInfo& model);

  // Row removal (store/gc.h has the rules), each one transaction.
  Status RemoveQm(int64_t qm_id, RemovedRows* removed);
  Status RemoveEnsemble(int64_t ensemble_id, RemovedRows* removed);
  Status RemoveModel(int64_t model_id, const std::vector<int64_t>& ensemble_ids,
                     const std::vector<int64_t>& qm_ids, RemovedRows* removed);
  // Prune (store/prune.h): drops the (module, QM) rows, marks `partial_qms`,
  // replaces the ensemble's EQMs by `eqms` and its params, in one
  // transaction.
  Status ReplaceEqms(int64_t ensemble_id, const std::vector<std::pair<ModuleKey, int64_t>>& dropped,
                     const std::vector<int64_t>& partial_qms, const JsonFields& params,
                     const std::vector<SlotInfo>& slots, const std::vector<NewEqm>& eqms);
  // The blobs no QM or EQM references (key, stored bytes), ordered by key;
  // with `drop` their rows go in one transaction. Then every remaining key.
  Status SweepBlobRows(bool drop, std::vector<std::pair<ModuleKey, uint64_t>>* dead,
                       std::vector<ModuleKey>* live);

  // `verify`: every blob row, and the checks that are queries.
  Result<std::vector<BlobRow>> AllBlobs();
  Result<CatalogCheck> Check();
};

// A .fqpack's index image: read-only, opened from memory.
class PackCatalog : public CatalogReader {
 public:
  // `image` must outlive the catalog. Corruption when it is not a readable
  // database.
  static Result<std::unique_ptr<PackCatalog>> Open(ByteSpan image, const std::string& where);

  Result<int64_t> SchemaVersion();
  // A pack_info value; NotFound when absent.
  Result<std::string> Info(const std::string& key);
  // The pack's blob rows as written, ordered by payload offset (codec text
  // and offset unvalidated; pack/reader.cc checks them).
  struct PayloadRow {
    std::string hash;
    int64_t qtype = 0, n_dims = 0;
    int64_t ne[4] = {0, 0, 0, 0};
    int64_t raw_bytes = 0, stored_bytes = 0;
    std::string codec;
    std::optional<int64_t> offset;
  };
  Result<std::vector<PayloadRow>> Payloads();

 private:
  using CatalogReader::CatalogReader;
};

// Builds a .fqpack's index image: the store schema plus pack_info, filled
// row by row from typed records (read from a store's Catalog). Rows go in
// in the order schema/fqpack_format.md gives (the order fixes the image's
// bytes). After a failed Add the writer is to be dropped.
class PackIndexWriter {
 public:
  // `env` serves the in-memory database (it does no file I/O).
  static Result<std::unique_ptr<PackIndexWriter>> Create(Env* env);
  ~PackIndexWriter();

  Status AddModel(const ModelInfo& model, const std::vector<SlotInfo>& slots);
  // A payload: its blob row with codec and offset.
  Status AddBlob(const ModuleRef& ref, uint64_t stored_bytes, bool zstd, uint64_t offset);
  // Every QM row, then every QM's qm_module rows.
  Status AddQm(const QmInfo& qm, const std::optional<QmGgufLayout>& layout);
  Status AddQmModules(int64_t qm_id, const std::vector<ModuleRef>& modules);
  // The ensemble row without its calibration text.
  Status AddEnsemble(const EnsembleInfo& ensemble);
  Status AddEqm(const EqmInfo& eqm);
  // eqm_module rows; a source QM that is not in the pack is not recorded.
  Status AddEqmModules(int64_t eqm_id, const std::vector<ModuleRef>& modules);
  Status AddDynamicModel(const DynamicModelInfo& model);
  Status AddDynamicUnits(const DynamicModelInfo& model);
  Status AddInfo(const std::string& key, const std::string& value);
  Status AddCreatedAt();
  // Commits, checks the references and returns the database image.
  Result<Bytes> Finish();

 private:
  PackIndexWriter() = default;
  std::unique_ptr<Db> db_;
  std::vector<int64_t> qm_ids_;
};

}  // namespace fqpack::store

#endif  // FQPACK_STORE_CATALOG_H_
