// An SQLite VFS whose file I/O goes through an fqpack Env, so that the index
// is written through the same door as the blob files: a test Env that fails,
// kills or "loses power" at the Nth operation covers SQLite's writes and
// fsyncs too (tests/support/test_util.h, FaultInjectionEnv).
//
// What goes through the Env (one step of a FaultInjectionEnv each):
//   xOpen of a named file  -> Env::OpenRandomRWFile (the database, its WAL,
//                             its rollback journal, a super-journal)
//   xRead / xWrite         -> RandomRWFile::Read / Write
//   xTruncate / xSync      -> RandomRWFile::Truncate / Sync
//   xFileSize              -> RandomRWFile::Size
//   xDelete                -> Env::RemoveFile, then Env::SyncDir of its
//                             directory when SQLite asks (syncDir)
//   first xSync of a newly created journal or WAL
//                          -> also Env::SyncDir of its directory, as SQLite's
//                             unix VFS does, so the new name itself is durable
//
// What is delegated to SQLite's own "unix" VFS, because it is coordination
// between connections and processes rather than data:
//   - byte-range locks (xLock, xUnlock, xCheckReservedLock) and WAL shared
//     memory (xShm*): the main database file of a connection also opens an
//     inner unix-VFS file, used only for those. The -shm file is therefore
//     written behind the Env's back; it is not durable data: after a crash
//     the first connection to open the database finds no other holder of
//     the -shm and rebuilds it from the WAL.
//   - xFullPathname, xAccess, xRandomness, xSleep, xCurrentTime*,
//     xGetLastError, and dynamic loading.
//   - files without a name (SQLite's temp files, which are deleted on close
//     and never hold committed data): opened by the unix VFS outright.
// File controls that would write around the Env (SIZE_HINT, CHUNK_SIZE,
// which make the unix VFS preallocate) are accepted and ignored; there is
// no xFetch (memory-mapped I/O), so every read is an Env read.
//
// POSIX fcntl locks: closing any descriptor of a file drops all of the
// process's locks on it. The inner unix file keeps its own descriptors
// safe; the Env's descriptors are shared per inode by the POSIX Env and
// closed with the last user (schema/env.h, RandomRWFile).
//
// Registration: one sqlite3_vfs per Env instance, named
// "fqpack-env-<n>", registered by the first Db opened with that Env and
// unregistered when the last one closes (EnvVfs::Acquire, refcounted by
// shared_ptr). ATTACH uses the VFS of the connection it runs on, so a
// database attached to a connection opened with an Env is also read and
// written through that Env.
//
// Thread-safety: Acquire may be called from any thread; the VFS methods run
// on the threads of the connections that use it (Env methods are
// thread-safe).
#ifndef FQPACK_STORE_SQLITE_VFS_H_
#define FQPACK_STORE_SQLITE_VFS_H_

#include <memory>
#include <string>

#include "schema/env.h"
#include "schema/status.h"

namespace fqpack::store {

class EnvVfs {
 public:
  // The VFS of `env`, registered with SQLite while any holder keeps it.
  static Result<std::shared_ptr<EnvVfs>> Acquire(Env* env);
  ~EnvVfs();
  EnvVfs(const EnvVfs&) = delete;
  EnvVfs& operator=(const EnvVfs&) = delete;

  // The name to pass to sqlite3_open_v2.
  const std::string& name() const { return name_; }
  Env* env() const { return env_; }

  struct Registration;  // the sqlite3_vfs (sqlite_vfs.cc)

 private:
  EnvVfs(Env* env, std::string name);

  Env* env_;
  std::string name_;
  std::unique_ptr<Registration> reg_;
};

// The Env's error behind the last failed VFS call on this thread (SQLite
// keeps only its own code, "disk I/O error"), or OK. Taking it clears it.
Status TakeVfsError();
// Forgets it: called before each SQLite call, so an error SQLite handled
// by itself is not reported with a later, unrelated one.
void ClearVfsError();

}  // namespace fqpack::store

#endif  // FQPACK_STORE_SQLITE_VFS_H_
