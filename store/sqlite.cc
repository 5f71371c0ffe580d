#include "store/sqlite.h"

#include <sqlite3.h>

#include <cassert>

#include "store/sqlite_vfs.h"

namespace fqpack::store {

Stmt::~Stmt() {
  if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

Stmt::Stmt(Stmt&& other) noexcept
    : db_(other.db_), stmt_(other.stmt_), bind_rc_(other.bind_rc_), bind_index_(other.bind_index_) {
  other.stmt_ = nullptr;
}

Stmt& Stmt::operator=(Stmt&& other) noexcept {
  if (this != &other) {
    if (stmt_ != nullptr) sqlite3_finalize(stmt_);
    db_ = other.db_;
    stmt_ = other.stmt_;
    bind_rc_ = other.bind_rc_;
    bind_index_ = other.bind_index_;
    other.stmt_ = nullptr;
  }
  return *this;
}

Stmt& Stmt::Check(int rc, int i) {
  // In a release build an unchecked failed bind would leave the parameter
  // NULL and the statement would run with it.
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) {
    bind_rc_ = rc;
    bind_index_ = i;
  }
  return *this;
}

Stmt& Stmt::Bind(int i, int64_t v) { return Check(sqlite3_bind_int64(stmt_, i, v), i); }

Stmt& Stmt::Bind(int i, double v) { return Check(sqlite3_bind_double(stmt_, i, v), i); }

Stmt& Stmt::Bind(int i, std::string_view v) {
  return Check(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8), i);
}

Stmt& Stmt::BindBlob(int i, ByteSpan v) {
  // A zero-length blob must still be a blob, not NULL.
  static const uint8_t kEmpty = 0;
  return Check(
      sqlite3_bind_blob64(stmt_, i, v.empty() ? &kEmpty : v.data(), v.size(), SQLITE_TRANSIENT), i);
}

Stmt& Stmt::BindNull(int i) { return Check(sqlite3_bind_null(stmt_, i), i); }

Result<bool> Stmt::Step() {
  if (bind_rc_ != SQLITE_OK) {
    // Not Db::Error: the connection's last error message is not the bind's.
    const std::string msg = db_->path() + ": binding parameter " + std::to_string(bind_index_) +
                            " of " + sqlite3_sql(stmt_) + ": " + sqlite3_errstr(bind_rc_);
    if (bind_rc_ == SQLITE_RANGE || bind_rc_ == SQLITE_TOOBIG) return Status::InvalidArgument(msg);
    return Status::IOError(msg);
  }
  ClearVfsError();
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Status s = db_->Error(rc, sqlite3_sql(stmt_));
  sqlite3_reset(stmt_);
  return s;
}

Status Stmt::Run() {
  while (true) {
    FQ_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) break;
  }
  Reset();
  return Status::OK();
}

void Stmt::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_rc_ = SQLITE_OK;
  bind_index_ = 0;
}

int64_t Stmt::ColumnInt(int col) const { return sqlite3_column_int64(stmt_, col); }
double Stmt::ColumnDouble(int col) const { return sqlite3_column_double(stmt_, col); }
std::string Stmt::ColumnText(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), n);
}
ByteSpan Stmt::ColumnBlob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr) return {};
  return ByteSpan(static_cast<const uint8_t*>(p), static_cast<size_t>(n));
}
bool Stmt::ColumnIsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

Db::Db(sqlite3* db, std::string path, std::shared_ptr<EnvVfs> vfs)
    : db_(db), path_(std::move(path)), vfs_(std::move(vfs)) {}

Result<std::unique_ptr<Db>> Db::Open(Env* env, const std::string& path, Mode mode) {
  FQ_ASSIGN_OR_RETURN(std::shared_ptr<EnvVfs> vfs, EnvVfs::Acquire(env));
  int flags = SQLITE_OPEN_FULLMUTEX;
  switch (mode) {
    case Mode::kReadOnly:
      flags |= SQLITE_OPEN_READONLY;
      break;
    case Mode::kReadWrite:
      flags |= SQLITE_OPEN_READWRITE;
      break;
    case Mode::kReadWriteCreate:
      flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
      break;
  }
  sqlite3* raw = nullptr;
  ClearVfsError();
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, vfs->name().c_str());
  std::unique_ptr<Db> db(new Db(raw, path, std::move(vfs)));
  if (rc != SQLITE_OK) return db->Error(rc, "open");
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, 30000);
  FQ_RETURN_IF_ERROR(db->Exec("PRAGMA foreign_keys = ON"));
  return db;
}

