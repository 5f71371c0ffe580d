#include "store/catalog.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "schema/checked.h"
#include "schema/coding.h"
#include "schema/store_sql.h"
#include "store/catalog_codec.h"
#include "store/sqlite.h"

namespace fqpack::store {
namespace {

// Reads (qtype,) n_dims, ne0..ne3 from consecutive columns; qtype_col < 0
// for a row without a type (a slot).
ModuleDesc ReadShape(const Stmt& st, int qtype_col, int col) {
  const int64_t ne[4] = {st.ColumnInt(col + 1), st.ColumnInt(col + 2), st.ColumnInt(col + 3),
                         st.ColumnInt(col + 4)};
  return ModuleDescFromRow(qtype_col < 0 ? 0 : st.ColumnInt(qtype_col), st.ColumnInt(col), ne);
}

std::string RowName(const std::string& where, const char* table, const std::string& row) {
  return where + ": " + table + " '" + row + "'";
}

Result<ModelInfo> ReadModel(const Stmt& st, const std::string& where) {
  ModelInfo m;
  m.id = st.ColumnInt(0);
  m.name = st.ColumnText(1);
  m.arch = st.ColumnText(2);
  FQ_ASSIGN_OR_RETURN(
      m.hparams,
      DecodeJsonFields(st.ColumnText(3), RowName(where, "model", m.name) + ": column hparams"));
  m.gguf_version = static_cast<uint32_t>(st.ColumnInt(4));
  m.n_kv = static_cast<uint64_t>(st.ColumnInt(5));
  ByteSpan md = st.ColumnBlob(6);
  m.metadata.assign(md.begin(), md.end());
  m.created_at = st.ColumnText(7);
  return m;
}
constexpr char kModelColumns[] =
    "id, name, arch, hparams, gguf_version, n_kv, metadata, created_at";

Result<QmInfo> ReadQm(const Stmt& st, const std::string& where) {
  QmInfo q;
  q.id = st.ColumnInt(0);
  q.model_id = st.ColumnInt(1);
  q.label = st.ColumnText(2);
  q.origin = st.ColumnText(3);
  q.bits_per_weight = st.ColumnDouble(4);
  q.weight_bytes = static_cast<uint64_t>(st.ColumnInt(5));
  q.partial = st.ColumnInt(6) != 0;
  FQ_ASSIGN_OR_RETURN(q.params, DecodeJsonFields(st.ColumnText(7), RowName(where, "qm", q.label) +
                                                                       ": column params"));
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

Result<std::vector<ModelInfo>> CatalogReader::ListModels() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(
      Stmt st, db_->Prepare(std::string("SELECT ") + kModelColumns + " FROM model ORDER BY name"));
  std::vector<ModelInfo> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    FQ_ASSIGN_OR_RETURN(ModelInfo m, ReadModel(st, where_));
    out.push_back(std::move(m));
  }
  return out;
}

Result<ModelInfo> CatalogReader::FindModel(const std::string& name) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  {
    FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kModelColumns +
                                              " FROM model WHERE name = ?"));
    st.BindAll(name);
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) return ReadModel(st, where_);
  }
  FQ_ASSIGN_OR_RETURN(std::vector<ModelInfo> all, ListModels());
  std::string names;
  for (const ModelInfo& m : all) names += (names.empty() ? "" : ", ") + m.name;
  return Status::NotFound("no model '" + name + "' in " + where_ +
                          (all.empty() ? " (the store is empty)" : " (models: " + names + ")"));
}

Result<ModelInfo> CatalogReader::ResolveModel(const std::string& name) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (!name.empty()) return FindModel(name);
  FQ_ASSIGN_OR_RETURN(std::vector<ModelInfo> all, ListModels());
  if (all.size() == 1) return all[0];
  if (all.empty())
    return Status::NotFound(where_ + ": the store holds no model (run `fqpack import`)");
  std::string names;
  for (const ModelInfo& m : all) names += (names.empty() ? "" : ", ") + m.name;
  return Status::InvalidArgument("the store holds several models; name one with --model (" + names +
                                 ")");
}

Result<std::vector<SlotInfo>> CatalogReader::Slots(int64_t model_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st,
                      db_->Prepare("SELECT idx, name, kind, layer, n_dims, ne0, ne1, ne2, ne3 "
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
    s.shape = ReadShape(st, -1, 4);
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<QmInfo>> CatalogReader::ListQms(int64_t model_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kQmColumns +
                                            " FROM qm WHERE model_id = ? "
                                            "ORDER BY bits_per_weight DESC, label"));
  st.BindAll(model_id);
  std::vector<QmInfo> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    FQ_ASSIGN_OR_RETURN(QmInfo q, ReadQm(st, where_));
    out.push_back(std::move(q));
  }
  return out;
}

Result<QmInfo> CatalogReader::FindQm(int64_t model_id, const std::string& label) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(std::vector<QmInfo> all, ListQms(model_id));
  for (const QmInfo& q : all) {
    if (q.label == label) return q;
  }
  std::string labels;
  for (const QmInfo& q : all) labels += (labels.empty() ? "" : ", ") + q.label;
  return Status::NotFound("no QM '" + label + "'" +
                          (all.empty() ? " (the model has none)" : " (QMs: " + labels + ")"));
}

// The module references of one QM or EQM: `table` is qm_module or
// eqm_module, `owner` the column naming the QM or EQM.
Result<std::vector<ModuleRef>> CatalogReader::ModuleRefs(bool eqm, int64_t id) {
  const char* table = eqm ? "eqm_module" : "qm_module";
  FQ_ASSIGN_OR_RETURN(
      Stmt st,
      db_->Prepare(
          std::string("SELECT m.slot_idx, m.hash, b.qtype, b.n_dims, b.ne0, b.ne1, b.ne2, b.ne3, "
                      "b.raw_bytes, b.stored_bytes, m.qm_id, ") +
          (eqm ? "NULL, NULL" : "m.file_pos, m.file_offset") + " FROM " + table +
          " m JOIN blob b ON b.hash = m.hash WHERE m." + (eqm ? "eqm_id" : "qm_id") +
          " = ? ORDER BY m.slot_idx"));
  st.BindAll(id);
  std::vector<ModuleRef> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    ModuleRef r;
    r.slot_idx = static_cast<int>(st.ColumnInt(0));
    Result<ModuleKey> key = ModuleKey::FromHex(st.ColumnText(1));
    if (!key.ok())
      return Status::Corruption(where_ + ": " + table + ": bad module key '" + st.ColumnText(1) +
                                "'");
    r.key = *key;
    r.desc = ReadShape(st, 2, 3);
    FQ_RETURN_IF_ERROR(CheckModuleRow(r.desc, st.ColumnInt(8), where_ + ": module " + r.key.Hex()));
    r.raw_bytes = static_cast<uint64_t>(st.ColumnInt(8));
    if (!NonNegative(st.ColumnInt(9), &r.stored_bytes)) {
      return Status::Corruption(where_ + ": module " + r.key.Hex() + ": negative stored size");
    }
    r.qm_id = st.ColumnIsNull(10) ? 0 : st.ColumnInt(10);
    r.file_pos = st.ColumnIsNull(11) ? -1 : st.ColumnInt(11);
    r.file_offset = st.ColumnIsNull(12) ? -1 : st.ColumnInt(12);
    out.push_back(r);
  }
  return out;
}

Result<std::vector<ModuleRef>> CatalogReader::QmModules(int64_t qm_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return ModuleRefs(false, qm_id);
}

