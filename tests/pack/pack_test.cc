#include <gtest/gtest.h>

#include <map>
#include <random>

#include "pack/format.h"
#include "pack/reader.h"
#include "pack/writer.h"
#include "schema/quant_types.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/support/pack_util.h"
#include "tests/support/test_util.h"

namespace fqpack::pack {
namespace {

// A store with two QMs of one small model and an ensemble that walks from
// the first to the second one slot at a time.
class PackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.Join("store");
    ASSERT_TRUE(store::Store::Init(Env::Default(), dir_).ok());
    auto s = store::Store::Open(Env::Default(), dir_);
    ASSERT_TRUE(s.ok());
    store_ = std::move(*s);
    testing::TestGguf hi = testing::SmallLlama(ToId(QType::kF16), 1, 2, 64);
    testing::TestGguf lo = testing::SmallLlama(ToId(QType::kQ8_0), 2, 2, 64);
    // Norms identical in both (as in real ladders), and compressible.
    for (size_t i = 0; i < hi.tensors.size(); ++i) {
      if (hi.tensors[i].type == ToId(QType::kF32)) {
        std::fill(hi.tensors[i].data.begin(), hi.tensors[i].data.end(), 0);
        lo.tensors[i].data = hi.tensors[i].data;
      }
    }
    ASSERT_TRUE(
        store::ImportGguf(store_.get(), testing::WriteGguf(tmp_.Join("m-F16.gguf"), hi), {}).ok());
    ASSERT_TRUE(
        store::ImportGguf(store_.get(), testing::WriteGguf(tmp_.Join("m-Q8_0.gguf"), lo), {}).ok());
    auto model = store_->FindModel("m");
    auto up = store_->FindQm(model->id, "F16");
    auto low = store_->FindQm(model->id, "Q8_0");
    auto up_mods = store_->QmModules(up->id);
    auto low_mods = store_->QmModules(low->id);
    store::NewEnsemble e;
    e.model_id = model->id;
    e.name = "walk";
    e.up_qm_id = up->id;
    e.low_qm_id = low->id;
    e.library = {"F16", "Q8_0"};
    std::vector<store::NewEqm> eqms;
    std::vector<bool> lowered(up_mods->size(), false);
    for (size_t step = 0; step <= up_mods->size(); ++step) {
      if (step > 0) lowered[step - 1] = true;
      store::NewEqm q;
      q.step = static_cast<int>(step);
      for (size_t i = 0; i < lowered.size(); ++i) {
        const auto& m = lowered[i] ? (*low_mods)[i] : (*up_mods)[i];
        q.modules.push_back(m.key);
        q.source_qm_ids.push_back(lowered[i] ? low->id : up->id);
        q.footprint += m.raw_bytes;
      }
      q.calib_metric = 0.01 * static_cast<double>(step);
      eqms.push_back(q);
    }
    ASSERT_TRUE(store_->AddEnsemble(e, eqms).ok());
    n_steps_ = static_cast<int>(eqms.size());
  }

  std::string Pack(Codec codec, const std::string& name = "m.fqpack") {
    PackOptions opts;
    opts.codec = codec;
    const std::string path = tmp_.Join(name);
    auto r = WritePack(store_.get(), opts, path);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return path;
  }

  testing::TempDir tmp_;
  std::string dir_;
  std::unique_ptr<store::Store> store_;
  int n_steps_ = 0;
};

