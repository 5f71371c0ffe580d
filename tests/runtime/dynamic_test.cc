// Dynamic precision switching (runtime/dynamic.h) on stories260K: the
// calibrated model's shape (monotone thresholds, bits meeting the target),
// its two ends reproducing the static QMs exactly, the store and pack
// carrying it, both ways of holding the copies agreeing, and bad input.
#include "runtime/dynamic.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "pack/writer.h"
#include "runtime/elastic.h"
#include "runtime/generate.h"
#include "runtime/tokenizer.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/support/test_util.h"

namespace fqpack::runtime {
namespace {

using testing::TempDir;
using testing::TestDataPath;

constexpr int64_t kCtx = 128;

class DynamicTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testing::TestDataDir().empty()) return;
    tmp_ = new TempDir();
    const std::string dir = tmp_->Join("store");
    ASSERT_TRUE(store::Store::Init(Env::Default(), dir).ok());
    auto st = store::Store::Open(Env::Default(), dir);
    ASSERT_TRUE(st.ok());
    store_ = st->release();
    for (const char* q : {"F16", "Q4_K_M", "Q2_K"}) {
      store::ImportOptions io;
      auto r = store::ImportGguf(
          store_, TestDataPath(std::string("models/stories260K/stories260K-") + q + ".gguf"), io);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
    }
    pool_ = new ThreadPool(2);
    hi_ = new store::ModelManifest(*store_->QmManifest("stories260K", "F16"));
    lo_ = new store::ModelManifest(*store_->QmManifest("stories260K", "Q4_K_M"));
    auto md = gguf::ParseMetadata(hi_->metadata, hi_->n_kv, "stories260K");
    ASSERT_TRUE(md.ok());
    auto tok = Tokenizer::FromMetadata(*md);
    ASSERT_TRUE(tok.ok());
    tok_ = new Tokenizer(std::move(*tok));
    calib_ = new std::vector<int32_t>(Tokens("text/tinystories.txt"));
    eval_ = new std::vector<int32_t>(Tokens("text/tinystories_val.ppl.txt"));
    DynamicCalibrationOptions opts;
    opts.n_ctx = kCtx;
    opts.bos = tok_->bos();
    opts.max_tokens = 16 * kCtx;
    auto m = CalibrateDynamic(*hi_, *lo_, store_, *calib_, opts, pool_);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = new store::DynamicModelInfo(std::move(*m));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete eval_;
    delete calib_;
    delete tok_;
    delete lo_;
    delete hi_;
    delete pool_;
    delete store_;
    delete tmp_;
  }
  void SetUp() override { FQ_REQUIRE_TESTDATA(); }

  static std::vector<int32_t> Tokens(const std::string& rel) {
    auto bytes = ReadFileBytes(Env::Default(), TestDataPath(rel));
    EXPECT_TRUE(bytes.ok());
    return tok_->Encode(
        std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()), true);
  }

  static PerplexityOptions PplOptions(int64_t chunks) {
    PerplexityOptions o;
    o.n_ctx = kCtx;
    o.bos = tok_->bos();
    o.max_chunks = chunks;
    return o;
  }

  // Perplexity of the dynamic pair at `target`, from the store.
  static PerplexityResult DynamicPpl(double target, std::span<const int32_t> tokens, int64_t chunks,
                                     DynamicStats* stats = nullptr) {
    auto plan = PlanForTarget(*model_, target);
    EXPECT_TRUE(plan.ok()) << plan.status().ToString();
    auto model = Model::Load(*lo_, store_, pool_);
    EXPECT_TRUE(model.ok());
    auto runner = DynamicRunner::OverModel(model->get(), *hi_, *lo_, store_, *model_, *plan);
    EXPECT_TRUE(runner.ok()) << runner.status().ToString();
    Session session(model->get(), kCtx, pool_);
    auto r = DynamicPerplexity(&session, runner->get(), tokens, PplOptions(chunks));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (stats != nullptr) *stats = (*runner)->stats();
    return *r;
  }

  static double StaticPpl(const store::ModelManifest& m, int64_t chunks) {
    auto model = Model::Load(m, store_, pool_);
    EXPECT_TRUE(model.ok());
    auto r = Perplexity(**model, *eval_, PplOptions(chunks), pool_);
    EXPECT_TRUE(r.ok());
    return r->ppl;
  }

  static TempDir* tmp_;
  static store::Store* store_;
  static ThreadPool* pool_;
  static store::ModelManifest* hi_;
  static store::ModelManifest* lo_;
  static Tokenizer* tok_;
  static std::vector<int32_t>* calib_;
  static std::vector<int32_t>* eval_;
  static store::DynamicModelInfo* model_;
};