Result<ModuleRef> CatalogReader::FindBlob(const ModuleKey& key) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT qtype, n_dims, ne0, ne1, ne2, ne3, raw_bytes, "
                                            "stored_bytes FROM blob WHERE hash = ?"));
  st.BindAll(key.Hex());
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("module " + key.Hex() + " is not in " + where_);
  ModuleRef r;
  r.slot_idx = -1;
  r.key = key;
  r.desc = ReadShape(st, 0, 1);
  FQ_RETURN_IF_ERROR(CheckModuleRow(r.desc, st.ColumnInt(6), where_ + ": module " + key.Hex()));
  r.raw_bytes = static_cast<uint64_t>(st.ColumnInt(6));
  if (!NonNegative(st.ColumnInt(7), &r.stored_bytes)) {
    return Status::Corruption(where_ + ": module " + key.Hex() + ": negative stored size");
  }
  return r;
}

Result<ModelManifest> CatalogReader::QmManifest(const std::string& model,
                                                const std::string& label) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(ModelInfo m, ResolveModel(model));
  Result<QmInfo> qm = FindQm(m.id, label);
  if (!qm.ok()) return qm.status().WithContext("model '" + m.name + "'");
  if (qm->partial) {
    return Status::InvalidArgument("QM '" + label + "' of model '" + m.name +
                                   "' is partial (gc --prune removed some of its modules); run an "
                                   "EQM of the ensemble instead");
  }
  FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, QmModules(qm->id));
  return Manifest(m, qm->label, mods);
}

Result<ModelManifest> CatalogReader::EqmManifest(int64_t ensemble_id, int step) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(EnsembleInfo e, EnsembleById(ensemble_id));
  FQ_ASSIGN_OR_RETURN(std::vector<EqmInfo> eqms, ListEqms(ensemble_id));
  for (const EqmInfo& q : eqms) {
    if (q.step != step) continue;
    FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, EqmModules(q.id));
    std::string model_name;
    {
      FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT name FROM model WHERE id = ?"));
      st.BindAll(e.model_id);
      FQ_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return Status::Corruption(where_ + ": ensemble '" + e.name + "' has no model");
      model_name = st.ColumnText(0);
    }
    FQ_ASSIGN_OR_RETURN(ModelInfo m, FindModel(model_name));
    return Manifest(m, "eqm:" + std::to_string(step), mods);
  }
  return Status::NotFound("ensemble '" + e.name + "' has no EQM " + std::to_string(step) +
                          " (steps 0.." + std::to_string(eqms.empty() ? 0 : eqms.back().step) +
                          ")");
}

Result<ModelManifest> CatalogReader::Manifest(const ModelInfo& m, const std::string& label,
                                              const std::vector<ModuleRef>& mods) {
  FQ_ASSIGN_OR_RETURN(std::vector<SlotInfo> slots, Slots(m.id));
  ModelManifest out;
  out.model = m.name;
  out.label = label;
  out.arch = m.arch;
  out.gguf_version = m.gguf_version;
  out.n_kv = m.n_kv;
  out.metadata = m.metadata;
  if (mods.size() != slots.size()) {
    return Status::Corruption(where_ + ": " + label + " has " + std::to_string(mods.size()) +
                              " modules for " + std::to_string(slots.size()) + " slots");
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    if (mods[i].slot_idx != slots[i].idx) {
      return Status::Corruption(where_ + ": " + label + ": no module for slot '" + slots[i].name +
                                "'");
    }
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

namespace {

Result<EnsembleInfo> ReadEnsemble(const Stmt& st, const std::string& where) {
  EnsembleInfo e;
  e.id = st.ColumnInt(0);
  e.model_id = st.ColumnInt(1);
  e.name = st.ColumnText(2);
  e.up_qm_id = st.ColumnInt(3);
  e.low_qm_id = st.ColumnInt(4);
  const std::string row = RowName(where, "ensemble", e.name);
  FQ_ASSIGN_OR_RETURN(e.library, DecodeJsonLabels(st.ColumnText(5), row + ": column library"));
  FQ_ASSIGN_OR_RETURN(e.params, DecodeJsonFields(st.ColumnText(6), row + ": column params"));
  e.calib_sha256 = st.ColumnText(7);
  e.created_at = st.ColumnText(8);
  return e;
}
constexpr char kEnsembleColumns[] =
    "id, model_id, name, up_qm_id, low_qm_id, library, params, calib_sha256, created_at";

double ColumnOrNan(const Stmt& st, int col) {
  return st.ColumnIsNull(col) ? NAN : st.ColumnDouble(col);
}

}  // namespace

Result<std::vector<EnsembleInfo>> CatalogReader::ListEnsembles(int64_t model_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kEnsembleColumns +
                                            " FROM ensemble WHERE model_id = ? ORDER BY id"));
  st.BindAll(model_id);
  std::vector<EnsembleInfo> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    FQ_ASSIGN_OR_RETURN(EnsembleInfo e, ReadEnsemble(st, where_));
    out.push_back(std::move(e));
  }
  return out;
}

Result<EnsembleInfo> CatalogReader::FindEnsemble(int64_t model_id, const std::string& name) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(std::vector<EnsembleInfo> all, ListEnsembles(model_id));
  if (name.empty()) {
    if (all.empty())
      return Status::NotFound(where_ + ": the model has no ensemble (run `fqpack search`)");
    return all.back();  // the newest
  }
  std::string names;
  for (const EnsembleInfo& e : all) {
    if (e.name == name) return e;
    names += (names.empty() ? "" : ", ") + e.name;
  }
  return Status::NotFound("no ensemble '" + name + "'" +
                          (all.empty() ? " (the model has none)" : " (ensembles: " + names + ")"));
}

Result<EnsembleInfo> CatalogReader::EnsembleById(int64_t ensemble_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kEnsembleColumns +
                                            " FROM ensemble WHERE id = ?"));
  st.BindAll(ensemble_id);
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row)
    return Status::NotFound(where_ + ": no ensemble with id " + std::to_string(ensemble_id));
  return ReadEnsemble(st, where_);
}

Result<std::vector<EqmInfo>> CatalogReader::ListEqms(int64_t ensemble_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(
      Stmt st, db_->Prepare("SELECT id, ensemble_id, step, footprint, calib_metric, calib_ppl, "
                            "calib_kl FROM eqm WHERE ensemble_id = ? ORDER BY step"));
  st.BindAll(ensemble_id);
  std::vector<EqmInfo> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    EqmInfo q;
    q.id = st.ColumnInt(0);
    q.ensemble_id = st.ColumnInt(1);
    q.step = static_cast<int>(st.ColumnInt(2));
    q.footprint = static_cast<uint64_t>(st.ColumnInt(3));
    q.calib_metric = ColumnOrNan(st, 4);
    q.calib_ppl = ColumnOrNan(st, 5);
    q.calib_kl = ColumnOrNan(st, 6);
    out.push_back(q);
  }
  return out;
}

Result<std::vector<ModuleRef>> CatalogReader::EqmModules(int64_t eqm_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return ModuleRefs(true, eqm_id);
}

