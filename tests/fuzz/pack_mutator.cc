#include "tests/fuzz/pack_mutator.h"

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "pack/format.h"

namespace fqpack::fuzz {
namespace {

using Rng = std::mt19937_64;

size_t Pick(Rng* rng, size_t n) { return n == 0 ? 0 : static_cast<size_t>((*rng)() % n); }

std::string QuoteId(const std::string& name) {
  std::string q = "\"";
  for (char c : name) {
    q += c;
    if (c == '"') q += '"';
  }
  return q + "\"";
}

// A read-write in-memory copy of a database image.
class MemDb {
 public:
  ~MemDb() {
    if (db_ != nullptr) sqlite3_close(db_);
  }

  Status Load(ByteSpan image) {
    if (db_ != nullptr) sqlite3_close(db_);
    db_ = nullptr;
    if (sqlite3_open_v2(":memory:", &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      return Status::IOError("sqlite3_open_v2");
    }
    auto* buf = static_cast<unsigned char*>(sqlite3_malloc64(std::max<size_t>(image.size(), 1)));
    if (buf == nullptr) return Status::IOError("sqlite3_malloc64");
    if (!image.empty()) std::memcpy(buf, image.data(), image.size());
    const auto n = static_cast<sqlite3_int64>(image.size());
    if (sqlite3_deserialize(db_, "main", buf, n, n,
                            SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE) !=
        SQLITE_OK) {
      return Status::NotSupported("not a database image");
    }
    // Checks the schema: a damaged image fails here rather than half-way.
    if (!Exec("PRAGMA ignore_check_constraints = ON") || Tables().empty()) {
      return Status::NotSupported("not a database image");
    }
    return Status::OK();
  }

  // An empty database with pages of `page_size` bytes.
  Status Create(int page_size) {
    if (db_ != nullptr) sqlite3_close(db_);
    db_ = nullptr;
    if (sqlite3_open_v2(":memory:", &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK ||
        !Exec("PRAGMA page_size = " + std::to_string(page_size))) {
      return Status::IOError("sqlite3_open_v2");
    }
    return Status::OK();
  }

  // Attaches a copy of `image` as schema `name`.
  Status Attach(const std::string& name, ByteSpan image) {
    if (!Exec("ATTACH DATABASE ':memory:' AS " + QuoteId(name))) return Status::IOError("attach");
    auto* buf = static_cast<unsigned char*>(sqlite3_malloc64(std::max<size_t>(image.size(), 1)));
    if (buf == nullptr) return Status::IOError("sqlite3_malloc64");
    if (!image.empty()) std::memcpy(buf, image.data(), image.size());
    const auto n = static_cast<sqlite3_int64>(image.size());
    if (sqlite3_deserialize(db_, name.c_str(), buf, n, n, SQLITE_DESERIALIZE_FREEONCLOSE) !=
        SQLITE_OK) {
      return Status::NotSupported("not a database image");
    }
    return Status::OK();
  }

  Result<Bytes> Save() {
    sqlite3_int64 n = 0;
    unsigned char* p = sqlite3_serialize(db_, "main", &n, 0);
    if (p == nullptr) return Status::IOError("sqlite3_serialize");
    Bytes out(p, p + n);
    sqlite3_free(p);
    return out;
  }

  bool Exec(const std::string& sql) {
    return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  }

  // Runs `sql` with `bind` binding its parameters; collects column 0..n-1 of
  // every row as text.
  std::vector<std::vector<std::string>> Query(const std::string& sql,
                                              const std::function<void(sqlite3_stmt*)>& bind = {}) {
    std::vector<std::vector<std::string>> rows;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return rows;
    if (bind) bind(st);
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int c = 0; c < sqlite3_column_count(st); ++c) {
        const unsigned char* t = sqlite3_column_text(st, c);
        row.emplace_back(t == nullptr ? "" : reinterpret_cast<const char*>(t));
      }
      rows.push_back(std::move(row));
    }
    sqlite3_finalize(st);
    return rows;
  }

