// `fqpack quantize` end to end on stories260K: the QMs it stores follow the
// rules (norms F32, embeddings at --embed-bits, llama.cpp's fallbacks for
// GGUF types), load and run, get worse as bits drop, GPTQ beats RTN at 3 and
// 2 bits, the same command twice stores nothing new, and bad input is a
// clear error that leaves the store as it was.
#include "quantize/pipeline.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/tokenizer.h"
#include "schema/env.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::quantize {
namespace {

using runtime::Model;
using runtime::Perplexity;
using runtime::PerplexityOptions;
using runtime::PerplexityResult;
using runtime::Tokenizer;

using fqpack::testing::TempDir;
using fqpack::testing::TestDataPath;

// Scoring a few chunks keeps each perplexity to a fraction of a second; the
// full evaluation text is bench/quantize_ladder.sh's.
constexpr int64_t kEvalChunks = 24;
constexpr int64_t kEvalCtx = 256;

std::string ReadText(const std::string& relative) {
  Result<Bytes> b = ReadFileBytes(Env::Default(), TestDataPath(relative));
  EXPECT_TRUE(b.ok());
  return std::string(b->begin(), b->end());
}

class QuantizePipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (fqpack::testing::TestDataDir().empty()) GTEST_SKIP() << "FQ_TESTDATA is not set";
    dir_ = tmp_.Join("store");
    ASSERT_TRUE(store::Store::Init(Env::Default(), dir_).ok());
    Reopen();
    Result<store::ImportResult> r = store::ImportGguf(
        store_.get(), TestDataPath("models/stories260K/stories260K-F32.gguf"), {});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    model_ = r->model;
  }

  void Reopen() {
    store_.reset();
    Result<std::unique_ptr<store::Store>> s = store::Store::Open(Env::Default(), dir_);
    ASSERT_TRUE(s.ok());
    store_ = std::move(*s);
  }

  QuantizeRequest Request(std::vector<uint32_t> types, Method method = Method::kRtn) {
    QuantizeRequest req;
    req.from = "F32";
    req.method = method;
    req.threads = 2;
    for (uint32_t t : types) req.targets.push_back({t, ""});
    if (method == Method::kGptq) {
      req.calib_text = ReadText("text/tinystories.txt");
      req.calib_name = "tinystories.txt";
      req.calib_chunks = 16;  // 4096 tokens: enough for every H, quick
    }
    return req;
  }

  QuantizeResult Run(const QuantizeRequest& req) {
    Result<QuantizeResult> r = QuantizeModel(store_.get(), req);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : QuantizeResult();
  }

  double Ppl(const std::string& label) {
    Result<store::PinnedModel> pinned = store_->PinQm(model_, label);
    EXPECT_TRUE(pinned.ok()) << pinned.status().ToString();
    ThreadPool pool(2);
    Result<std::unique_ptr<Model>> m = Model::Load(pinned->manifest, pinned->source.get(), &pool);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (tokens_.empty()) {
      Result<gguf::Metadata> md =
          gguf::ParseMetadata(pinned->manifest.metadata, pinned->manifest.n_kv, model_);
      Result<Tokenizer> tok = Tokenizer::FromMetadata(*md);
      tokens_ = tok->Encode(ReadText("text/tinystories_val.ppl.txt").substr(0, 400000), true);
      bos_ = tok->bos();
    }
    PerplexityOptions opts;
    opts.n_ctx = kEvalCtx;
    opts.bos = bos_;
    opts.max_chunks = kEvalChunks;
    Result<PerplexityResult> r = Perplexity(**m, tokens_, opts, &pool);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r->ppl;
  }

  std::map<std::string, store::ModuleRef> Modules(const std::string& label) {
    Result<store::ModelInfo> m = store_->FindModel(model_);
    Result<store::QmInfo> q = store_->FindQm(m->id, label);
    EXPECT_TRUE(q.ok()) << label;
    std::map<int, std::string> names;
    const std::vector<store::SlotInfo> slots = store_->Slots(m->id).value();
    for (const store::SlotInfo& s : slots) names[s.idx] = s.name;
    const std::vector<store::ModuleRef> mods = store_->QmModules(q->id).value();
    std::map<std::string, store::ModuleRef> out;
    for (const store::ModuleRef& r : mods) out[names.at(r.slot_idx)] = r;
    return out;
  }

  TempDir tmp_;
  std::string dir_;
  std::unique_ptr<store::Store> store_;
  std::string model_;
  std::vector<int32_t> tokens_;
  int32_t bos_ = -1;
};