TEST_F(PackTest, ReaderGivesBackWhatTheStoreHolds) {
  for (Codec codec : {Codec::kAuto, Codec::kRaw, Codec::kZstd}) {
    const std::string path = Pack(codec);
    auto reader = PackReader::Open(Env::Default(), path);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    EXPECT_EQ((*reader)->model().name, "m");
    auto qms = (*reader)->Qms();
    ASSERT_TRUE(qms.ok());
    EXPECT_EQ(qms->size(), 2u);
    auto ens = (*reader)->FindEnsemble("walk");
    ASSERT_TRUE(ens.ok()) << ens.status().ToString();
    auto eqms = (*reader)->Eqms(ens->id);
    ASSERT_EQ(static_cast<int>(eqms->size()), n_steps_);
    auto store_ens = store_->FindEnsemble(store_->FindModel("m")->id, "walk");
    for (int step : {0, 3, n_steps_ - 1}) {
      auto a = (*reader)->EqmManifest(ens->id, step);
      auto b = store_->EqmManifest(store_ens->id, step);
      ASSERT_TRUE(a.ok() && b.ok());
      ASSERT_EQ(a->slots.size(), b->slots.size());
      for (size_t i = 0; i < a->slots.size(); ++i) {
        EXPECT_EQ(a->slots[i].key, b->slots[i].key);
        auto da = (*reader)->Load(a->slots[i].key);
        auto db = store_->Load(b->slots[i].key);
        ASSERT_TRUE(da.ok() && db.ok());
        ASSERT_TRUE(std::equal(da->bytes().begin(), da->bytes().end(), db->bytes().begin(),
                               db->bytes().end()));
        if (codec == Codec::kRaw) {
          EXPECT_FALSE(da->owned()) << "raw payloads are mapped in place";
        }
      }
    }
    for (const PayloadInfo& p : (*reader)->payloads()) {
      const uint64_t align = p.stored_bytes >= kPageAlignFrom ? kPageAlign : kSmallAlign;
      EXPECT_EQ(p.offset % align, 0u);
      if (codec == Codec::kRaw) {
        EXPECT_FALSE(p.zstd);
      }
      if (codec == Codec::kZstd) {
        EXPECT_TRUE(p.zstd);
      }
    }
    auto v = VerifyPack(Env::Default(), path);
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->ok()) << v->errors[0];
  }
}

TEST_F(PackTest, AutoCodecCompressesOnlyWhereItSaves) {
  auto reader = PackReader::Open(Env::Default(), Pack(Codec::kAuto));
  ASSERT_TRUE(reader.ok());
  size_t zstd = 0, raw = 0;
  for (const PayloadInfo& p : (*reader)->payloads()) {
    if (p.zstd) {
      ++zstd;
      EXPECT_LE(p.stored_bytes + p.raw_bytes / 64, p.raw_bytes);
    } else {
      ++raw;
    }
  }
  EXPECT_GT(zstd, 0u) << "the zero norms compress";
  EXPECT_GT(raw, 0u) << "random weights do not";
}

TEST_F(PackTest, RejectsTruncatedFilesAndNewerVersions) {
  const std::string path = Pack(Codec::kAuto);
  Bytes good = *ReadFileBytes(Env::Default(), path);
  for (size_t n : {size_t{0}, size_t{10}, size_t{127}, good.size() / 2, good.size() - 1}) {
    const std::string cut = tmp_.Join("cut.fqpack");
    ASSERT_TRUE(PublishFile(Env::Default(), cut, ByteSpan(good.data(), n)).ok());
    auto r = PackReader::Open(Env::Default(), cut);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
    EXPECT_NE(r.status().message().find(cut), std::string::npos);
  }
  // Version 2 with a valid checksum: NotSupported.
  Bytes v2 = good;
  EncodeU32(v2.data() + 8, 2);
  EncodeU64(v2.data() + 56, Checksum(ByteSpan(v2.data(), 56)));
  const std::string future = tmp_.Join("future.fqpack");
  ASSERT_TRUE(PublishFile(Env::Default(), future, v2).ok());
  auto r = PackReader::Open(Env::Default(), future);
  EXPECT_TRUE(r.status().IsNotSupported()) << r.status().ToString();
}

