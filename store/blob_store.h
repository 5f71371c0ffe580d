// The blob area of a store: one file per module, "blobs/<h0h1>/<hash>.zst",
// each a single zstd frame (content size and checksum flags set) holding the
// module's bytes. Incompressible data costs only the frame overhead, because
// zstd stores such blocks raw.
//
// Put publishes crash-safely (temp file in tmp/, fsync, rename, fsync of the
// fan-out directory). Get verifies everything: the frame, the size the index
// expects, and the module key recomputed from the bytes.
//
// Thread-safety: Put and Get may run concurrently from several threads.
#ifndef FQPACK_STORE_BLOB_STORE_H_
#define FQPACK_STORE_BLOB_STORE_H_

#include <string>
#include <vector>

#include "schema/env.h"
#include "store/module_key.h"

namespace fqpack::store {

class BlobStore {
 public:
  // `root` is the store directory; blobs go to root/blobs, temp files to root/tmp.
  BlobStore(Env* env, std::string root, int zstd_level, KeyFunction key_fn);

  // Creates blobs/00..ff and tmp/ (for a new store).
  Status CreateLayout();

  std::string PathOf(const ModuleKey& key) const;
  std::string tmp_dir() const;
  std::string blob_dir() const;

  // Compresses `raw` and publishes it under `key`; returns the file size.
  Result<uint64_t> Put(const ModuleKey& key, ByteSpan raw);

  // Reads the blob of `key`, which the index says holds a module `desc` of
  // `raw_bytes` bytes. Corruption when the file, its size or its key is wrong.
  Result<Bytes> Get(const ModuleKey& key, const ModuleDesc& desc, uint64_t raw_bytes) const;

  // Every file in the fan-out directories: the key it is named after, or an
  // error entry for a name that is not a blob name.
  struct FileEntry {
    std::string path;
    bool valid_name = false;
    ModuleKey key;
  };
  Result<std::vector<FileEntry>> ListFiles() const;

  Status Remove(const ModuleKey& key);

  const KeyFunction& key_fn() const { return key_fn_; }
  Env* env() const { return env_; }

 private:
  Env* env_;
  std::string root_;
  int level_;
  KeyFunction key_fn_;
};

// The most a zstd frame can expand: a 4-byte RLE block decodes to 128 KiB.
// Readers of an index use it to refuse a raw size that no stored size could
// give before anything is decoded.
constexpr uint64_t kZstdMaxExpansion = 32768;

// zstd with reused per-thread contexts.
Result<Bytes> ZstdCompress(ByteSpan raw, int level);
// Decompresses one whole frame whose content size must equal `expected`.
// Allocates only after checking that the frame's blocks can hold that many
// bytes, so a damaged or crafted frame costs at most kZstdMaxExpansion times
// its own size.
Result<Bytes> ZstdDecompress(ByteSpan frame, uint64_t expected, const std::string& what);

}  // namespace fqpack::store

#endif  // FQPACK_STORE_BLOB_STORE_H_
