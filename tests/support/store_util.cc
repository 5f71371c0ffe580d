#include "tests/support/store_util.h"

#include "store/verify.h"

namespace fqpack::testing {

std::string SnapshotStore(const std::string& dir, bool include_files) {
  auto store = store::Store::Open(Env::Default(), dir);
  if (!store.ok()) return "open failed: " + store.status().ToString();
  std::string out;
  store::Db* db = (*store)->db();
  for (const char* table : {"model", "slot", "qm", "qm_module", "blob", "ensemble", "eqm", "eqm_module"}) {
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

}  // namespace fqpack::testing