Result<std::vector<DynamicModelInfo>> CatalogReader::ListDynamicModels(int64_t model_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  std::vector<DynamicModelInfo> out;
  // A pack written before schema version 2 has no such table.
  FQ_ASSIGN_OR_RETURN(
      int64_t has_table,
      db_->QueryInt(
          "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='dynamic_model'"));
  if (has_table == 0) return out;
  FQ_ASSIGN_OR_RETURN(Stmt st,
                      db_->Prepare("SELECT d.id, d.model_id, d.hi_qm_id, d.lo_qm_id, h.label, "
                                   "l.label, d.n_weights, d.hi_bytes, d.lo_bytes, "
                                   "d.target_bits, d.calib_bits, d.calib_tokens, d.calib_starts, "
                                   "d.entropies, d.calib_sha256, d.params, "
                                   "d.created_at FROM dynamic_model d JOIN qm h ON h.id = "
                                   "d.hi_qm_id JOIN qm l ON l.id = d.lo_qm_id "
                                   "WHERE d.model_id = ? ORDER BY h.label, l.label"));
  st.BindAll(model_id);
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    DynamicModelInfo d;
    d.id = st.ColumnInt(0);
    d.model_id = st.ColumnInt(1);
    d.hi_qm_id = st.ColumnInt(2);
    d.lo_qm_id = st.ColumnInt(3);
    d.hi_label = st.ColumnText(4);
    d.lo_label = st.ColumnText(5);
    d.n_weights = static_cast<uint64_t>(st.ColumnInt(6));
    d.hi_bytes = static_cast<uint64_t>(st.ColumnInt(7));
    d.lo_bytes = static_cast<uint64_t>(st.ColumnInt(8));
    d.target_bits = st.ColumnDouble(9);
    d.calib_bits = st.ColumnDouble(10);
    d.calib_tokens = st.ColumnInt(11);
    d.calib_starts = st.ColumnInt(12);
    const ByteSpan e = st.ColumnBlob(13);
    if (e.size() % 8 != 0) {
      return Status::Corruption(where_ + ": dynamic model " + std::to_string(d.id) +
                                ": entropies take " + std::to_string(e.size()) +
                                " bytes, not a multiple of 8");
    }
    d.entropies.reserve(e.size() / 8);
    for (size_t i = 0; i < e.size(); i += 8)
      d.entropies.push_back(std::bit_cast<double>(DecodeU64(e.data() + i)));
    if (!std::is_sorted(d.entropies.begin(), d.entropies.end()) ||
        (!d.entropies.empty() &&
         !(d.entropies.front() >= 0 && std::isfinite(d.entropies.back())))) {
      return Status::Corruption(where_ + ": dynamic model " + std::to_string(d.id) +
                                ": entropies are not finite, non-negative and ascending");
    }
    d.calib_sha256 = st.ColumnText(14);
    FQ_ASSIGN_OR_RETURN(d.params, DecodeJsonFields(st.ColumnText(15), where_ + ": dynamic model " +
                                                                          std::to_string(d.id) +
                                                                          ": column params"));
    d.created_at = st.ColumnText(16);
    out.push_back(std::move(d));
  }
  for (DynamicModelInfo& d : out) {
    FQ_ASSIGN_OR_RETURN(Stmt us, db_->Prepare("SELECT rank, name, layer, sensitivity, extra_bytes, "
                                              "threshold FROM dynamic_unit WHERE dynamic_id = ? "
                                              "ORDER BY rank"));
    us.BindAll(d.id);
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, us.Step());
      if (!row) break;
      DynamicUnitInfo u;
      u.rank = static_cast<int>(us.ColumnInt(0));
      u.name = us.ColumnText(1);
      u.layer = us.ColumnIsNull(2) ? -1 : static_cast<int>(us.ColumnInt(2));
      u.sensitivity = us.ColumnDouble(3);
      u.extra_bytes = us.ColumnInt(4);
      u.threshold = us.ColumnIsNull(5) ? INFINITY : us.ColumnDouble(5);
      if (u.rank != static_cast<int>(d.units.size()) ||
          (!d.units.empty() && u.threshold < d.units.back().threshold)) {
        return Status::Corruption(where_ + ": dynamic model " + std::to_string(d.id) + ": unit " +
                                  u.name +
                                  " breaks the rank order or the non-decreasing thresholds");
      }
      d.units.push_back(std::move(u));
    }
  }
  return out;
}

Result<DynamicModelInfo> CatalogReader::FindDynamicModel(int64_t model_id, const std::string& hi,
                                                         const std::string& lo) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(std::vector<DynamicModelInfo> all, ListDynamicModels(model_id));
  std::string pairs;
  for (DynamicModelInfo& d : all) {
    if (d.hi_label == hi && d.lo_label == lo) return std::move(d);
    pairs += (pairs.empty() ? "" : ", ") + ("hi=" + d.hi_label + ",lo=" + d.lo_label);
  }
  return Status::NotFound(
      where_ + ": no dynamic precision model for hi=" + hi + ", lo=" + lo +
      (pairs.empty() ? "" : " (it has " + pairs + ")") + "; run `fqpack calibrate-dynamic --hi " +
      hi + " --lo " + lo +
      " --calib FILE` first (for a .fqpack: on the store it came from, then pack again)");
}

CatalogReader::CatalogReader(std::unique_ptr<Db> db, std::string where)
    : db_(std::move(db)), where_(std::move(where)) {}

CatalogReader::~CatalogReader() = default;

Result<std::optional<QmGgufLayout>> CatalogReader::QmLayout(int64_t qm_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(
      Stmt st, db_->Prepare("SELECT gguf_version, alignment, n_kv, metadata FROM qm WHERE id = ?"));
  st.BindAll(qm_id);
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound(where_ + ": no QM with id " + std::to_string(qm_id));
  if (st.ColumnIsNull(0)) return std::optional<QmGgufLayout>();
  QmGgufLayout l;
  l.gguf_version = static_cast<uint32_t>(st.ColumnInt(0));
  l.alignment = static_cast<uint64_t>(st.ColumnInt(1));
  l.n_kv = static_cast<uint64_t>(st.ColumnInt(2));
  const ByteSpan kv = st.ColumnBlob(3);
  l.metadata.assign(kv.begin(), kv.end());
  return std::optional<QmGgufLayout>(std::move(l));
}

Result<std::vector<std::string>> CatalogReader::IntegrityProblems() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt ic, db_->Prepare("PRAGMA integrity_check"));
  std::vector<std::string> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, ic.Step());
    if (!row) break;
    std::string line = ic.ColumnText(0);
    if (line != "ok") out.push_back(std::move(line));
  }
  return out;
}

Result<int64_t> CatalogReader::BrokenReferences() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return db_->QueryInt("SELECT count(*) FROM pragma_foreign_key_check");
}

// ---- Catalog: a store's index.

namespace {

// Brings an older index to the current schema in one transaction (the new
// tables of store.sql and the new user_version commit together, so a kill
// leaves the old version, which the next open upgrades again). Another
// process may be upgrading at the same moment: the version is read again
// under the write lock.
Status UpgradeIndex(Db* db, int from) {
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  FQ_ASSIGN_OR_RETURN(int64_t now, db->QueryInt("PRAGMA user_version"));
  if (now >= schema::kStoreSchemaVersion) return Status::OK();
  const std::string_view sql = schema::StoreSqlUpgrade(static_cast<int>(now));
  if (sql.empty()) {
    return Status::NotSupported("no upgrade from store schema version " + std::to_string(from));
  }
  FQ_RETURN_IF_ERROR(db->Exec(sql));
  FQ_RETURN_IF_ERROR(
      db->Exec("PRAGMA user_version = " + std::to_string(schema::kStoreSchemaVersion)));
  return txn->Commit();
}

}  // namespace