// Writes without fsync: these files are thrown away, and fsync per case
// would dominate the tests' time.
void WriteScratch(const std::string& path, ByteSpan bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

// Opens the file, loads every module of every QM and EQM, and verifies:
// OK only when nothing is wrong.
Status OpenAndUseEverything(const std::string& path) {
  FQ_ASSIGN_OR_RETURN(auto v, VerifyPack(Env::Default(), path));
  if (!v.ok()) return Status::Corruption(v.errors[0]);
  return Status::OK();
}

TEST_F(PackTest, EveryFlippedByteIsACleanError) {
  const std::string path = Pack(Codec::kAuto);
  const Bytes good = *ReadFileBytes(Env::Default(), path);
  auto reader = PackReader::Open(Env::Default(), path);
  const Footer footer = (*reader)->footer();
  reader->reset();
  const std::string bad = tmp_.Join("bad.fqpack");
  size_t cases = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    // Every byte of the header and footer; about 600 bytes spread over the
    // payloads and 300 over the index (one checksum covers the index alike).
    const bool fixed = i < kHeaderSize || i >= good.size() - kFooterSize;
    const bool index = i >= footer.index_offset && !fixed;
    const size_t stride = index ? footer.index_size / 300 + 1 : footer.payload_end / 600 + 1;
    if (!fixed && i % stride != 0) continue;
    Bytes b = good;
    b[i] ^= static_cast<uint8_t>(1u << (i % 8));
    WriteScratch(bad, b);
    Status s = OpenAndUseEverything(bad);
    ASSERT_FALSE(s.ok()) << "flip at byte " << i << " went unnoticed";
    ++cases;
  }
  EXPECT_GT(cases, 500u);
}

// The modules of every QM and EQM of a pack, by key, as the reader gives them.
std::map<std::string, Bytes> AllModules(const std::string& path) {
  std::map<std::string, Bytes> out;
  auto reader = PackReader::Open(Env::Default(), path);
  if (!reader.ok()) return out;
  for (const PayloadInfo& p : (*reader)->payloads()) {
    Result<store::ModuleData> d = (*reader)->Load(p.key);
    if (d.ok()) out[p.key.Hex()] = Bytes(d->data(), d->data() + d->size());
  }
  return out;
}

// A damaged pack either gives a clean error that names the file (Corruption
// or NotSupported), or, when the damage hit nothing the reader uses, opens,
// verifies and gives back exactly the modules of the undamaged pack.
void ExpectCleanErrorOrSameContent(const std::string& bad, const std::map<std::string, Bytes>& want,
                                   const std::string& what, size_t* errors) {
  Status s = OpenAndUseEverything(bad);
  if (s.ok()) {
    EXPECT_EQ(AllModules(bad), want) << what << ": damage went unnoticed and changed a module";
    return;
  }
  ++*errors;
  EXPECT_TRUE(s.IsCorruption() || s.IsNotSupported()) << what << ": " << s.ToString();
  EXPECT_EQ(s.message().rfind(bad, 0), 0u)
      << what << ": the error does not name the file: " << s.ToString();
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << what << ": " << s.ToString();
}

TEST_F(PackTest, RandomDamageGivesACleanErrorOrTheSameModules) {
  const std::string path = Pack(Codec::kAuto);
  const Bytes good = *ReadFileBytes(Env::Default(), path);
  const std::map<std::string, Bytes> want = AllModules(path);
  ASSERT_FALSE(want.empty());
  const std::string bad = tmp_.Join("rand.fqpack");
  std::mt19937 rng(7);
  size_t errors = 0;
  for (int i = 0; i < 400; ++i) {
    Bytes b = good;
    const int kind = static_cast<int>(rng() % 3);
    switch (kind) {
      case 0:  // a burst of random bytes somewhere
        for (size_t k = rng() % b.size(), n = 1 + rng() % 64; n > 0 && k < b.size(); --n, ++k)
          b[k] = rng();
        break;
      case 1:  // cut
        b.resize(rng() % b.size());
        break;
      default:  // a duplicated region
        if (b.size() > 200) {
          size_t from = rng() % (b.size() - 100), to = rng() % (b.size() - 100);
          std::copy(b.begin() + from, b.begin() + from + 100, b.begin() + to);
        }
    }
    // Half of the damaged files are re-sealed, so that the damage gets past
    // the footer's checksums to the index and payload checks behind them.
    if (i % 2 == 1) b = testing::ResealPack(std::move(b));
    WriteScratch(bad, b);
    ExpectCleanErrorOrSameContent(
        bad, want, "round " + std::to_string(i) + " kind " + std::to_string(kind), &errors);
  }
  EXPECT_GT(errors, 300u);
}

