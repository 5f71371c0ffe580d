// Library::Build and LoadLibrary: per-slot chains and the errors a bad
// library gives before any work.
#include "search/ladder.h"

#include <gtest/gtest.h>

#include "tests/search/search_fixture.h"
#include "tests/support/test_util.h"

namespace fqpack::search {
namespace {

using testing::SearchSpec;
using testing::TypeId;

const SlotChain& ChainOf(const Library& lib, const std::string& name) {
  for (const SlotChain& c : lib.chains()) {
    if (c.name == name) return c;
  }
  ADD_FAILURE() << "no slot " << name;
  return lib.chains().front();
}

TEST(Library, ChainsStepDownThroughEveryQm) {
  auto t = testing::ThreeQmLibrary();
  // Given out of order: Build sorts by bits per weight.
  std::swap(t->qms[0], t->qms[2]);
  auto lib = Library::Build(t->qms, {});
  ASSERT_TRUE(lib.ok()) << lib.status().ToString();
  EXPECT_EQ(lib->up().label, "Q8_0");
  EXPECT_EQ(lib->low().label, "Q4_0");
  int searched = 0, moves = 0;
  for (const SlotChain& c : lib->chains()) {
    const store::ManifestSlot& up = *lib->up().manifest.Find(c.name);
    const store::ManifestSlot& low = *lib->low().manifest.Find(c.name);
    EXPECT_EQ(c.rungs.front().key, up.key) << c.name;
    EXPECT_EQ(c.rungs.back().key, low.key) << c.name;
    for (size_t r = 1; r < c.rungs.size(); ++r) {
      EXPECT_LT(c.rungs[r].bytes, c.rungs[r - 1].bytes) << c.name;
      EXPECT_NE(c.rungs[r].key, c.rungs[r - 1].key) << c.name;
    }
    if (c.kind == "norm") {
      EXPECT_EQ(c.moves(), 0) << c.name;  // F32 in every QM
      EXPECT_FALSE(c.searched);
    } else {
      // Q8_0 -> Q5_0 -> Q4_0.
      EXPECT_EQ(c.moves(), 2) << c.name;
      EXPECT_EQ(c.rungs[1].qm, 1);
      EXPECT_EQ(c.searched, c.kind != "embed" && c.kind != "output") << c.name;
    }
    searched += c.searched && c.moves() > 0;
    moves += c.moves();
  }
  EXPECT_EQ(searched, 2 * 7);  // 7 matrices per block, 2 blocks
  EXPECT_EQ(lib->total_moves(), moves);
  EXPECT_EQ(lib->held_back_slots(), 2);  // token_embd and output
  EXPECT_EQ(lib->Footprint(lib->UpState()), lib->up().manifest.weight_bytes());
  EXPECT_EQ(lib->Footprint(lib->LowState()), lib->low().manifest.weight_bytes());
  EXPECT_TRUE(lib->IsLow(lib->LowState()));
}

TEST(Library, SkipsMidModulesThatAreIdenticalOrNotSmaller) {
  auto t = testing::ThreeQmLibrary();
  // In the mid QM: one slot holds up's very module, one a bigger one (F16),
  // one a module smaller than low's (IQ4_NL is 18 bytes per 32 like Q4_0:
  // not bigger than low's, so it is dropped again).
  t->SwapSlot(1, "blk.0.attn_q.weight", SearchSpec(TypeId(QType::kQ8_0)));
  t->SwapSlot(1, "blk.0.attn_k.weight", SearchSpec(TypeId(QType::kF16)));
  t->SwapSlot(1, "blk.0.attn_v.weight", SearchSpec(TypeId(QType::kIQ4_NL)));
  auto lib = Library::Build(t->qms, {});
  ASSERT_TRUE(lib.ok()) << lib.status().ToString();
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"}) {
    const SlotChain& c = ChainOf(*lib, name);
    ASSERT_EQ(c.moves(), 1) << name;
    EXPECT_EQ(c.rungs[1].qm, 2) << name;
  }
  EXPECT_EQ(ChainOf(*lib, "blk.0.ffn_up.weight").moves(), 2);
  // The same module in up and low: the slot never moves.
  auto u = testing::ThreeQmLibrary();
  u->SwapSlot(2, "blk.1.ffn_down.weight", SearchSpec(TypeId(QType::kQ8_0)));
  u->SwapSlot(1, "blk.1.ffn_down.weight", SearchSpec(TypeId(QType::kQ8_0)));
  auto lib2 = Library::Build(u->qms, {});
  ASSERT_TRUE(lib2.ok());
  EXPECT_EQ(ChainOf(*lib2, "blk.1.ffn_down.weight").moves(), 0);
}

TEST(Library, IncludeEmbedSearchesEmbeddingAndOutput) {
  auto t = testing::ThreeQmLibrary();
  auto lib = Library::Build(t->qms, {.include_embed = true});
  ASSERT_TRUE(lib.ok());
  EXPECT_TRUE(ChainOf(*lib, "token_embd.weight").searched);
  EXPECT_TRUE(ChainOf(*lib, "output.weight").searched);
  EXPECT_EQ(lib->held_back_slots(), 0);
  EXPECT_EQ(lib->searched_moves(), lib->total_moves());
}

TEST(Library, MovableChainsHoldBackEmbeddingUntilTheRestIsDone) {
  auto t = testing::ThreeQmLibrary();
  auto lib = Library::Build(t->qms, {});
  ASSERT_TRUE(lib.ok());
  EqmState s = lib->UpState();
  for (int c : lib->MovableChains(s)) EXPECT_TRUE(lib->chains()[c].searched);
  for (size_t i = 0; i < s.size(); ++i) {
    if (lib->chains()[i].searched) s[i] = static_cast<uint8_t>(lib->chains()[i].moves());
  }
  const std::vector<int> held = lib->MovableChains(s);
  ASSERT_EQ(held.size(), 2u);
  for (int c : held) EXPECT_FALSE(lib->chains()[c].searched);
}

TEST(Library, ManifestAndKeysFollowTheState) {
  auto t = testing::ThreeQmLibrary();
  auto lib = Library::Build(t->qms, {});
  ASSERT_TRUE(lib.ok());
  EqmState s = lib->UpState();
  const int c = lib->MovableChains(s).front();
  s[c] = 2;
  store::ModelManifest m = lib->Manifest(s, "x");
  const SlotChain& ch = lib->chains()[c];
  EXPECT_EQ(m.slots[ch.position].key, lib->low().manifest.slots[ch.position].key);
  EXPECT_EQ(m.weight_bytes(), lib->Footprint(s));
  EXPECT_EQ(lib->Keys(s)[c], m.slots[ch.position].key);
}

TEST(Library, RejectsBadLibraries) {
  auto t = testing::ThreeQmLibrary();
  {
    auto r = Library::Build({t->qms[0]}, {});
    EXPECT_TRUE(r.status().IsInvalidArgument());
  }
  {
    auto qms = t->qms;
    qms[1].bits_per_weight = qms[0].bits_per_weight;
    auto r = Library::Build(qms, {});
    ASSERT_TRUE(r.status().IsInvalidArgument());
    EXPECT_NE(r.status().message().find("same bits per weight"), std::string::npos);
  }
  {
    auto qms = t->qms;
    qms[2].manifest.model = "other";
    auto r = Library::Build(qms, {});
    ASSERT_TRUE(r.status().IsInvalidArgument());
    EXPECT_NE(r.status().message().find("different models"), std::string::npos);
  }
  {
    auto qms = t->qms;
    qms[2].manifest.slots.pop_back();
    auto r = Library::Build(qms, {});
    ASSERT_TRUE(r.status().IsInvalidArgument());
    EXPECT_NE(r.status().message().find("do not cover the same slots"), std::string::npos);
  }
  {
    auto qms = t->qms;
    std::swap(qms[2].manifest.slots[3].name, qms[2].manifest.slots[4].name);
    auto r = Library::Build(qms, {});
    ASSERT_TRUE(r.status().IsInvalidArgument());
    EXPECT_NE(r.status().message().find("position 3"), std::string::npos);
  }
  {
    // Low's module bigger than up's in one slot: no walk can step down.
    auto u = testing::ThreeQmLibrary();
    u->SwapSlot(2, "blk.0.ffn_gate.weight", SearchSpec(TypeId(QType::kF16)));
    auto r = Library::Build(u->qms, {});
    ASSERT_TRUE(r.status().IsInvalidArgument());
    EXPECT_NE(r.status().message().find("blk.0.ffn_gate.weight"), std::string::npos);
  }
  {
    // Nothing to search: up and low identical.
    auto qms = t->qms;
    qms[2].manifest = qms[0].manifest;
    qms.erase(qms.begin() + 1);
    auto r = Library::Build(qms, {});
    EXPECT_TRUE(r.status().IsInvalidArgument());
  }
}

class LoadLibraryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = testing::TinyStore(
        tmp_.Join("s"), {{"Q8_0", QType::kQ8_0}, {"Q5_0", QType::kQ5_0}, {"Q4_0", QType::kQ4_0}});
  }
  testing::TempDir tmp_;
  std::unique_ptr<store::Store> store_;
};

