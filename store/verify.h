// `fqpack verify` for a store: proves that what the index references is
// there and intact. Re-hashes every blob, checks sizes and shapes against the
// index, runs SQLite's integrity and foreign-key checks, and lists files the
// index does not know (orphans from an interrupted import or gc: harmless,
// reported as warnings, removed by the next gc).
#ifndef FQPACK_STORE_VERIFY_H_
#define FQPACK_STORE_VERIFY_H_

#include <functional>
#include <string>
#include <vector>

#include "store/store.h"

namespace fqpack::store {

struct VerifyIssue {
  bool error = true;  // false: a warning
  std::string where;  // a path, "index", or "qm <label>"
  std::string message;
};

struct VerifyReport {
  uint64_t blobs_checked = 0;
  uint64_t bytes_checked = 0;  // raw bytes re-hashed
  uint64_t references_checked = 0;
  uint64_t orphan_files = 0;
  uint64_t orphan_bytes = 0;
  std::vector<VerifyIssue> issues;

  size_t errors() const {
    size_t n = 0;
    for (const VerifyIssue& i : issues) n += i.error ? 1 : 0;
    return n;
  }
  bool ok() const { return errors() == 0; }
};

// `progress(done, total)` is called per blob.
Result<VerifyReport> VerifyStore(Store* store,
                                 const std::function<void(size_t, size_t)>& progress = {});

}  // namespace fqpack::store

#endif  // FQPACK_STORE_VERIFY_H_