TempDir* DynamicTest::tmp_ = nullptr;
store::Store* DynamicTest::store_ = nullptr;
ThreadPool* DynamicTest::pool_ = nullptr;
store::ModelManifest* DynamicTest::hi_ = nullptr;
store::ModelManifest* DynamicTest::lo_ = nullptr;
Tokenizer* DynamicTest::tok_ = nullptr;
std::vector<int32_t>* DynamicTest::calib_ = nullptr;
std::vector<int32_t>* DynamicTest::eval_ = nullptr;
store::DynamicModelInfo* DynamicTest::model_ = nullptr;

TEST(DynamicEntropy, UniformIsLogNAndAPeakIsNearZero) {
  std::vector<float> uniform(512, 1.5f);
  EXPECT_NEAR(LogitsEntropy(uniform), std::log(512.0), 1e-12);
  std::vector<float> peaked(512, 0.0f);
  peaked[7] = 60.0f;
  EXPECT_LT(LogitsEntropy(peaked), 1e-20);
  std::vector<float> two{0.0f, 0.0f};
  EXPECT_NEAR(LogitsEntropy(two), std::log(2.0), 1e-15);
  EXPECT_TRUE(std::isinf(LogitsEntropy({})));
}

TEST_F(DynamicTest, UnitsAreTheBlocksAndHeadsRankedBySensitivity) {
  const store::DynamicModelInfo& m = *model_;
  // stories260K: 5 blocks, plus the embedding and output matrices, which
  // Q4_K_M stores differently from F16.
  ASSERT_EQ(m.units.size(), 7u);
  int64_t extra = 0;
  for (size_t r = 0; r < m.units.size(); ++r) {
    EXPECT_EQ(m.units[r].rank, static_cast<int>(r));
    EXPECT_GT(m.units[r].sensitivity, 0) << m.units[r].name;
    if (r > 0) {
      EXPECT_LE(m.units[r].sensitivity, m.units[r - 1].sensitivity);
    }
    extra += m.units[r].extra_bytes;
  }
  EXPECT_EQ(static_cast<uint64_t>(static_cast<int64_t>(m.lo_bytes) + extra), m.hi_bytes);
  EXPECT_EQ(m.hi_bytes, hi_->weight_bytes());
  EXPECT_EQ(m.lo_bytes, lo_->weight_bytes());
  EXPECT_EQ(m.calib_tokens, 16 * kCtx);
  EXPECT_EQ(m.calib_starts, 16);
  EXPECT_EQ(m.entropies.size(), static_cast<size_t>(16 * (kCtx - 1)));
  EXPECT_DOUBLE_EQ(BitsWithHiUnits(m, 0), m.lo_bits());
  EXPECT_DOUBLE_EQ(BitsWithHiUnits(m, static_cast<int>(m.units.size())), m.hi_bits());
}

TEST_F(DynamicTest, HiUnitsNeverDecreaseWithEntropy) {
  for (double f : {0.1, 0.5, 0.9}) {
    const double target = model_->lo_bits() + f * (model_->hi_bits() - model_->lo_bits());
    auto plan = PlanForTarget(*model_, target);
    ASSERT_TRUE(plan.ok());
    for (size_t u = 1; u < plan->thresholds.size(); ++u)
      EXPECT_LE(plan->thresholds[u - 1], plan->thresholds[u]);
    int prev = 0;
    for (double h = 0; h <= 7.0; h += 0.01) {
      const int k = HiUnitsForEntropy(plan->thresholds, h);
      EXPECT_GE(k, prev) << "at H = " << h;
      prev = k;
    }
    EXPECT_GE(HiUnitsForEntropy(plan->thresholds, INFINITY), prev);
    EXPECT_EQ(HiUnitsForEntropy(plan->thresholds, INFINITY), plan->max_hi);
  }
}

