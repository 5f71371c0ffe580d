#include "store/gguf_export.h"

#include "schema/gguf.h"
#include "schema/quant_types.h"

namespace fqpack::store {
namespace {

Status CheckGgufTypes(const ModelManifest& manifest) {
  for (const ManifestSlot& s : manifest.slots) {
    if (FindGgmlType(s.desc.qtype) == nullptr) {
      return Status::NotSupported("tensor '" + s.name + "' is " + QTypeName(s.desc.qtype) +
                                  ", an fqpack type that GGUF cannot hold");
    }
  }
  return Status::OK();
}

Result<ExportResult> WriteSpec(Env* env, ModuleSource* source, const gguf::FileSpec& spec,
                               const std::vector<ModuleKey>& keys, const std::string& out_path,
                               const std::function<void(size_t, size_t)>& progress) {
  ExportResult result;
  result.tensors = spec.tensors.size();
  ModuleData current;
  size_t done = 0;
  Status s = PublishFileWith(env, out_path, [&](WritableFile* f) {
    return gguf::WriteFile(f, spec, [&](size_t i) -> Result<ByteSpan> {
      FQ_ASSIGN_OR_RETURN(current, source->Load(keys[i]));
      if (progress) progress(++done, spec.tensors.size());
      return current.bytes();
    });
  });
  FQ_RETURN_IF_ERROR(s.WithContext(out_path));
  FQ_ASSIGN_OR_RETURN(result.bytes, env->GetFileSize(out_path));
  return result;
}

}  // namespace

Result<ExportResult> ExportManifestGguf(Env* env, ModuleSource* source, const ModelManifest& manifest,
                                        const std::string& out_path,
                                        const std::function<void(size_t, size_t)>& progress) {
  FQ_RETURN_IF_ERROR(CheckGgufTypes(manifest));
  gguf::FileSpec spec;
  spec.version = manifest.gguf_version;
  spec.n_kv = manifest.n_kv;
  spec.kv = manifest.metadata;
  FQ_ASSIGN_OR_RETURN(gguf::Metadata md, gguf::ParseMetadata(manifest.metadata, manifest.n_kv, "metadata"));
  if (Result<uint64_t> a = md.GetUint("general.alignment"); a.ok()) spec.alignment = *a;
  std::vector<ModuleKey> keys;
  for (const ManifestSlot& s : manifest.slots) {
    gguf::TensorInfo t;
    t.name = s.name;
    t.n_dims = s.desc.n_dims;
    t.ne = s.desc.ne;
    t.type = s.desc.qtype;
    spec.tensors.push_back(std::move(t));
    keys.push_back(s.key);
  }
  FQ_RETURN_IF_ERROR(gguf::AssignOffsets(&spec));
  return WriteSpec(env, source, spec, keys, out_path, progress);
}

Result<ExportResult> ExportQmGguf(Store* store, const std::string& model, const std::string& label,
                                  const std::string& out_path,
                                  const std::function<void(size_t, size_t)>& progress) {
  FQ_ASSIGN_OR_RETURN(ModelManifest manifest, store->QmManifest(model, label));
  FQ_ASSIGN_OR_RETURN(ModelInfo m, store->FindModel(manifest.model));
  FQ_ASSIGN_OR_RETURN(QmInfo qm, store->FindQm(m.id, label));

  gguf::FileSpec spec;
  std::vector<std::pair<int64_t, int64_t>> layout;  // (file_pos, file_offset) per slot
  bool has_layout = false;
  {
    auto lock = store->LockIndex();
    FQ_ASSIGN_OR_RETURN(Stmt st, store->db()->Prepare(
        "SELECT gguf_version, alignment, n_kv, metadata, source_bytes FROM qm WHERE id = ?"));
    st.BindAll(qm.id);
    FQ_ASSIGN_OR_RETURN(bool row, st.Step());
    if (row && !st.ColumnIsNull(0)) {
      has_layout = true;
      spec.version = static_cast<uint32_t>(st.ColumnInt(0));
      spec.alignment = static_cast<uint64_t>(st.ColumnInt(1));
      spec.n_kv = static_cast<uint64_t>(st.ColumnInt(2));
      ByteSpan kv = st.ColumnBlob(3);
      spec.kv.assign(kv.begin(), kv.end());
      spec.file_size = static_cast<uint64_t>(st.ColumnInt(4));
    }
    if (has_layout) {
      FQ_ASSIGN_OR_RETURN(Stmt mods, store->db()->Prepare(
          "SELECT file_pos, file_offset FROM qm_module WHERE qm_id = ? ORDER BY slot_idx"));
      mods.BindAll(qm.id);
      while (true) {
        FQ_ASSIGN_OR_RETURN(bool r, mods.Step());
        if (!r) break;
        if (mods.ColumnIsNull(0) || mods.ColumnIsNull(1)) has_layout = false;
        layout.emplace_back(mods.ColumnInt(0), mods.ColumnInt(1));
      }
    }
  }
  if (!has_layout || layout.size() != manifest.slots.size()) {
    return ExportManifestGguf(store->env(), store, manifest, out_path, progress);
  }
  FQ_RETURN_IF_ERROR(CheckGgufTypes(manifest));
  // Tensors in the source file's order, at its offsets.
  std::vector<size_t> order(manifest.slots.size());
  for (size_t i = 0; i < order.size(); ++i) {
    int64_t pos = layout[i].first;
    if (pos < 0 || static_cast<size_t>(pos) >= order.size()) {
      return Status::Corruption("QM '" + label + "': bad file position of tensor '" + manifest.slots[i].name + "'");
    }
    order[static_cast<size_t>(pos)] = i;
  }
  std::vector<ModuleKey> keys;
  for (size_t pos = 0; pos < order.size(); ++pos) {
    const ManifestSlot& s = manifest.slots[order[pos]];
    gguf::TensorInfo t;
    t.name = s.name;
    t.n_dims = s.desc.n_dims;
    t.ne = s.desc.ne;
    t.type = s.desc.qtype;
    t.offset = static_cast<uint64_t>(layout[order[pos]].second);
    FQ_ASSIGN_OR_RETURN(t.nbytes, s.desc.nbytes());
    spec.tensors.push_back(std::move(t));
    keys.push_back(s.key);
  }
  FQ_ASSIGN_OR_RETURN(ExportResult r, WriteSpec(store->env(), store, spec, keys, out_path, progress));
  r.byte_exact_layout = true;
  return r;
}

}  // namespace fqpack::store
