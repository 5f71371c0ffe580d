// Writing a QM of the store back out as a GGUF file. For an imported QM the
// result is the original file byte for byte (its metadata section, tensor
// order, offsets, alignment and size are kept at import); a QM fqpack made
// itself gets the model's metadata and a fresh layout. fqpack's own
// group-int types have no GGUF id: such a QM cannot be exported.
#ifndef FQPACK_STORE_GGUF_EXPORT_H_
#define FQPACK_STORE_GGUF_EXPORT_H_

#include <functional>
#include <string>

#include "store/store.h"

namespace fqpack::store {

struct ExportResult {
  uint64_t bytes = 0;
  size_t tensors = 0;
  bool byte_exact_layout = false;  // written from the source file's recorded layout
};

// Writes QM `label` of `model` to `out_path` (crash-safely: temp, fsync,
// rename). `progress(done, total)` is called per tensor.
Result<ExportResult> ExportQmGguf(Store* store, const std::string& model, const std::string& label,
                                  const std::string& out_path,
                                  const std::function<void(size_t, size_t)>& progress = {});

// Writes any manifest (a QM or an EQM) whose modules `source` holds as a
// GGUF with the manifest's metadata, tensors in slot order.
Result<ExportResult> ExportManifestGguf(Env* env, ModuleSource* source,
                                        const ModelManifest& manifest, const std::string& out_path,
                                        const std::function<void(size_t, size_t)>& progress = {});

}  // namespace fqpack::store

#endif  // FQPACK_STORE_GGUF_EXPORT_H_
