#include "pack/writer.h"

#include <algorithm>
#include <map>
#include <set>

#include "pack/format.h"
#include "store/blob_store.h"

namespace fqpack::pack {
namespace {

using store::ModuleKey;
using store::ModuleRef;

struct Placed {
  ModuleRef ref;
  uint64_t offset = 0;
  uint64_t stored = 0;
  bool zstd = false;
  int first_slot = 0;
};

// The index: the store's rows for what was packed, read from its catalog
// as records and written into a new image in the order of
// schema/fqpack_format.md (which keeps the image's bytes those of earlier
// versions for the same store).
Result<Bytes> WriteIndex(store::Store* store, const store::ModelInfo& model,
                         const std::vector<Placed>& placed, std::vector<int64_t> qm_ids,
                         std::vector<int64_t> ensemble_ids, PackResult* result) {
  store::Catalog& cat = store->catalog();
  FQ_ASSIGN_OR_RETURN(auto w, store::PackIndexWriter::Create(store->env()));
  FQ_ASSIGN_OR_RETURN(std::vector<store::SlotInfo> slots, cat.Slots(model.id));
  FQ_RETURN_IF_ERROR(w->AddModel(model, slots));
  for (const Placed& p : placed) FQ_RETURN_IF_ERROR(w->AddBlob(p.ref, p.stored, p.zstd, p.offset));
  std::sort(qm_ids.begin(), qm_ids.end());
  std::sort(ensemble_ids.begin(), ensemble_ids.end());
  FQ_ASSIGN_OR_RETURN(std::vector<store::QmInfo> qms, cat.ListQms(model.id));
  std::sort(qms.begin(), qms.end(),
            [](const store::QmInfo& a, const store::QmInfo& b) { return a.id < b.id; });
  auto packed_qm = [&](int64_t id) { return std::binary_search(qm_ids.begin(), qm_ids.end(), id); };
  for (const store::QmInfo& q : qms) {
    if (!packed_qm(q.id)) continue;
    FQ_ASSIGN_OR_RETURN(std::optional<store::QmGgufLayout> layout, cat.QmLayout(q.id));
    FQ_RETURN_IF_ERROR(w->AddQm(q, layout));
  }
  for (int64_t id : qm_ids) {
    FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, cat.QmModules(id));
    FQ_RETURN_IF_ERROR(w->AddQmModules(id, mods));
  }
  std::vector<store::EqmInfo> eqms;
  for (int64_t id : ensemble_ids) {
    FQ_ASSIGN_OR_RETURN(store::EnsembleInfo e, cat.EnsembleById(id));
    FQ_RETURN_IF_ERROR(w->AddEnsemble(e));
  }
  for (int64_t id : ensemble_ids) {
    FQ_ASSIGN_OR_RETURN(std::vector<store::EqmInfo> rows, cat.ListEqms(id));
    for (const store::EqmInfo& q : rows) FQ_RETURN_IF_ERROR(w->AddEqm(q));
    eqms.insert(eqms.end(), rows.begin(), rows.end());
  }
  std::sort(eqms.begin(), eqms.end(),
            [](const store::EqmInfo& a, const store::EqmInfo& b) { return a.id < b.id; });
  for (const store::EqmInfo& q : eqms) {
    FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, cat.EqmModules(q.id));
    FQ_RETURN_IF_ERROR(w->AddEqmModules(q.id, mods));
  }
  if (!qm_ids.empty()) {
    // The dynamic models whose two QMs are in the pack (ids kept, so the
    // units follow them).
    FQ_ASSIGN_OR_RETURN(std::vector<store::DynamicModelInfo> dynamic,
                        cat.ListDynamicModels(model.id));
    std::vector<store::DynamicModelInfo> taken;
    for (store::DynamicModelInfo& d : dynamic) {
      if (packed_qm(d.hi_qm_id) && packed_qm(d.lo_qm_id)) taken.push_back(std::move(d));
    }
    std::sort(taken.begin(), taken.end(),
              [](const store::DynamicModelInfo& a, const store::DynamicModelInfo& b) {
                return std::pair(a.hi_qm_id, a.lo_qm_id) < std::pair(b.hi_qm_id, b.lo_qm_id);
              });
    for (const store::DynamicModelInfo& d : taken) FQ_RETURN_IF_ERROR(w->AddDynamicModel(d));
    std::sort(taken.begin(), taken.end(),
              [](const store::DynamicModelInfo& a, const store::DynamicModelInfo& b) {
                return a.id < b.id;
              });
    for (const store::DynamicModelInfo& d : taken) FQ_RETURN_IF_ERROR(w->AddDynamicUnits(d));
    result->dynamic_models = taken.size();
  }
  FQ_RETURN_IF_ERROR(w->AddInfo("format_version", std::to_string(kFormatVersion)));
  FQ_RETURN_IF_ERROR(w->AddInfo("model", model.name));
  FQ_RETURN_IF_ERROR(w->AddCreatedAt());
  return w->Finish();
}

}  // namespace

Result<Codec> ParseCodec(const std::string& name) {
  if (name == "auto") return Codec::kAuto;
  if (name == "raw") return Codec::kRaw;
  if (name == "zstd") return Codec::kZstd;
  return Status::InvalidArgument("codec '" + name + "' is not one of auto, raw, zstd");
}

Result<PackResult> WritePack(store::Store* store, const PackOptions& options,
                             const std::string& out_path) {
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
      FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->catalog().EqmModules(q.id));
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
  FQ_ASSIGN_OR_RETURN(std::vector<store::DynamicModelInfo> dynamic,
                      store->ListDynamicModels(model.id));
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
        return Status::InvalidArgument("QM '" + q.label +
                                       "' is partial (pruned) and cannot be packed whole");
      }
    } else if (q.partial) {
      take = false;
    } else if (ensembles.empty()) {
      take = true;
    } else {
      FQ_ASSIGN_OR_RETURN(std::vector<ModuleRef> mods, store->QmModules(q.id));
      take = std::all_of(mods.begin(), mods.end(),
                         [&](const ModuleRef& m) { return modules.count(m.key) != 0; });
    }
    take = take || required.count(q.id) != 0;
    if (!take) continue;
    if (q.partial)
      return Status::InvalidArgument("QM '" + q.label +
                                     "' is partial (pruned) and cannot be packed whole");
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
  if (modules.empty())
    return Status::InvalidArgument("model '" + model.name + "' has nothing to pack");

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
    FQ_ASSIGN_OR_RETURN(auto first, store->catalog().FirstSlots());
    for (Placed& p : placed) {
      auto it = first.find(p.ref.key);
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
        if (options.codec == Codec::kAuto)
          use_zstd = compressed.size() + data.size() / 64 <= data.size();
      }
      ByteSpan payload = use_zstd ? ByteSpan(compressed) : data.bytes();
      const uint64_t align = payload.size() >= kPageAlignFrom ? kPageAlign : kSmallAlign;
      uint64_t at = pos;
      if (!AlignUp(pos, align, &at))
        return Status::InvalidArgument(out_path + ": pack would exceed 2^64 bytes");
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

    FQ_ASSIGN_OR_RETURN(index_image,
                        WriteIndex(store, model, placed, qm_ids, ensemble_ids, &result));

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