// Rows of a crafted index, each past the checksums by being re-sealed, one
// defect each: the reader names the module and the defect.
TEST_F(PackTest, RejectsCraftedIndexRows) {
  const std::string path = Pack(Codec::kAuto);
  const Bytes good = *ReadFileBytes(Env::Default(), path);
  const std::string zstd_row =
      "(SELECT hash FROM blob WHERE codec = 'zstd' ORDER BY pack_offset LIMIT 1)";
  const std::string raw_row =
      "(SELECT hash FROM blob WHERE codec = 'raw' ORDER BY pack_offset LIMIT 1)";
  const std::string second_row = "(SELECT hash FROM blob ORDER BY pack_offset LIMIT 1 OFFSET 1)";
  struct Case {
    std::string sql;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {"UPDATE blob SET raw_bytes = 1099511627776 WHERE hash = " + zstd_row,
       "does not match its type"},
      {"UPDATE blob SET raw_bytes = -1 WHERE hash = " + raw_row, "does not match its type"},
      // A shape that agrees with raw_bytes but needs terabytes from a few
      // hundred bytes of zstd.
      {"UPDATE blob SET ne1 = 1 << 38, raw_bytes = 1 << 40, qtype = 0, n_dims = 2, ne0 = 1 WHERE "
       "hash = " +
           zstd_row,
       "cannot come from a zstd payload"},
      {"UPDATE blob SET ne1 = 1 << 38, raw_bytes = 1 << 40, qtype = 0, n_dims = 2, ne0 = 1 WHERE "
       "hash = " +
           raw_row,
       "raw payload of the wrong size"},
      {"UPDATE blob SET n_dims = 0 WHERE hash = " + raw_row, "bad number of dimensions"},
      {"UPDATE blob SET n_dims = 7 WHERE hash = " + raw_row, "bad number of dimensions"},
      {"UPDATE blob SET ne0 = -64 WHERE hash = " + raw_row, "bad shape"},
      {"UPDATE blob SET ne3 = 2 WHERE hash = " + raw_row, "bad shape"},
      {"UPDATE blob SET ne1 = 1 << 41 WHERE hash = " + raw_row, "bad shape"},
      {"UPDATE blob SET qtype = 9999 WHERE hash = " + raw_row, "unknown tensor type type#9999"},
      {"UPDATE blob SET qtype = -1 WHERE hash = " + raw_row, "unknown tensor type"},
      {"UPDATE blob SET qtype = 4294967296 WHERE hash = " + raw_row, "unknown tensor type"},
      {"UPDATE blob SET pack_offset = NULL WHERE hash = " + raw_row, "no payload offset"},
      {"UPDATE blob SET pack_offset = -4096 WHERE hash = " + raw_row, "no payload offset"},
      {"UPDATE blob SET stored_bytes = -5 WHERE hash = " + zstd_row, "negative stored size"},
      {"UPDATE blob SET pack_offset = 9223372036854775807 WHERE hash = " + raw_row,
       "outside the payload area"},
      {"UPDATE blob SET pack_offset = 9223372036854775000, stored_bytes = 9223372036854775000 "
       "WHERE hash = " +
           zstd_row,
       "outside the payload area"},
      {"UPDATE blob SET pack_offset = 64 WHERE hash = " + second_row, "overlaps another"},
      {"UPDATE blob SET codec = 'lz4' WHERE hash = " + raw_row, "unknown codec 'lz4'"},
      {"UPDATE blob SET hash = 'zz' || substr(hash, 3) WHERE hash = " + raw_row, "bad module key"},
      {"DELETE FROM model", "holds 0 models"},
      {"PRAGMA user_version = 99", "newer than this fqpack reads"},
  };
  const std::string bad = tmp_.Join("row.fqpack");
  for (const Case& c : cases) {
    Result<Bytes> b = testing::RewritePackIndex(
        good, "PRAGMA ignore_check_constraints = ON; PRAGMA foreign_keys = OFF; " + c.sql);
    ASSERT_TRUE(b.ok()) << c.sql << ": " << b.status().ToString();
    WriteScratch(bad, *b);
    Result<std::unique_ptr<PackReader>> r = PackReader::Open(Env::Default(), bad);
    ASSERT_FALSE(r.ok()) << c.sql << ": accepted";
    EXPECT_TRUE(r.status().IsCorruption() || r.status().IsNotSupported())
        << c.sql << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.message_part), std::string::npos)
        << c.sql << ": " << r.status().ToString();
    EXPECT_EQ(r.status().message().rfind(bad, 0), 0u) << c.sql << ": " << r.status().ToString();
  }
}

