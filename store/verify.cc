#include "store/verify.h"

#include <set>

#include "schema/quant_types.h"

namespace fqpack::store {

Result<VerifyReport> VerifyStore(Store* store, const std::function<void(size_t, size_t)>& progress) {
  VerifyReport report;
  auto error = [&](std::string where, std::string msg) {
    report.issues.push_back({true, std::move(where), std::move(msg)});
  };
  auto warn = [&](std::string where, std::string msg) {
    report.issues.push_back({false, std::move(where), std::move(msg)});
  };
  Db* db = store->db();

  std::vector<ModuleRef> blobs;
  {
    auto lock = store->LockIndex();
    FQ_ASSIGN_OR_RETURN(Stmt ic, db->Prepare("PRAGMA integrity_check"));
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, ic.Step());
      if (!row) break;
      std::string line = ic.ColumnText(0);
      if (line != "ok") error("index", "integrity_check: " + line);
    }
    FQ_ASSIGN_OR_RETURN(Stmt fk, db->Prepare("PRAGMA foreign_key_check"));
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, fk.Step());
      if (!row) break;
      error("index", "table " + fk.ColumnText(0) + " row " + std::to_string(fk.ColumnInt(1)) +
                         " references a missing row of " + fk.ColumnText(2));
    }
    FQ_ASSIGN_OR_RETURN(Stmt st, db->Prepare("SELECT hash, qtype, n_dims, ne0, ne1, ne2, ne3, raw_bytes, "
                                             "stored_bytes FROM blob ORDER BY hash"));
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      ModuleRef r;
      Result<ModuleKey> k = ModuleKey::FromHex(st.ColumnText(0));
      if (!k.ok()) {
        error("index", "blob row with a bad hash '" + st.ColumnText(0) + "'");
        continue;
      }
      r.key = *k;
      r.desc.qtype = static_cast<uint32_t>(st.ColumnInt(1));
      r.desc.n_dims = static_cast<uint32_t>(st.ColumnInt(2));
      for (int d = 0; d < 4; ++d) r.desc.ne[d] = static_cast<uint64_t>(st.ColumnInt(3 + d));
      r.raw_bytes = static_cast<uint64_t>(st.ColumnInt(7));
      r.stored_bytes = static_cast<uint64_t>(st.ColumnInt(8));
      blobs.push_back(r);
    }

    // Every module reference must match its slot's shape.
    static const char* kRefs[] = {
        "SELECT 'qm ' || q.label, s.name, s.n_dims, s.ne0, s.ne1, s.ne2, s.ne3, b.n_dims, b.ne0, b.ne1, "
        "b.ne2, b.ne3 FROM qm_module m JOIN qm q ON q.id = m.qm_id JOIN slot s ON s.model_id = q.model_id "
        "AND s.idx = m.slot_idx JOIN blob b ON b.hash = m.hash",
        "SELECT 'eqm ' || e.step, s.name, s.n_dims, s.ne0, s.ne1, s.ne2, s.ne3, b.n_dims, b.ne0, b.ne1, "
        "b.ne2, b.ne3 FROM eqm_module m JOIN eqm e ON e.id = m.eqm_id JOIN ensemble n ON n.id = "
        "e.ensemble_id JOIN slot s ON s.model_id = n.model_id AND s.idx = m.slot_idx JOIN blob b ON "
        "b.hash = m.hash"};
    for (const char* sql : kRefs) {
      FQ_ASSIGN_OR_RETURN(Stmt refs, db->Prepare(sql));
      while (true) {
        FQ_ASSIGN_OR_RETURN(bool row, refs.Step());
        if (!row) break;
        ++report.references_checked;
        bool same = true;
        for (int c = 0; c < 5; ++c) same = same && refs.ColumnInt(2 + c) == refs.ColumnInt(7 + c);
        if (!same) error(refs.ColumnText(0), "slot '" + refs.ColumnText(1) + "' references a module of another shape");
      }
    }
    // Each complete QM has one module per slot of its model.
    FQ_ASSIGN_OR_RETURN(Stmt cover, db->Prepare(
        "SELECT q.label, (SELECT count(*) FROM slot s WHERE s.model_id = q.model_id), "
        "(SELECT count(*) FROM qm_module m WHERE m.qm_id = q.id) FROM qm q WHERE q.partial = 0"));
    while (true) {
      FQ_ASSIGN_OR_RETURN(bool row, cover.Step());
      if (!row) break;
      if (cover.ColumnInt(1) != cover.ColumnInt(2)) {
        error("qm " + cover.ColumnText(0), std::to_string(cover.ColumnInt(2)) + " modules for " +
                                               std::to_string(cover.ColumnInt(1)) + " slots");
      }
    }
  }

  // Re-hash every blob.
  std::set<ModuleKey> indexed;
  size_t done = 0;
  for (const ModuleRef& r : blobs) {
    indexed.insert(r.key);
    const std::string path = store->blobs()->PathOf(r.key);
    Result<uint64_t> expect = r.desc.nbytes();
    if (!expect.ok() || *expect != r.raw_bytes) {
      error(path, "index says " + std::to_string(r.raw_bytes) + " bytes for a " + QTypeName(r.desc.qtype) +
                      " " + r.desc.ShapeString() + " module");
    }
    Result<uint64_t> size = store->env()->GetFileSize(path);
    if (!size.ok()) {
      error(path, "blob file missing (" + size.status().message() + ")");
    } else {
      if (*size != r.stored_bytes) {
        error(path, "file has " + std::to_string(*size) + " bytes, index says " + std::to_string(r.stored_bytes));
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
    if (f.valid_name && indexed.count(f.key) != 0 && store->blobs()->PathOf(f.key) == f.path) continue;
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
