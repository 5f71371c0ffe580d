#include "tests/support/store_util.h"

#include "store/gguf_import.h"
#include "store/sqlite.h"
#include "store/verify.h"

namespace fqpack::testing {

std::string SnapshotStore(const std::string& dir, bool include_files) {
  auto store = store::Store::Open(Env::Default(), dir);
  if (!store.ok()) return "open failed: " + store.status().ToString();
  std::string out;
  // A second connection of its own: the catalog hands none out.
  auto conn = store::Db::Open(Env::Default(), dir + "/index.sqlite", store::Db::Mode::kReadWrite);
  if (!conn.ok()) return conn.status().ToString();
  store::Db* db = conn->get();
  for (const char* table :
       {"model", "slot", "qm", "qm_module", "blob", "ensemble", "eqm", "eqm_module"}) {
    auto st = db->Prepare(std::string("SELECT * FROM ") + table + " ORDER BY 1, 2");
    if (!st.ok()) return st.status().ToString();
    out += std::string("[") + table + "]\n";
    while (true) {
      auto row = st->Step();
      if (!row.ok() || !*row) break;
      for (int c = 0; c < 14; ++c) out += st->ColumnText(c) + "|";
      out += "\n";
    }
  }
  if (include_files) {
    auto files = (*store)->blobs()->ListFiles();
    if (files.ok()) {
      for (const auto& f : *files) {
        out += f.path + " " + std::to_string(*Env::Default()->GetFileSize(f.path)) + "\n";
      }
    }
  }
  return out;
}

int64_t IndexQueryInt(const std::string& dir, const std::string& sql) {
  auto db = store::Db::Open(Env::Default(), dir + "/index.sqlite", store::Db::Mode::kReadWrite);
  if (!db.ok()) return -1;
  Result<int64_t> v = (*db)->QueryInt(sql);
  return v.ok() ? *v : -1;
}

std::string VerifyErrors(const std::string& dir) {
  auto store = store::Store::Open(Env::Default(), dir);
  if (!store.ok()) return "open failed: " + store.status().ToString();
  auto report = store::VerifyStore(store->get());
  if (!report.ok()) return "verify failed: " + report.status().ToString();
  std::string out;
  for (const auto& i : report->issues) {
    if (i.error) out += i.where + ": " + i.message + "\n";
  }
  return out;
}

Result<std::unique_ptr<store::Store>> StoreWithImports(const std::string& dir,
                                                       const std::vector<std::string>& ggufs) {
  FQ_RETURN_IF_ERROR(store::Store::Init(Env::Default(), dir));
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<store::Store> st, store::Store::Open(Env::Default(), dir));
  for (const std::string& path : ggufs) {
    FQ_RETURN_IF_ERROR(store::ImportGguf(st.get(), path, {}).status());
  }
  return st;
}

}  // namespace fqpack::testing
