// Writing a .fqpack from a store: the modules of a model's ensembles (and of
// the QMs they build on), each raw or zstd, and an index image with the
// rows that describe them. Format: schema/fqpack_format.md.
#ifndef FQPACK_PACK_WRITER_H_
#define FQPACK_PACK_WRITER_H_

#include <functional>
#include <string>
#include <vector>

#include "store/store.h"

namespace fqpack::pack {

enum class Codec { kAuto, kRaw, kZstd };
Result<Codec> ParseCodec(const std::string& name);

struct PackOptions {
  std::string model;                   // empty: the store's only model
  std::vector<std::string> ensembles;  // empty: all of the model's ensembles
  // QMs to carry whole. Empty: the complete QMs whose modules the packed
  // ensembles use, or every complete QM when the model has no ensemble,
  // plus both QMs of every dynamic precision model. A dynamic model goes in
  // when both its QMs do.
  std::vector<std::string> qms;
  Codec codec = Codec::kAuto;
  int zstd_level = 3;
  std::function<void(size_t done, size_t total)> progress;
};

struct PackResult {
  std::string model;
  uint64_t file_bytes = 0;
  uint64_t module_bytes = 0;   // raw bytes of the packed modules
  uint64_t payload_bytes = 0;  // what they take in the file
  uint64_t index_bytes = 0;
  uint64_t padding_bytes = 0;
  size_t modules = 0;
  size_t raw_modules = 0;
  size_t zstd_modules = 0;
  std::vector<std::string> qms;
  std::vector<std::string> ensembles;
  size_t eqms = 0;
  uint64_t dynamic_models = 0;  // dynamic precision models carried (both QMs packed)
};

// Writes the pack to `out_path` crash-safely (temp file, fsync, rename).
Result<PackResult> WritePack(store::Store* store, const PackOptions& options,
                             const std::string& out_path);

}  // namespace fqpack::pack

#endif  // FQPACK_PACK_WRITER_H_
