#include "tests/support/pack_util.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>

#include "pack/format.h"

namespace fqpack::testing {

std::optional<PackParts> SplitPack(ByteSpan file) {
  if (file.size() < pack::kHeaderSize + pack::kFooterSize) return std::nullopt;
  const uint8_t* f = file.data() + file.size() - pack::kFooterSize;
  const uint64_t index_offset = DecodeU64(f), index_size = DecodeU64(f + 8),
                 payload_end = DecodeU64(f + 24);
  const uint64_t index_end = file.size() - pack::kFooterSize;
  if (payload_end < pack::kHeaderSize || payload_end > index_offset || index_offset > index_end ||
      index_size != index_end - index_offset) {
    return std::nullopt;
  }
  PackParts p;
  p.payloads = file.subspan(pack::kHeaderSize, payload_end - pack::kHeaderSize);
  p.gap = file.subspan(payload_end, index_offset - payload_end);
  p.index = file.subspan(index_offset, index_size);
  return p;
}

Bytes JoinPack(ByteSpan payloads, ByteSpan gap, ByteSpan index,
               std::optional<uint64_t> payload_end) {
  Bytes out = pack::EncodeHeader();
  out.insert(out.end(), payloads.begin(), payloads.end());
  pack::Footer f;
  f.payload_end = payload_end.value_or(out.size());
  out.insert(out.end(), gap.begin(), gap.end());
  f.index_offset = out.size();
  f.index_size = index.size();
  f.index_checksum = pack::Checksum(index);
  out.insert(out.end(), index.begin(), index.end());
  f.file_size = out.size() + pack::kFooterSize;
  const Bytes footer = pack::EncodeFooter(f);
  out.insert(out.end(), footer.begin(), footer.end());
  return out;
}

Result<Bytes> EditPackIndex(ByteSpan pack, const std::function<Status(sqlite3*)>& edit) {
  const std::optional<PackParts> parts = SplitPack(pack);
  if (!parts) return Status::Corruption("pack: the footer does not describe this file");
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return Status::IOError("sqlite3_open_v2 failed");
  }
  // SQLite owns (and may grow) the copy it edits.
  const auto n = static_cast<sqlite3_int64>(parts->index.size());
  auto* image =
      static_cast<unsigned char*>(sqlite3_malloc64(std::max<size_t>(parts->index.size(), 1)));
  if (image == nullptr) {
    sqlite3_close(db);
    return Status::IOError("sqlite3_malloc64 failed");
  }
  std::memcpy(image, parts->index.data(), parts->index.size());
  int rc = sqlite3_deserialize(db, "main", image, n, n,
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
  return JoinPack(parts->payloads, parts->gap, index);
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
