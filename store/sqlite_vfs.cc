#include "store/sqlite_vfs.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>

namespace fqpack::store {

struct EnvVfs::Registration {
  sqlite3_vfs vfs;
  sqlite3_vfs* unix_vfs = nullptr;
  Env* env = nullptr;
};

namespace {

thread_local Status t_last_error;

// Remembers the Env's error for Db::Error and hands SQLite its code.
int Fail(Status s, int code) {
  t_last_error = std::move(s);
  return code;
}

EnvVfs::Registration* Reg(sqlite3_vfs* vfs) {
  return static_cast<EnvVfs::Registration*>(vfs->pAppData);
}

// A named file of ours.
struct FileImpl {
  EnvVfs::Registration* reg = nullptr;
  std::unique_ptr<RandomRWFile> file;
  // The unix-VFS file of a main database, used for locks and shared memory
  // only; nullptr for journals and WALs, which SQLite never locks.
  sqlite3_file* inner = nullptr;
  std::string path;
  // A journal or WAL opened with SQLITE_OPEN_CREATE: its directory is
  // fsynced after its first Sync (as the unix VFS does), so that the file's
  // name is as durable as its content.
  bool sync_dir = false;
  bool delete_on_close = false;
  bool persist_wal = false;
  bool powersafe_overwrite = true;  // the unix VFS's default
};

// What SQLite holds: the szOsFile bytes it hands xOpen. Plain data, so that
// the sqlite3_file* SQLite passes back is one to this struct.
struct EnvFile {
  sqlite3_file base;  // first
  FileImpl* impl;
};
static_assert(std::is_standard_layout_v<EnvFile>);

FileImpl* Cast(sqlite3_file* f) { return reinterpret_cast<EnvFile*>(f)->impl; }

int FileClose(sqlite3_file* f) {
  FileImpl* impl = Cast(f);
  int rc = SQLITE_OK;
  // The inner file first: it has released its locks by now, and the Env's
  // descriptors are closed last (they are shared per inode anyway).
  if (impl->inner != nullptr) {
    if (impl->inner->pMethods != nullptr) rc = impl->inner->pMethods->xClose(impl->inner);
    sqlite3_free(impl->inner);
    impl->inner = nullptr;
  }
  if (impl->file != nullptr) {
    Status s = impl->file->Close();
    if (!s.ok()) rc = Fail(s, SQLITE_IOERR_CLOSE);
  }
  if (impl->delete_on_close) {
    Status s = impl->reg->env->RemoveFile(impl->path);
    if (!s.ok() && !s.IsNotFound()) rc = Fail(s, SQLITE_IOERR_DELETE);
  }
  delete impl;
  return rc;
}

int FileRead(sqlite3_file* f, void* buf, int amount, sqlite3_int64 offset) {
  FileImpl* impl = Cast(f);
  const size_t n = static_cast<size_t>(amount);
  size_t got = 0;
  Status s = impl->file->Read(static_cast<uint64_t>(offset), n, static_cast<uint8_t*>(buf), &got);
  if (!s.ok()) return Fail(s, SQLITE_IOERR_READ);
  if (got < n) {
    // SQLite's contract: a short read zero-fills the rest.
    std::memset(static_cast<uint8_t*>(buf) + got, 0, n - got);
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

int FileWrite(sqlite3_file* f, const void* buf, int amount, sqlite3_int64 offset) {
  Status s =
      Cast(f)->file->Write(static_cast<uint64_t>(offset),
                           ByteSpan(static_cast<const uint8_t*>(buf), static_cast<size_t>(amount)));
  return s.ok() ? SQLITE_OK : Fail(s, SQLITE_IOERR_WRITE);
}

int FileTruncate(sqlite3_file* f, sqlite3_int64 size) {
  Status s = Cast(f)->file->Truncate(static_cast<uint64_t>(size));
  return s.ok() ? SQLITE_OK : Fail(s, SQLITE_IOERR_TRUNCATE);
}

int FileSync(sqlite3_file* f, int flags) {
  FileImpl* impl = Cast(f);
  Status s = impl->file->Sync();
  if (!s.ok()) return Fail(s, SQLITE_IOERR_FSYNC);
  if (impl->sync_dir) {
    s = impl->reg->env->SyncDir(DirName(impl->path));
    if (!s.ok()) return Fail(s, SQLITE_IOERR_DIR_FSYNC);
    impl->sync_dir = false;
  }
  return SQLITE_OK;
}

int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  Result<uint64_t> n = Cast(f)->file->Size();
  if (!n.ok()) return Fail(n.status(), SQLITE_IOERR_FSTAT);
  *size = static_cast<sqlite3_int64>(*n);
  return SQLITE_OK;
}

int FileLock(sqlite3_file* f, int level) {
  sqlite3_file* in = Cast(f)->inner;
  return in != nullptr ? in->pMethods->xLock(in, level) : SQLITE_OK;
}

int FileUnlock(sqlite3_file* f, int level) {
  sqlite3_file* in = Cast(f)->inner;
  return in != nullptr ? in->pMethods->xUnlock(in, level) : SQLITE_OK;
}

int FileCheckReservedLock(sqlite3_file* f, int* out) {
  sqlite3_file* in = Cast(f)->inner;
  if (in != nullptr) return in->pMethods->xCheckReservedLock(in, out);
  *out = 0;
  return SQLITE_OK;
}

int FileControl(sqlite3_file* f, int op, void* arg) {
  FileImpl* impl = Cast(f);
  switch (op) {
    case SQLITE_FCNTL_SIZE_HINT:
    case SQLITE_FCNTL_CHUNK_SIZE:
      // The unix VFS would preallocate with its own writes, around the Env.
      return SQLITE_OK;
    case SQLITE_FCNTL_PERSIST_WAL: {
      int* v = static_cast<int*>(arg);
      if (*v < 0) {
        *v = impl->persist_wal ? 1 : 0;
      } else {
        impl->persist_wal = *v != 0;
      }
      return SQLITE_OK;
    }
    case SQLITE_FCNTL_POWERSAFE_OVERWRITE: {
      int* v = static_cast<int*>(arg);
      if (*v < 0) {
        *v = impl->powersafe_overwrite ? 1 : 0;
      } else {
        impl->powersafe_overwrite = *v != 0;
      }
      return SQLITE_OK;
    }
    case SQLITE_FCNTL_VFSNAME:
      *static_cast<char**>(arg) = sqlite3_mprintf("%s", impl->reg->vfs.zName);
      return SQLITE_OK;
    case SQLITE_FCNTL_HAS_MOVED:
      if (impl->inner == nullptr) {
        *static_cast<int*>(arg) = 0;
        return SQLITE_OK;
      }
      [[fallthrough]];
    // Questions about locks and shared memory: the inner file's business.
    case SQLITE_FCNTL_LOCKSTATE:
    case SQLITE_FCNTL_LAST_ERRNO:
#ifdef SQLITE_FCNTL_EXTERNAL_READER
    case SQLITE_FCNTL_EXTERNAL_READER:
#endif
      if (impl->inner == nullptr) return SQLITE_NOTFOUND;
      return impl->inner->pMethods->xFileControl(impl->inner, op, arg);
    default:
      // Hints SQLite sends every file (SYNC, COMMIT_PHASETWO, PRAGMA,
      // BUSYHANDLER, ...) need no action; NOTFOUND is how a VFS says so.
      return SQLITE_NOTFOUND;
  }
}

int FileSectorSize(sqlite3_file*) { return 4096; }  // the unix VFS's SQLITE_DEFAULT_SECTOR_SIZE

int FileDeviceCharacteristics(sqlite3_file* f) {
  return Cast(f)->powersafe_overwrite ? SQLITE_IOCAP_POWERSAFE_OVERWRITE : 0;
}

int FileShmMap(sqlite3_file* f, int page, int page_size, int extend, void volatile** out) {
  sqlite3_file* in = Cast(f)->inner;
  if (in == nullptr) return SQLITE_IOERR_SHMMAP;
  return in->pMethods->xShmMap(in, page, page_size, extend, out);
}

int FileShmLock(sqlite3_file* f, int offset, int n, int flags) {
  sqlite3_file* in = Cast(f)->inner;
  if (in == nullptr) return SQLITE_IOERR_SHMLOCK;
  return in->pMethods->xShmLock(in, offset, n, flags);
}

void FileShmBarrier(sqlite3_file* f) {
  sqlite3_file* in = Cast(f)->inner;
  if (in != nullptr) {
    in->pMethods->xShmBarrier(in);
  } else {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
  }
}

int FileShmUnmap(sqlite3_file* f, int delete_flag) {
  sqlite3_file* in = Cast(f)->inner;
  return in != nullptr ? in->pMethods->xShmUnmap(in, delete_flag) : SQLITE_OK;
}

// Version 2: shared memory, but no xFetch/xUnfetch, so SQLite never maps
// the database and every read goes through FileRead.
const sqlite3_io_methods kEnvFileMethods = {
    2,
    FileClose,
    FileRead,
    FileWrite,
    FileTruncate,
    FileSync,
    FileSize,
    FileLock,
    FileUnlock,
    FileCheckReservedLock,
    FileControl,
    FileSectorSize,
    FileDeviceCharacteristics,
    FileShmMap,
    FileShmLock,
    FileShmBarrier,
    FileShmUnmap,
    nullptr,
    nullptr,
};

constexpr int kTempTypes = SQLITE_OPEN_TEMP_DB | SQLITE_OPEN_TEMP_JOURNAL |
                           SQLITE_OPEN_TRANSIENT_DB | SQLITE_OPEN_SUBJOURNAL;
constexpr int kJournalTypes =
    SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_SUPER_JOURNAL | SQLITE_OPEN_WAL;

int VfsOpen(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  EnvVfs::Registration* reg = Reg(vfs);
  if (name == nullptr || (flags & kTempTypes) != 0) {
    // SQLite's own temp files: deleted on close, never committed data.
    // szOsFile leaves room for a unix file in the same memory.
    return reg->unix_vfs->xOpen(reg->unix_vfs, name, f, flags, out_flags);
  }
  f->pMethods = nullptr;  // until the open succeeds: SQLite then skips xClose
  auto* impl = new FileImpl();
  reinterpret_cast<EnvFile*>(f)->impl = impl;
  impl->reg = reg;
  impl->path = name;
  auto fail = [&](int rc) {
    if (impl->file != nullptr) (void)impl->file->Close();
    delete impl;
    return rc;
  };
  const OpenMode mode = (flags & SQLITE_OPEN_READONLY) != 0 ? OpenMode::kReadOnly
                        : (flags & SQLITE_OPEN_CREATE) != 0 ? OpenMode::kReadWriteCreate
                                                            : OpenMode::kReadWrite;
  Result<std::unique_ptr<RandomRWFile>> file = reg->env->OpenRandomRWFile(impl->path, mode);
  if (!file.ok()) return fail(Fail(file.status(), SQLITE_CANTOPEN));
  impl->file = std::move(*file);
  if ((flags & SQLITE_OPEN_MAIN_DB) != 0) {
    impl->inner = static_cast<sqlite3_file*>(sqlite3_malloc(reg->unix_vfs->szOsFile));
    if (impl->inner == nullptr) return fail(SQLITE_NOMEM);
    std::memset(impl->inner, 0, static_cast<size_t>(reg->unix_vfs->szOsFile));
    // Same access as ours (a write lock needs a descriptor open for
    // writing); the Env created the file already. `name` carries SQLite's
    // URI parameters, which the unix VFS reads.
    const int rc = reg->unix_vfs->xOpen(
        reg->unix_vfs, name, impl->inner,
        flags & ~(SQLITE_OPEN_CREATE | SQLITE_OPEN_EXCLUSIVE | SQLITE_OPEN_DELETEONCLOSE), nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_free(impl->inner);
      impl->inner = nullptr;
      return fail(rc);
    }
  }
  impl->sync_dir = (flags & kJournalTypes) != 0 && (flags & SQLITE_OPEN_CREATE) != 0;
  impl->delete_on_close = (flags & SQLITE_OPEN_DELETEONCLOSE) != 0;
  f->pMethods = &kEnvFileMethods;
  if (out_flags != nullptr) *out_flags = flags;
  return SQLITE_OK;
}

int VfsDelete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  Env* env = Reg(vfs)->env;
  Status s = env->RemoveFile(name);
  if (!s.ok()) return s.IsNotFound() ? SQLITE_IOERR_DELETE_NOENT : Fail(s, SQLITE_IOERR_DELETE);
  if (sync_dir != 0) {
    s = env->SyncDir(DirName(name));
    if (!s.ok()) return Fail(s, SQLITE_IOERR_DIR_FSYNC);
  }
  return SQLITE_OK;
}

sqlite3_vfs* Unix(sqlite3_vfs* vfs) { return Reg(vfs)->unix_vfs; }

int VfsAccess(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  return Unix(vfs)->xAccess(Unix(vfs), name, flags, out);
}
int VfsFullPathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  return Unix(vfs)->xFullPathname(Unix(vfs), name, n, out);
}
void* VfsDlOpen(sqlite3_vfs* vfs, const char* name) { return Unix(vfs)->xDlOpen(Unix(vfs), name); }
void VfsDlError(sqlite3_vfs* vfs, int n, char* out) { Unix(vfs)->xDlError(Unix(vfs), n, out); }
void (*VfsDlSym(sqlite3_vfs* vfs, void* handle, const char* sym))(void) {
  return Unix(vfs)->xDlSym(Unix(vfs), handle, sym);
}
void VfsDlClose(sqlite3_vfs* vfs, void* handle) { Unix(vfs)->xDlClose(Unix(vfs), handle); }
int VfsRandomness(sqlite3_vfs* vfs, int n, char* out) {
  return Unix(vfs)->xRandomness(Unix(vfs), n, out);
}
int VfsSleep(sqlite3_vfs* vfs, int micros) { return Unix(vfs)->xSleep(Unix(vfs), micros); }
int VfsCurrentTime(sqlite3_vfs* vfs, double* out) {
  return Unix(vfs)->xCurrentTime(Unix(vfs), out);
}
int VfsGetLastError(sqlite3_vfs* vfs, int n, char* out) {
  return Unix(vfs)->xGetLastError(Unix(vfs), n, out);
}
int VfsCurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  return Unix(vfs)->xCurrentTimeInt64(Unix(vfs), out);
}