TEST_F(QuantizePipelineTest, LadderFollowsTheRulesAndRuns) {
  const QuantizeResult r =
      Run(Request({GroupIntId(4, 64), GroupIntId(2, 64), ToId(QType::kQ4_K), ToId(QType::kQ8_0)}));
  ASSERT_EQ(r.qms.size(), 4u);
  EXPECT_EQ(r.qms[0].label, "int4-g64");
  EXPECT_EQ(r.qms[2].label, "Q4_K");

  const auto int4 = Modules("int4-g64");
  EXPECT_EQ(int4.at("blk.0.ffn_down.weight").desc.qtype, GroupIntId(4, 64));  // 172 wide
  EXPECT_EQ(int4.at("blk.3.attn_q.weight").desc.qtype, GroupIntId(4, 64));
  EXPECT_EQ(int4.at("token_embd.weight").desc.qtype, GroupIntId(8, 64));
  EXPECT_EQ(int4.at("output.weight").desc.qtype, GroupIntId(8, 64));
  EXPECT_EQ(int4.at("blk.0.attn_norm.weight").desc.qtype, ToId(QType::kF32));
  // F32 norms are the source's modules, stored once.
  EXPECT_EQ(int4.at("output_norm.weight").key, Modules("F32").at("output_norm.weight").key);

  // Q4_K cannot hold 64- or 172-wide rows: llama.cpp's fallbacks, said so.
  const auto q4k = Modules("Q4_K");
  EXPECT_EQ(q4k.at("blk.0.attn_q.weight").desc.qtype, ToId(QType::kQ5_0));
  EXPECT_EQ(q4k.at("blk.0.ffn_down.weight").desc.qtype, ToId(QType::kF16));
  EXPECT_EQ(q4k.at("token_embd.weight").desc.qtype, ToId(QType::kQ8_0));
  EXPECT_EQ(Modules("Q8_0").at("blk.1.ffn_down.weight").desc.qtype, ToId(QType::kF16));
  bool noted = false;
  for (const TensorResult& t : r.qms[2].tensors) {
    if (t.tensor == "blk.0.ffn_down.weight") {
      noted = t.note.find("172 columns") != std::string::npos &&
              t.note.find("llama.cpp") != std::string::npos;
    }
  }
  EXPECT_TRUE(noted);

  // Sizes: what the index says is what the modules take.
  for (const QmResult& q : r.qms) {
    uint64_t bytes = 0;
    for (const auto& [name, m] : Modules(q.label)) bytes += m.raw_bytes;
    EXPECT_EQ(bytes, q.weight_bytes) << q.label;
    EXPECT_GT(q.bits_per_weight, 0);
  }
  Result<store::QmInfo> info = store_->FindQm(store_->FindModel(model_)->id, "int4-g64");
  EXPECT_EQ(info->origin, "quantize");
  EXPECT_NE(store::ToJson(info->params).find("\"method\":\"rtn\""), std::string::npos)
      << store::ToJson(info->params);

  // They run, and lose quality in order.
  const double f32 = Ppl("F32"), q8 = Ppl("Q8_0"), i4 = Ppl("int4-g64"), i2 = Ppl("int2-g64");
  const double k4 = Ppl("Q4_K");
  std::printf("  ppl on %lld chunks: F32 %.4f Q8_0 %.4f Q4_K %.4f int4-g64 %.4f int2-g64 %.4f\n",
              static_cast<long long>(kEvalChunks), f32, q8, k4, i4, i2);
  EXPECT_LT(q8, f32 * 1.01);
  EXPECT_LT(k4, f32 * 1.05);
  EXPECT_LT(f32, i4);
  EXPECT_LT(i4, i2);
}

