#include "store/blob_store.h"

// ZSTD_frameHeaderSize is in the static section of zstd.h; Debian's libzstd
// exports it.
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace fqpack::store {
namespace {

struct CCtxHolder {
  ZSTD_CCtx* ctx = ZSTD_createCCtx();
  ~CCtxHolder() { ZSTD_freeCCtx(ctx); }
};
struct DCtxHolder {
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  ~DCtxHolder() { ZSTD_freeDCtx(ctx); }
};

constexpr char kSuffix[] = ".zst";

// The most bytes a zstd frame can decode to, from its block headers alone: a
// raw block gives its size, an RLE block the size it declares (one byte on
// disk), a compressed block at most ZSTD_BLOCKSIZE_MAX. `frame` must be one
// whole frame (ZSTD_findFrameCompressedSize said so). A frame whose header
// declares more than this bound lies, and is refused before its declared size
// is allocated: 100 bytes of payload can then ask for a few MB, not terabytes.
bool FrameContentBound(ByteSpan frame, uint64_t* bound) {
  const size_t header = ZSTD_frameHeaderSize(frame.data(), frame.size());
  if (ZSTD_isError(header) || header > frame.size()) return false;
  uint64_t total = 0;
  size_t pos = header;
  while (true) {
    if (frame.size() - pos < 3) return false;
    const uint32_t bh =
        frame[pos] | (frame[pos + 1] << 8) | (static_cast<uint32_t>(frame[pos + 2]) << 16);
    pos += 3;
    const bool last = (bh & 1) != 0;
    const uint32_t type = (bh >> 1) & 3;
    const uint64_t size = bh >> 3;
    uint64_t on_disk = 0, decoded = 0;
    switch (type) {
      case 0:
        on_disk = size;
        decoded = size;
        break;  // raw
      case 1:
        on_disk = 1;
        decoded = size;
        break;  // RLE
      case 2:
        on_disk = size;
        decoded = ZSTD_BLOCKSIZE_MAX;
        break;  // compressed
      default:
        return false;
    }
    if (on_disk > frame.size() - pos || !CheckedAdd(total, decoded, &total)) return false;
    pos += static_cast<size_t>(on_disk);
    if (last) break;
  }
  *bound = total;
  return true;
}

}  // namespace

Result<Bytes> ZstdCompress(ByteSpan raw, int level) {
  thread_local CCtxHolder holder;
  ZSTD_CCtx* cctx = holder.ctx;
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  // Compress into a reused scratch buffer (no zero-filling of a fresh
  // bound-sized vector per module), then copy out the frame.
  thread_local std::unique_ptr<uint8_t[]> scratch;
  thread_local size_t scratch_size = 0;
  const size_t bound = ZSTD_compressBound(raw.size());
  if (scratch_size < bound) {
    scratch.reset(new uint8_t[bound]);
    scratch_size = bound;
  }
  size_t n = ZSTD_compress2(cctx, scratch.get(), bound, raw.data(), raw.size());
  if (ZSTD_isError(n))
    return Status::IOError(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  return Bytes(scratch.get(), scratch.get() + n);
}

Result<Bytes> ZstdDecompress(ByteSpan frame, uint64_t expected, const std::string& what) {
  unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR) return Status::Corruption(what + ": not a zstd frame");
  if (size == ZSTD_CONTENTSIZE_UNKNOWN)
    return Status::Corruption(what + ": zstd frame without content size");
  if (size != expected) {
    return Status::Corruption(what + ": holds " + std::to_string(size) +
                              " bytes, the index expects " + std::to_string(expected));
  }
  size_t frame_size = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(frame_size)) {
    return Status::Corruption(what + ": " + ZSTD_getErrorName(frame_size));
  }
  if (frame_size != frame.size()) {
    return Status::Corruption(what + ": " + std::to_string(frame.size() - frame_size) +
                              " stray bytes after the zstd frame");
  }
  uint64_t bound = 0;
  if (!FrameContentBound(frame, &bound))
    return Status::Corruption(what + ": malformed zstd block headers");
  if (size > bound) {
    return Status::Corruption(what + ": zstd frame declares " + std::to_string(size) +
                              " bytes but its blocks can hold at most " + std::to_string(bound));
  }
  size_t out_size = 0;
  if (!FitsSize(size, &out_size))
    return Status::Corruption(what + ": zstd frame too large for this machine");
  thread_local DCtxHolder holder;
  Bytes out(out_size);
  size_t n = ZSTD_decompressDCtx(holder.ctx, out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) return Status::Corruption(what + ": " + ZSTD_getErrorName(n));
  if (n != size) return Status::Corruption(what + ": short zstd frame");
  return out;
}

