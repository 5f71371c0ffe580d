#include "store/store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <set>

#include "schema/quant_types.h"
#include "store/gguf_export.h"
#include "store/gguf_import.h"
#include "store/naming.h"
#include "store/verify.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

using testing::SmallLlama;
using testing::TempDir;
using testing::WriteGguf;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.Join("store");
    ASSERT_TRUE(Store::Init(Env::Default(), dir_).ok());
  }
  std::unique_ptr<Store> Open(StoreOptions options = {}) {
    auto s = Store::Open(Env::Default(), dir_, options);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }
  // A small llama checkpoint: F32 norms, `type` matrices.
  std::string Checkpoint(const std::string& name, uint32_t type, uint32_t seed) {
    return WriteGguf(tmp_.Join(name), SmallLlama(type, seed));
  }

  TempDir tmp_;
  std::string dir_;
};

TEST_F(StoreTest, InitTwiceKeepsTheStore) {
  bool created = true;
  ASSERT_TRUE(Store::Init(Env::Default(), dir_, &created).ok());
  EXPECT_FALSE(created);
  EXPECT_TRUE(Env::Default()->IsDirectory(dir_ + "/blobs/ff"));
}

TEST_F(StoreTest, OpenRejectsWhatIsNotAStore) {
  auto missing = Store::Open(Env::Default(), tmp_.Join("nope"));
  EXPECT_TRUE(missing.status().IsNotFound()) << missing.status().ToString();
  ASSERT_TRUE(Env::Default()->CreateDir(tmp_.Join("plain")).ok());
  auto plain = Store::Open(Env::Default(), tmp_.Join("plain"));
  EXPECT_TRUE(plain.status().IsInvalidArgument());
  EXPECT_NE(plain.status().message().find("not an fqpack store"), std::string::npos);
  // An index file that is not SQLite.
  ASSERT_TRUE(Env::Default()->CreateDir(tmp_.Join("junk")).ok());
  ASSERT_TRUE(PublishFile(Env::Default(), tmp_.Join("junk/index.sqlite"), Bytes(4096, 'x')).ok());
  auto junk = Store::Open(Env::Default(), tmp_.Join("junk"));
  EXPECT_FALSE(junk.ok());
  EXPECT_NE(junk.status().message().find("junk"), std::string::npos) << junk.status().ToString();
  // Init refuses a directory with other things in it.
  ASSERT_TRUE(PublishFile(Env::Default(), tmp_.Join("plain/notes.txt"), Bytes{1}).ok());
  Status s = Store::Init(Env::Default(), tmp_.Join("plain"));
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
}

TEST_F(StoreTest, OpenRejectsANewerSchema) {
  {
    sqlite3* db;
    ASSERT_EQ(sqlite3_open((dir_ + "/index.sqlite").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  auto s = Store::Open(Env::Default(), dir_);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsNotSupported());
  EXPECT_NE(s.status().message().find("99"), std::string::npos);
}

TEST_F(StoreTest, ImportStoresSharedModulesOnceAndReimportIsANoOp) {
  auto store = Open();
  const std::string f32 = Checkpoint("tiny-F32.gguf", ToId(QType::kF32), 1);
  const std::string q8 = Checkpoint("tiny-Q8_0.gguf", ToId(QType::kQ8_0), 2);
  auto a = ImportGguf(store.get(), f32, {});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->model, "tiny");
  EXPECT_EQ(a->label, "F32");
  EXPECT_TRUE(a->new_model);
  const size_t n_tensors = a->tensors;
  auto b = ImportGguf(store.get(), q8, {});
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->label, "Q8_0");
  EXPECT_FALSE(b->new_model);
  // The norms (F32 in both files, same seed-independent bytes? no: random) -
  // count what both files share independently of the store.
  testing::TestGguf ga = SmallLlama(ToId(QType::kF32), 1), gb = SmallLlama(ToId(QType::kQ8_0), 2);
  std::set<std::pair<uint32_t, Bytes>> unique;
  for (const auto& g : {ga, gb}) {
    for (const auto& t : g.tensors) unique.insert({t.type, t.data});
  }
  auto stats = store->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->blobs, unique.size());
  EXPECT_EQ(stats->references, 2 * n_tensors);

  auto again = ImportGguf(store.get(), q8, {});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->already_imported);
  EXPECT_EQ(store->Stats()->blobs, unique.size());
  EXPECT_EQ(testing::VerifyErrors(dir_), "");
}