TEST_F(QuantizePipelineTest, GptqBeatsRtnAtThreeAndTwoBits) {
  const std::vector<uint32_t> types = {GroupIntId(3, 64), GroupIntId(2, 64)};
  Run(Request(types, Method::kRtn));
  const QuantizeResult g = Run(Request(types, Method::kGptq));
  EXPECT_EQ(g.calib_tokens, 16 * 256);
  ASSERT_EQ(g.qms.size(), 2u);
  EXPECT_EQ(g.qms[0].label, "int3-g64-gptq");
  for (const TensorResult& t : g.qms[0].tensors) {
    if (t.tensor.find("blk.") == 0 && t.tensor.find("norm") == std::string::npos) {
      EXPECT_EQ(t.method, "gptq") << t.tensor;
      EXPECT_GT(t.output_error, 0) << t.tensor;
    }
  }
  for (const char* bits : {"3", "2"}) {
    const std::string rtn = std::string("int") + bits + "-g64";
    const double p_rtn = Ppl(rtn), p_gptq = Ppl(rtn + "-gptq");
    std::printf("  %s: RTN %.4f GPTQ %.4f\n", rtn.c_str(), p_rtn, p_gptq);
    EXPECT_LT(p_gptq, p_rtn) << rtn;
  }
}

TEST_F(QuantizePipelineTest, SameCommandTwiceStoresTheSameModules) {
  QuantizeRequest req = Request({GroupIntId(3, 32), ToId(QType::kQ4_K)}, Method::kGptq);
  req.calib_chunks = 4;
  req.calib_ctx = 64;
  const QuantizeResult first = Run(req);
  ASSERT_EQ(first.qms.size(), 2u);
  EXPECT_FALSE(first.qms[0].nothing_to_do);
  const std::string before = fqpack::testing::SnapshotStore(dir_);
  req.threads = 1;  // the bytes must not depend on it
  const QuantizeResult again = Run(req);
  for (const QmResult& q : again.qms) {
    EXPECT_TRUE(q.nothing_to_do) << q.label;
    EXPECT_EQ(q.new_modules, 0u) << q.label;
    EXPECT_EQ(q.qm_id, first.qms[&q - again.qms.data()].qm_id);
  }
  EXPECT_EQ(fqpack::testing::SnapshotStore(dir_), before);

  // Another store, one thread: the same module keys.
  TempDir other;
  const std::string other_dir = other.Join("store");
  ASSERT_TRUE(store::Store::Init(Env::Default(), other_dir).ok());
  std::unique_ptr<store::Store> other_store =
      std::move(store::Store::Open(Env::Default(), other_dir).value());
  ASSERT_TRUE(store::ImportGguf(other_store.get(),
                                TestDataPath("models/stories260K/stories260K-F32.gguf"), {})
                  .ok());
  ASSERT_TRUE(QuantizeModel(other_store.get(), req).ok());
  const int64_t other_model = other_store->FindModel(model_)->id;
  for (const QmResult& q : first.qms) {
    const auto mine = Modules(q.label);
    const std::vector<store::ModuleRef> theirs =
        other_store->QmModules(other_store->FindQm(other_model, q.label)->id).value();
    for (const store::ModuleRef& m : theirs) {
      bool same = false;
      for (const auto& [name, ref] : mine)
        same = same || (ref.slot_idx == m.slot_idx && ref.key == m.key);
      EXPECT_TRUE(same) << q.label << " slot " << m.slot_idx;
    }
  }
}

