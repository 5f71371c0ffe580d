#include "runtime/residency.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "pack/reader.h"
#include "runtime/elastic.h"
#include "runtime/llama.h"
#include "tests/runtime/elastic_test_util.h"

namespace fqpack::runtime {
namespace {

using testing::ElasticLadder;

class ResidencyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ladder_ = new ElasticLadder(); }
  static void TearDownTestSuite() {
    delete ladder_;
    ladder_ = nullptr;
  }

  std::unique_ptr<pack::PackReader> OpenPack(pack::Codec codec) {
    const std::string path = codec == pack::Codec::kRaw ? raw_path() : zstd_path();
    auto r = pack::PackReader::Open(Env::Default(), path);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(*r);
  }
  static const std::string& raw_path() {
    static const std::string p = ladder_->Pack(pack::Codec::kRaw, "raw.fqpack");
    return p;
  }
  static const std::string& zstd_path() {
    static const std::string p = ladder_->Pack(pack::Codec::kZstd, "zstd.fqpack");
    return p;
  }
  std::unique_ptr<ResidencyManager> Open(pack::PackReader* pack, ResidencyOptions options = {}) {
    auto r = ResidencyManager::Open(pack, options);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(*r);
  }

  // The EQM manifests straight from the pack index: the reference the
  // manager's levels are checked against.
  std::vector<store::ModelManifest> EqmManifests(pack::PackReader* pack) {
    auto e = pack->FindEnsemble("walk");
    EXPECT_TRUE(e.ok());
    std::vector<store::ModelManifest> out;
    for (int step = 0; step < ladder_->n_eqms(); ++step) {
      auto m = pack->EqmManifest(e->id, step);
      EXPECT_TRUE(m.ok()) << m.status().ToString();
      out.push_back(*m);
    }
    return out;
  }

  static std::vector<float> Logits(const Model* model, ThreadPool* pool) {
    Session s(model, 16, pool);
    const std::vector<int32_t> tokens = {1, 5, 9, 33, 17, 60, 2, 41};
    std::vector<float> logits;
    EXPECT_TRUE(s.Eval(tokens, 0, &logits).ok());
    return logits;
  }

  static ElasticLadder* ladder_;
  ThreadPool pool_{2};
};

ElasticLadder* ResidencyTest::ladder_ = nullptr;

TEST_F(ResidencyTest, LevelsAreTheEnsembleWithFootprintsSteppingDownOneModuleAtATime) {
  auto pack = OpenPack(pack::Codec::kRaw);
  auto mgr = Open(pack.get());
  const auto manifests = EqmManifests(pack.get());
  ASSERT_EQ(mgr->levels().size(), manifests.size());
  ASSERT_GT(manifests.size(), 10u);
  EXPECT_EQ(mgr->ensemble_name(), "walk");
  for (size_t l = 0; l < manifests.size(); ++l) {
    const ResidencyLevel& level = mgr->levels()[l];
    EXPECT_EQ(level.label, "eqm:" + std::to_string(l));
    EXPECT_EQ(level.footprint, manifests[l].weight_bytes());
    for (size_t p = 0; p < manifests[l].slots.size(); ++p) {
      EXPECT_EQ(mgr->modules()[static_cast<size_t>(level.modules[p])].key,
                manifests[l].slots[p].key);
    }
    if (l > 0) {
      int differ = 0;
      for (size_t p = 0; p < level.modules.size(); ++p)
        differ += level.modules[p] != mgr->levels()[l - 1].modules[p];
      EXPECT_EQ(differ, 1) << "step " << l;
      EXPECT_LT(level.footprint, mgr->levels()[l - 1].footprint);
    }
  }
  // The ends are the library's QMs.
  auto up = pack->QmManifest(ladder_->labels().front());
  auto low = pack->QmManifest(ladder_->labels().back());
  EXPECT_EQ(mgr->levels().front().footprint, up->weight_bytes());
  EXPECT_EQ(mgr->levels().back().footprint, low->weight_bytes());
}

