#include <gtest/gtest.h>

#include <random>

#include "pack/format.h"
#include "pack/reader.h"
#include "pack/writer.h"
#include "schema/quant_types.h"
#include "store/gguf_import.h"
#include "store/store.h"
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
    ASSERT_TRUE(store::ImportGguf(store_.get(), testing::WriteGguf(tmp_.Join("m-F16.gguf"), hi), {}).ok());
    ASSERT_TRUE(store::ImportGguf(store_.get(), testing::WriteGguf(tmp_.Join("m-Q8_0.gguf"), lo), {}).ok());
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
    e.library_json = R"(["F16","Q8_0"])";
    e.params_json = "{}";
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
        ASSERT_TRUE(std::equal(da->bytes().begin(), da->bytes().end(), db->bytes().begin(), db->bytes().end()));
        if (codec == Codec::kRaw) EXPECT_FALSE(da->owned()) << "raw payloads are mapped in place";
      }
    }
    for (const PayloadInfo& p : (*reader)->payloads()) {
      const uint64_t align = p.stored_bytes >= kPageAlignFrom ? kPageAlign : kSmallAlign;
      EXPECT_EQ(p.offset % align, 0u);
      if (codec == Codec::kRaw) EXPECT_FALSE(p.zstd);
      if (codec == Codec::kZstd) EXPECT_TRUE(p.zstd);
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

TEST_F(PackTest, RandomDamageNeverCrashes) {
  const Bytes good = *ReadFileBytes(Env::Default(), Pack(Codec::kAuto));
  const std::string bad = tmp_.Join("rand.fqpack");
  std::mt19937 rng(7);
  for (int i = 0; i < 400; ++i) {
    Bytes b = good;
    switch (rng() % 3) {
      case 0:  // a burst of random bytes somewhere
        for (size_t k = rng() % b.size(), n = 1 + rng() % 64; n > 0 && k < b.size(); --n, ++k) b[k] = rng();
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
    WriteScratch(bad, b);
    (void)OpenAndUseEverything(bad);  // any Status is fine; a crash is not
  }
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