TEST_F(DynamicTest, CalibratedBitsMeetTheTargetOnTheCalibrationText) {
  for (double f : {0.25, 0.5, 0.75}) {
    const double target = model_->lo_bits() + f * (model_->hi_bits() - model_->lo_bits());
    auto plan = PlanForTarget(*model_, target);
    ASSERT_TRUE(plan.ok());
    // On the calibration sample: at most the target, and within one unit's
    // share of a start of it.
    EXPECT_LE(plan->calib_bits, target + 1e-9);
    EXPECT_GT(plan->calib_bits, target - 0.05) << "target " << target;
    // A real dynamic run over the calibration chunks decides from its own
    // (not all-hi) distributions; its bits stay close to the target.
    DynamicStats stats;
    DynamicPpl(target, *calib_, 16, &stats);
    EXPECT_EQ(stats.tokens, 16 * kCtx);
    EXPECT_NEAR(stats.mean_bits(), target, 0.04 * (model_->hi_bits() - model_->lo_bits()))
        << "target " << target;
  }
}

// Dynamic perplexity runs one token at a time (the decode kernels), static
// perplexity a batch (on the AVX-512 tier, the GEMM): the two add the same
// products in another fp32 order, and a last-bit difference can flip the
// rounding of an int8 activation code, so on these small models the same
// weights give perplexities a few 1e-4 apart rather than equal ones.
constexpr double kKernelOrderPplRel = 3e-3;

TEST_F(DynamicTest, TargetAtHiBitsIsExactlyStaticHi) {
  DynamicStats stats;
  const PerplexityResult r = DynamicPpl(model_->hi_bits(), *eval_, 6, &stats);
  const double hi = StaticPpl(*hi_, 6);
  EXPECT_NEAR(r.ppl, hi, kKernelOrderPplRel * hi);
  EXPECT_EQ(stats.hi_units_tokens.back(), stats.tokens) << "every token ran every unit hi";
  EXPECT_NEAR(stats.mean_bits(), model_->hi_bits(), 1e-9);
}

TEST_F(DynamicTest, TargetAtLoBitsIsExactlyStaticLo) {
  DynamicStats stats;
  const PerplexityResult r = DynamicPpl(model_->lo_bits(), *eval_, 6, &stats);
  const double lo = StaticPpl(*lo_, 6);
  EXPECT_NEAR(r.ppl, lo, kKernelOrderPplRel * lo);
  EXPECT_EQ(stats.hi_units_tokens.front(), stats.tokens);
  EXPECT_EQ(stats.binds, 0) << "nothing ever switches";
  auto plan = PlanForTarget(*model_, model_->lo_bits());
  EXPECT_EQ(plan->max_hi, 0);
}

TEST_F(DynamicTest, AMidTargetSwitchesAndReadsBitsBetweenTheQms) {
  const double target = 0.5 * (model_->lo_bits() + model_->hi_bits());
  DynamicStats stats;
  const PerplexityResult r = DynamicPpl(target, *eval_, 6, &stats);
  EXPECT_GT(stats.binds, 0);
  EXPECT_GT(stats.mean_bits(), model_->lo_bits());
  EXPECT_LT(stats.mean_bits(), model_->hi_bits());
  EXPECT_GT(stats.mean_hi_share(), 0.1);
  EXPECT_LT(stats.mean_hi_share(), 0.9);
  // A mix of the two QMs: its perplexity is neither's, and no further from
  // them than they are from each other (on 6 chunks stories260K's Q4_K_M
  // happens to score below F16, so "between" would be too strict).
  const double hi = StaticPpl(*hi_, 6), lo = StaticPpl(*lo_, 6);
  const double gap = std::abs(lo - hi);
  EXPECT_NE(r.ppl, hi);
  EXPECT_NE(r.ppl, lo);
  EXPECT_LT(r.ppl, std::max(hi, lo) + gap) << "hi " << hi << " lo " << lo;
  EXPECT_GT(r.ppl, std::min(hi, lo) - gap);
}