Status Catalog::CreateIndex(Env* env, const std::string& path) {
  FQ_ASSIGN_OR_RETURN(auto db, Db::Open(env, path, Db::Mode::kReadWriteCreate));
  FQ_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL"));
  FQ_RETURN_IF_ERROR(db->Exec("BEGIN"));
  FQ_RETURN_IF_ERROR(db->Exec(schema::kStoreSql));
  FQ_RETURN_IF_ERROR(
      db->Exec("PRAGMA user_version = " + std::to_string(schema::kStoreSchemaVersion)));
  return db->Exec("COMMIT");
}

Result<std::unique_ptr<Catalog>> Catalog::OpenIndex(Env* env, const std::string& path,
                                                    const std::string& dir) {
  FQ_ASSIGN_OR_RETURN(auto db, Db::Open(env, path, Db::Mode::kReadWrite));
  Result<int64_t> version = db->QueryInt("PRAGMA user_version");
  if (!version.ok()) {
    return Status::InvalidArgument(path + ": not an fqpack store index (" +
                                   version.status().message() + ")");
  }
  if (*version == 0) {
    return Status::InvalidArgument(path + ": not an fqpack store index (schema version 0)");
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
    return Status::Corruption(path + ": index is missing tables of the store schema");
  }
  if (*version < schema::kStoreSchemaVersion) {
    FQ_RETURN_IF_ERROR(UpgradeIndex(db.get(), static_cast<int>(*version)).WithContext(path));
  }
  FQ_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL"));
  return std::make_unique<Catalog>(std::move(db), dir);
}

Catalog::Catalog(std::unique_ptr<Db> db, std::string where)
    : CatalogReader(std::move(db), std::move(where)) {}

Result<StoreStats> Catalog::Stats() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
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

Result<ModelTotals> Catalog::Totals(int64_t model_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  ModelTotals t;
  FQ_ASSIGN_OR_RETURN(
      Stmt st,
      db_->Prepare(
          "SELECT coalesce(sum(b.raw_bytes),0) FROM qm_module m JOIN qm q ON q.id = m.qm_id "
          "JOIN blob b ON b.hash = m.hash WHERE q.model_id = ?"));
  st.BindAll(model_id);
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (row) t.logical = static_cast<uint64_t>(st.ColumnInt(0));
  FQ_ASSIGN_OR_RETURN(
      Stmt u,
      db_->Prepare(
          "SELECT coalesce(sum(raw_bytes),0), coalesce(sum(stored_bytes),0) FROM blob WHERE hash "
          "IN "
          "(SELECT m.hash FROM qm_module m JOIN qm q ON q.id = m.qm_id WHERE q.model_id = ? "
          " UNION SELECT e.hash FROM eqm_module e JOIN eqm x ON x.id = e.eqm_id JOIN ensemble n "
          " ON n.id = x.ensemble_id WHERE n.model_id = ?)"));
  u.BindAll(model_id, model_id);
  FQ_ASSIGN_OR_RETURN(row, u.Step());
  if (row) {
    t.unique_raw = static_cast<uint64_t>(u.ColumnInt(0));
    t.unique_stored = static_cast<uint64_t>(u.ColumnInt(1));
  }
  return t;
}

Result<uint64_t> Catalog::StoredBytes() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(int64_t n, db_->QueryInt("SELECT coalesce(sum(stored_bytes), 0) FROM blob"));
  return static_cast<uint64_t>(n);
}

Result<std::pair<uint64_t, uint64_t>> Catalog::EnsembleModuleBytes(int64_t ensemble_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(
      Stmt q, db_->Prepare("SELECT coalesce(sum(raw_bytes),0), coalesce(sum(stored_bytes),0) "
                           "FROM blob WHERE hash IN (SELECT m.hash FROM eqm_module m JOIN eqm x "
                           "ON x.id = m.eqm_id WHERE x.ensemble_id = ?)"));
  q.BindAll(ensemble_id);
  FQ_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::pair<uint64_t, uint64_t>(0, 0);
  return std::pair<uint64_t, uint64_t>(static_cast<uint64_t>(q.ColumnInt(0)),
                                       static_cast<uint64_t>(q.ColumnInt(1)));
}

Result<Bytes> Catalog::CalibText(int64_t ensemble_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT calib_text FROM ensemble WHERE id = ?"));
  st.BindAll(ensemble_id);
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row || st.ColumnIsNull(0)) {
    return Status::NotFound("ensemble " + std::to_string(ensemble_id) +
                            " keeps no calibration text, so it cannot be searched again");
  }
  const ByteSpan b = st.ColumnBlob(0);
  return Bytes(b.begin(), b.end());
}

Result<std::vector<std::pair<ModuleKey, int64_t>>> Catalog::QmModulePairs() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT DISTINCT hash, qm_id FROM qm_module"));
  std::vector<std::pair<ModuleKey, int64_t>> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    Result<ModuleKey> k = ModuleKey::FromHex(st.ColumnText(0));
    if (!k.ok())
      return Status::Corruption(where_ + ": qm_module: bad module key '" + st.ColumnText(0) + "'");
    out.emplace_back(*k, st.ColumnInt(1));
  }
  return out;
}

Result<std::map<ModuleKey, int>> Catalog::FirstSlots() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(
      Stmt st,
      db_->Prepare(
          "SELECT hash, min(slot_idx) FROM (SELECT hash, slot_idx FROM qm_module UNION ALL "
          "SELECT hash, slot_idx FROM eqm_module) GROUP BY hash"));
  std::map<ModuleKey, int> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    Result<ModuleKey> k = ModuleKey::FromHex(st.ColumnText(0));
    if (k.ok()) out[*k] = static_cast<int>(st.ColumnInt(1));
  }
  return out;
}

Result<int64_t> Catalog::EnsemblesOnQm(int64_t qm_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(
      Stmt st, db_->Prepare("SELECT count(*) FROM ensemble WHERE up_qm_id = ?1 OR low_qm_id = ?1"));
  st.BindAll(qm_id);
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt(0) : 0;
}

