#include "store/gguf_export.h"

#include <algorithm>

#include "schema/checked.h"
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

// The layout a QM recorded at import (alignment, offsets, file size) comes
// from the index: before writing, it must describe a file no larger than its
// tensors plus the padding the alignment allows, so a damaged row cannot make
// export write gigabytes of zeros.
Status CheckRecordedLayout(const gguf::FileSpec& spec) {
  if (spec.alignment == 0 || (spec.alignment & (spec.alignment - 1)) != 0 ||
      spec.alignment > (1u << 30)) {
    return Status::Corruption("recorded alignment " + std::to_string(spec.alignment) +
                              " is not a power of two");
  }
  if (spec.version != 2 && spec.version != 3) {
    return Status::Corruption("recorded GGUF version " + std::to_string(spec.version));
  }
  FQ_RETURN_IF_ERROR(gguf::ParseMetadata(spec.kv, spec.n_kv, "recorded metadata").status());
  uint64_t tensor_bytes = 0, end = 0, slack = 0;
  for (const gguf::TensorInfo& t : spec.tensors) {
    uint64_t t_end;
    if (t.offset % spec.alignment != 0 || !CheckedAdd(t.offset, t.nbytes, &t_end) ||
        !CheckedAdd(tensor_bytes, t.nbytes, &tensor_bytes)) {
      return Status::Corruption("recorded offset of tensor '" + t.name +
                                "' is not aligned or overflows");
    }
    end = std::max(end, t_end);
  }
  // Real files pad less than one alignment unit per tensor; twice the data
  // is far beyond any file written by a GGUF writer.
  if (!CheckedSum({tensor_bytes, tensor_bytes, (spec.tensors.size() + 1) * spec.alignment},
                  &slack) ||
      end > slack || spec.file_size > slack + spec.kv.size() + (1u << 20)) {
    return Status::Corruption("recorded layout (" + std::to_string(end) +
                              " bytes of data, file of " + std::to_string(spec.file_size) +
                              " bytes) is far larger than its " + std::to_string(tensor_bytes) +
                              " bytes of tensors");
  }
  return Status::OK();
}

}  // namespace

Result<ExportResult> ExportManifestGguf(Env* env, ModuleSource* source,
                                        const ModelManifest& manifest, const std::string& out_path,
                                        const std::function<void(size_t, size_t)>& progress) {
  FQ_RETURN_IF_ERROR(CheckGgufTypes(manifest));
  gguf::FileSpec spec;
  spec.version = manifest.gguf_version;
  spec.n_kv = manifest.n_kv;
  spec.kv = manifest.metadata;
  FQ_ASSIGN_OR_RETURN(gguf::Metadata md,
                      gguf::ParseMetadata(manifest.metadata, manifest.n_kv, "metadata"));
  Result<uint64_t> alignment = gguf::AlignmentOf(md);
  if (!alignment.ok())
    return alignment.status().WithContext("model '" + manifest.model + "': metadata");
  spec.alignment = *alignment;
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
    FQ_ASSIGN_OR_RETURN(std::optional<QmGgufLayout> l, store->catalog().QmLayout(qm.id));
    if (l) {
      has_layout = true;
      spec.version = l->gguf_version;
      spec.alignment = l->alignment;
      spec.n_kv = l->n_kv;
      spec.kv = std::move(l->metadata);
      spec.file_size = qm.source_bytes;
      FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->catalog().QmModules(qm.id));
      for (const ModuleRef& r : mods) {
        if (r.file_pos < 0 || r.file_offset < 0) has_layout = false;
        layout.emplace_back(r.file_pos, r.file_offset);
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
      return Status::Corruption("QM '" + label + "': bad file position of tensor '" +
                                manifest.slots[i].name + "'");
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
  FQ_RETURN_IF_ERROR(CheckRecordedLayout(spec).WithContext("QM '" + label + "'"));
  FQ_ASSIGN_OR_RETURN(ExportResult r,
                      WriteSpec(store->env(), store, spec, keys, out_path, progress));
  r.byte_exact_layout = true;
  return r;
}

}  // namespace fqpack::store