Result<std::unique_ptr<Db>> Db::OpenImage(ByteSpan image, const std::string& name) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(":memory:", &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr);
  std::unique_ptr<Db> db(new Db(raw, name, nullptr));
  if (rc != SQLITE_OK) return db->Error(rc, "open");
  db->image_ = true;
  db->image_bytes_ = image.size();
  rc = sqlite3_deserialize(raw, "main", const_cast<uint8_t*>(image.data()),
                           static_cast<sqlite3_int64>(image.size()),
                           static_cast<sqlite3_int64>(image.size()), SQLITE_DESERIALIZE_READONLY);
  if (rc != SQLITE_OK) return db->Error(rc, "deserialize");
  FQ_RETURN_IF_ERROR(db->Exec("PRAGMA foreign_keys = ON"));
  return db;
}

Db::~Db() {
  // Statements left open would keep the connection (and its files, which
  // use vfs_) alive past this point as a zombie.
  assert(db_ == nullptr || sqlite3_next_stmt(db_, nullptr) == nullptr);
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

Status Db::Error(int rc, std::string_view context) const {
  std::string msg = path_ + ": " + std::string(context) + ": " +
                    (db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
  Status io = TakeVfsError();
  if (!io.ok()) msg += " (" + io.message() + ")";
  // On an image, out of memory is a data error too while the image is small:
  // fqpack's statements need memory in proportion to the image, and what
  // runs SQLite out of memory there is a corrupted size (SQLite refuses any
  // single allocation of 2 GiB or more with SQLITE_NOMEM; a crafted index
  // of 37 KB made PRAGMA integrity_check ask for one).
  constexpr size_t kSmallImage = size_t{256} << 20;
  if (image_ && ((rc & 0xff) != SQLITE_NOMEM || image_bytes_ <= kSmallImage)) {
    return Status::Corruption(msg);
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Busy(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::Corruption(msg);
    case SQLITE_CANTOPEN:
      return Status::NotFound(msg);
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
      return Status::InvalidArgument(msg);
    default:
      return Status::IOError(msg);
  }
}

Status Db::Exec(std::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  ClearVfsError();
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    sqlite3_free(err);
    return Error(rc, s.size() > 60 ? s.substr(0, 60) + "..." : s);
  }
  return Status::OK();
}

Result<Stmt> Db::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  ClearVfsError();
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return Error(rc, sql);
  return Stmt(this, stmt);
}

int64_t Db::LastInsertRowid() const { return sqlite3_last_insert_rowid(db_); }
int64_t Db::Changes() const { return sqlite3_changes64(db_); }

Result<Bytes> Db::Serialize() {
  sqlite3_int64 size = 0;
  unsigned char* data = sqlite3_serialize(db_, "main", &size, 0);
  if (data == nullptr) return Status::IOError(path_ + ": cannot serialize the database");
  Bytes out(data, data + size);
  sqlite3_free(data);
  return out;
}

Result<int64_t> Db::QueryInt(std::string_view sql) {
  FQ_ASSIGN_OR_RETURN(Stmt st, Prepare(sql));
  FQ_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound(path_ + ": no row for " + std::string(sql));
  return st.ColumnInt(0);
}

Result<std::unique_ptr<Txn>> Txn::Begin(Db* db) {
  FQ_RETURN_IF_ERROR(db->Exec("BEGIN IMMEDIATE"));
  return std::unique_ptr<Txn>(new Txn(db));
}

Txn::~Txn() {
  if (!done_) (void)db_->Exec("ROLLBACK");
}

Status Txn::Commit() {
  Status s = db_->Exec("COMMIT");
  if (s.ok()) done_ = true;
  return s;
}

}  // namespace fqpack::store