TEST_F(StoreTest, IdenticalTensorsAcrossFilesAreStoredOnce) {
  auto store = Open();
  // Two files whose norm tensors are byte-identical (same seed for F32 data).
  testing::TestGguf a = SmallLlama(ToId(QType::kQ8_0), 5);
  testing::TestGguf b = SmallLlama(ToId(QType::kQ4_0), 6);
  size_t shared = 0;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    if (a.tensors[i].type == ToId(QType::kF32)) {
      b.tensors[i].data = a.tensors[i].data;
      ++shared;
    }
  }
  ASSERT_TRUE(ImportGguf(store.get(), WriteGguf(tmp_.Join("m-Q8_0.gguf"), a), {}).ok());
  auto r = ImportGguf(store.get(), WriteGguf(tmp_.Join("m-Q4_0.gguf"), b), {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reused_modules, shared);
  EXPECT_EQ(store->Stats()->blobs, 2 * a.tensors.size() - shared);
}

TEST_F(StoreTest, ExportWritesTheImportedFileByteForByte) {
  auto store = Open();
  const std::string q4k =
      WriteGguf(tmp_.Join("k-Q4_K.gguf"), SmallLlama(ToId(QType::kQ4_K), 9, 2, 256));
  ASSERT_TRUE(ImportGguf(store.get(), q4k, {}).ok());
  const std::string out = tmp_.Join("out.gguf");
  auto r = ExportQmGguf(store.get(), "k", "Q4_K", out);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->byte_exact_layout);
  EXPECT_EQ(*ReadFileBytes(Env::Default(), out), *ReadFileBytes(Env::Default(), q4k));
}

