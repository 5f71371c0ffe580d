#include "store/index.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "schema/coding.h"

namespace fqpack::store {
namespace {

// Reads (qtype,) n_dims, ne0..ne3 from consecutive columns; qtype_col < 0
// for a row without a type (a slot).
ModuleDesc ReadShape(const Stmt& st, int qtype_col, int col) {
  const int64_t ne[4] = {st.ColumnInt(col + 1), st.ColumnInt(col + 2), st.ColumnInt(col + 3), st.ColumnInt(col + 4)};
  return ModuleDescFromRow(qtype_col < 0 ? 0 : st.ColumnInt(qtype_col), st.ColumnInt(col), ne);
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

Result<std::vector<ModelInfo>> IndexReader::ListModels() {
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

Result<ModelInfo> IndexReader::FindModel(const std::string& name) {
  {
      FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kModelColumns +
                                              " FROM model WHERE name = ?"));
    st.BindAll(name);
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) return ReadModel(st);
  }
  FQ_ASSIGN_OR_RETURN(std::vector<ModelInfo> all, ListModels());
  std::string names;
  for (const ModelInfo& m : all) names += (names.empty() ? "" : ", ") + m.name;
  return Status::NotFound("no model '" + name + "' in " + where_ +
                          (all.empty() ? " (the store is empty)" : " (models: " + names + ")"));
}

Result<ModelInfo> IndexReader::ResolveModel(const std::string& name) {
  if (!name.empty()) return FindModel(name);
  FQ_ASSIGN_OR_RETURN(std::vector<ModelInfo> all, ListModels());
  if (all.size() == 1) return all[0];
  if (all.empty()) return Status::NotFound(where_ + ": the store holds no model (run `fqpack import`)");
  std::string names;
  for (const ModelInfo& m : all) names += (names.empty() ? "" : ", ") + m.name;
  return Status::InvalidArgument("the store holds several models; name one with --model (" + names + ")");
}

Result<std::vector<SlotInfo>> IndexReader::Slots(int64_t model_id) {
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
    s.shape = ReadShape(st, -1, 4);
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<QmInfo>> IndexReader::ListQms(int64_t model_id) {
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

Result<QmInfo> IndexReader::FindQm(int64_t model_id, const std::string& label) {
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
Result<std::vector<ModuleRef>> IndexReader::ModuleRefs(const char* table, const char* owner, int64_t id) {
  FQ_ASSIGN_OR_RETURN(
      Stmt st, db_->Prepare(std::string("SELECT m.slot_idx, m.hash, b.qtype, b.n_dims, b.ne0, b.ne1, b.ne2, b.ne3, "
                                        "b.raw_bytes, b.stored_bytes FROM ") +
                            table + " m JOIN blob b ON b.hash = m.hash WHERE m." + owner + " = ? ORDER BY m.slot_idx"));
  st.BindAll(id);
  std::vector<ModuleRef> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    ModuleRef r;
    r.slot_idx = static_cast<int>(st.ColumnInt(0));
    Result<ModuleKey> key = ModuleKey::FromHex(st.ColumnText(1));
    if (!key.ok()) return Status::Corruption(where_ + ": " + table + ": bad module key '" + st.ColumnText(1) + "'");
    r.key = *key;
    r.desc = ReadShape(st, 2, 3);
    FQ_RETURN_IF_ERROR(CheckModuleRow(r.desc, st.ColumnInt(8), where_ + ": module " + r.key.Hex()));
    r.raw_bytes = static_cast<uint64_t>(st.ColumnInt(8));
    if (!NonNegative(st.ColumnInt(9), &r.stored_bytes)) {
      return Status::Corruption(where_ + ": module " + r.key.Hex() + ": negative stored size");
    }
    out.push_back(r);
  }
  return out;
}

Result<std::vector<ModuleRef>> IndexReader::QmModules(int64_t qm_id) {
  return ModuleRefs("qm_module", "qm_id", qm_id);
}

Result<ModuleRef> IndexReader::FindBlob(const ModuleKey& key) {
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

Result<ModelManifest> IndexReader::QmManifest(const std::string& model, const std::string& label) {
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

Result<ModelManifest> IndexReader::EqmManifest(int64_t ensemble_id, int step) {
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
  return Status::NotFound("ensemble '" + e.name + "' has no EQM " + std::to_string(step) + " (steps 0.." +
                          std::to_string(eqms.empty() ? 0 : eqms.back().step) + ")");
}

Result<ModelManifest> IndexReader::Manifest(const ModelInfo& m, const std::string& label,
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
    return Status::Corruption(where_ + ": " + label + " has " + std::to_string(mods.size()) + " modules for " +
                              std::to_string(slots.size()) + " slots");
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    if (mods[i].slot_idx != slots[i].idx) {
      return Status::Corruption(where_ + ": " + label + ": no module for slot '" + slots[i].name + "'");
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

EnsembleInfo ReadEnsemble(const Stmt& st) {
  EnsembleInfo e;
  e.id = st.ColumnInt(0);
  e.model_id = st.ColumnInt(1);
  e.name = st.ColumnText(2);
  e.up_qm_id = st.ColumnInt(3);
  e.low_qm_id = st.ColumnInt(4);
  e.library_json = st.ColumnText(5);
  e.params_json = st.ColumnText(6);
  e.calib_sha256 = st.ColumnText(7);
  e.created_at = st.ColumnText(8);
  return e;
}
constexpr char kEnsembleColumns[] =
    "id, model_id, name, up_qm_id, low_qm_id, library, params, calib_sha256, created_at";

double ColumnOrNan(const Stmt& st, int col) { return st.ColumnIsNull(col) ? NAN : st.ColumnDouble(col); }

}  // namespace

Result<std::vector<EnsembleInfo>> IndexReader::ListEnsembles(int64_t model_id) {
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kEnsembleColumns +
                                            " FROM ensemble WHERE model_id = ? ORDER BY id"));
  st.BindAll(model_id);
  std::vector<EnsembleInfo> out;
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadEnsemble(st));
  }
  return out;
}

Result<EnsembleInfo> IndexReader::FindEnsemble(int64_t model_id, const std::string& name) {
  FQ_ASSIGN_OR_RETURN(std::vector<EnsembleInfo> all, ListEnsembles(model_id));
  if (name.empty()) {
    if (all.empty()) return Status::NotFound(where_ + ": the model has no ensemble (run `fqpack search`)");
    return all.back();  // the newest
  }
  std::string names;
  for (const EnsembleInfo& e : all) {
    if (e.name == name) return e;
    names += (names.empty() ? "" : ", ") + e.name;
  }
  return Status::NotFound("no ensemble '" + name + "'" + (all.empty() ? " (the model has none)" : " (ensembles: " + names + ")"));
}

Result<EnsembleInfo> IndexReader::EnsembleById(int64_t ensemble_id) {
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(std::string("SELECT ") + kEnsembleColumns +
                                            " FROM ensemble WHERE id = ?"));
  st.BindAll(ensemble_id);
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound(where_ + ": no ensemble with id " + std::to_string(ensemble_id));
  return ReadEnsemble(st);
}

Result<std::vector<EqmInfo>> IndexReader::ListEqms(int64_t ensemble_id) {
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT id, ensemble_id, step, footprint, calib_metric, calib_ppl, "
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

Result<std::vector<ModuleRef>> IndexReader::EqmModules(int64_t eqm_id) {
  return ModuleRefs("eqm_module", "eqm_id", eqm_id);
}

Result<std::vector<DynamicModelInfo>> IndexReader::ListDynamicModels(int64_t model_id) {
  std::vector<DynamicModelInfo> out;
  // A pack written before schema version 2 has no such table.
  FQ_ASSIGN_OR_RETURN(int64_t has_table,
                      db_->QueryInt("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='dynamic_model'"));
  if (has_table == 0) return out;
  FQ_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(
      "SELECT d.id, d.model_id, d.hi_qm_id, d.lo_qm_id, h.label, l.label, d.n_weights, d.hi_bytes, d.lo_bytes, "
      "d.target_bits, d.calib_bits, d.calib_tokens, d.calib_starts, d.entropies, d.calib_sha256, d.params, "
      "d.created_at FROM dynamic_model d JOIN qm h ON h.id = d.hi_qm_id JOIN qm l ON l.id = d.lo_qm_id "
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
      return Status::Corruption(where_ + ": dynamic model " + std::to_string(d.id) + ": entropies take " +
                                std::to_string(e.size()) + " bytes, not a multiple of 8");
    }
    d.entropies.reserve(e.size() / 8);
    for (size_t i = 0; i < e.size(); i += 8) d.entropies.push_back(std::bit_cast<double>(DecodeU64(e.data() + i)));
    if (!std::is_sorted(d.entropies.begin(), d.entropies.end()) ||
        (!d.entropies.empty() && !(d.entropies.front() >= 0 && std::isfinite(d.entropies.back())))) {
      return Status::Corruption(where_ + ": dynamic model " + std::to_string(d.id) +
                                ": entropies are not finite, non-negative and ascending");
    }
    d.calib_sha256 = st.ColumnText(14);
    d.params_json = st.ColumnText(15);
    d.created_at = st.ColumnText(16);
    out.push_back(std::move(d));
  }
  for (DynamicModelInfo& d : out) {
    FQ_ASSIGN_OR_RETURN(Stmt us, db_->Prepare(
        "SELECT rank, name, layer, sensitivity, extra_bytes, threshold FROM dynamic_unit WHERE dynamic_id = ? "
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
        return Status::Corruption(where_ + ": dynamic model " + std::to_string(d.id) + ": unit " + u.name +
                                  " breaks the rank order or the non-decreasing thresholds");
      }
      d.units.push_back(std::move(u));
    }
  }
  return out;
}

Result<DynamicModelInfo> IndexReader::FindDynamicModel(int64_t model_id, const std::string& hi,
                                                       const std::string& lo) {
  FQ_ASSIGN_OR_RETURN(std::vector<DynamicModelInfo> all, ListDynamicModels(model_id));
  std::string pairs;
  for (DynamicModelInfo& d : all) {
    if (d.hi_label == hi && d.lo_label == lo) return std::move(d);
    pairs += (pairs.empty() ? "" : ", ") + ("hi=" + d.hi_label + ",lo=" + d.lo_label);
  }
  return Status::NotFound(where_ + ": no dynamic precision model for hi=" + hi + ", lo=" + lo +
                          (pairs.empty() ? "" : " (it has " + pairs + ")") +
                          "; run `fqpack calibrate-dynamic --hi " + hi + " --lo " + lo +
                          " --calib FILE` first (for a .fqpack: on the store it came from, then pack again)");
}

}  // namespace fqpack::store