TEST_F(ResidencyTest, BudgetPicksTheLargestLevelThatFitsAfterTheOverhead) {
  auto pack = OpenPack(pack::Codec::kRaw);
  auto mgr = Open(pack.get());
  const uint64_t overhead = 12345;
  mgr->set_overhead(overhead);
  const auto& levels = mgr->levels();
  for (size_t l = 0; l < levels.size(); ++l) {
    const uint64_t exact = levels[l].footprint + overhead;
    auto at = mgr->LevelForBudget(exact);
    ASSERT_TRUE(at.ok());
    EXPECT_EQ(*at, static_cast<int>(l));
    if (l + 1 < levels.size()) {
      auto below = mgr->LevelForBudget(exact - 1);
      ASSERT_TRUE(below.ok());
      EXPECT_EQ(*below, static_cast<int>(l + 1));
    }
  }
  EXPECT_EQ(*mgr->LevelForBudget(UINT64_MAX / 2), 0);
  const uint64_t minimum = levels.back().footprint + overhead;
  EXPECT_EQ(mgr->MinimumBudget(), minimum);
  auto too_small = mgr->LevelForBudget(minimum - 1);
  ASSERT_FALSE(too_small.ok());
  EXPECT_TRUE(too_small.status().IsInvalidArgument());
  EXPECT_NE(too_small.status().message().find("at least " + std::to_string(minimum) + " bytes"),
            std::string::npos)
      << too_small.status().message();
  EXPECT_TRUE(mgr->RequestBudget(minimum - 1).IsInvalidArgument());
  EXPECT_FALSE(mgr->has_pending_budget());
}

TEST_F(ResidencyTest, TransitionSwapsOnlyWhatDiffersAndRunsLikeAFreshLoad) {
  for (pack::Codec codec : {pack::Codec::kRaw, pack::Codec::kZstd}) {
    auto pack = OpenPack(codec);
    auto mgr = Open(pack.get());
    const auto manifests = EqmManifests(pack.get());
    ASSERT_TRUE(mgr->Start(0, &pool_).ok());
    EXPECT_EQ(mgr->resident_bytes(), manifests[0].weight_bytes());
    int current = 0;
    const int last = static_cast<int>(manifests.size()) - 1;
    for (int target : {3, last, last / 2, 0, 1, last, last - 1}) {
      std::set<size_t> differ;
      uint64_t in = 0;
      for (size_t p = 0; p < manifests[0].slots.size(); ++p) {
        if (manifests[current].slots[p].key != manifests[target].slots[p].key) {
          differ.insert(p);
          in += manifests[target].slots[p].bytes;
        }
      }
      auto rec = mgr->TransitionTo(target);
      ASSERT_TRUE(rec.ok()) << rec.status().ToString();
      EXPECT_EQ(rec->modules_swapped, static_cast<int>(differ.size()));
      EXPECT_EQ(rec->bytes_in, in) << "only the modules that differ are loaded";
      EXPECT_EQ(rec->resident_after, manifests[target].weight_bytes());
      EXPECT_EQ(mgr->resident_bytes(), manifests[target].weight_bytes());
      EXPECT_EQ(mgr->level(), target);
      // The model now holds exactly the bytes of EQM `target`.
      for (size_t p = 0; p < manifests[target].slots.size(); ++p) {
        auto want = pack->Load(manifests[target].slots[p].key);
        ASSERT_TRUE(want.ok());
        const store::ModuleData& have = mgr->model()->slot_at(static_cast<int>(p)).data;
        ASSERT_TRUE(std::equal(have.bytes().begin(), have.bytes().end(), want->bytes().begin(),
                               want->bytes().end()))
            << manifests[target].slots[p].name;
      }
      current = target;
    }
    // And computes what a model loaded from scratch computes.
    auto fresh = Model::Load(manifests[current], pack.get(), &pool_);
    ASSERT_TRUE(fresh.ok());
    EXPECT_EQ(Logits(mgr->model(), &pool_), Logits(fresh->get(), &pool_));
    const ResidencyStats s = mgr->stats();
    EXPECT_EQ(s.level, current);
    EXPECT_EQ(s.transitions, 7);
  }
}