TEST_F(DynamicTest, GenerationAtHiBitsIsStaticHiAndSeesEveryPosition) {
  auto plan = PlanForTarget(*model_, model_->hi_bits());
  ASSERT_TRUE(plan.ok());
  auto model = Model::Load(*lo_, store_, pool_);
  ASSERT_TRUE(model.ok());
  auto runner = DynamicRunner::OverModel(model->get(), *hi_, *lo_, store_, *model_, *plan);
  ASSERT_TRUE(runner.ok());
  const std::vector<int32_t> prompt = tok_->Encode("Once upon a time", true);
  GenerateOptions opts;
  opts.n_predict = 40;
  opts.sampling.temperature = 0;
  opts.before_token = [&](std::span<const float> prev) { return (*runner)->BeforeToken(prev); };
  Session dyn_session(model->get(), kCtx, pool_);
  auto dyn = Generate(&dyn_session, prompt, opts, [](int32_t) { return Status::OK(); });
  ASSERT_TRUE(dyn.ok());
  // Every prompt token and every fed-back token had a decision.
  EXPECT_EQ((*runner)->stats().tokens, static_cast<int64_t>(prompt.size()) + dyn->generated - 1);

  auto hi_model = Model::Load(*hi_, store_, pool_);
  ASSERT_TRUE(hi_model.ok());
  GenerateOptions plain = opts;
  plain.before_token = nullptr;
  Session session(hi_model->get(), kCtx, pool_);
  auto ref = Generate(&session, prompt, plain, [](int32_t) { return Status::OK(); });
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(dyn->tokens, ref->tokens);
}

TEST_F(DynamicTest, StorePackAndResidencyCarryTheModelAndAgree) {
  store::DynamicModelInfo d = *model_;
  auto m = store_->FindModel("stories260K");
  ASSERT_TRUE(m.ok());
  d.model_id = m->id;
  d.hi_qm_id = store_->FindQm(m->id, "F16")->id;
  d.lo_qm_id = store_->FindQm(m->id, "Q4_K_M")->id;
  // No model yet: a clear error that says what to run.
  auto missing = store_->FindDynamicModel(m->id, "F16", "Q4_K_M");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_NE(missing.status().message().find("calibrate-dynamic"), std::string::npos)
      << missing.status().ToString();
  const std::string bare = tmp_->Join("bare.fqpack");
  pack::PackOptions po;
  ASSERT_TRUE(pack::WritePack(store_, po, bare).ok());

  ASSERT_TRUE(store_->PutDynamicModel(d).ok());
  ASSERT_TRUE(store_->PutDynamicModel(d).ok()) << "calibrating again replaces";
  auto back = store_->FindDynamicModel(m->id, "F16", "Q4_K_M");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(store_->ListDynamicModels(m->id)->size(), 1u);
  EXPECT_EQ(back->entropies, d.entropies);
  EXPECT_EQ(back->calib_starts, d.calib_starts);
  EXPECT_EQ(back->target_bits, d.target_bits);
  ASSERT_EQ(back->units.size(), d.units.size());
  for (size_t u = 0; u < d.units.size(); ++u) {
    EXPECT_EQ(back->units[u].name, d.units[u].name);
    EXPECT_EQ(back->units[u].sensitivity, d.units[u].sensitivity);
    EXPECT_EQ(back->units[u].extra_bytes, d.units[u].extra_bytes);
    EXPECT_EQ(back->units[u].threshold, d.units[u].threshold);
  }

  const std::string path = tmp_->Join("dyn.fqpack");
  auto written = pack::WritePack(store_, po, path);
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(written->dynamic_models, 1u);
  {
    auto reader = pack::PackReader::Open(Env::Default(), bare);
    ASSERT_TRUE(reader.ok());
    auto none = (*reader)->FindDynamicModel("F16", "Q4_K_M");
    EXPECT_TRUE(none.status().IsNotFound());
    EXPECT_NE(none.status().message().find("calibrate-dynamic"), std::string::npos);
  }
  auto reader = pack::PackReader::Open(Env::Default(), path);
  ASSERT_TRUE(reader.ok());
  auto in_pack = (*reader)->FindDynamicModel("F16", "Q4_K_M");
  ASSERT_TRUE(in_pack.ok()) << in_pack.status().ToString();
  EXPECT_EQ(in_pack->entropies, d.entropies);
  ASSERT_EQ(in_pack->units.size(), d.units.size());
  EXPECT_EQ(in_pack->units.back().threshold, d.units.back().threshold);

  // The pack's residency manager holds the hi copies (HoldCopy) and binds
  // them (UseCopy): same perplexity and decisions as the store's models.
  const double target = 0.5 * (model_->lo_bits() + model_->hi_bits());
  ElasticOptions eo;
  eo.residency.qms_only = true;
  eo.n_ctx = kCtx;
  auto rt = ElasticRuntime::Open(Env::Default(), path, eo, pool_);
  ASSERT_TRUE(rt.ok());
  LevelChoice choice;
  choice.qm = "Q4_K_M";
  ASSERT_TRUE((*rt)->Start(choice).ok());
  auto plan = PlanForTarget(*in_pack, target);
  ASSERT_TRUE(plan.ok());
  const uint64_t lo_resident = (*rt)->residency()->resident_bytes();
  auto runner = DynamicRunner::OverResidency((*rt)->residency(), *(*reader)->QmManifest("F16"),
                                             *(*reader)->QmManifest("Q4_K_M"), *in_pack, *plan);
  ASSERT_TRUE(runner.ok()) << runner.status().ToString();
  EXPECT_GT((*runner)->hi_copy_bytes(), 0u);
  EXPECT_EQ((*rt)->residency()->resident_bytes(), lo_resident + (*runner)->hi_copy_bytes());
  const uint64_t read_before = (*rt)->residency()->stats().bytes_read;
  auto r = DynamicPerplexity((*rt)->session(), runner->get(), *eval_, PplOptions(4));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  DynamicStats stats;
  const PerplexityResult ref = DynamicPpl(target, *eval_, 4, &stats);
  EXPECT_EQ(r->ppl, ref.ppl);
  EXPECT_EQ((*runner)->stats().hi_units_tokens, stats.hi_units_tokens);
  EXPECT_GT((*runner)->stats().binds, 0);
  EXPECT_EQ((*rt)->residency()->stats().bytes_read, read_before) << "switching reads nothing";
}