// The registry: Env -> its live EnvVfs. Recursive, because a failed
// Acquire destroys its half-made EnvVfs while holding the lock.
std::recursive_mutex& RegistryMutex() {
  static auto* mu = new std::recursive_mutex();
  return *mu;
}
std::map<Env*, std::weak_ptr<EnvVfs>>& Registry() {
  static auto* registry = new std::map<Env*, std::weak_ptr<EnvVfs>>();
  return *registry;
}

}  // namespace

EnvVfs::EnvVfs(Env* env, std::string name)
    : env_(env), name_(std::move(name)), reg_(std::make_unique<Registration>()) {}

EnvVfs::~EnvVfs() {
  std::lock_guard<std::recursive_mutex> lock(RegistryMutex());
  sqlite3_vfs_unregister(&reg_->vfs);
  auto it = Registry().find(env_);
  // A new EnvVfs for the same Env may have been made since our last holder
  // let go: that one stays.
  if (it != Registry().end() && it->second.expired()) Registry().erase(it);
}

Result<std::shared_ptr<EnvVfs>> EnvVfs::Acquire(Env* env) {
  std::lock_guard<std::recursive_mutex> lock(RegistryMutex());
  if (std::shared_ptr<EnvVfs> live = Registry()[env].lock()) return live;
  sqlite3_vfs* unix_vfs = sqlite3_vfs_find("unix");
  if (unix_vfs == nullptr) return Status::NotSupported("this SQLite has no \"unix\" VFS");
  static uint64_t counter = 0;
  std::shared_ptr<EnvVfs> vfs(new EnvVfs(env, "fqpack-env-" + std::to_string(++counter)));
  Registration* r = vfs->reg_.get();
  r->env = env;
  r->unix_vfs = unix_vfs;
  sqlite3_vfs& v = r->vfs;
  std::memset(&v, 0, sizeof(v));
  v.iVersion = 2;
  v.szOsFile = std::max(static_cast<int>(sizeof(EnvFile)), unix_vfs->szOsFile);
  v.mxPathname = unix_vfs->mxPathname;
  v.zName = vfs->name_.c_str();
  v.pAppData = r;
  v.xOpen = VfsOpen;
  v.xDelete = VfsDelete;
  v.xAccess = VfsAccess;
  v.xFullPathname = VfsFullPathname;
  v.xDlOpen = VfsDlOpen;
  v.xDlError = VfsDlError;
  v.xDlSym = VfsDlSym;
  v.xDlClose = VfsDlClose;
  v.xRandomness = VfsRandomness;
  v.xSleep = VfsSleep;
  v.xCurrentTime = VfsCurrentTime;
  v.xGetLastError = VfsGetLastError;
  v.xCurrentTimeInt64 = VfsCurrentTimeInt64;
  const int rc = sqlite3_vfs_register(&v, 0);
  if (rc != SQLITE_OK) {
    return Status::IOError(std::string("cannot register SQLite VFS ") + v.zName + ": " +
                           sqlite3_errstr(rc));
  }
  Registry()[env] = vfs;
  return vfs;
}

Status TakeVfsError() {
  Status s = std::move(t_last_error);
  t_last_error = Status::OK();
  return s;
}

void ClearVfsError() {
  if (!t_last_error.ok()) t_last_error = Status::OK();
}

}  // namespace fqpack::store