namespace {

void BindOrNull(Stmt& st, int i, const std::string& v) {
  if (v.empty())
    st.BindNull(i);
  else
    st.Bind(i, v);
}

void BindMetric(Stmt& st, int i, double v) {
  if (std::isnan(v))
    st.BindNull(i);
  else
    st.Bind(i, v);
}

// The eqm and eqm_module rows of `eqms` for ensemble `ensemble_id`.
Status InsertEqms(Db* db, int64_t ensemble_id, const std::vector<SlotInfo>& slots,
                  const std::vector<NewEqm>& eqms, const char* what) {
  FQ_ASSIGN_OR_RETURN(
      Stmt eqm,
      db->Prepare("INSERT INTO eqm (ensemble_id, step, footprint, calib_metric, calib_ppl, "
                  "calib_kl) VALUES (?,?,?,?,?,?)"));
  FQ_ASSIGN_OR_RETURN(
      Stmt mod,
      db->Prepare("INSERT INTO eqm_module (eqm_id, slot_idx, hash, qm_id) VALUES (?,?,?,?)"));
  for (const NewEqm& q : eqms) {
    if (q.modules.size() != slots.size() || q.source_qm_ids.size() != slots.size()) {
      return Status::InvalidArgument(
          what == nullptr
              ? "EQM " + std::to_string(q.step) + " has " + std::to_string(q.modules.size()) +
                    " modules for " + std::to_string(slots.size()) + " slots"
              : std::string(what) + " " + std::to_string(q.step) + " does not cover every slot");
    }
    eqm.BindAll(ensemble_id, q.step, q.footprint);
    BindMetric(eqm, 4, q.calib_metric);
    BindMetric(eqm, 5, q.calib_ppl);
    BindMetric(eqm, 6, q.calib_kl);
    FQ_RETURN_IF_ERROR(eqm.Run());
    const int64_t eqm_id = db->LastInsertRowid();
    for (size_t i = 0; i < slots.size(); ++i) {
      mod.BindAll(eqm_id, slots[i].idx, q.modules[i].Hex());
      if (q.source_qm_ids[i] > 0)
        mod.Bind(4, q.source_qm_ids[i]);
      else
        mod.BindNull(4);
      Status ms = mod.Run();
      if (!ms.ok()) {
        return ms.IsInvalidArgument() && what == nullptr
                   ? Status::InvalidArgument("EQM " + std::to_string(q.step) + " slot '" +
                                             slots[i].name + "': module " + q.modules[i].Hex() +
                                             " is not in the store")
                   : ms;
      }
    }
  }
  return Status::OK();
}

Status Exec1(Db* db, const char* sql, int64_t id, size_t* changed = nullptr) {
  FQ_ASSIGN_OR_RETURN(Stmt st, db->Prepare(sql));
  st.BindAll(id);
  FQ_RETURN_IF_ERROR(st.Run());
  if (changed != nullptr) *changed += static_cast<size_t>(db->Changes());
  return Status::OK();
}

Status DropEnsembleRows(Db* db, int64_t ensemble_id, RemovedRows* r) {
  FQ_RETURN_IF_ERROR(
      Exec1(db, "DELETE FROM eqm_module WHERE eqm_id IN (SELECT id FROM eqm WHERE ensemble_id = ?)",
            ensemble_id, &r->references));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM eqm WHERE ensemble_id = ?", ensemble_id, &r->eqms));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM ensemble WHERE id = ?", ensemble_id, &r->ensembles));
  return Status::OK();
}

Status DropQmRows(Db* db, int64_t qm_id, RemovedRows* r) {
  FQ_RETURN_IF_ERROR(Exec1(db, "UPDATE eqm_module SET qm_id = NULL WHERE qm_id = ?", qm_id));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM qm_module WHERE qm_id = ?", qm_id, &r->references));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM qm WHERE id = ?", qm_id, &r->qms));
  return Status::OK();
}

}  // namespace

Result<std::pair<int64_t, int64_t>> Catalog::AddQm(const NewModelRows* model, int64_t model_id,
                                                   const NewQmRows& qm) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  Db* db = db_.get();
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  if (model != nullptr) {
    const NewModelRows& m = *model;
    FQ_ASSIGN_OR_RETURN(Stmt ins,
                        db->Prepare("INSERT INTO model (name, arch, hparams, gguf_version, "
                                    "n_kv, metadata) VALUES (?, ?, ?, ?, ?, ?)"));
    ins.BindAll(m.name, m.arch, EncodeJsonFields(m.hparams), m.gguf_version, m.n_kv)
        .BindBlob(6, m.metadata);
    Status s = ins.Run();
    if (!s.ok()) {
      if (s.IsInvalidArgument())
        return Status::InvalidArgument("a model named '" + m.name + "' already exists");
      return s;
    }
    model_id = db->LastInsertRowid();
    FQ_ASSIGN_OR_RETURN(Stmt slot,
                        db->Prepare("INSERT INTO slot (model_id, idx, name, kind, layer, "
                                    "n_dims, ne0, ne1, ne2, ne3) VALUES (?,?,?,?,?,?,?,?,?,?)"));
    for (const SlotInfo& si : m.slots) {
      slot.BindAll(model_id, si.idx, si.name, si.kind);
      if (si.layer >= 0)
        slot.Bind(5, si.layer);
      else
        slot.BindNull(5);
      slot.Bind(6, si.shape.n_dims);
      for (int d = 0; d < 4; ++d) slot.Bind(7 + d, si.shape.ne[d]);
      FQ_RETURN_IF_ERROR(slot.Run());
    }
  }
  FQ_ASSIGN_OR_RETURN(Stmt blob,
                      db->Prepare("INSERT OR IGNORE INTO blob (hash, qtype, n_dims, ne0, ne1, "
                                  "ne2, ne3, raw_bytes, stored_bytes, codec) "
                                  "VALUES (?,?,?,?,?,?,?,?,?,'zstd')"));
  for (const ModuleRef& b : qm.new_blobs) {
    blob.BindAll(b.key.Hex(), b.desc.qtype, b.desc.n_dims, b.desc.ne[0], b.desc.ne[1], b.desc.ne[2],
                 b.desc.ne[3], b.raw_bytes, b.stored_bytes);
    FQ_RETURN_IF_ERROR(blob.Run());
  }
  uint64_t weight_bytes = 0, elements = 0;
  for (const ModuleRef& m : qm.modules) {
    weight_bytes += m.raw_bytes;
    elements += m.desc.n_elements();
  }
  const double bpw =
      elements == 0 ? 0.0 : 8.0 * static_cast<double>(weight_bytes) / static_cast<double>(elements);
  FQ_ASSIGN_OR_RETURN(
      Stmt ins, db->Prepare("INSERT INTO qm (model_id, label, origin, bits_per_weight, "
                            "weight_bytes, params, source_name, "
                            "source_sha256, source_bytes, gguf_version, alignment, n_kv, metadata) "
                            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  ins.BindAll(model_id, qm.label, qm.origin, bpw, weight_bytes);
  if (qm.params.empty())
    ins.BindNull(6);
  else
    ins.Bind(6, EncodeJsonFields(qm.params));
  BindOrNull(ins, 7, qm.source_name);
  BindOrNull(ins, 8, qm.source_sha256);
  ins.Bind(9, qm.source_bytes);
  if (qm.layout) {
    ins.Bind(10, qm.layout->gguf_version)
        .Bind(11, qm.layout->alignment)
        .Bind(12, qm.layout->n_kv)
        .BindBlob(13, qm.layout->metadata);
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
  FQ_ASSIGN_OR_RETURN(Stmt mod,
                      db->Prepare("INSERT INTO qm_module (qm_id, slot_idx, hash, file_pos, "
                                  "file_offset) VALUES (?,?,?,?,?)"));
  for (size_t i = 0; i < qm.modules.size(); ++i) {
    const ModuleRef& m = qm.modules[i];
    mod.BindAll(qm_id, static_cast<int64_t>(i), m.key.Hex());
    if (m.file_pos >= 0)
      mod.Bind(4, m.file_pos);
    else
      mod.BindNull(4);
    if (m.file_offset >= 0)
      mod.Bind(5, m.file_offset);
    else
      mod.BindNull(5);
    FQ_RETURN_IF_ERROR(mod.Run());
  }
  FQ_RETURN_IF_ERROR(txn->Commit());
  return std::pair<int64_t, int64_t>(model_id, qm_id);
}

Result<int64_t> Catalog::AddEnsemble(const NewEnsemble& e, const std::vector<NewEqm>& eqms) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(std::vector<SlotInfo> slots, Slots(e.model_id));
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_.get()));
  FQ_ASSIGN_OR_RETURN(
      Stmt ins, db_->Prepare("INSERT INTO ensemble (model_id, name, up_qm_id, low_qm_id, library, "
                             "params, calib_sha256, calib_text) VALUES (?,?,?,?,?,?,?,?)"));
  ins.BindAll(e.model_id, e.name, e.up_qm_id, e.low_qm_id, EncodeJsonLabels(e.library),
              EncodeJsonFields(e.params), e.calib_sha256)
      .BindBlob(8, e.calib_text);
  Status s = ins.Run();
  if (!s.ok()) {
    if (s.IsInvalidArgument())
      return Status::InvalidArgument("an ensemble named '" + e.name + "' already exists");
    return s;
  }
  const int64_t ensemble_id = db_->LastInsertRowid();
  FQ_RETURN_IF_ERROR(InsertEqms(db_.get(), ensemble_id, slots, eqms, nullptr));
  FQ_RETURN_IF_ERROR(txn->Commit());
  return ensemble_id;
}

