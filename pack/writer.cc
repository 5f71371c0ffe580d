#include "pack/writer.h"

#include <algorithm>
#include <map>
#include <set>

#include "pack/format.h"
#include "schema/store_sql.h"
#include "store/blob_store.h"

namespace fqpack::pack {
namespace {

using store::ModuleKey;
using store::ModuleRef;

std::string IdList(const std::vector<int64_t>& ids) {
  std::string s = "(";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + ")";
}

struct Placed {
  ModuleRef ref;
  uint64_t offset = 0;
  uint64_t stored = 0;
  bool zstd = false;
  int first_slot = 0;
};

}  // namespace

Result<Codec> ParseCodec(const std::string& name) {
  if (name == "auto") return Codec::kAuto;
  if (name == "raw") return Codec::kRaw;
  if (name == "zstd") return Codec::kZstd;
  return Status::InvalidArgument("codec '" + name + "' is not one of auto, raw, zstd");
}

Result<PackResult> WritePack(store::Store* store, const PackOptions& options, const std::string& out_path) {
  FQ_ASSIGN_OR_RETURN(store::ModelInfo model, store->ResolveModel(options.model));
  PackResult result;
  result.model = model.name;

  // What goes in: ensembles, then QMs.
  std::vector<store::EnsembleInfo> ensembles;
  if (options.ensembles.empty()) {
    FQ_ASSIGN_OR_RETURN(ensembles, store->ListEnsembles(model.id));
  } else {
    for (const std::string& name : options.ensembles) {
      FQ_ASSIGN_OR_RETURN(store::EnsembleInfo e, store->FindEnsemble(model.id, name));
      ensembles.push_back(e);
    }
  }
  std::map<ModuleKey, ModuleRef> modules;
  std::vector<int64_t> eqm_ids, ensemble_ids;
  for (const store::EnsembleInfo& e : ensembles) {
    ensemble_ids.push_back(e.id);
    result.ensembles.push_back(e.name);
    FQ_ASSIGN_OR_RETURN(std::vector<store::EqmInfo> eqms, store->ListEqms(e.id));
    for (const store::EqmInfo& q : eqms) {
      eqm_ids.push_back(q.id);
      auto lock = store->LockIndex();
      FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->index()->EqmModules(q.id));
      for (const ModuleRef& m : mods) modules.emplace(m.key, m);
    }
  }
  result.eqms = eqm_ids.size();