TEST_F(ResidencyTest, GoingDownMemoryOnlyFallsAndGoingUpPeaksAtTheEnd) {
  for (pack::Codec codec : {pack::Codec::kRaw, pack::Codec::kZstd}) {
    auto pack = OpenPack(codec);
    auto mgr = Open(pack.get());
    ASSERT_TRUE(mgr->Start(0, &pool_).ok());
    uint64_t largest_module = 0;
    for (const auto& m : mgr->modules()) largest_module = std::max(largest_module, m.bytes);
    const int last = static_cast<int>(mgr->levels().size()) - 1;
    auto down = mgr->TransitionTo(last);
    ASSERT_TRUE(down.ok());
    EXPECT_LT(down->resident_after, down->resident_before);
    if (codec == pack::Codec::kRaw) {
      EXPECT_EQ(down->peak_bytes, down->resident_before)
          << "mapped modules are released before loading";
    } else {
      EXPECT_LE(down->peak_bytes, down->resident_before + largest_module);
    }
    auto up = mgr->TransitionTo(0);
    ASSERT_TRUE(up.ok());
    EXPECT_GT(up->resident_after, up->resident_before);
    if (codec == pack::Codec::kRaw) {
      EXPECT_EQ(up->peak_bytes, up->resident_after);
    } else {
      EXPECT_LE(up->peak_bytes, up->resident_after + largest_module);
    }
    EXPECT_EQ(mgr->owned_bytes(), codec == pack::Codec::kZstd ? mgr->resident_bytes() : 0u);
  }
}

TEST_F(ResidencyTest, MappedPagesFollowTheResidentModules) {
  const uint64_t page = 4096;
  for (pack::Codec codec : {pack::Codec::kRaw, pack::Codec::kZstd}) {
    auto pack = OpenPack(codec);
    auto mgr = Open(pack.get());
    // What reading the header, footer and index mapped (with the pages the
    // kernel maps around each fault): the reader's own, constant.
    const uint64_t opened = *PackPayloadPresentBytes(*pack);
    ASSERT_TRUE(mgr->Start(0, &pool_).ok());
    const int last = static_cast<int>(mgr->levels().size()) - 1;
    const uint64_t slots = mgr->levels()[0].modules.size();
    for (int target : {0, last, last / 2, 0, last}) {
      ASSERT_TRUE(mgr->TransitionTo(target).ok());
      auto mapped = mgr->MappedPresentBytes();
      ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
      const uint64_t footprint = mgr->levels()[static_cast<size_t>(target)].footprint;
      if (codec == pack::Codec::kRaw) {
        // Every byte of a held module is on a mapped page, and only the
        // partial pages at the ends of each module add to it.
        EXPECT_GE(*mapped, footprint) << "level " << target;
        EXPECT_LE(*mapped, footprint + 2 * page * slots) << "level " << target;
      } else {
        EXPECT_EQ(*mapped, 0u);
        EXPECT_EQ(mgr->owned_bytes(), footprint);
      }
      // Nothing more stays mapped in the reader's own mapping of the
      // payloads: compressed pages go back once decoded. A fault while
      // decoding may also map up to one fault-around window (64 KiB on
      // Linux) of neighbouring cached pages outside the released range.
      auto area = PackPayloadPresentBytes(*pack);
      ASSERT_TRUE(area.ok());
      EXPECT_LE(*area, opened + 2 * page + (64 << 10)) << "level " << target;
    }
  }
}

TEST_F(ResidencyTest, BudgetRequestsFromAnotherThreadApplyAtTheOwnersNextStep) {
  auto pack = OpenPack(pack::Codec::kRaw);
  auto mgr = Open(pack.get());
  mgr->set_overhead(1000);
  ASSERT_TRUE(mgr->Start(0, &pool_).ok());
  const int target = static_cast<int>(mgr->levels().size()) / 2;
  const uint64_t budget = mgr->levels()[static_cast<size_t>(target)].footprint + 1000;
  std::thread other([&] { EXPECT_TRUE(mgr->RequestBudget(budget).ok()); });
  other.join();
  EXPECT_TRUE(mgr->has_pending_budget());
  EXPECT_EQ(mgr->stats().level, 0) << "nothing moves before the owner applies it";
  auto rec = mgr->ApplyPendingBudget();
  ASSERT_TRUE(rec.ok());
  ASSERT_TRUE(rec->has_value());
  EXPECT_EQ((*rec)->to, target);
  EXPECT_EQ((*rec)->budget, budget);
  EXPECT_EQ(mgr->stats().budget, budget);
  EXPECT_FALSE(mgr->ApplyPendingBudget()->has_value());
}