Result<int64_t> Catalog::PutDynamicModel(const DynamicModelInfo& d) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_.get()));
  {
    FQ_ASSIGN_OR_RETURN(
        Stmt del, db_->Prepare("DELETE FROM dynamic_model WHERE hi_qm_id = ? AND lo_qm_id = ?"));
    del.BindAll(d.hi_qm_id, d.lo_qm_id);
    FQ_RETURN_IF_ERROR(del.Run());
  }
  Bytes entropies;
  entropies.reserve(d.entropies.size() * 8);
  for (double h : d.entropies) PutF64(&entropies, h);
  FQ_ASSIGN_OR_RETURN(Stmt ins,
                      db_->Prepare("INSERT INTO dynamic_model (model_id, hi_qm_id, lo_qm_id, "
                                   "n_weights, hi_bytes, lo_bytes, target_bits, "
                                   "calib_bits, calib_tokens, calib_starts, entropies, "
                                   "calib_sha256, params) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  ins.BindAll(d.model_id, d.hi_qm_id, d.lo_qm_id, d.n_weights, d.hi_bytes, d.lo_bytes,
              d.target_bits, d.calib_bits, d.calib_tokens, d.calib_starts)
      .BindBlob(11, entropies)
      .Bind(12, d.calib_sha256)
      .Bind(13, EncodeJsonFields(d.params));
  FQ_RETURN_IF_ERROR(ins.Run());
  const int64_t id = db_->LastInsertRowid();
  FQ_ASSIGN_OR_RETURN(Stmt unit, db_->Prepare("INSERT INTO dynamic_unit (dynamic_id, rank, name, "
                                              "layer, sensitivity, extra_bytes, threshold) "
                                              "VALUES (?,?,?,?,?,?,?)"));
  for (size_t r = 0; r < d.units.size(); ++r) {
    const DynamicUnitInfo& u = d.units[r];
    unit.BindAll(id, static_cast<int64_t>(r), u.name);
    if (u.layer >= 0)
      unit.Bind(4, u.layer);
    else
      unit.BindNull(4);
    unit.Bind(5, u.sensitivity).Bind(6, u.extra_bytes);
    if (std::isfinite(u.threshold))
      unit.Bind(7, u.threshold);
    else
      unit.BindNull(7);
    FQ_RETURN_IF_ERROR(unit.Run());
  }
  FQ_RETURN_IF_ERROR(txn->Commit());
  return id;
}

Status Catalog::RemoveQm(int64_t qm_id, RemovedRows* removed) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_.get()));
  FQ_RETURN_IF_ERROR(DropQmRows(db_.get(), qm_id, removed));
  return txn->Commit();
}

Status Catalog::RemoveEnsemble(int64_t ensemble_id, RemovedRows* removed) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_.get()));
  FQ_RETURN_IF_ERROR(DropEnsembleRows(db_.get(), ensemble_id, removed));
  return txn->Commit();
}

Status Catalog::RemoveModel(int64_t model_id, const std::vector<int64_t>& ensemble_ids,
                            const std::vector<int64_t>& qm_ids, RemovedRows* removed) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  Db* db = db_.get();
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  for (int64_t e : ensemble_ids) FQ_RETURN_IF_ERROR(DropEnsembleRows(db, e, removed));
  for (int64_t q : qm_ids) FQ_RETURN_IF_ERROR(DropQmRows(db, q, removed));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM slot WHERE model_id = ?", model_id));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM model WHERE id = ?", model_id));
  return txn->Commit();
}

Status Catalog::ReplaceEqms(int64_t e, const std::vector<std::pair<ModuleKey, int64_t>>& dropped,
                            const std::vector<int64_t>& partial_qms, const JsonFields& params,
                            const std::vector<SlotInfo>& slots, const std::vector<NewEqm>& eqms) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  Db* db = db_.get();
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  {
    FQ_ASSIGN_OR_RETURN(Stmt del,
                        db->Prepare("DELETE FROM qm_module WHERE hash = ? AND qm_id = ?"));
    for (const auto& [key, qm] : dropped) {
      del.BindAll(key.Hex(), qm);
      FQ_RETURN_IF_ERROR(del.Run());
    }
    FQ_ASSIGN_OR_RETURN(Stmt mark, db->Prepare("UPDATE qm SET partial = 1 WHERE id = ?"));
    for (int64_t q : partial_qms) {
      mark.BindAll(q);
      FQ_RETURN_IF_ERROR(mark.Run());
    }
  }
  // The repaired EQMs replace the old ones of the same ensemble.
  FQ_RETURN_IF_ERROR(Exec1(
      db, "DELETE FROM eqm_module WHERE eqm_id IN (SELECT id FROM eqm WHERE ensemble_id = ?)", e));
  FQ_RETURN_IF_ERROR(Exec1(db, "DELETE FROM eqm WHERE ensemble_id = ?", e));
  {
    FQ_ASSIGN_OR_RETURN(Stmt st, db->Prepare("UPDATE ensemble SET params = ? WHERE id = ?"));
    st.BindAll(EncodeJsonFields(params), e);
    FQ_RETURN_IF_ERROR(st.Run());
  }
  FQ_RETURN_IF_ERROR(InsertEqms(db, e, slots, eqms, "repaired EQM"));
  return txn->Commit();
}

Status Catalog::SweepBlobRows(bool drop, std::vector<std::pair<ModuleKey, uint64_t>>* dead,
                              std::vector<ModuleKey>* live) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  Db* db = db_.get();
  FQ_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db));
  FQ_ASSIGN_OR_RETURN(
      Stmt st,
      db->Prepare("SELECT hash, stored_bytes FROM blob WHERE hash NOT IN "
                  "(SELECT hash FROM qm_module UNION SELECT hash FROM eqm_module) ORDER BY hash"));
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    FQ_ASSIGN_OR_RETURN(ModuleKey k, ModuleKey::FromHex(st.ColumnText(0)));
    dead->emplace_back(k, static_cast<uint64_t>(st.ColumnInt(1)));
  }
  if (drop && !dead->empty()) {
    FQ_ASSIGN_OR_RETURN(Stmt del, db->Prepare("DELETE FROM blob WHERE hash = ?"));
    for (const auto& [k, bytes] : *dead) {
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
    live->push_back(k);
  }
  return Status::OK();
}

Result<std::vector<BlobRow>> Catalog::AllBlobs() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st,
                      db_->Prepare("SELECT hash, qtype, n_dims, ne0, ne1, ne2, ne3, raw_bytes, "
                                   "stored_bytes FROM blob ORDER BY hash"));
  std::vector<BlobRow> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    BlobRow r;
    r.hash = st.ColumnText(0);
    r.desc.qtype = static_cast<uint32_t>(st.ColumnInt(1));
    r.desc.n_dims = static_cast<uint32_t>(st.ColumnInt(2));
    for (int d = 0; d < 4; ++d) r.desc.ne[d] = static_cast<uint64_t>(st.ColumnInt(3 + d));
    r.raw_bytes = static_cast<uint64_t>(st.ColumnInt(7));
    r.stored_bytes = static_cast<uint64_t>(st.ColumnInt(8));
    out.push_back(std::move(r));
  }
  return out;
}

