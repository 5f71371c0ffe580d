// Store helpers for tests: a dump of everything a store holds, to prove that
// a failed operation changed nothing.
#ifndef FQPACK_TESTS_SUPPORT_STORE_UTIL_H_
#define FQPACK_TESTS_SUPPORT_STORE_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "store/store.h"

namespace fqpack::testing {

// Every row of every index table (ordered) and the names and sizes of the
// blob files, as text.
std::string SnapshotStore(const std::string& dir, bool include_files = true);

// The single integer a query of the store's index gives (-1 on failure),
// through a connection of its own: for tests that check rows the catalog
// has no reader for.
int64_t IndexQueryInt(const std::string& dir, const std::string& sql);

// Opens the store, runs VerifyStore and returns its error messages joined
// ("" when verify passed).
std::string VerifyErrors(const std::string& dir);

// A new store in `dir` with `ggufs` imported, the model and labels named by
// the file names as `fqpack import` names them.
Result<std::unique_ptr<store::Store>> StoreWithImports(const std::string& dir,
                                                       const std::vector<std::string>& ggufs);

}  // namespace fqpack::testing

#endif  // FQPACK_TESTS_SUPPORT_STORE_UTIL_H_