BlobStore::BlobStore(Env* env, std::string root, int zstd_level, KeyFunction key_fn)
    : env_(env), root_(std::move(root)), level_(zstd_level), key_fn_(std::move(key_fn)) {
  if (!key_fn_) key_fn_ = ComputeModuleKey;
}

std::string BlobStore::blob_dir() const { return JoinPath(root_, "blobs"); }
std::string BlobStore::tmp_dir() const { return JoinPath(root_, "tmp"); }

Status BlobStore::CreateLayout() {
  FQ_RETURN_IF_ERROR(env_->CreateDir(blob_dir()));
  FQ_RETURN_IF_ERROR(env_->CreateDir(tmp_dir()));
  static const char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 256; ++i) {
    std::string name = {kHex[i >> 4], kHex[i & 15]};
    FQ_RETURN_IF_ERROR(env_->CreateDir(JoinPath(blob_dir(), name)));
  }
  FQ_RETURN_IF_ERROR(env_->SyncDir(blob_dir()));
  return env_->SyncDir(root_);
}

std::string BlobStore::PathOf(const ModuleKey& key) const {
  std::string hex = key.Hex();
  return JoinPath(JoinPath(blob_dir(), hex.substr(0, 2)), hex + kSuffix);
}

Result<uint64_t> BlobStore::Put(const ModuleKey& key, ByteSpan raw) {
  FQ_ASSIGN_OR_RETURN(Bytes frame, ZstdCompress(raw, level_));
  const std::string path = PathOf(key);
  const std::string tmp = JoinPath(tmp_dir(), UniqueTempName(key.Hex()));
  auto fail = [&](Status s) {
    (void)env_->RemoveFile(tmp);
    return s;
  };
  FQ_ASSIGN_OR_RETURN(auto file, env_->NewWritableFile(tmp));
  Status s = file->Append(frame);
  if (s.ok()) s = file->Sync();
  Status c = file->Close();
  if (s.ok()) s = c;
  if (!s.ok()) return fail(s);
  s = env_->RenameFile(tmp, path);
  if (!s.ok()) return fail(s);
  FQ_RETURN_IF_ERROR(env_->SyncDir(DirName(path)));
  return static_cast<uint64_t>(frame.size());
}

Result<Bytes> BlobStore::Get(const ModuleKey& key, const ModuleDesc& desc,
                             uint64_t raw_bytes) const {
  const std::string path = PathOf(key);
  Result<MappedFile> file = env_->MapFile(path);
  if (!file.ok()) {
    if (file.status().IsNotFound()) {
      return Status::Corruption(path + ": blob of module " + key.Hex() + " is missing");
    }
    return file.status();
  }
  FQ_ASSIGN_OR_RETURN(Bytes raw, ZstdDecompress(file->bytes(), raw_bytes, path));
  ModuleKey actual = key_fn_(desc, raw);
  if (actual != key) {
    return Status::Corruption(path + ": content hashes to " + actual.Hex() + ", not its name");
  }
  return raw;
}

Result<std::vector<BlobStore::FileEntry>> BlobStore::ListFiles() const {
  std::vector<FileEntry> out;
  FQ_ASSIGN_OR_RETURN(std::vector<std::string> dirs, env_->GetChildren(blob_dir()));
  std::sort(dirs.begin(), dirs.end());
  for (const std::string& d : dirs) {
    std::string dir = JoinPath(blob_dir(), d);
    if (!env_->IsDirectory(dir)) {
      out.push_back({dir, false, {}});
      continue;
    }
    FQ_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->GetChildren(dir));
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      FileEntry e;
      e.path = JoinPath(dir, n);
      const size_t suffix_len = std::strlen(kSuffix);
      if (n.size() == 32 + suffix_len && n.compare(32, suffix_len, kSuffix) == 0 &&
          n.compare(0, 2, d) == 0) {
        Result<ModuleKey> k = ModuleKey::FromHex(n.substr(0, 32));
        if (k.ok()) {
          e.valid_name = true;
          e.key = *k;
        }
      }
      out.push_back(std::move(e));
    }
  }
  return out;
}

Status BlobStore::Remove(const ModuleKey& key) { return env_->RemoveFile(PathOf(key)); }

}  // namespace fqpack::store
