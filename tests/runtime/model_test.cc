#include "runtime/model.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "schema/half.h"
#include "tests/support/tiny_llama.h"

namespace fqpack::runtime {
namespace {

using testing::MakeTinyLlama;
using testing::TinyLlamaSpec;

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

store::ManifestSlot* FindSlot(store::ModelManifest* m, const std::string& name) {
  for (auto& s : m->slots) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

TEST(Model, ReadsHyperParametersFromTheMetadata) {
  auto tiny = MakeTinyLlama({.n_vocab = 50,
                             .n_embd = 48,
                             .n_layer = 3,
                             .n_ff = 40,
                             .n_head = 6,
                             .n_head_kv = 2,
                             .n_rot = 4,
                             .n_ctx_train = 96,
                             .rope_freq_base = 5e5f,
                             .rms_eps = 1e-6f});
  Result<std::unique_ptr<Model>> m = Model::Load(tiny->manifest, &tiny->source);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const Hparams& hp = (*m)->hparams();
  EXPECT_EQ(hp.n_vocab, 50);
  EXPECT_EQ(hp.n_embd, 48);
  EXPECT_EQ(hp.n_layer, 3);
  EXPECT_EQ(hp.n_ff, 40);
  EXPECT_EQ(hp.n_head, 6);
  EXPECT_EQ(hp.n_head_kv, 2);
  EXPECT_EQ(hp.head_dim(), 8);
  EXPECT_EQ(hp.n_embd_kv(), 16);
  EXPECT_EQ(hp.n_rot, 4);
  EXPECT_EQ(hp.n_ctx_train, 96);
  EXPECT_EQ(hp.rope_freq_base, 5e5f);
  EXPECT_EQ(hp.rms_eps, 1e-6f);
  EXPECT_EQ((*m)->n_slots(), static_cast<int>(tiny->manifest.slots.size()));
  EXPECT_EQ((*m)->weight_bytes(), tiny->manifest.weight_bytes());
  EXPECT_EQ(tiny->source.loads(), (*m)->n_slots());
  // Norm vectors are kept as floats.
  EXPECT_EQ((*m)->layer(2).ffn_norm->values, tiny->weights.at("blk.2.ffn_norm.weight"));
  EXPECT_EQ(&(*m)->output(), (*m)->slot((*m)->FindSlot("output.weight")));
}

TEST(Model, DefaultsFollowLlamaCpp) {
  TinyLlamaSpec spec;
  gguf::Metadata md = testing::TinyLlamaMetadata(spec);
  md.entries.erase(std::remove_if(md.entries.begin(), md.entries.end(),
                                  [](const gguf::KeyValue& kv) {
                                    return kv.key == "llama.attention.head_count_kv" ||
                                           kv.key == "llama.rope.dimension_count";
                                  }),
                   md.entries.end());
  // Without head_count_kv every head has its own K/V, so K and V are square.
  spec.n_head_kv = spec.n_head;
  auto mha = MakeTinyLlama(spec);
  testing::SetManifestMetadata(&mha->manifest, md);
  Result<Hparams> hp = Model::Validate(mha->manifest);
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ(hp->n_head_kv, hp->n_head);
  EXPECT_EQ(hp->n_rot, hp->head_dim());
  EXPECT_EQ(hp->rope_freq_base, 10000.0f);
}

TEST(Model, TiedOutputUsesTheEmbedding) {
  auto tiny = MakeTinyLlama({.tied_output = true});
  Result<std::unique_ptr<Model>> m = Model::Load(tiny->manifest, &tiny->source);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(&(*m)->output(), &(*m)->token_embd());
}

TEST(Model, RejectsOtherArchitectures) {
  TinyLlamaSpec spec;
  auto tiny = MakeTinyLlama(spec);
  gguf::Metadata md = testing::TinyLlamaMetadata(spec);
  md.Set("general.architecture", gguf::Value::String("gpt2"));
  testing::SetManifestMetadata(&tiny->manifest, md);
  Status s = Model::Load(tiny->manifest, &tiny->source).status();
  EXPECT_TRUE(s.IsNotSupported()) << s.ToString();
  EXPECT_TRUE(Contains(s, "'gpt2'")) << s.message();
}

TEST(Model, RejectsInconsistentHyperParameters) {
  struct Case {
    std::string key;
    gguf::Value value;
    std::string message;
  };
  using gguf::Value;
  using gguf::ValueType;
  const std::vector<Case> cases = {
      {"llama.attention.head_count", Value::Uint(ValueType::kU32, 5),
       "does not divide embedding_length"},
      {"llama.attention.head_count_kv", Value::Uint(ValueType::kU32, 3),
       "does not divide head_count"},
      {"llama.rope.dimension_count", Value::Uint(ValueType::kU32, 7), "must be even"},
      {"llama.rope.dimension_count", Value::Uint(ValueType::kU32, 10), "at most the head size"},
      {"llama.block_count", Value::Uint(ValueType::kU32, 0), "block_count = 0 is out of range"},
      {"llama.embedding_length", Value::String("64"), "llama.embedding_length"},
  };
  for (const Case& c : cases) {
    TinyLlamaSpec spec;
    auto tiny = MakeTinyLlama(spec);
    gguf::Metadata md = testing::TinyLlamaMetadata(spec);
    md.Set(c.key, c.value);
    testing::SetManifestMetadata(&tiny->manifest, md);
    Status s = Model::Validate(tiny->manifest).status();
    EXPECT_TRUE(s.IsInvalidArgument()) << c.key << ": " << s.ToString();
    EXPECT_TRUE(Contains(s, c.message)) << c.key << ": " << s.message();
  }
  TinyLlamaSpec spec;
  auto tiny = MakeTinyLlama(spec);
  gguf::Metadata md = testing::TinyLlamaMetadata(spec);
  md.entries.erase(std::remove_if(md.entries.begin(), md.entries.end(),
                                  [](const gguf::KeyValue& kv) {
                                    return kv.key == "llama.attention.layer_norm_rms_epsilon";
                                  }),
                   md.entries.end());
  testing::SetManifestMetadata(&tiny->manifest, md);
  Status s = Model::Validate(tiny->manifest).status();
  EXPECT_TRUE(Contains(s, "llama.attention.layer_norm_rms_epsilon")) << s.ToString();
}

TEST(Model, NamesAMissingTensor) {
  auto tiny = MakeTinyLlama({});
  auto& slots = tiny->manifest.slots;
  slots.erase(std::find_if(slots.begin(), slots.end(),
                           [](const auto& s) { return s.name == "blk.1.ffn_up.weight"; }));
  Status s = Model::Load(tiny->manifest, &tiny->source).status();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_TRUE(Contains(s, "tensor 'blk.1.ffn_up.weight' is missing (expected shape 32x48)"))
      << s.message();
  EXPECT_EQ(tiny->source.loads(), 0);  // validated before anything was read
}

TEST(Model, NamesAWrongShapeWithExpectedAndActual) {
  auto tiny = MakeTinyLlama({});
  FindSlot(&tiny->manifest, "blk.0.attn_k.weight")->desc.ne = {32, 32, 1, 1};
  Status s = Model::Load(tiny->manifest, &tiny->source).status();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_TRUE(Contains(s, "tensor 'blk.0.attn_k.weight' has shape 32x32, expected 32x16"))
      << s.message();
}

TEST(Model, NamesAnUnexecutableType) {
  auto tiny = MakeTinyLlama({});
  FindSlot(&tiny->manifest, "blk.1.attn_v.weight")->desc.qtype = ToId(QType::kI8);
  Status s = Model::Load(tiny->manifest, &tiny->source).status();
  EXPECT_TRUE(s.IsNotSupported()) << s.ToString();
  EXPECT_TRUE(Contains(s, "blk.1.attn_v.weight")) << s.message();
  EXPECT_TRUE(Contains(s, "I8")) << s.message();
}

TEST(Model, RejectsTensorsTheGraphDoesNotUse) {
  auto tiny = MakeTinyLlama({});
  store::ManifestSlot extra = tiny->manifest.slots.back();
  extra.name = "blk.0.attn_q.bias";
  extra.idx = 999;
  tiny->manifest.slots.push_back(extra);
  Status s = Model::Validate(tiny->manifest).status();
  EXPECT_TRUE(s.IsNotSupported()) << s.ToString();
  EXPECT_TRUE(Contains(s, "blk.0.attn_q.bias")) << s.message();
}

TEST(Model, ReportsModulesTheSourceCannotGive) {
  auto tiny = MakeTinyLlama({});
  FindSlot(&tiny->manifest, "blk.0.ffn_down.weight")->key.bytes[0] ^= 1;
  Status s = Model::Load(tiny->manifest, &tiny->source).status();
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_TRUE(Contains(s, "blk.0.ffn_down.weight")) << s.message();
}

TEST(Model, SetSlotSwapsOneModuleAndValidatesIt) {
  auto tiny = MakeTinyLlama({});
  Result<std::unique_ptr<Model>> loaded = Model::Load(tiny->manifest, &tiny->source);
  ASSERT_TRUE(loaded.ok());
  Model& m = **loaded;
  const int idx = m.FindSlot("blk.1.ffn_gate.weight");
  ASSERT_GE(idx, 0);
  const SlotWeights* before = m.slot(idx);
  const uint64_t bytes_before = m.weight_bytes();
  const std::vector<float>& values = tiny->weights.at("blk.1.ffn_gate.weight");
  Bytes f16;
  for (float v : values) PutU16(&f16, F32ToFp16(v));
  store::ModuleDesc desc = before->desc;
  desc.qtype = ToId(QType::kF16);

  ASSERT_TRUE(m.SetSlot(idx, store::ModuleData::Owned(f16), desc).ok());
  const SlotWeights* after = m.slot(idx);
  EXPECT_EQ(after, before);  // the record stays, its contents change
  EXPECT_EQ(after->view.type, ToId(QType::kF16));
  EXPECT_EQ(after->view.row_bytes, 64u);
  EXPECT_EQ(m.layer(1).ffn_gate, after);
  EXPECT_EQ(m.weight_bytes(), bytes_before - values.size() * 2);

  store::ModuleDesc wrong_shape = desc;
  wrong_shape.ne = {48, 32, 1, 1};
  Status s = m.SetSlot(idx, store::ModuleData::Owned(f16), wrong_shape);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_TRUE(
      Contains(s, "slot 'blk.1.ffn_gate.weight': module has shape 48x32, the slot takes 32x48"))
      << s.message();
  s = m.SetSlot(idx, store::ModuleData::Owned(Bytes(10)), desc);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_TRUE(Contains(s, "takes 3072 bytes, got 10")) << s.message();
  store::ModuleDesc bad_type = desc;
  bad_type.qtype = ToId(QType::kI8);
  EXPECT_TRUE(m.SetSlot(idx, store::ModuleData::Owned(f16), bad_type).IsNotSupported());
  EXPECT_TRUE(m.SetSlot(12345, store::ModuleData::Owned(f16), desc).IsInvalidArgument());
  EXPECT_EQ(m.slot(idx)->view.type, ToId(QType::kF16));  // failed swaps changed nothing

  // A norm slot: its float values follow the new module.
  const int norm = m.FindSlot("output_norm.weight");
  store::ModuleDesc nd = m.slot(norm)->desc;
  Bytes ones;
  for (int i = 0; i < 32; ++i) PutF32(&ones, 1.0f);
  ASSERT_TRUE(m.SetSlot(norm, store::ModuleData::Owned(ones), nd).ok());
  EXPECT_EQ(m.output_norm().values, std::vector<float>(32, 1.0f));
}

}  // namespace
}  // namespace fqpack::runtime