TEST_F(LoadLibraryTest, LoadsTheNamedQms) {
  auto lib = LoadLibrary(store_.get(), "tiny", "Q8_0", {"Q5_0"}, "Q4_0", {});
  ASSERT_TRUE(lib.ok()) << lib.status().ToString();
  ASSERT_EQ(lib->qms().size(), 3u);
  EXPECT_EQ(lib->Labels(), (std::vector<std::string>{"Q8_0", "Q5_0", "Q4_0"}));
  auto qm = store_->FindQm(1, "Q8_0");
  ASSERT_TRUE(qm.ok());
  EXPECT_EQ(lib->up().qm_id, qm->id);
  // "model/label" naming the same model is fine.
  EXPECT_TRUE(LoadLibrary(store_.get(), "", "tiny/Q8_0", {}, "Q4_0", {}).ok());
}

TEST_F(LoadLibraryTest, ClearErrors) {
  auto s = LoadLibrary(store_.get(), "nope", "Q8_0", {}, "Q4_0", {}).status();
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  s = LoadLibrary(store_.get(), "tiny", "Q9", {}, "Q4_0", {}).status();
  ASSERT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("Q8_0, Q5_0, Q4_0"), std::string::npos) << s.message();
  s = LoadLibrary(store_.get(), "tiny", "Q4_0", {}, "Q8_0", {}).status();
  ASSERT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("higher precision"), std::string::npos) << s.message();
  s = LoadLibrary(store_.get(), "tiny", "Q8_0", {"Q8_0"}, "Q4_0", {}).status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  s = LoadLibrary(store_.get(), "tiny", "Q5_0", {"Q8_0"}, "Q4_0", {}).status();
  ASSERT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("not between"), std::string::npos) << s.message();
  s = LoadLibrary(store_.get(), "tiny", "other/Q8_0", {}, "Q4_0", {}).status();
  ASSERT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("different models"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace fqpack::search