  FQ_ASSIGN_OR_RETURN(std::vector<store::QmInfo> all_qms, store->ListQms(model.id));
  std::vector<int64_t> qm_ids;
  std::set<int64_t> required;  // every packed ensemble's up and low QM
  for (const store::EnsembleInfo& e : ensembles) {
    required.insert(e.up_qm_id);
    required.insert(e.low_qm_id);
  }
  // Dynamic precision runs whole QMs: unless the QMs are chosen by name, the
  // pair of every calibrated dynamic model goes in (when neither was pruned),
  // so the pack carries the model.
  FQ_ASSIGN_OR_RETURN(std::vector<store::DynamicModelInfo> dynamic, store->ListDynamicModels(model.id));
  if (options.qms.empty()) {
    std::set<int64_t> partial;
    for (const store::QmInfo& q : all_qms) {
      if (q.partial) partial.insert(q.id);
    }
    for (const store::DynamicModelInfo& d : dynamic) {
      if (partial.count(d.hi_qm_id) != 0 || partial.count(d.lo_qm_id) != 0) continue;
      required.insert(d.hi_qm_id);
      required.insert(d.lo_qm_id);
    }
  }
  for (const store::QmInfo& q : all_qms) {
    bool take;
    if (!options.qms.empty()) {
      take = std::find(options.qms.begin(), options.qms.end(), q.label) != options.qms.end();
      if (take && q.partial) {
        return Status::InvalidArgument("QM '" + q.label + "' is partial (pruned) and cannot be packed whole");
      }
    } else if (q.partial) {
      take = false;
    } else if (ensembles.empty()) {
      take = true;
    } else {
      FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->QmModules(q.id));
      take = std::all_of(mods.begin(), mods.end(), [&](const ModuleRef& m) { return modules.count(m.key) != 0; });
    }
    take = take || required.count(q.id) != 0;
    if (!take) continue;
    if (q.partial) return Status::InvalidArgument("QM '" + q.label + "' is partial (pruned) and cannot be packed whole");
    qm_ids.push_back(q.id);
    result.qms.push_back(q.label);
    FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->QmModules(q.id));
    for (const ModuleRef& m : mods) modules.emplace(m.key, m);
  }
  for (const std::string& want : options.qms) {
    if (std::find(result.qms.begin(), result.qms.end(), want) == result.qms.end()) {
      FQ_ASSIGN_OR_RETURN(store::QmInfo q, store->FindQm(model.id, want));
      (void)q;
    }
  }
  if (modules.empty()) return Status::InvalidArgument("model '" + model.name + "' has nothing to pack");

  // Layout: modules in the order of the first slot that uses them, so that
  // loading an EQM layer by layer reads the file front to back.
  std::vector<Placed> placed;
  for (const auto& [key, ref] : modules) {
    Placed p;
    p.ref = ref;
    p.first_slot = INT32_MAX;
    placed.push_back(p);
  }
  {
    auto lock = store->LockIndex();
    FQ_ASSIGN_OR_RETURN(store::Stmt st, store->db()->Prepare(
        "SELECT hash, min(slot_idx) FROM (SELECT hash, slot_idx FROM qm_module UNION ALL "
        "SELECT hash, slot_idx FROM eqm_module) GROUP BY hash"));
    std::map<std::string, int> first;
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      first[st.ColumnText(0)] = static_cast<int>(st.ColumnInt(1));
    }
    for (Placed& p : placed) {
      auto it = first.find(p.ref.key.Hex());
      if (it != first.end()) p.first_slot = it->second;
    }
  }
  std::sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) {
    if (a.first_slot != b.first_slot) return a.first_slot < b.first_slot;
    if (a.ref.raw_bytes != b.ref.raw_bytes) return a.ref.raw_bytes > b.ref.raw_bytes;
    return a.ref.key < b.ref.key;
  });

  Bytes index_image;
  Footer footer;
  size_t done = 0;
  Status s = PublishFileWith(store->env(), out_path, [&](WritableFile* f) -> Status {
    uint64_t pos = 0;
    Bytes header = EncodeHeader();
    FQ_RETURN_IF_ERROR(f->Append(header));
    pos += header.size();
    static const Bytes kZeros(kPageAlign, 0);
    auto pad_to = [&](uint64_t target) -> Status {
      const uint64_t n = target - pos;
      result.padding_bytes += n;
      pos = target;
      return f->Append(ByteSpan(kZeros.data(), static_cast<size_t>(n)));
    };
    for (Placed& p : placed) {
      FQ_ASSIGN_OR_RETURN(store::ModuleData data, store->Load(p.ref.key));
      Bytes compressed;
      bool use_zstd = options.codec == Codec::kZstd;
      if (options.codec != Codec::kRaw) {
        FQ_ASSIGN_OR_RETURN(compressed, store::ZstdCompress(data.bytes(), options.zstd_level));
        // Auto keeps zstd only where it saves at least 1/64: below that the
        // decode time on every load buys almost nothing.
        if (options.codec == Codec::kAuto) use_zstd = compressed.size() + data.size() / 64 <= data.size();
      }
      ByteSpan payload = use_zstd ? ByteSpan(compressed) : data.bytes();
      const uint64_t align = payload.size() >= kPageAlignFrom ? kPageAlign : kSmallAlign;
      uint64_t at = pos;
      if (!AlignUp(pos, align, &at)) return Status::InvalidArgument(out_path + ": pack would exceed 2^64 bytes");
      FQ_RETURN_IF_ERROR(pad_to(at));
      FQ_RETURN_IF_ERROR(f->Append(payload));
      p.offset = pos;
      p.stored = payload.size();
      p.zstd = use_zstd;
      pos += payload.size();
      result.module_bytes += data.size();
      result.payload_bytes += payload.size();
      (use_zstd ? result.zstd_modules : result.raw_modules)++;
      if (options.progress) options.progress(++done, placed.size());
    }
    footer.payload_end = pos;

    // The index: the store's schema, filled from the store's own rows. The
    // store's index is ATTACHed, and ATTACH reads through the connection's
    // VFS: the store's Env.
    FQ_ASSIGN_OR_RETURN(auto db, store::Db::Open(store->env(), ":memory:", store::Db::Mode::kReadWriteCreate));
    FQ_RETURN_IF_ERROR(db->Exec(schema::kStoreSql));
    FQ_RETURN_IF_ERROR(db->Exec("PRAGMA user_version = " + std::to_string(schema::kStoreSchemaVersion)));
    FQ_RETURN_IF_ERROR(db->Exec("CREATE TABLE pack_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)"));
    {
      FQ_ASSIGN_OR_RETURN(store::Stmt att, db->Prepare("ATTACH DATABASE ? AS src"));
      att.BindAll(JoinPath(store->dir(), "index.sqlite"));
      FQ_RETURN_IF_ERROR(att.Run());
    }
    const std::string m = std::to_string(model.id);
    FQ_RETURN_IF_ERROR(db->Exec("BEGIN"));
    FQ_RETURN_IF_ERROR(db->Exec("INSERT INTO model SELECT * FROM src.model WHERE id = " + m));
    FQ_RETURN_IF_ERROR(db->Exec("INSERT INTO slot SELECT * FROM src.slot WHERE model_id = " + m));
    {
      FQ_ASSIGN_OR_RETURN(store::Stmt ins, db->Prepare(
          "INSERT INTO blob (hash, qtype, n_dims, ne0, ne1, ne2, ne3, raw_bytes, stored_bytes, codec, pack_offset) "
          "VALUES (?,?,?,?,?,?,?,?,?,?,?)"));
      for (const Placed& p : placed) {
        const store::ModuleDesc& d = p.ref.desc;
        ins.BindAll(p.ref.key.Hex(), d.qtype, d.n_dims, d.ne[0], d.ne[1], d.ne[2], d.ne[3], p.ref.raw_bytes, p.stored,
                    p.zstd ? "zstd" : "raw", p.offset);
        FQ_RETURN_IF_ERROR(ins.Run());
      }
    }
    if (!qm_ids.empty()) {
      FQ_RETURN_IF_ERROR(db->Exec("INSERT INTO qm SELECT * FROM src.qm WHERE id IN " + IdList(qm_ids)));
      FQ_RETURN_IF_ERROR(db->Exec("INSERT INTO qm_module SELECT * FROM src.qm_module WHERE qm_id IN " + IdList(qm_ids)));
    }
    if (!ensemble_ids.empty()) {
      FQ_RETURN_IF_ERROR(db->Exec(
          "INSERT INTO ensemble (id, model_id, name, up_qm_id, low_qm_id, library, params, calib_sha256, calib_text, "
          "created_at) SELECT id, model_id, name, up_qm_id, low_qm_id, library, params, calib_sha256, NULL, "
          "created_at FROM src.ensemble WHERE id IN " + IdList(ensemble_ids)));
      FQ_RETURN_IF_ERROR(db->Exec("INSERT INTO eqm SELECT * FROM src.eqm WHERE ensemble_id IN " + IdList(ensemble_ids)));
      FQ_RETURN_IF_ERROR(db->Exec(
          "INSERT INTO eqm_module SELECT eqm_id, slot_idx, hash, CASE WHEN qm_id IN (SELECT id FROM main.qm) "
          "THEN qm_id END FROM src.eqm_module WHERE eqm_id IN (SELECT id FROM main.eqm)"));
    }
    if (!qm_ids.empty()) {
      // The dynamic models whose two QMs are in the pack (ids kept, so the
      // units follow them).
      const std::string ids = IdList(qm_ids);
      FQ_RETURN_IF_ERROR(db->Exec("INSERT INTO dynamic_model SELECT * FROM src.dynamic_model WHERE model_id = " + m +
                                  " AND hi_qm_id IN " + ids + " AND lo_qm_id IN " + ids));
      FQ_RETURN_IF_ERROR(db->Exec(
          "INSERT INTO dynamic_unit SELECT * FROM src.dynamic_unit WHERE dynamic_id IN (SELECT id FROM main.dynamic_model)"));
      FQ_ASSIGN_OR_RETURN(int64_t n, db->QueryInt("SELECT count(*) FROM main.dynamic_model"));
      result.dynamic_models = static_cast<uint64_t>(n);
    }
    {
      FQ_ASSIGN_OR_RETURN(store::Stmt info, db->Prepare("INSERT INTO pack_info (key, value) VALUES (?, ?)"));
      for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
               {"format_version", std::to_string(kFormatVersion)}, {"model", model.name}}) {
        info.BindAll(k, v);
        FQ_RETURN_IF_ERROR(info.Run());
      }
      FQ_RETURN_IF_ERROR(db->Exec("INSERT INTO pack_info VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%SZ','now'))"));
    }
    FQ_RETURN_IF_ERROR(db->Exec("COMMIT"));
    FQ_RETURN_IF_ERROR(db->Exec("DETACH DATABASE src"));
    Result<int64_t> fk = db->QueryInt("SELECT count(*) FROM pragma_foreign_key_check");
    if (!fk.ok() || *fk != 0) return Status::Corruption("pack index would break its own references");
    FQ_ASSIGN_OR_RETURN(index_image, db->Serialize());

    footer.index_offset = pos;
    footer.index_size = index_image.size();
    footer.index_checksum = Checksum(index_image);
    FQ_RETURN_IF_ERROR(f->Append(index_image));
    pos += index_image.size();
    footer.file_size = pos + kFooterSize;
    return f->Append(EncodeFooter(footer));
  });
  FQ_RETURN_IF_ERROR(s.WithContext(out_path));
  result.file_bytes = footer.file_size;
  result.index_bytes = index_image.size();
  result.modules = placed.size();
  return result;
}

}  // namespace fqpack::pack