TEST_F(StoreTest, CollidingKeysNeverAliasTwoModules) {
  // Every module gets the same key: the second distinct module must be
  // refused rather than stored as the first.
  StoreOptions opts;
  opts.key_fn = [](const ModuleDesc&, ByteSpan) {
    ModuleKey k;
    k.bytes.fill(0xab);
    return k;
  };
  auto store = Open(opts);
  const std::string f = Checkpoint("c-F32.gguf", ToId(QType::kF32), 3);
  const std::string before = testing::SnapshotStore(dir_, false);
  auto r = ImportGguf(store.get(), f, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("collision"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(testing::SnapshotStore(dir_, false), before);
}

TEST_F(StoreTest, ACheckpointOfAnotherModelIsRefusedOrGoesToANewModel) {
  auto store = Open();
  ASSERT_TRUE(ImportGguf(store.get(), Checkpoint("same-F32.gguf", ToId(QType::kF32), 1), {}).ok());
  const std::string other =
      WriteGguf(tmp_.Join("same-Q8_0.gguf"), SmallLlama(ToId(QType::kQ8_0), 1, 2, 96));
  auto r = ImportGguf(store.get(), other, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsInvalidArgument());
  EXPECT_NE(r.status().message().find("token_embd.weight"), std::string::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find("--model"), std::string::npos);
  ImportOptions opts;
  opts.model = "bigger";
  auto ok = ImportGguf(store.get(), other, opts);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_TRUE(ok->new_model);
  EXPECT_EQ(store->ListModels()->size(), 2u);
}

TEST_F(StoreTest, ALabelTakenByAnotherFileIsAnError) {
  auto store = Open();
  ASSERT_TRUE(ImportGguf(store.get(), Checkpoint("x-F32.gguf", ToId(QType::kF32), 1), {}).ok());
  ImportOptions opts;
  opts.model = "x";
  opts.label = "F32";
  auto r = ImportGguf(store.get(), Checkpoint("x2-F32.gguf", ToId(QType::kF32), 2), opts);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--label"), std::string::npos);
  opts.label = "F32-other";
  EXPECT_TRUE(ImportGguf(store.get(), tmp_.Join("x2-F32.gguf"), opts).ok());
}

TEST_F(StoreTest, BadFilesLeaveTheStoreUnchanged) {
  auto store = Open();
  ASSERT_TRUE(ImportGguf(store.get(), Checkpoint("b-F32.gguf", ToId(QType::kF32), 1), {}).ok());
  const std::string before = testing::SnapshotStore(dir_);
  Bytes good = testing::EncodeGguf(SmallLlama(ToId(QType::kQ8_0), 4));
  std::vector<std::pair<std::string, Bytes>> bad;
  Bytes magic = good;
  magic[1] = 'X';
  bad.push_back({"magic", magic});
  bad.push_back(
      {"truncated", Bytes(good.begin(), good.begin() + static_cast<long>(good.size() / 2))});
  bad.push_back({"empty", {}});
  for (auto& [name, bytes] : bad) {
    const std::string path = tmp_.Join("b-" + name + ".gguf");
    ASSERT_TRUE(PublishFile(Env::Default(), path, bytes).ok());
    auto r = ImportGguf(store.get(), path, {});
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().ToString();
    EXPECT_EQ(testing::SnapshotStore(dir_), before) << name;
  }
}

TEST_F(StoreTest, DiskFullMidImportLeavesTheIndexAndFilesAsTheyWere) {
  testing::FaultInjectionEnv env(Env::Default());
  auto opened = Store::Open(&env, dir_);
  ASSERT_TRUE(opened.ok());
  auto store = std::move(*opened);
  ASSERT_TRUE(ImportGguf(store.get(), Checkpoint("d-F32.gguf", ToId(QType::kF32), 1), {}).ok());
  const std::string before = testing::SnapshotStore(dir_);
  const std::string next = Checkpoint("d-Q8_0.gguf", ToId(QType::kQ8_0), 2);
  for (int step : {1, 5, 12, 30}) {
    env.FailAt(step, testing::FaultInjectionEnv::Mode::kDiskFull);
    ImportOptions opts;
    opts.threads = 1;
    auto r = ImportGguf(store.get(), next, opts);
    env.Disarm();
    ASSERT_FALSE(r.ok()) << step;
    EXPECT_NE(r.status().message().find("No space left"), std::string::npos)
        << r.status().ToString();
    EXPECT_EQ(testing::SnapshotStore(dir_), before) << step;
  }
  auto r = ImportGguf(store.get(), next, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(testing::VerifyErrors(dir_), "");
}

TEST_F(StoreTest, VerifyFindsDamagedMissingAndOrphanBlobs) {
  auto store = Open();
  ASSERT_TRUE(ImportGguf(store.get(), Checkpoint("v-Q8_0.gguf", ToId(QType::kQ8_0), 1), {}).ok());
  auto mods = store->QmModules(store->FindQm(store->FindModel("v")->id, "Q8_0")->id);
  ASSERT_TRUE(mods.ok());
  const std::string damaged = store->blobs()->PathOf((*mods)[1].key);
  const std::string missing = store->blobs()->PathOf((*mods)[2].key);
  Bytes bytes = *ReadFileBytes(Env::Default(), damaged);
  bytes[bytes.size() / 2] ^= 0x40;
  ASSERT_TRUE(PublishFile(Env::Default(), damaged, bytes).ok());
  ASSERT_TRUE(Env::Default()->RemoveFile(missing).ok());
  const std::string orphan = dir_ + "/blobs/00/" + std::string(32, '0') + ".zst";
  ASSERT_TRUE(PublishFile(Env::Default(), orphan, Bytes{1, 2, 3}).ok());

  auto report = VerifyStore(store.get());
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->errors(), 2u);
  std::string all;
  for (const auto& i : report->issues)
    all += (i.error ? "E " : "W ") + i.where + ": " + i.message + "\n";
  EXPECT_NE(all.find("E " + damaged), std::string::npos) << all;
  EXPECT_NE(all.find("E " + missing), std::string::npos) << all;
  EXPECT_NE(all.find("W " + orphan), std::string::npos) << all;
  EXPECT_EQ(report->orphan_files, 1u);
  // Reading the damaged module fails too: every read verifies.
  auto load = store->Load((*mods)[1].key);
  EXPECT_TRUE(load.status().IsCorruption()) << load.status().ToString();
}

TEST_F(StoreTest, ManifestListsEverySlotWithItsModule) {
  auto store = Open();
  ASSERT_TRUE(ImportGguf(store.get(), Checkpoint("m-Q8_0.gguf", ToId(QType::kQ8_0), 1), {}).ok());
  auto m = store->QmManifest("", "Q8_0");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->arch, "llama");
  ASSERT_EQ(m->slots.size(), SmallLlama(ToId(QType::kQ8_0), 1).tensors.size());
  const ManifestSlot* q = m->Find("blk.1.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->kind, "attn_q");
  EXPECT_EQ(q->layer, 1);
  EXPECT_EQ(q->desc.qtype, ToId(QType::kQ8_0));
  auto data = store->Load(q->key);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->size(), q->bytes);
  auto missing = store->QmManifest("", "Q2_K");
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_NE(missing.status().message().find("Q8_0"), std::string::npos)
      << "the error lists what there is";
}

TEST(Naming, GuessesModelAndLabelFromFileNames) {
  EXPECT_EQ(GuessNamesFromFile("/a/stories260K-Q4_K_M.gguf").model, "stories260K");
  EXPECT_EQ(GuessNamesFromFile("/a/stories260K-Q4_K_M.gguf").label, "Q4_K_M");
  EXPECT_EQ(GuessNamesFromFile("tinystories-3M-q8_0.gguf").label, "Q8_0");
  EXPECT_EQ(GuessNamesFromFile("tinystories-3M-q8_0.gguf").model, "tinystories-3M");
  EXPECT_EQ(GuessNamesFromFile("model-f32.gguf").label, "F32");
  EXPECT_EQ(GuessNamesFromFile("model.gguf").label, "");
  EXPECT_EQ(GuessNamesFromFile("model.gguf").model, "model");
  EXPECT_EQ(*FileTypeName(15), "Q4_K_M");
  int layer;
  EXPECT_EQ(SlotKindOf("blk.12.ffn_down.weight", &layer), "ffn_down");
  EXPECT_EQ(layer, 12);
  EXPECT_EQ(SlotKindOf("output_norm.weight", &layer), "norm");
  EXPECT_EQ(layer, -1);
}

}  // namespace
}  // namespace fqpack::store
