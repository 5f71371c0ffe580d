// Importing GGUF checkpoints into a store: one QM per file, modules stored
// once by key. Atomic per file: blobs are published first, then every index
// row in one transaction; a failure or a kill leaves the index as it was.
#ifndef FQPACK_STORE_GGUF_IMPORT_H_
#define FQPACK_STORE_GGUF_IMPORT_H_

#include <functional>
#include <string>
#include <vector>

#include "store/store.h"

namespace fqpack::store {

struct ImportProgress {
  std::string file;
  size_t tensor = 0;  // tensors done
  size_t n_tensors = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
};

struct ImportOptions {
  std::string model;  // model name; derived from the file name when empty
  std::string label;  // QM label; derived from the file name or general.file_type when empty
  int threads = 0;    // 0: one per core
  std::function<void(const ImportProgress&)> progress;
};

struct ImportResult {
  std::string file;
  std::string model;
  std::string label;
  bool new_model = false;
  bool already_imported = false;  // the same file (sha256) is already this QM: nothing done
  int64_t qm_id = 0;
  size_t tensors = 0;
  size_t new_modules = 0;     // modules the store did not have
  size_t reused_modules = 0;  // modules stored once already
  uint64_t tensor_bytes = 0;  // bytes of tensor data in the file
  uint64_t new_stored_bytes = 0;
  std::string sha256;
  std::vector<std::string> warnings;
};

Result<ImportResult> ImportGguf(Store* store, const std::string& path,
                                const ImportOptions& options);

}  // namespace fqpack::store

#endif  // FQPACK_STORE_GGUF_IMPORT_H_