TEST_F(QuantizePipelineTest, BadInputIsAClearErrorAndChangesNothing) {
  Run(Request({ToId(QType::kQ8_0)}));
  const std::string before = fqpack::testing::SnapshotStore(dir_);
  const auto fails = [&](const QuantizeRequest& req, const std::string& says) -> Status {
    Result<QuantizeResult> r = QuantizeModel(store_.get(), req);
    EXPECT_FALSE(r.ok()) << says;
    if (r.ok()) return Status::OK();
    EXPECT_NE(r.status().message().find(says), std::string::npos) << r.status().ToString();
    EXPECT_EQ(fqpack::testing::SnapshotStore(dir_), before) << says;
    return r.status();
  };
  QuantizeRequest from_q8 = Request({GroupIntId(4, 64)});
  from_q8.from = "Q8_0";
  EXPECT_TRUE(fails(from_q8, "is not a float checkpoint: tensor 'token_embd.weight' is Q8_0")
                  .IsInvalidArgument());
  QuantizeRequest unknown = Request({GroupIntId(4, 64)});
  unknown.from = "F64";
  EXPECT_TRUE(fails(unknown, "has no QM 'F64'").IsNotFound());

  QuantizeRequest short_calib = Request({GroupIntId(4, 64)}, Method::kGptq);
  short_calib.calib_text = "Once upon a time there was a cat. The cat sat on a mat.";
  EXPECT_TRUE(fails(short_calib, "GPTQ needs at least 172").IsInvalidArgument());
  QuantizeRequest no_calib = Request({GroupIntId(4, 64)}, Method::kGptq);
  no_calib.calib_text.clear();
  EXPECT_TRUE(fails(no_calib, "needs calibration text").IsInvalidArgument());

  QuantizeRequest clash = Request({GroupIntId(4, 64)});
  clash.targets[0].label = "F32";
  EXPECT_TRUE(fails(clash, "already has a QM labelled 'F32'").IsInvalidArgument());
  QuantizeRequest other_params = Request({ToId(QType::kQ8_0)});
  other_params.embed_bits = 16;  // Q8_0 exists, made with --embed-bits 8
  EXPECT_TRUE(fails(other_params, "already has a QM labelled 'Q8_0'").IsInvalidArgument());
  EXPECT_TRUE(
      fails(Request({ToId(QType::kIQ2_XXS)}), "cannot quantize to IQ2_XXS").IsInvalidArgument());
  QuantizeRequest embed = Request({GroupIntId(4, 64)});
  embed.embed_bits = 7;
  EXPECT_TRUE(fails(embed, "--embed-bits 7").IsInvalidArgument());
  EXPECT_TRUE(fails(Request({}), "no target types").IsInvalidArgument());

  for (int bits : {1, 7, 9}) {
    Result<uint32_t> t = GroupIntTarget(bits, 64);
    EXPECT_TRUE(t.status().IsInvalidArgument());
    EXPECT_NE(t.status().message().find("bit width " + std::to_string(bits)), std::string::npos);
  }
  EXPECT_NE(GroupIntTarget(4, 48).status().message().find("group size 48"), std::string::npos);
  EXPECT_EQ(*GroupIntTarget(3, 128), GroupIntId(3, 128));
}

TEST_F(QuantizePipelineTest, CommandLine) {
  const std::string fq = fqpack::testing::FqpackBinary() + " --store " + dir_;
  std::string out;
  EXPECT_EQ(fqpack::testing::RunCommand(fq + " quantize --bits 7 2>&1", &out), 2) << out;
  EXPECT_NE(out.find("bit width 7"), std::string::npos) << out;
  EXPECT_EQ(fqpack::testing::RunCommand(fq + " quantize --bits 4 --group 48 2>&1", &out), 2);
  EXPECT_NE(out.find("group size 48"), std::string::npos) << out;
  EXPECT_EQ(fqpack::testing::RunCommand(fq + " quantize --bits 4,3 --label x 2>&1", &out), 2);
  EXPECT_NE(out.find("--label names one QM"), std::string::npos) << out;
  ASSERT_EQ(fqpack::testing::RunCommand(fq + " -q quantize --bits 4 --label mine 2>&1", &out), 0)
      << out;
  EXPECT_NE(out.find("blk.0.ffn_down.weight"), std::string::npos) << out;  // the summary table
  ASSERT_EQ(fqpack::testing::RunCommand(fq + " --json ls", &out), 0);
  EXPECT_NE(out.find("\"label\": \"mine\""), std::string::npos) << out;
  EXPECT_EQ(fqpack::testing::RunCommand(fq + " -q quantize --bits 4 --label mine 2>&1", &out), 0);
  EXPECT_NE(out.find("nothing to do"), std::string::npos) << out;
}

}  // namespace
}  // namespace fqpack::quantize
