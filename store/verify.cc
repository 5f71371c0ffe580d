#include "store/verify.h"

#include <set>

#include "schema/quant_types.h"

namespace fqpack::store {

Result<VerifyReport> VerifyStore(Store* store,
                                 const std::function<void(size_t, size_t)>& progress) {
  VerifyReport report;
  auto error = [&](std::string where, std::string msg) {
    report.issues.push_back({true, std::move(where), std::move(msg)});
  };
  auto warn = [&](std::string where, std::string msg) {
    report.issues.push_back({false, std::move(where), std::move(msg)});
  };
  std::vector<ModuleRef> blobs;
  {
    FQ_ASSIGN_OR_RETURN(CatalogCheck check, store->catalog().Check());
    for (const std::string& line : check.integrity) error("index", "integrity_check: " + line);
    for (const std::string& ref : check.broken_references) error("index", ref);
    FQ_ASSIGN_OR_RETURN(std::vector<BlobRow> rows, store->catalog().AllBlobs());
    for (const BlobRow& row : rows) {
      Result<ModuleKey> k = ModuleKey::FromHex(row.hash);
      if (!k.ok()) {
        error("index", "blob row with a bad hash '" + row.hash + "'");
        continue;
      }
      ModuleRef r;
      r.key = *k;
      r.desc = row.desc;
      r.raw_bytes = row.raw_bytes;
      r.stored_bytes = row.stored_bytes;
      blobs.push_back(r);
    }
    report.references_checked += check.references_checked;
    for (const auto& [owner, slot] : check.shape_mismatches) {
      error(owner, "slot '" + slot + "' references a module of another shape");
    }
    for (const auto& [owner, what] : check.uncovered) error(owner, what);
  }

  // Re-hash every blob.
  std::set<ModuleKey> indexed;
  size_t done = 0;
  for (const ModuleRef& r : blobs) {
    indexed.insert(r.key);
    const std::string path = store->blobs()->PathOf(r.key);
    Result<uint64_t> expect = r.desc.nbytes();
    if (!expect.ok() || *expect != r.raw_bytes) {
      error(path, "index says " + std::to_string(r.raw_bytes) + " bytes for a " +
                      QTypeName(r.desc.qtype) + " " + r.desc.ShapeString() + " module");
    }
    Result<uint64_t> size = store->env()->GetFileSize(path);
    if (!size.ok()) {
      error(path, "blob file missing (" + size.status().message() + ")");
    } else {
      if (*size != r.stored_bytes) {
        error(path, "file has " + std::to_string(*size) + " bytes, index says " +
                        std::to_string(r.stored_bytes));
      }
      Result<Bytes> raw = store->blobs()->Get(r.key, r.desc, r.raw_bytes);
      if (!raw.ok()) {
        error(path, raw.status().message());
      } else {
        report.bytes_checked += raw->size();
      }
    }
    ++report.blobs_checked;
    if (progress) progress(++done, blobs.size());
  }

  // Files nobody references.
  FQ_ASSIGN_OR_RETURN(auto files, store->blobs()->ListFiles());
  for (const auto& f : files) {
    if (f.valid_name && indexed.count(f.key) != 0 && store->blobs()->PathOf(f.key) == f.path)
      continue;
    ++report.orphan_files;
    Result<uint64_t> size = store->env()->GetFileSize(f.path);
    if (size.ok()) report.orphan_bytes += *size;
    warn(f.path, "not in the index (left by an interrupted write; `fqpack gc` removes it)");
  }
  Result<std::vector<std::string>> tmp = store->env()->GetChildren(store->blobs()->tmp_dir());
  if (tmp.ok()) {
    for (const std::string& t : *tmp) {
      ++report.orphan_files;
      std::string path = JoinPath(store->blobs()->tmp_dir(), t);
      Result<uint64_t> size = store->env()->GetFileSize(path);
      if (size.ok()) report.orphan_bytes += *size;
      warn(path, "temporary file (left by an interrupted write; `fqpack gc` removes it)");
    }
  }
  return report;
}

}  // namespace fqpack::store
