// A thin RAII layer over SQLite: Db (a connection), Stmt (a prepared
// statement), Txn (a transaction that rolls back unless committed).
//
// Errors come back as Status naming the database file and SQLite's message
// (and, for an I/O error, the Env's own message). SQLITE_BUSY after the busy
// timeout becomes Busy; SQLITE_CORRUPT and SQLITE_NOTADB become Corruption;
// SQLITE_FULL and I/O errors become IOError.
//
// Every file a Db reads or writes goes through the Env it was opened with
// (store/sqlite_vfs.h), so fault injection reaches the index too.
//
// Thread-safety: a Db and its statements belong to one thread at a time.
// Statements must be destroyed before their Db.
#ifndef FQPACK_STORE_SQLITE_H_
#define FQPACK_STORE_SQLITE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "schema/coding.h"
#include "schema/env.h"
#include "schema/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fqpack::store {

class Db;
class EnvVfs;

class Stmt {
 public:
  Stmt() = default;
  Stmt(Db* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~Stmt();
  Stmt(Stmt&& other) noexcept;
  Stmt& operator=(Stmt&& other) noexcept;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // Binds parameter `i` (1-based). A failed bind (an index out of range, a
  // value too big) is remembered: the next Step() or Run() returns it
  // without running the statement, until Reset().
  Stmt& Bind(int i, int64_t v);
  Stmt& Bind(int i, uint64_t v) { return Bind(i, static_cast<int64_t>(v)); }
  Stmt& Bind(int i, int v) { return Bind(i, static_cast<int64_t>(v)); }
  Stmt& Bind(int i, uint32_t v) { return Bind(i, static_cast<int64_t>(v)); }
  Stmt& Bind(int i, double v);
  Stmt& Bind(int i, std::string_view v);
  Stmt& Bind(int i, const std::string& v) { return Bind(i, std::string_view{v}); }
  Stmt& Bind(int i, const char* v) { return Bind(i, std::string_view(v)); }
  Stmt& BindBlob(int i, ByteSpan v);
  Stmt& BindNull(int i);

  // Binds all arguments in order, starting at parameter 1.
  template <typename... Args>
  Stmt& BindAll(const Args&... args) {
    int i = 0;
    (Bind(++i, args), ...);
    return *this;
  }

  // Advances: true when a row is ready, false when the statement is done.
  Result<bool> Step();
  // Steps to completion (for statements that return no rows) and resets.
  Status Run();
  // Rewinds the statement and clears its bindings and any bind error.
  void Reset();

  int64_t ColumnInt(int col) const;
  double ColumnDouble(int col) const;
  std::string ColumnText(int col) const;
  ByteSpan ColumnBlob(int col) const;
  bool ColumnIsNull(int col) const;

 private:
  // Records the first failed bind.
  Stmt& Check(int rc, int i);

  Db* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  int bind_rc_ = 0;  // SQLITE_OK, or the code of the first failed bind
  int bind_index_ = 0;
};

class Db {
 public:
  enum class Mode { kReadWrite, kReadWriteCreate, kReadOnly };

  // Opens the database at `path`, whose files (and those of databases
  // ATTACHed to it) are read and written through `env`, which must outlive
  // the Db. Sets a busy timeout, foreign keys on; journal mode is the
  // caller's business (the store sets WAL).
  static Result<std::unique_ptr<Db>> Open(Env* env, const std::string& path, Mode mode);
  // Opens a read-only database from an image in memory (sqlite3_deserialize;
  // no file I/O). `image` must outlive the Db.
  static Result<std::unique_ptr<Db>> OpenImage(ByteSpan image, const std::string& name);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Runs one or more SQL statements that return no rows.
  Status Exec(std::string_view sql);
  Result<Stmt> Prepare(std::string_view sql);
  int64_t LastInsertRowid() const;
  int64_t Changes() const;
  // The database as the bytes of a database file (sqlite3_serialize).
  Result<Bytes> Serialize();
  // Reads the single integer of "SELECT ..." (e.g. a PRAGMA).
  Result<int64_t> QueryInt(std::string_view sql);

  // A Status for SQLite result code `rc`, naming the file and `context`. On
  // an image (OpenImage: the index of a file from anywhere) every failure is
  // Corruption (running out of memory only on an image under 256 MiB):
  // fqpack's own statements fail there only when the image's schema or rows
  // are not what fqpack writes.
  Status Error(int rc, std::string_view context) const;

  sqlite3* raw() const { return db_; }
  const std::string& path() const { return path_; }

 private:
  Db(sqlite3* db, std::string path, std::shared_ptr<EnvVfs> vfs);

  sqlite3* db_;
  std::string path_;
  std::shared_ptr<EnvVfs> vfs_;  // kept registered until the connection is closed
  bool image_ = false;
  size_t image_bytes_ = 0;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back when destroyed uncommitted.
class Txn {
 public:
  static Result<std::unique_ptr<Txn>> Begin(Db* db);
  ~Txn();
  Status Commit();
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

 private:
  explicit Txn(Db* db) : db_(db) {}
  Db* db_;
  bool done_ = false;
};

}  // namespace fqpack::store

#endif  // FQPACK_STORE_SQLITE_H_