Result<CatalogCheck> Catalog::Check() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  CatalogCheck c;
  FQ_ASSIGN_OR_RETURN(c.integrity, IntegrityProblems());
  FQ_ASSIGN_OR_RETURN(Stmt fk, db_->Prepare("PRAGMA foreign_key_check"));
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, fk.Step());
    if (!row) break;
    c.broken_references.push_back("table " + fk.ColumnText(0) + " row " +
                                  std::to_string(fk.ColumnInt(1)) +
                                  " references a missing row of " + fk.ColumnText(2));
  }
  // Every module reference must match its slot's shape.
  static const char* kRefs[] = {
      "SELECT 'qm ' || q.label, s.name, s.n_dims, s.ne0, s.ne1, s.ne2, s.ne3, b.n_dims, b.ne0, "
      "b.ne1, "
      "b.ne2, b.ne3 FROM qm_module m JOIN qm q ON q.id = m.qm_id JOIN slot s ON s.model_id = "
      "q.model_id "
      "AND s.idx = m.slot_idx JOIN blob b ON b.hash = m.hash",
      "SELECT 'eqm ' || e.step, s.name, s.n_dims, s.ne0, s.ne1, s.ne2, s.ne3, b.n_dims, b.ne0, "
      "b.ne1, "
      "b.ne2, b.ne3 FROM eqm_module m JOIN eqm e ON e.id = m.eqm_id JOIN ensemble n ON n.id = "
      "e.ensemble_id JOIN slot s ON s.model_id = n.model_id AND s.idx = m.slot_idx JOIN blob b ON "
      "b.hash = m.hash"};
  for (const char* sql : kRefs) {
    FQ_ASSIGN_OR_RETURN(Stmt refs, db_->Prepare(sql));
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, refs.Step());
      if (!row) break;
      ++c.references_checked;
      bool same = true;
      for (int col = 0; col < 5; ++col)
        same = same && refs.ColumnInt(2 + col) == refs.ColumnInt(7 + col);
      if (!same) c.shape_mismatches.emplace_back(refs.ColumnText(0), refs.ColumnText(1));
    }
  }
  // Each complete QM has one module per slot of its model.
  FQ_ASSIGN_OR_RETURN(
      Stmt cover,
      db_->Prepare(
          "SELECT q.label, (SELECT count(*) FROM slot s WHERE s.model_id = q.model_id), "
          "(SELECT count(*) FROM qm_module m WHERE m.qm_id = q.id) FROM qm q WHERE q.partial = 0"));
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, cover.Step());
    if (!row) break;
    if (cover.ColumnInt(1) != cover.ColumnInt(2)) {
      c.uncovered.emplace_back("qm " + cover.ColumnText(0),
                               std::to_string(cover.ColumnInt(2)) + " modules for " +
                                   std::to_string(cover.ColumnInt(1)) + " slots");
    }
  }
  return c;
}

// ---- PackCatalog: a .fqpack's index image.

Result<std::unique_ptr<PackCatalog>> PackCatalog::Open(ByteSpan image, const std::string& where) {
  Result<std::unique_ptr<Db>> db = Db::OpenImage(image, where);
  if (!db.ok())
    return Status::Corruption(where + ": index is not readable: " + db.status().message());
  return std::unique_ptr<PackCatalog>(new PackCatalog(std::move(*db), where));
}

Result<int64_t> PackCatalog::SchemaVersion() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return db_->QueryInt("PRAGMA user_version");
}

Result<std::string> PackCatalog::Info(const std::string& key) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT value FROM pack_info WHERE key = ?"));
  st.BindAll(key);
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound(where_ + ": no '" + key + "' in pack_info");
  return st.ColumnText(0);
}

Result<std::vector<PackCatalog::PayloadRow>> PackCatalog::Payloads() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  FQ_ASSIGN_OR_RETURN(
      Stmt st, db_->Prepare("SELECT hash, qtype, n_dims, ne0, ne1, ne2, ne3, raw_bytes, "
                            "stored_bytes, codec, pack_offset FROM blob ORDER BY pack_offset"));
  std::vector<PayloadRow> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    PayloadRow p;
    p.hash = st.ColumnText(0);
    p.qtype = st.ColumnInt(1);
    p.n_dims = st.ColumnInt(2);
    for (int d = 0; d < 4; ++d) p.ne[d] = st.ColumnInt(3 + d);
    p.raw_bytes = st.ColumnInt(7);
    p.stored_bytes = st.ColumnInt(8);
    p.codec = st.ColumnText(9);
    if (!st.ColumnIsNull(10)) p.offset = st.ColumnInt(10);
    out.push_back(std::move(p));
  }
  return out;
}

// ---- PackIndexWriter.

Result<std::unique_ptr<PackIndexWriter>> PackIndexWriter::Create(Env* env) {
  std::unique_ptr<PackIndexWriter> w(new PackIndexWriter());
  FQ_ASSIGN_OR_RETURN(w->db_, Db::Open(env, ":memory:", Db::Mode::kReadWriteCreate));
  FQ_RETURN_IF_ERROR(w->db_->Exec(schema::kStoreSql));
  FQ_RETURN_IF_ERROR(
      w->db_->Exec("PRAGMA user_version = " + std::to_string(schema::kStoreSchemaVersion)));
  FQ_RETURN_IF_ERROR(
      w->db_->Exec("CREATE TABLE pack_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)"));
  FQ_RETURN_IF_ERROR(w->db_->Exec("BEGIN"));
  return w;
}

PackIndexWriter::~PackIndexWriter() = default;

Status PackIndexWriter::AddModel(const ModelInfo& m, const std::vector<SlotInfo>& slots) {
  FQ_ASSIGN_OR_RETURN(
      Stmt ins, db_->Prepare("INSERT INTO model (id, name, arch, hparams, gguf_version, n_kv, "
                             "metadata, created_at) VALUES (?,?,?,?,?,?,?,?)"));
  ins.BindAll(m.id, m.name, m.arch, EncodeJsonFields(m.hparams), m.gguf_version, m.n_kv)
      .BindBlob(7, m.metadata)
      .Bind(8, m.created_at);
  FQ_RETURN_IF_ERROR(ins.Run());
  FQ_ASSIGN_OR_RETURN(Stmt slot,
                      db_->Prepare("INSERT INTO slot (model_id, idx, name, kind, layer, "
                                   "n_dims, ne0, ne1, ne2, ne3) VALUES (?,?,?,?,?,?,?,?,?,?)"));
  for (const SlotInfo& si : slots) {
    slot.BindAll(m.id, si.idx, si.name, si.kind);
    if (si.layer >= 0)
      slot.Bind(5, si.layer);
    else
      slot.BindNull(5);
    slot.Bind(6, si.shape.n_dims);
    for (int d = 0; d < 4; ++d) slot.Bind(7 + d, si.shape.ne[d]);
    FQ_RETURN_IF_ERROR(slot.Run());
  }
  return Status::OK();
}

Status PackIndexWriter::AddBlob(const ModuleRef& ref, uint64_t stored_bytes, bool zstd,
                                uint64_t offset) {
  FQ_ASSIGN_OR_RETURN(Stmt ins,
                      db_->Prepare("INSERT INTO blob (hash, qtype, n_dims, ne0, ne1, ne2, ne3, "
                                   "raw_bytes, stored_bytes, codec, pack_offset) "
                                   "VALUES (?,?,?,?,?,?,?,?,?,?,?)"));
  const ModuleDesc& d = ref.desc;
  ins.BindAll(ref.key.Hex(), d.qtype, d.n_dims, d.ne[0], d.ne[1], d.ne[2], d.ne[3], ref.raw_bytes,
              stored_bytes, zstd ? "zstd" : "raw", offset);
  return ins.Run();
}

