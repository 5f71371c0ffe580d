// Removing things from a store. `Remove*` drop index rows only (references);
// `Sweep` is garbage collection: it deletes the blobs nothing references,
// rows first in one transaction and files after, then the orphan files that
// interrupted writers or sweeps left behind. Only Sweep deletes files.
//
// A sweep takes the store's LOCK exclusively, so it never runs beside a
// writer or another sweep; readers pin the files they need (Store::Pin) and
// keep working while a sweep unlinks what they hold.
#ifndef FQPACK_STORE_GC_H_
#define FQPACK_STORE_GC_H_

#include <functional>
#include <string>

#include "store/store.h"

namespace fqpack::store {

struct RemoveResult {
  size_t qms = 0;
  size_t ensembles = 0;
  size_t eqms = 0;
  size_t references = 0;  // qm_module + eqm_module rows dropped
  bool model = false;
};

// Drops a QM. Refused (InvalidArgument) while an ensemble builds on it as its
// n_up or n_low; EQM rows that name it as their source lose that note.
Result<RemoveResult> RemoveQm(Store* store, const std::string& model, const std::string& label);
Result<RemoveResult> RemoveEnsemble(Store* store, const std::string& model,
                                    const std::string& name);
// Drops a model with all its QMs and ensembles.
Result<RemoveResult> RemoveModel(Store* store, const std::string& model);

struct SweepOptions {
  bool dry_run = false;
  // Wait for the lock instead of failing with Busy.
  bool wait = false;
};

struct SweepResult {
  size_t blobs = 0;         // unreferenced modules (rows and files)
  uint64_t blob_bytes = 0;  // their files' bytes
  size_t orphans = 0;       // files without rows, temp files
  uint64_t orphan_bytes = 0;
  uint64_t freed() const { return blob_bytes + orphan_bytes; }
};

Result<SweepResult> Sweep(Store* store, const SweepOptions& options = {});

}  // namespace fqpack::store

#endif  // FQPACK_STORE_GC_H_
