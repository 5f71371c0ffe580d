// Env: the one door through which fqpack touches files. Production code uses
// Env::Default() (POSIX); tests wrap it (EnvWrapper) to fail or "crash" at the
// Nth write, fsync, rename or unlink and then prove the store still verifies.
//
// Crash-safe publishing, used by every writer of a file that must survive a
// kill: write to a temp name in the same directory, Sync, Close, RenameFile
// onto the final name, SyncDir on the directory. See PublishFile().
//
// Random-access files (RandomRWFile) exist for SQLite: store/sqlite_vfs.h
// routes every read, write, truncate and fsync of the index through the Env,
// so the same fault injection covers the blob files and the index.
//
// Thread-safety: Env methods may be called from any thread. A WritableFile,
// RandomRWFile or MappedFile object is used by one thread at a time.
#ifndef FQPACK_SCHEMA_ENV_H_
#define FQPACK_SCHEMA_ENV_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "schema/coding.h"
#include "schema/status.h"

namespace fqpack {

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(ByteSpan data) = 0;
  // Makes everything appended so far durable (fsync).
  virtual Status Sync() = 0;
  virtual Status Close() = 0;
  virtual const std::string& path() const = 0;
};

// A file read and written at any offset (SQLite's database, journal and WAL
// files). Close() is idempotent and the destructor closes.
//
// POSIX drops every fcntl lock a process holds on a file when it closes ANY
// descriptor of that file, and SQLite locks its database with fcntl. So an
// implementation must not close a descriptor of a file while another
// RandomRWFile of this process has it open: the POSIX Env shares one set of
// descriptors per inode and closes them with the last user.
class RandomRWFile {
 public:
  virtual ~RandomRWFile() = default;
  // Reads up to `n` bytes at `offset` into `out`; *got < n only at the end of
  // the file (a short read there is not an error).
  virtual Status Read(uint64_t offset, size_t n, uint8_t* out, size_t* got) = 0;
  // Writes all of `data` at `offset`, extending the file when needed.
  virtual Status Write(uint64_t offset, ByteSpan data) = 0;
  // Cuts (or extends with zeros) the file to `size` bytes.
  virtual Status Truncate(uint64_t size) = 0;
  // Makes the content written so far durable (fsync).
  virtual Status Sync() = 0;
  virtual Result<uint64_t> Size() = 0;
  virtual Status Close() = 0;
  virtual const std::string& path() const = 0;
};

enum class OpenMode { kReadOnly, kReadWrite, kReadWriteCreate };

// A whole file mapped read-only (or, when mapping is not possible or the file
// is empty, held in an owned buffer). Move-only; unmaps on destruction. The
// advice calls are hints: when the kernel refuses them fqpack carries on and
// only logs a warning.
class MappedFile {
 public:
  MappedFile() = default;
  static MappedFile FromMapping(std::string path, void* addr, size_t size);
  static MappedFile FromBuffer(std::string path, Bytes buffer);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  ByteSpan bytes() const { return {data_, size_}; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool is_mapped() const { return mapped_; }

  void AdviseSequential() const;
  void AdviseWillNeed(size_t offset, size_t length) const;
  // Lets the kernel drop the pages of [offset, offset+length) from this
  // process; they are read again from the file if touched.
  void AdviseDontNeed(size_t offset, size_t length) const;

 private:
  void Release();

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  Bytes owned_;
};

// An advisory lock on a file (flock). Released when destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

enum class LockMode { kShared, kExclusive };

// A Linux PSI trigger (Documentation/accounting/psi.rst): a pressure file
// opened for writing with "some|full <stall us> <window us>", which the kernel
// signals (POLLPRI) when stalls in a window pass the threshold. Closed when
// destroyed.
class PressureTrigger {
 public:
  virtual ~PressureTrigger() = default;
  // Waits up to `timeout_ms` for the trigger: true when it fired.
  virtual Result<bool> Wait(int timeout_ms) = 0;
  virtual const std::string& path() const = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX Env. Never deleted.
  static Env* Default();