  bool Run(const std::string& sql, const std::function<void(sqlite3_stmt*)>& bind) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return false;
    bind(st);
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE;
  }

  std::vector<std::string> Tables() {
    std::vector<std::string> out;
    for (auto& r :
         Query("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
               "ORDER BY name")) {
      out.push_back(r[0]);
    }
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

struct Table {
  std::string name;
  std::vector<std::string> columns;
  std::vector<std::string> key;  // primary key columns of a WITHOUT ROWID table; empty: rowid
  int64_t rows = 0;
};

Table Describe(MemDb* db, const std::string& name) {
  Table t;
  t.name = name;
  const auto sql = db->Query("SELECT sql FROM sqlite_schema WHERE name = ?", [&](sqlite3_stmt* st) {
    sqlite3_bind_text(st, 1, name.c_str(), -1, SQLITE_TRANSIENT);
  });
  std::string upper = sql.empty() ? "" : sql[0][0];
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return std::toupper(c); });
  const bool without_rowid = upper.find("WITHOUT ROWID") != std::string::npos;
  std::vector<std::pair<int, std::string>> pk;
  for (auto& r : db->Query("SELECT name, pk FROM pragma_table_info(?)", [&](sqlite3_stmt* st) {
         sqlite3_bind_text(st, 1, name.c_str(), -1, SQLITE_TRANSIENT);
       })) {
    t.columns.push_back(r[0]);
    const int k = std::atoi(r[1].c_str());
    if (k > 0) pk.emplace_back(k, r[0]);
  }
  std::sort(pk.begin(), pk.end());
  if (without_rowid) {
    for (auto& [k, c] : pk) t.key.push_back(c);
  }
  const auto count = db->Query("SELECT count(*) FROM " + QuoteId(name));
  t.rows = count.empty() ? 0 : std::atoll(count[0][0].c_str());
  return t;
}

// "WHERE <key> = (SELECT <key> ... OFFSET n)": row n of the table.
std::string RowWhere(const Table& t, int64_t n) {
  std::string key = t.key.empty() ? "rowid" : "";
  for (const std::string& c : t.key) key += (key.empty() ? "" : ", ") + QuoteId(c);
  const std::string lhs = t.key.size() > 1 ? "(" + key + ")" : key;
  return " WHERE " + lhs + " = (SELECT " + key + " FROM " + QuoteId(t.name) + " LIMIT 1 OFFSET " +
         std::to_string(n) + ")";
}

// Numbers a reader must not trust: zero, negatives, the ends of the integer
// ranges, sizes near the limits the reader checks, offsets past any file.
const int64_t kInterestingInts[] = {
    0,
    1,
    -1,
    2,
    3,
    4,
    5,
    31,
    32,
    63,
    64,
    65,
    255,
    256,
    4095,
    4096,
    65536,
    int64_t{1} << 31,
    (int64_t{1} << 31) - 1,
    int64_t{1} << 32,
    (int64_t{1} << 32) - 1,
    int64_t{1} << 40,
    (int64_t{1} << 40) + 1,
    int64_t{1} << 53,
    int64_t{1} << 62,
    std::numeric_limits<int64_t>::max(),
    std::numeric_limits<int64_t>::min(),
    std::numeric_limits<int64_t>::max() - 63,
    100000 + 4064,
    100000 + 2032,
    39,
    40,
    1000,
};

// Text a reader must not trust: wrong codec and type names, labels, JSON
// fragments, numbers as text, module keys of the wrong length or alphabet.
const char* const kInterestingTexts[] = {
    "",
    "raw",
    "zstd",
    "RAW",
    "lz4",
    "llama",
    "gpt2",
    "F16",
    "Q8_0",
    "Q4_K_M",
    "eqm:0",
    "embed",
    "output",
    "norm",
    "other",
    "blk.0.attn_q.weight",
    "token_embd.weight",
    "import",
    "quantize",
    "123",
    "-1",
    "18446744073709551616",
    "1e308",
    "nan",
    "{}",
    "[]",
    "[\"F16\",\"Q8_0\"]",
    "[\"",
    "{\"stem\":",
    "{\"metric\":\"kl\",\"tokens\":-1}",
    "00000000000000000000000000000000",
    "ffffffffffffffffffffffffffffffff",
    "0000000000000000000000000000000",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    "format_version",
    "model",
    "\xE2\x96\x81",
    "\xFF\xFE",
};

const double kInterestingReals[] = {0.0, -0.0, 0.5, -1.5, 1e308, -1e308, 1e-310, 3.5e38};

// Sets one column of one row to something a reader must survive.
bool UpdateCell(MemDb* db, const Table& t, Rng* rng) {
  if (t.rows == 0 || t.columns.empty()) return false;
  const std::string col = QuoteId(t.columns[Pick(rng, t.columns.size())]);
  const int64_t row = static_cast<int64_t>(Pick(rng, static_cast<size_t>(t.rows)));
  std::string value = "?1";
  std::function<void(sqlite3_stmt*)> bind = [](sqlite3_stmt*) {};
  switch (Pick(rng, 12)) {
    case 0:
    case 1: {
      const int64_t v = kInterestingInts[Pick(rng, std::size(kInterestingInts))];
      bind = [v](sqlite3_stmt* st) { sqlite3_bind_int64(st, 1, v); };
      break;
    }
    case 2:
    case 3: {
      const char* v = kInterestingTexts[Pick(rng, std::size(kInterestingTexts))];
      bind = [v](sqlite3_stmt* st) { sqlite3_bind_text(st, 1, v, -1, SQLITE_STATIC); };
      break;
    }
    case 4: {
      const double v = kInterestingReals[Pick(rng, std::size(kInterestingReals))];
      bind = [v](sqlite3_stmt* st) { sqlite3_bind_double(st, 1, v); };
      break;
    }
    case 5:
      value = "NULL";
      break;
    case 6: {
      Bytes blob(Pick(rng, 40));
      for (uint8_t& b : blob) b = static_cast<uint8_t>((*rng)());
      bind = [blob](sqlite3_stmt* st) {
        sqlite3_bind_blob(st, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
      };
      break;
    }
    case 7: {
      // The same column of another row: aliases (two rows naming one key,
      // one offset, one id).
      const int64_t other = static_cast<int64_t>(Pick(rng, static_cast<size_t>(t.rows)));
      value = "(SELECT " + col + " FROM " + QuoteId(t.name) + " LIMIT 1 OFFSET " +
              std::to_string(other) + ")";
      break;
    }
    case 8: {
      const char* const kNear[] = {"+ 1", "- 1", "* 2", "+ 64", "+ 4096", "- 64", "/ 2"};
      value = col + " " + kNear[Pick(rng, std::size(kNear))];
      break;
    }
    case 9:
      value = Pick(rng, 2) == 0 ? "-" + col : "CAST(" + col + " AS TEXT) || ' '";
      break;
    case 10:
      value = Pick(rng, 2) == 0 ? "substr(" + col + ", 2)" : col + " || " + col;
      break;
    default: {
      const int64_t v = static_cast<int64_t>((*rng)());
      bind = [v](sqlite3_stmt* st) { sqlite3_bind_int64(st, 1, v); };
      break;
    }
  }
  return db->Run(
      "UPDATE OR REPLACE " + QuoteId(t.name) + " SET " + col + " = " + value + RowWhere(t, row),
      bind);
}

bool DeleteRow(MemDb* db, const Table& t, Rng* rng) {
  if (t.rows == 0) return false;
  const int64_t row = static_cast<int64_t>(Pick(rng, static_cast<size_t>(t.rows)));
  return db->Exec("DELETE FROM " + QuoteId(t.name) + RowWhere(t, row));
}

// A copy of a row with one column changed, so that a table holds a second
// row the writer would never write (two blobs at one offset, two EQMs of
// one step in different ensembles...).
bool DuplicateRow(MemDb* db, const Table& t, Rng* rng) {
  if (t.rows == 0 || t.columns.empty()) return false;
  const int64_t row = static_cast<int64_t>(Pick(rng, static_cast<size_t>(t.rows)));
  const size_t changed = Pick(rng, t.columns.size());
  const int64_t v = kInterestingInts[Pick(rng, std::size(kInterestingInts))];
  std::string select;
  for (size_t c = 0; c < t.columns.size(); ++c) {
    if (!select.empty()) select += ", ";
    select += c == changed ? "?1" : QuoteId(t.columns[c]);
  }
  return db->Run("INSERT OR REPLACE INTO " + QuoteId(t.name) + " SELECT " + select + " FROM " +
                     QuoteId(t.name) + " LIMIT 1 OFFSET " + std::to_string(row),
                 [v](sqlite3_stmt* st) { sqlite3_bind_int64(st, 1, v); });
}

// Drops NOT NULL from one table's declaration, so that later changes can
// put NULL where the writer never does. Takes effect when the image is
// opened again.
bool RelaxSchema(MemDb* db, const Table& t) {
  return db->Exec("PRAGMA writable_schema = ON") &&
         db->Run("UPDATE sqlite_schema SET sql = replace(sql, 'NOT NULL', '') WHERE name = ?1",
                 [&](sqlite3_stmt* st) {
                   sqlite3_bind_text(st, 1, t.name.c_str(), -1, SQLITE_TRANSIENT);
                 }) &&
         db->Exec("PRAGMA writable_schema = OFF");
}

}  // namespace

// The changes, by weight: a cell (most), a deleted row, a duplicated row,
// the schema version, NOT NULL dropped from a table (then a cell of it set),
// a table emptied.
Result<Bytes> MutateIndex(ByteSpan image, std::mt19937_64* rng) {
  MemDb db;
  FQ_RETURN_IF_ERROR(db.Load(image));
  const int changes = 1 + static_cast<int>(Pick(rng, 3));
  for (int i = 0; i < changes; ++i) {
    const std::vector<std::string> tables = db.Tables();
    if (tables.empty()) break;
    // Tables with rows are the interesting ones; try a few times to find one.
    Table t = Describe(&db, tables[Pick(rng, tables.size())]);
    for (int tries = 0; tries < 3 && t.rows == 0; ++tries)
      t = Describe(&db, tables[Pick(rng, tables.size())]);
    const size_t what = Pick(rng, 100);
    if (what < 62) {
      UpdateCell(&db, t, rng);
    } else if (what < 72) {
      DeleteRow(&db, t, rng);
    } else if (what < 82) {
      DuplicateRow(&db, t, rng);
    } else if (what < 88) {
      const int64_t v = Pick(rng, 2) == 0
                            ? static_cast<int64_t>(Pick(rng, 4))
                            : kInterestingInts[Pick(rng, std::size(kInterestingInts))];
      // user_version is a 32-bit field of the file header.
      db.Exec("PRAGMA user_version = " + std::to_string(static_cast<int32_t>(v)));
    } else if (what < 97) {
      if (RelaxSchema(&db, t)) {
        FQ_ASSIGN_OR_RETURN(Bytes relaxed, db.Save());
        FQ_RETURN_IF_ERROR(db.Load(relaxed));
        UpdateCell(&db, Describe(&db, t.name), rng);
      }
    } else {
      db.Exec("DELETE FROM " + QuoteId(t.name));
    }
  }
  return db.Save();
}

// An in-memory database keeps its page size, even through VACUUM, so the
// tables and indexes are copied into a fresh database of the new page size.
Result<Bytes> RepageIndex(ByteSpan image, int page_size) {
  MemDb src;
  FQ_RETURN_IF_ERROR(src.Load(image));
  FQ_ASSIGN_OR_RETURN(Bytes copy, src.Save());
  const auto schema = src.Query("SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL");
  const auto version = src.Query("PRAGMA user_version");
  MemDb dst;
  FQ_RETURN_IF_ERROR(dst.Create(page_size));
  FQ_RETURN_IF_ERROR(dst.Attach("src", copy));
  auto fail = [](const std::string& what) {
    return Status::IOError("repaging the index: " + what);
  };
  for (const auto& row : schema) {
    if (row[0] == "table" && !dst.Exec(row[2])) return fail(row[2]);
  }
  for (const auto& row : schema) {
    if (row[0] == "table" && !dst.Exec("INSERT INTO main." + QuoteId(row[1]) +
                                       " SELECT * FROM src." + QuoteId(row[1]))) {
      return fail("copying " + row[1]);
    }
  }
  for (const auto& row : schema) {
    if (row[0] != "table" && !dst.Exec(row[2])) return fail(row[2]);
  }
  if (!dst.Exec("DETACH DATABASE src") ||
      !dst.Exec("PRAGMA user_version = " + (version.empty() ? std::string("0") : version[0][0]))) {
    return fail("user_version");
  }
  return dst.Save();
}

size_t MutatePack(uint8_t* data, size_t size, size_t max_size, unsigned int seed,
                  const ByteMutator& mutate_bytes) {
  Rng rng(seed);
  const std::optional<PackParts> parts = SplitPack(ByteSpan(data, size));
  // Plain byte mutations now and then keep the checksum and layout checks
  // covered, and are all there is for an input that is not laid out as a pack.
  if (!parts || Pick(&rng, 16) == 0) return mutate_bytes(data, size, max_size);

  Bytes payloads(parts->payloads.begin(), parts->payloads.end());
  Bytes gap(parts->gap.begin(), parts->gap.end());
  Bytes index(parts->index.begin(), parts->index.end());
  std::optional<uint64_t> payload_end;
  const size_t what = Pick(&rng, 100);
  bool changed = false;
  if (what < 60 || what >= 92) {
    Result<Bytes> m = MutateIndex(index, &rng);
    if (m.ok()) {
      index = std::move(*m);
      changed = true;
    }
  }
  if ((what >= 60 && what < 85) || what >= 92) {
    // A window of the payload area through libFuzzer's mutations, mostly
    // keeping its size (so the index still places every payload).
    if (!payloads.empty()) {
      const size_t at = Pick(&rng, payloads.size());
      const size_t len = std::min<size_t>(payloads.size() - at, 1 + Pick(&rng, 64));
      Bytes window(payloads.begin() + static_cast<ptrdiff_t>(at),
                   payloads.begin() + static_cast<ptrdiff_t>(at + len));
      window.resize(2 * len + 16);
      const size_t n = mutate_bytes(window.data(), len, window.size());
      window.resize(Pick(&rng, 8) == 0 ? n : len);
      payloads.erase(payloads.begin() + static_cast<ptrdiff_t>(at),
                     payloads.begin() + static_cast<ptrdiff_t>(at + len));
      payloads.insert(payloads.begin() + static_cast<ptrdiff_t>(at), window.begin(), window.end());
      changed = true;
    }
  }
  if (what >= 85 && what < 92) {
    // Move the end of the payload area: into a payload, onto the index, or
    // past a gap that is then mistaken for payload.
    const uint64_t real_end = pack::kHeaderSize + payloads.size();
    switch (Pick(&rng, 4)) {
      case 0:
        payload_end = pack::kHeaderSize;
        break;
      case 1:
        payload_end = real_end - std::min<uint64_t>(payloads.size(), 1 + Pick(&rng, 128));
        break;
      case 2:
        payload_end = real_end + gap.size();
        break;
      default:
        gap.resize(gap.size() + 1 + Pick(&rng, 64), static_cast<uint8_t>(Pick(&rng, 2)));
        break;
    }
    changed = true;
  }
  if (!changed) return mutate_bytes(data, size, max_size);
  const Bytes out = JoinPack(payloads, gap, index, payload_end);
  if (out.size() > max_size) return mutate_bytes(data, size, max_size);
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

}  // namespace fqpack::fuzz
