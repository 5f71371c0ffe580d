#include "tests/support/pack_util.h"

#include <sqlite3.h>

#include <cstring>

#include "pack/format.h"

namespace fqpack::testing {

Result<Bytes> EditPackIndex(ByteSpan pack, const std::function<Status(sqlite3*)>& edit) {
  FQ_ASSIGN_OR_RETURN(pack::Footer footer, pack::ReadFooter(pack, "pack"));
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return Status::IOError("sqlite3_open_v2 failed");
  }
  // SQLite owns (and may grow) the copy it edits.
  auto* image = static_cast<unsigned char*>(sqlite3_malloc64(footer.index_size));
  std::memcpy(image, pack.data() + footer.index_offset, footer.index_size);
  int rc = sqlite3_deserialize(db, "main", image, static_cast<sqlite3_int64>(footer.index_size),
                               static_cast<sqlite3_int64>(footer.index_size),
                               SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
  Status s = rc == SQLITE_OK ? edit(db) : Status::IOError("sqlite3_deserialize failed");
  Bytes index;
  if (s.ok()) {
    sqlite3_int64 size = 0;
    unsigned char* out = sqlite3_serialize(db, "main", &size, 0);
    if (out == nullptr) {
      s = Status::IOError("sqlite3_serialize failed");
    } else {
      index.assign(out, out + size);
      sqlite3_free(out);
    }
  }
  sqlite3_close(db);
  FQ_RETURN_IF_ERROR(s);
  Bytes result(pack.begin(), pack.begin() + static_cast<long>(footer.index_offset));
  result.insert(result.end(), index.begin(), index.end());
  pack::Footer f = footer;
  f.index_size = index.size();
  f.index_checksum = pack::Checksum(index);
  f.file_size = result.size() + pack::kFooterSize;
  Bytes tail = pack::EncodeFooter(f);
  result.insert(result.end(), tail.begin(), tail.end());
  return result;
}

Result<Bytes> RewritePackIndex(ByteSpan pack, const std::string& sql) {
  return EditPackIndex(pack, [&](sqlite3* db) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      Status s = Status::InvalidArgument(sql + ": " + (err != nullptr ? err : "?"));
      sqlite3_free(err);
      return s;
    }
    return Status::OK();
  });
}

Bytes ResealPack(Bytes pack) {
  if (pack.size() < pack::kHeaderSize + pack::kFooterSize) return pack;
  const uint8_t* p = pack.data() + pack.size() - pack::kFooterSize;
  pack::Footer f;
  f.index_offset = DecodeU64(p);
  f.index_size = DecodeU64(p + 8);
  f.payload_end = DecodeU64(p + 24);
  f.file_size = pack.size();
  if (RangeInside(f.index_offset, f.index_size, pack.size() - pack::kFooterSize)) {
    f.index_checksum = pack::Checksum(ByteSpan(pack).subspan(f.index_offset, f.index_size));
  }
  Bytes tail = pack::EncodeFooter(f);
  std::copy(tail.begin(), tail.end(), pack.end() - pack::kFooterSize);
  return pack;
}

}  // namespace fqpack::testing
