#include "pack/reader.h"

#include <algorithm>

#include "schema/quant_types.h"
#include "schema/store_sql.h"
#include "store/blob_store.h"

namespace fqpack::pack {

PackReader::~PackReader() {
  // The index must close before the mapping its image lives in.
  catalog_.reset();
}

Result<std::unique_ptr<PackReader>> PackReader::Open(Env* env, const std::string& path) {
  std::unique_ptr<PackReader> r(new PackReader());
  r->path_ = path;
  FQ_ASSIGN_OR_RETURN(MappedFile f, env->MapFile(path));
  r->file_ = std::make_shared<MappedFile>(std::move(f));
  FQ_RETURN_IF_ERROR(CheckHeader(r->file_->bytes(), path));
  FQ_ASSIGN_OR_RETURN(r->footer_, ReadFooter(r->file_->bytes(), path));
  FQ_RETURN_IF_ERROR(r->Validate());
  return r;
}

Status PackReader::Validate() {
  const ByteSpan image = file_->bytes().subspan(footer_.index_offset, footer_.index_size);
  FQ_ASSIGN_OR_RETURN(catalog_, store::PackCatalog::Open(image, path_));
  auto corrupt = [&](const std::string& what) {
    return Status::Corruption(path_ + ": index: " + what);
  };

  Result<int64_t> version = catalog_->SchemaVersion();
  if (!version.ok()) return corrupt(version.status().message());
  // Version 1 packs (before dynamic precision) lack only the dynamic tables,
  // whose absence the index reader reports as "no dynamic model".
  if (*version < 1 || *version > schema::kStoreSchemaVersion) {
    return *version > schema::kStoreSchemaVersion
               ? Status::NotSupported(path_ + ": index schema version " + std::to_string(*version) +
                                      " is newer than this fqpack reads")
               : corrupt("schema version " + std::to_string(*version));
  }
  Result<std::vector<store::ModelInfo>> models = catalog_->ListModels();
  if (!models.ok()) return corrupt(models.status().message());
  if (models->size() != 1)
    return corrupt("holds " + std::to_string(models->size()) + " models, not one");
  model_ = (*models)[0];

  Result<std::vector<store::PackCatalog::PayloadRow>> rows = catalog_->Payloads();
  if (!rows.ok()) return corrupt(rows.status().message());
  uint64_t prev_end = kHeaderSize;
  for (const store::PackCatalog::PayloadRow& row : *rows) {
    PayloadInfo p;
    Result<store::ModuleKey> key = store::ModuleKey::FromHex(row.hash);
    if (!key.ok()) return corrupt("bad module key '" + row.hash + "'");
    p.key = *key;
    p.desc = store::ModuleDescFromRow(row.qtype, row.n_dims, row.ne);
    const int64_t raw = row.raw_bytes, stored = row.stored_bytes;
    const std::string& codec = row.codec;
    const std::string what = "module " + p.key.Hex();
    Status row_ok = store::CheckModuleRow(p.desc, raw, what);
    if (!row_ok.ok()) return corrupt(row_ok.message());
    if (!row.offset || !NonNegative(*row.offset, &p.offset))
      return corrupt(what + ": no payload offset");
    if (!NonNegative(stored, &p.stored_bytes)) return corrupt(what + ": negative stored size");
    if (codec != "raw" && codec != "zstd") return corrupt(what + ": unknown codec '" + codec + "'");
    p.raw_bytes = static_cast<uint64_t>(raw);
    p.zstd = codec == "zstd";
    if (!p.zstd && p.stored_bytes != p.raw_bytes)
      return corrupt(what + ": raw payload of the wrong size");
    uint64_t max_raw = 0;
    if (p.zstd && CheckedMul(p.stored_bytes, store::kZstdMaxExpansion, &max_raw) &&
        p.raw_bytes > max_raw) {
      return corrupt(what + ": " + std::to_string(p.raw_bytes) +
                     " bytes cannot come from a zstd payload of " + std::to_string(p.stored_bytes));
    }
    if (p.offset < prev_end || !RangeInside(p.offset, p.stored_bytes, footer_.payload_end)) {
      return corrupt(what + ": payload [" + std::to_string(p.offset) + ", +" +
                     std::to_string(p.stored_bytes) +
                     ") overlaps another or lies outside the payload area");
    }
    prev_end = p.offset + p.stored_bytes;
    if (!by_key_.emplace(p.key, payloads_.size()).second) return corrupt(what + " listed twice");
    payloads_.push_back(p);
  }
  verified_.reset(new std::atomic<bool>[payloads_.size()]);
  for (size_t i = 0; i < payloads_.size(); ++i) verified_[i] = false;
  return Status::OK();
}

Result<std::vector<store::QmInfo>> PackReader::Qms() { return catalog_->ListQms(model_.id); }

Result<std::vector<store::EnsembleInfo>> PackReader::Ensembles() {
  return catalog_->ListEnsembles(model_.id);
}

Result<std::vector<store::DynamicModelInfo>> PackReader::DynamicModels() {
  return catalog_->ListDynamicModels(model_.id);
}

Result<store::DynamicModelInfo> PackReader::FindDynamicModel(const std::string& hi,
                                                             const std::string& lo) {
  return catalog_->FindDynamicModel(model_.id, hi, lo);
}

Result<store::EnsembleInfo> PackReader::FindEnsemble(const std::string& name) {
  return catalog_->FindEnsemble(model_.id, name);
}

Result<std::vector<store::EqmInfo>> PackReader::Eqms(int64_t ensemble_id) {
  return catalog_->ListEqms(ensemble_id);
}

Result<store::ModelManifest> PackReader::QmManifest(const std::string& label) {
  return catalog_->QmManifest(model_.name, label);
}

Result<store::ModelManifest> PackReader::EqmManifest(int64_t ensemble_id, int step) {
  return catalog_->EqmManifest(ensemble_id, step);
}

Result<std::string> PackReader::Info(const std::string& key) { return catalog_->Info(key); }

Result<PayloadInfo> PackReader::Payload(const store::ModuleKey& key) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return Status::NotFound(path_ + ": no module " + key.Hex());
  return payloads_[it->second];
}

