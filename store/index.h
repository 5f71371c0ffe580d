// Read queries over an fqpack index: a store's index.sqlite or the index
// image inside a .fqpack file. Both hold the same tables (schema/store.sql;
// a pack's `blob` table adds the payload offset), so the same code answers
// "which module does each slot of this QM or EQM use" for the store and for
// a device.
//
// Thread-safety: an IndexReader uses its Db's connection; callers serialise.
#ifndef FQPACK_STORE_INDEX_H_
#define FQPACK_STORE_INDEX_H_

#include <cmath>
#include <string>
#include <vector>

#include "store/module_source.h"
#include "store/sqlite.h"

namespace fqpack::store {

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
  std::string hparams_json;
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
  std::string params_json;
  std::string source_name;
  std::string source_sha256;
  uint64_t source_bytes = 0;
  std::string created_at;
};

struct ModuleRef {
  int slot_idx = 0;
  ModuleKey key;
  ModuleDesc desc;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
};

struct EnsembleInfo {
  int64_t id = 0;
  int64_t model_id = 0;
  std::string name;
  int64_t up_qm_id = 0;
  int64_t low_qm_id = 0;
  std::string library_json;  // JSON array of QM labels, highest precision first
  std::string params_json;   // JSON object: search parameters
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
  std::string library_json;
  std::string params_json;
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
  int rank = 0;               // 0 = most sensitive
  std::string name;           // "blk.3", or a tensor name outside the blocks
  int layer = -1;
  double sensitivity = 0;     // mean KL(P_hi || P) in nats when only this unit runs lo
  int64_t extra_bytes = 0;    // hi bytes minus lo bytes of its slots (a mixed QM may make it negative)
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
  std::string params_json;
  std::string created_at;
  std::vector<DynamicUnitInfo> units;  // by rank

  double hi_bits() const { return n_weights == 0 ? 0 : 8.0 * static_cast<double>(hi_bytes) / n_weights; }
  double lo_bits() const { return n_weights == 0 ? 0 : 8.0 * static_cast<double>(lo_bytes) / n_weights; }
};

class IndexReader {
 public:
  // `where` names the index in messages (a store directory or a pack file).
  IndexReader(Db* db, std::string where) : db_(db), where_(std::move(where)) {}

  Result<std::vector<ModelInfo>> ListModels();
  Result<ModelInfo> FindModel(const std::string& name);
  Result<ModelInfo> ResolveModel(const std::string& name);
  Result<std::vector<SlotInfo>> Slots(int64_t model_id);
  Result<std::vector<QmInfo>> ListQms(int64_t model_id);
  Result<QmInfo> FindQm(int64_t model_id, const std::string& label);
  Result<std::vector<ModuleRef>> QmModules(int64_t qm_id);
  Result<ModuleRef> FindBlob(const ModuleKey& key);
  Result<std::vector<EnsembleInfo>> ListEnsembles(int64_t model_id);
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
  Result<DynamicModelInfo> FindDynamicModel(int64_t model_id, const std::string& hi, const std::string& lo);

  Db* db() const { return db_; }
  const std::string& where() const { return where_; }

 private:
  Result<ModelManifest> Manifest(const ModelInfo& m, const std::string& label,
                                 const std::vector<ModuleRef>& mods);
  Result<std::vector<ModuleRef>> ModuleRefs(const char* table, const char* owner, int64_t id);

  Db* db_;
  std::string where_;
};

}  // namespace fqpack::store

#endif  // FQPACK_STORE_INDEX_H_