TEST_F(ResidencyTest, TwoCopiesOfASlotSwitchWithoutIo) {
  auto pack = OpenPack(pack::Codec::kZstd);
  auto mgr = Open(pack.get());
  ASSERT_TRUE(mgr->Start(0, &pool_).ok());
  const auto manifests = EqmManifests(pack.get());
  const auto& up = manifests.front();
  const auto& low = manifests.back();
  // A matrix slot of layer 1: hold its low copy next to the high one.
  const int slot = mgr->model()->FindSlot("blk.1.ffn_up.weight");
  ASSERT_GE(slot, 0);
  const store::ManifestSlot* hi = up.Find("blk.1.ffn_up.weight");
  const store::ManifestSlot* lo = low.Find("blk.1.ffn_up.weight");
  ASSERT_NE(hi->key, lo->key);
  const uint64_t before = mgr->resident_bytes();
  ASSERT_TRUE(mgr->HoldCopy(slot, lo->key).ok());
  EXPECT_EQ(mgr->resident_bytes(), before + lo->bytes);
  EXPECT_EQ(mgr->copy_bytes(), lo->bytes);
  // A held copy counts against every level that does not use it.
  EXPECT_NE(*mgr->LevelForBudget(mgr->levels()[0].footprint), 0);
  EXPECT_EQ(*mgr->LevelForBudget(mgr->levels()[0].footprint + lo->bytes), 0);
  EXPECT_EQ(mgr->MinimumBudget(), mgr->levels().back().footprint) << "the lowest EQM uses the copy";
  const uint64_t read_before = mgr->stats().bytes_read;
  ASSERT_TRUE(mgr->UseCopy(slot, lo->key).ok());
  EXPECT_EQ(mgr->stats().bytes_read, read_before) << "no I/O";
  EXPECT_EQ(mgr->resident_bytes(), before + lo->bytes) << "both copies stay";
  // Same logits as a model loaded with that one slot lowered.
  store::ModelManifest mixed = up;
  for (auto& s : mixed.slots) {
    if (s.name == "blk.1.ffn_up.weight") s = *lo;
  }
  auto fresh = Model::Load(mixed, pack.get(), &pool_);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(Logits(mgr->model(), &pool_), Logits(fresh->get(), &pool_));
  // Back to the high copy: still no I/O.
  ASSERT_TRUE(mgr->UseCopy(slot, hi->key).ok());
  EXPECT_EQ(mgr->stats().bytes_read, read_before);
  mgr->DropCopies();
  EXPECT_EQ(mgr->resident_bytes(), before);
  EXPECT_FALSE(mgr->UseCopy(slot, lo->key).ok()) << "dropped copies are gone";
}

TEST_F(ResidencyTest, AFailedTransitionLeavesARunnableModelAndTheNextOneRepairsIt) {
  // Damage a module only the lowest EQMs use; opening does not read payloads.
  const std::string path = ladder_->Join("damaged.fqpack");
  Bytes bytes = *ReadFileBytes(Env::Default(), raw_path());
  {
    auto pack = OpenPack(pack::Codec::kRaw);
    auto mgr = Open(pack.get());
    const auto& last = mgr->levels().back();
    const auto& prev = mgr->levels()[mgr->levels().size() - 2];
    int changed = -1;
    for (size_t p = 0; p < last.modules.size(); ++p) {
      if (last.modules[p] != prev.modules[p]) changed = last.modules[p];
    }
    ASSERT_GE(changed, 0);
    const auto& payload = pack->payloads()[mgr->modules()[static_cast<size_t>(changed)].payload];
    bytes[payload.offset + payload.stored_bytes / 2] ^= 0x40;
  }
  ASSERT_TRUE(PublishFile(Env::Default(), path, bytes).ok());
  auto reader = pack::PackReader::Open(Env::Default(), path);
  ASSERT_TRUE(reader.ok());
  auto mgr = Open(reader->get());
  ASSERT_TRUE(mgr->Start(0, &pool_).ok());
  const int last = static_cast<int>(mgr->levels().size()) - 1;
  auto rec = mgr->TransitionTo(last);
  ASSERT_FALSE(rec.ok());
  EXPECT_TRUE(rec.status().IsCorruption()) << rec.status().ToString();
  EXPECT_EQ(mgr->level(), -1);
  EXPECT_EQ(mgr->stats().label, "mixed");
  EXPECT_EQ(Logits(mgr->model(), &pool_).size(), 8u * 64u) << "still runs";
  auto back = mgr->TransitionTo(0);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(mgr->resident_bytes(), mgr->levels()[0].footprint);
  auto fresh = Model::Load(EqmManifests(reader->get())[0], reader->get(), &pool_);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(Logits(mgr->model(), &pool_), Logits(fresh->get(), &pool_));
}