TEST_F(DynamicTest, RejectsBadPairsAndTargets) {
  DynamicCalibrationOptions opts;
  opts.n_ctx = kCtx;
  opts.max_tokens = kCtx;
  // hi must be the higher precision.
  auto swapped = CalibrateDynamic(*lo_, *hi_, store_, *calib_, opts, pool_);
  ASSERT_FALSE(swapped.ok());
  EXPECT_TRUE(swapped.status().IsInvalidArgument());
  EXPECT_NE(swapped.status().message().find("not of higher precision"), std::string::npos);
  auto same = CalibrateDynamic(*hi_, *hi_, store_, *calib_, opts, pool_);
  EXPECT_TRUE(same.status().IsInvalidArgument());
  // QMs of two models.
  store::ImportOptions io;
  io.model = "other";
  ASSERT_TRUE(
      store::ImportGguf(store_, TestDataPath("models/stories260K/stories260K-Q2_K.gguf"), io).ok());
  auto other = store_->QmManifest("other", "Q2_K");
  ASSERT_TRUE(other.ok());
  auto mixed = CalibrateDynamic(*hi_, *other, store_, *calib_, opts, pool_);
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.status().message().find("of model 'other'"), std::string::npos)
      << mixed.status().ToString();
  // Targets outside [lo bits, hi bits].
  for (double t : {model_->lo_bits() - 0.01, model_->hi_bits() + 0.01, double{NAN}}) {
    auto plan = PlanForTarget(*model_, t);
    ASSERT_FALSE(plan.ok());
    EXPECT_TRUE(plan.status().IsInvalidArgument());
    EXPECT_NE(plan.status().message().find("choose a target between"), std::string::npos);
  }
  opts.target_bits = model_->hi_bits() + 1;
  EXPECT_TRUE(
      CalibrateDynamic(*hi_, *lo_, store_, *calib_, opts, pool_).status().IsInvalidArgument());
  // A text shorter than one chunk.
  opts.target_bits = NAN;
  const std::vector<int32_t> few(calib_->begin(), calib_->begin() + 10);
  EXPECT_TRUE(CalibrateDynamic(*hi_, *lo_, store_, few, opts, pool_).status().IsInvalidArgument());
}

}  // namespace
}  // namespace fqpack::runtime
