// Reading a .fqpack: the whole file is mapped read-only; header, footer and
// index are validated before anything is used (schema/fqpack_format.md).
// The reader is a ModuleSource: a raw payload is handed out in place (a view
// into the mapping), a zstd payload is decoded into memory of its own. Each
// module's key is checked the first time it is loaded.
//
// Thread-safety: Load and the Payload/manifest look-ups may be called from
// several threads; the index's catalog serialises its own reads.
#ifndef FQPACK_PACK_READER_H_
#define FQPACK_PACK_READER_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "pack/format.h"
#include "schema/env.h"
#include "store/catalog.h"
#include "store/module_source.h"

namespace fqpack::pack {

struct PayloadInfo {
  store::ModuleKey key;
  store::ModuleDesc desc;
  uint64_t raw_bytes = 0;
  uint64_t offset = 0;
  uint64_t stored_bytes = 0;
  bool zstd = false;
};

class PackReader : public store::ModuleSource {
 public:
  // Opens and validates `path`. Corruption names the defect; NotSupported a
  // newer format version.
  static Result<std::unique_ptr<PackReader>> Open(Env* env, const std::string& path);
  ~PackReader() override;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_->size(); }
  const Footer& footer() const { return footer_; }

  // The pack's one model.
  const store::ModelInfo& model() const { return model_; }
  Result<std::vector<store::QmInfo>> Qms();
  Result<std::vector<store::EnsembleInfo>> Ensembles();
  Result<store::EnsembleInfo> FindEnsemble(const std::string& name);  // "" = the newest
  Result<std::vector<store::EqmInfo>> Eqms(int64_t ensemble_id);
  Result<store::ModelManifest> QmManifest(const std::string& label);
  Result<store::ModelManifest> EqmManifest(int64_t ensemble_id, int step);
  Result<std::string> Info(const std::string& key);  // pack_info
  // Dynamic precision models (store::CatalogReader::FindDynamicModel).
  Result<std::vector<store::DynamicModelInfo>> DynamicModels();
  Result<store::DynamicModelInfo> FindDynamicModel(const std::string& hi, const std::string& lo);

  const std::vector<PayloadInfo>& payloads() const { return payloads_; }
  Result<PayloadInfo> Payload(const store::ModuleKey& key) const;
  // The mapped bytes of a payload (raw or compressed, as stored).
  ByteSpan PayloadBytes(const PayloadInfo& p) const;
  // Hands the pages of a raw payload back to the kernel (they are read
  // again from the file if touched). A no-op for zstd payloads.
  void Release(const PayloadInfo& p) const;

  Result<store::ModuleData> Load(const store::ModuleKey& key) override;

  // The pack's index: every other query of its rows (store/catalog.h).
  store::PackCatalog& catalog() { return *catalog_; }

 private:
  PackReader() = default;
  Status Validate();

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  Footer footer_;
  std::unique_ptr<store::PackCatalog> catalog_;
  store::ModelInfo model_;
  std::vector<PayloadInfo> payloads_;
  std::unordered_map<store::ModuleKey, size_t, store::ModuleKeyHash> by_key_;
  std::unique_ptr<std::atomic<bool>[]> verified_;
};

struct PackVerifyReport {
  uint64_t modules_checked = 0;
  uint64_t bytes_checked = 0;
  std::vector<std::string> errors;
  bool ok() const { return errors.empty(); }
};

// `fqpack verify model.fqpack`: opens (which checks header, footer, index
// checksum and layout), runs SQLite's integrity and foreign-key checks on the
// index, and decodes and re-hashes every payload. An error from opening is
// returned as the Status; problems found after it go to the report.
Result<PackVerifyReport> VerifyPack(Env* env, const std::string& path,
                                    const std::function<void(size_t, size_t)>& progress = {});

}  // namespace fqpack::pack

#endif  // FQPACK_PACK_READER_H_