Status PackIndexWriter::AddQm(const QmInfo& q, const std::optional<QmGgufLayout>& layout) {
  FQ_ASSIGN_OR_RETURN(
      Stmt ins,
      db_->Prepare(
          "INSERT INTO qm (id, model_id, label, origin, bits_per_weight, weight_bytes, partial, "
          "params, source_name, "
          "source_sha256, source_bytes, gguf_version, alignment, n_kv, metadata, created_at) "
          "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  ins.BindAll(q.id, q.model_id, q.label, q.origin, q.bits_per_weight, q.weight_bytes,
              q.partial ? 1 : 0);
  if (q.params.empty())
    ins.BindNull(8);
  else
    ins.Bind(8, EncodeJsonFields(q.params));
  BindOrNull(ins, 9, q.source_name);
  BindOrNull(ins, 10, q.source_sha256);
  ins.Bind(11, q.source_bytes);
  if (layout) {
    ins.Bind(12, layout->gguf_version)
        .Bind(13, layout->alignment)
        .Bind(14, layout->n_kv)
        .BindBlob(15, layout->metadata);
  } else {
    ins.BindNull(12).BindNull(13).BindNull(14).BindNull(15);
  }
  ins.Bind(16, q.created_at);
  FQ_RETURN_IF_ERROR(ins.Run());
  qm_ids_.push_back(q.id);
  return Status::OK();
}

Status PackIndexWriter::AddQmModules(int64_t qm_id, const std::vector<ModuleRef>& modules) {
  FQ_ASSIGN_OR_RETURN(
      Stmt ins, db_->Prepare("INSERT INTO qm_module (qm_id, slot_idx, hash, file_pos, file_offset) "
                             "VALUES (?,?,?,?,?)"));
  for (const ModuleRef& m : modules) {
    ins.BindAll(qm_id, m.slot_idx, m.key.Hex());
    if (m.file_pos >= 0)
      ins.Bind(4, m.file_pos);
    else
      ins.BindNull(4);
    if (m.file_offset >= 0)
      ins.Bind(5, m.file_offset);
    else
      ins.BindNull(5);
    FQ_RETURN_IF_ERROR(ins.Run());
  }
  return Status::OK();
}

Status PackIndexWriter::AddEnsemble(const EnsembleInfo& e) {
  FQ_ASSIGN_OR_RETURN(Stmt ins,
                      db_->Prepare("INSERT INTO ensemble (id, model_id, name, up_qm_id, low_qm_id, "
                                   "library, params, calib_sha256, calib_text, "
                                   "created_at) VALUES (?,?,?,?,?,?,?,?,NULL,?)"));
  ins.BindAll(e.id, e.model_id, e.name, e.up_qm_id, e.low_qm_id, EncodeJsonLabels(e.library),
              EncodeJsonFields(e.params), e.calib_sha256, e.created_at);
  return ins.Run();
}

Status PackIndexWriter::AddEqm(const EqmInfo& q) {
  FQ_ASSIGN_OR_RETURN(
      Stmt ins, db_->Prepare("INSERT INTO eqm (id, ensemble_id, step, footprint, calib_metric, "
                             "calib_ppl, calib_kl) VALUES (?,?,?,?,?,?,?)"));
  ins.BindAll(q.id, q.ensemble_id, q.step, q.footprint);
  BindMetric(ins, 5, q.calib_metric);
  BindMetric(ins, 6, q.calib_ppl);
  BindMetric(ins, 7, q.calib_kl);
  return ins.Run();
}

Status PackIndexWriter::AddEqmModules(int64_t eqm_id, const std::vector<ModuleRef>& modules) {
  FQ_ASSIGN_OR_RETURN(Stmt ins,
                      db_->Prepare("INSERT INTO eqm_module (eqm_id, slot_idx, hash, qm_id) "
                                   "VALUES (?,?,?,?)"));
  for (const ModuleRef& m : modules) {
    ins.BindAll(eqm_id, m.slot_idx, m.key.Hex());
    const bool packed =
        m.qm_id > 0 && std::find(qm_ids_.begin(), qm_ids_.end(), m.qm_id) != qm_ids_.end();
    if (packed)
      ins.Bind(4, m.qm_id);
    else
      ins.BindNull(4);
    FQ_RETURN_IF_ERROR(ins.Run());
  }
  return Status::OK();
}

Status PackIndexWriter::AddDynamicModel(const DynamicModelInfo& d) {
  Bytes entropies;
  entropies.reserve(d.entropies.size() * 8);
  for (double h : d.entropies) PutF64(&entropies, h);
  FQ_ASSIGN_OR_RETURN(
      Stmt ins,
      db_->Prepare(
          "INSERT INTO dynamic_model (id, model_id, hi_qm_id, lo_qm_id, n_weights, hi_bytes, "
          "lo_bytes, target_bits, "
          "calib_bits, calib_tokens, calib_starts, entropies, calib_sha256, params, created_at) "
          "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  ins.BindAll(d.id, d.model_id, d.hi_qm_id, d.lo_qm_id, d.n_weights, d.hi_bytes, d.lo_bytes,
              d.target_bits, d.calib_bits, d.calib_tokens, d.calib_starts)
      .BindBlob(12, entropies)
      .Bind(13, d.calib_sha256)
      .Bind(14, EncodeJsonFields(d.params))
      .Bind(15, d.created_at);
  return ins.Run();
}

Status PackIndexWriter::AddDynamicUnits(const DynamicModelInfo& d) {
  FQ_ASSIGN_OR_RETURN(Stmt unit, db_->Prepare("INSERT INTO dynamic_unit (dynamic_id, rank, name, "
                                              "layer, sensitivity, extra_bytes, threshold) "
                                              "VALUES (?,?,?,?,?,?,?)"));
  for (const DynamicUnitInfo& u : d.units) {
    unit.BindAll(d.id, u.rank, u.name);
    if (u.layer >= 0)
      unit.Bind(4, u.layer);
    else
      unit.BindNull(4);
    unit.Bind(5, u.sensitivity).Bind(6, u.extra_bytes);
    if (std::isfinite(u.threshold))
      unit.Bind(7, u.threshold);
    else
      unit.BindNull(7);
    FQ_RETURN_IF_ERROR(unit.Run());
  }
  return Status::OK();
}

Status PackIndexWriter::AddInfo(const std::string& key, const std::string& value) {
  FQ_ASSIGN_OR_RETURN(Stmt info, db_->Prepare("INSERT INTO pack_info (key, value) VALUES (?, ?)"));
  info.BindAll(key, value);
  return info.Run();
}

Status PackIndexWriter::AddCreatedAt() {
  return db_->Exec(
      "INSERT INTO pack_info VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%SZ','now'))");
}

Result<Bytes> PackIndexWriter::Finish() {
  FQ_RETURN_IF_ERROR(db_->Exec("COMMIT"));
  Result<int64_t> fk = db_->QueryInt("SELECT count(*) FROM pragma_foreign_key_check");
  if (!fk.ok() || *fk != 0) return Status::Corruption("pack index would break its own references");
  return db_->Serialize();
}

}  // namespace fqpack::store