  // Creates or truncates `path` for writing.
  virtual Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) = 0;
  virtual Result<MappedFile> MapFile(const std::string& path) = 0;
  // Opens `path` for reads (kReadOnly) or reads and writes; kReadWriteCreate
  // creates it when missing (empty). NotFound when it is missing otherwise.
  virtual Result<std::unique_ptr<RandomRWFile>> OpenRandomRWFile(const std::string& path,
                                                                 OpenMode mode) = 0;
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  virtual Status RemoveDir(const std::string& path) = 0;
  // fsync on a directory, so that renames and unlinks inside it are durable.
  virtual Status SyncDir(const std::string& path) = 0;
  // Creates one directory; OK when it already exists.
  virtual Status CreateDir(const std::string& path) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..".
  virtual Result<std::vector<std::string>> GetChildren(const std::string& dir) = 0;
  virtual bool FileExists(const std::string& path) = 0;
  virtual bool IsDirectory(const std::string& path) = 0;
  virtual Result<uint64_t> GetFileSize(const std::string& path) = 0;
  // Takes a flock on `path` (created when missing). With wait == false a lock
  // held by someone else gives Busy at once.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, LockMode mode,
                                                     bool wait) = 0;
  // Reads a whole small file with read(2), for the kernel's files under /proc
  // and /sys, which report a size of 0 and cannot be mapped. InvalidArgument
  // past `max_bytes`.
  virtual Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 1 << 20) = 0;
  // Registers a PSI trigger on `path` (e.g. /proc/pressure/memory) with
  // `spec` ("some 150000 1000000"). NotSupported when the kernel refuses it
  // (no PSI, or a window an unprivileged process may not use).
  virtual Result<std::unique_ptr<PressureTrigger>> OpenPressureTrigger(const std::string& path,
                                                                       const std::string& spec) = 0;
};

// Forwards every call to another Env; a test overrides only what it needs.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }

  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    return target_->NewWritableFile(path);
  }
  Result<MappedFile> MapFile(const std::string& path) override { return target_->MapFile(path); }
  Result<std::unique_ptr<RandomRWFile>> OpenRandomRWFile(const std::string& path,
                                                         OpenMode mode) override {
    return target_->OpenRandomRWFile(path, mode);
  }
  Status RenameFile(const std::string& from, const std::string& to) override {
    return target_->RenameFile(from, to);
  }
  Status RemoveFile(const std::string& path) override { return target_->RemoveFile(path); }
  Status RemoveDir(const std::string& path) override { return target_->RemoveDir(path); }
  Status SyncDir(const std::string& path) override { return target_->SyncDir(path); }
  Status CreateDir(const std::string& path) override { return target_->CreateDir(path); }
  Result<std::vector<std::string>> GetChildren(const std::string& dir) override {
    return target_->GetChildren(dir);
  }
  bool FileExists(const std::string& path) override { return target_->FileExists(path); }
  bool IsDirectory(const std::string& path) override { return target_->IsDirectory(path); }
  Result<uint64_t> GetFileSize(const std::string& path) override {
    return target_->GetFileSize(path);
  }
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, LockMode mode,
                                             bool wait) override {
    return target_->LockFile(path, mode, wait);
  }
  Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) override {
    return target_->ReadSmallFile(path, max_bytes);
  }
  Result<std::unique_ptr<PressureTrigger>> OpenPressureTrigger(const std::string& path,
                                                               const std::string& spec) override {
    return target_->OpenPressureTrigger(path, spec);
  }

 private:
  Env* target_;
};

// Writes `data` to `path` crash-safely: `path` + ".tmp-<unique>" in the same
// directory, fsync, close, rename, fsync of the directory. On failure the temp
// file is removed (best effort) and `path` is untouched.
Status PublishFile(Env* env, const std::string& path, ByteSpan data);

// Like PublishFile, but the content is produced by `write`, which appends to
// the temp file (for outputs too large to hold in memory).
Status PublishFileWith(Env* env, const std::string& path,
                       const std::function<Status(WritableFile*)>& write);

// Reads a whole file into memory.
Result<Bytes> ReadFileBytes(Env* env, const std::string& path);

// "<dir>/<name>" with exactly one slash.
std::string JoinPath(const std::string& dir, const std::string& name);
// The directory part of a path ("." when there is none).
std::string DirName(const std::string& path);
// The last component of a path.
std::string BaseName(const std::string& path);

// A name unique within this process and unlikely to clash across processes:
// "<prefix>.<pid>.<counter>.<random>".
std::string UniqueTempName(const std::string& prefix);

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_ENV_H_