// Random values in random columns of random rows of every table of the
// index: whatever the value, a clean error or the same modules.
TEST_F(PackTest, RandomRowDamageGivesACleanErrorOrTheSameModules) {
  const std::string path = Pack(Codec::kAuto);
  const Bytes good = *ReadFileBytes(Env::Default(), path);
  const std::map<std::string, Bytes> want = AllModules(path);
  const std::vector<std::pair<std::string, std::vector<std::string>>> tables = {
      {"blob",
       {"qtype", "n_dims", "ne0", "ne1", "ne2", "ne3", "raw_bytes", "stored_bytes", "codec",
        "pack_offset"}},
      {"slot", {"idx", "name", "layer", "n_dims", "ne0", "ne1"}},
      {"model", {"name", "arch", "n_kv", "metadata", "gguf_version"}},
      {"qm", {"label", "weight_bytes", "partial", "model_id"}},
      {"qm_module", {"slot_idx", "hash", "qm_id"}},
      {"eqm", {"step", "footprint", "ensemble_id"}},
      {"eqm_module", {"slot_idx", "hash", "eqm_id"}},
      {"ensemble", {"library", "params", "up_qm_id", "model_id"}},
  };
  const std::vector<std::string> values = {"0",
                                           "-1",
                                           "1",
                                           "2",
                                           "4",
                                           "5",
                                           "255",
                                           "65536",
                                           "4294967295",
                                           "4294967296",
                                           "9223372036854775807",
                                           "-9223372036854775808",
                                           "1099511627776",
                                           "NULL",
                                           "''",
                                           "'x'",
                                           "x'00ff'",
                                           "3.5",
                                           "1e300"};
  const std::string bad = tmp_.Join("rows.fqpack");
  std::mt19937 rng(11);
  size_t errors = 0;
  for (int i = 0; i < 300; ++i) {
    const auto& [table, columns] = tables[rng() % tables.size()];
    const std::string& column = columns[rng() % columns.size()];
    const std::string& value = values[rng() % values.size()];
    const std::string sql =
        "PRAGMA ignore_check_constraints = ON; PRAGMA foreign_keys = OFF; UPDATE " + table +
        " SET " + column + " = " + value + " WHERE rowid IN (SELECT rowid FROM " + table +
        " ORDER BY random() LIMIT 1)";
    // WITHOUT ROWID tables: one row chosen by its primary key instead.
    const std::string sql_norowid =
        "PRAGMA ignore_check_constraints = ON; PRAGMA foreign_keys = OFF; UPDATE " + table +
        " SET " + column + " = " + value + " WHERE " + column + " IN (SELECT " + column + " FROM " +
        table + " ORDER BY random() LIMIT 1)";
    Result<Bytes> b = testing::RewritePackIndex(good, sql);
    if (!b.ok()) b = testing::RewritePackIndex(good, sql_norowid);
    if (!b.ok()) continue;  // a constraint SQLite enforces anyway (NOT NULL, UNIQUE)
    WriteScratch(bad, *b);
    ExpectCleanErrorOrSameContent(bad, want, sql, &errors);
  }
  EXPECT_GT(errors, 30u);
}

TEST_F(PackTest, PacksOnlyWhatItIsAsked) {
  PackOptions opts;
  opts.qms = {"Q8_0"};
  opts.ensembles = {};
  const std::string path = tmp_.Join("q8.fqpack");
  // With the ensemble (default all ensembles) both QMs come anyway: they are its ends.
  auto r = WritePack(store_.get(), opts, path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->qms.size(), 2u);
  opts.qms = {"Q4_K"};
  EXPECT_TRUE(WritePack(store_.get(), opts, path).status().IsNotFound());
  opts.qms = {};
  opts.ensembles = {"nope"};
  EXPECT_TRUE(WritePack(store_.get(), opts, path).status().IsNotFound());
}

}  // namespace
}  // namespace fqpack::pack