ByteSpan PackReader::PayloadBytes(const PayloadInfo& p) const {
  return file_->bytes().subspan(p.offset, p.stored_bytes);
}

void PackReader::Release(const PayloadInfo& p) const {
  if (!p.zstd) file_->AdviseDontNeed(p.offset, p.stored_bytes);
}

Result<store::ModuleData> PackReader::Load(const store::ModuleKey& key) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return Status::NotFound(path_ + ": no module " + key.Hex());
  const PayloadInfo& p = payloads_[it->second];
  const std::string what = path_ + ": module " + key.Hex();
  store::ModuleData data;
  if (p.zstd) {
    FQ_ASSIGN_OR_RETURN(Bytes raw, store::ZstdDecompress(PayloadBytes(p), p.raw_bytes, what));
    data = store::ModuleData::Owned(std::move(raw));
  } else {
    data = store::ModuleData::View(PayloadBytes(p), file_);
    data.set_owned(false);
  }
  if (!verified_[it->second].load(std::memory_order_acquire)) {
    if (store::ComputeModuleKey(p.desc, data.bytes()) != key) {
      return Status::Corruption(what + ": payload does not hash to its key (damaged)");
    }
    verified_[it->second].store(true, std::memory_order_release);
  }
  return data;
}

Result<PackVerifyReport> VerifyPack(Env* env, const std::string& path,
                                    const std::function<void(size_t, size_t)>& progress) {
  FQ_ASSIGN_OR_RETURN(auto reader, PackReader::Open(env, path));
  PackVerifyReport report;
  {
    FQ_ASSIGN_OR_RETURN(std::vector<std::string> problems, reader->catalog().IntegrityProblems());
    for (const std::string& p : problems) report.errors.push_back(path + ": index: " + p);
    FQ_ASSIGN_OR_RETURN(int64_t fk, reader->catalog().BrokenReferences());
    if (fk != 0)
      report.errors.push_back(path + ": index: " + std::to_string(fk) + " broken references");
  }
  // Every QM and EQM resolves to a full manifest.
  FQ_ASSIGN_OR_RETURN(auto qms, reader->Qms());
  for (const auto& q : qms) {
    if (!q.partial) {
      Result<store::ModelManifest> m = reader->QmManifest(q.label);
      if (!m.ok()) report.errors.push_back(m.status().message());
    }
  }
  FQ_ASSIGN_OR_RETURN(auto ensembles, reader->Ensembles());
  for (const auto& e : ensembles) {
    FQ_ASSIGN_OR_RETURN(auto eqms, reader->Eqms(e.id));
    for (const auto& q : eqms) {
      Result<store::ModelManifest> m = reader->EqmManifest(e.id, q.step);
      if (!m.ok()) report.errors.push_back(m.status().message());
    }
  }
  // The gaps between payloads hold zeros; anything else is damage.
  {
    uint64_t pos = kHeaderSize;
    auto check_gap = [&](uint64_t from, uint64_t to) {
      PayloadInfo gap;
      gap.offset = from;
      gap.stored_bytes = to - from;
      ByteSpan bytes = reader->PayloadBytes(gap);
      for (size_t i = 0; i < bytes.size(); ++i) {
        if (bytes[i] != 0) {
          report.errors.push_back(path + ": byte " + std::to_string(from + i) +
                                  " between payloads is not zero");
          return;
        }
      }
    };
    for (const PayloadInfo& p : reader->payloads()) {
      check_gap(pos, p.offset);
      pos = p.offset + p.stored_bytes;
    }
    check_gap(pos, reader->footer().payload_end);
    check_gap(reader->footer().payload_end, reader->footer().index_offset);
  }
  size_t done = 0;
  for (const PayloadInfo& p : reader->payloads()) {
    Result<store::ModuleData> d = reader->Load(p.key);
    if (!d.ok()) {
      report.errors.push_back(d.status().message());
    } else {
      report.bytes_checked += d->size();
    }
    ++report.modules_checked;
    if (progress) progress(++done, reader->payloads().size());
  }
  return report;
}

}  // namespace fqpack::pack