TEST_F(ResidencyTest, QmsOnlyIsALadderOfThePacksWholeQmsLargestFirst) {
  // Imported smallest-but-one first; the ladder sorts by footprint.
  ElasticLadder shuffled({QType::kF16, QType::kQ4_0, QType::kQ8_0});
  auto pack =
      pack::PackReader::Open(Env::Default(), shuffled.Pack(pack::Codec::kRaw, "ladder.fqpack"));
  ASSERT_TRUE(pack.ok());
  ResidencyOptions ro;
  ro.qms_only = true;
  auto mgr = Open(pack->get(), ro);
  ASSERT_EQ(mgr->levels().size(), 3u);
  EXPECT_TRUE(mgr->qms_only());
  EXPECT_EQ(mgr->levels()[0].label, "F16");
  EXPECT_EQ(mgr->levels()[1].label, "Q8_0");
  EXPECT_EQ(mgr->levels()[2].label, "Q4_0");
  EXPECT_EQ(mgr->levels()[1].footprint, (*pack)->QmManifest("Q8_0")->weight_bytes());
  auto step = mgr->LevelOfStep(3);
  EXPECT_TRUE(step.status().IsInvalidArgument());
  EXPECT_NE(step.status().message().find("--qm"), std::string::npos) << step.status().message();
  EXPECT_EQ(*mgr->LevelOfLabel("Q8_0"), 1);
  ASSERT_TRUE(mgr->Start(2, &pool_).ok());
  auto rec = mgr->TransitionTo(0);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->resident_before + rec->bytes_in - rec->bytes_out, mgr->levels()[0].footprint);
  EXPECT_EQ(mgr->resident_bytes(), mgr->levels()[0].footprint);
}

TEST_F(ResidencyTest, OutOfRangeEqmNamesTheRange) {
  auto pack = OpenPack(pack::Codec::kRaw);
  auto mgr = Open(pack.get());
  auto r = mgr->LevelOfStep(ladder_->n_eqms());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsInvalidArgument());
  EXPECT_NE(r.status().message().find("0.." + std::to_string(ladder_->n_eqms() - 1)),
            std::string::npos)
      << r.status().message();
  ResidencyOptions ro;
  ro.ensemble = "nope";
  EXPECT_TRUE(ResidencyManager::Open(pack.get(), ro).status().IsNotFound());
}

TEST(EstimateOverheadTest, CountsTheKvCacheAndTheBuffersOfAForwardPass) {
  Hparams hp;
  hp.n_vocab = 512;
  hp.n_embd = 256;
  hp.n_layer = 4;
  hp.n_ff = 768;
  hp.n_head = 8;
  hp.n_head_kv = 4;
  hp.n_rot = 32;
  hp.n_ctx_train = 256;
  const RuntimeOverhead o = EstimateOverhead(hp, 256, 256, 1, 2, 9 * 256);
  // K (stride 256) and V of 4 layers, 128 wide, F16.
  EXPECT_EQ(o.kv_cache, 2u * (256 + 256) * 128 * 4);
  // 256 rows x (5*256 + 2*128 + 2*768 + 32 + 768) floats, one row of logits,
  // 2 threads x 256 attention scores, 9 norms of 256.
  EXPECT_EQ(o.scratch, 4u * (256u * (1280 + 256 + 1536 + 32 + 768) + 512 + 512 + 2304));
  // Batches beyond the largest micro-batch cost no more.
  EXPECT_EQ(EstimateOverhead(hp, 4096, 4096, 1, 1, 0).scratch,
            EstimateOverhead(hp, 4096, 512, 1, 1, 0).scratch);
}

}  // namespace
}  // namespace fqpack::runtime
