// Writes the binary seed files of the fuzz corpora (the text seeds are
// written by hand):
//
//   make_seeds [DIR]     DIR defaults to tests/fuzz/corpus of the source tree
//
// fuzz_gguf, fuzz_gguf_import: a one-block llama of 32-wide Q8_0 matrices
//   with an 8-token vocabulary; a file holding a value of every metadata
//   type; a version 2 file with one tensor and 64-byte alignment; a file
//   whose two tensors hold the same bytes; a file with non-zero padding; a
//   vocabulary without tensors.
// fuzz_pack: that llama as F16 and as Q8_0, all weights zero, with an
//   ensemble walking from one to the other and a dynamic precision model,
//   packed with --codec auto (zero weights: zstd); and the Q8_0 one with
//   random weights alone, --codec raw. Both indexes are rewritten with
//   512-byte pages (RepageIndex) to keep the files small.
// fuzz_tokenizer: the vocabulary-file mode's seeds (0x01 + TinyVocabGguf(),
//   0x01 + TinyBpeVocabGguf()).
//
// The files change with every run (random temp names, timestamps in the
// packs' index); commit them only when the seeds should change.

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "pack/writer.h"
#include "schema/gguf.h"
#include "schema/half.h"
#include "schema/quant_types.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/pack_mutator.h"

namespace fqpack::fuzz {
namespace {

using gguf::Value;
using gguf::ValueType;

// A WritableFile that appends to memory, so gguf::WriteFile lays out seeds.
class BytesFile : public WritableFile {
 public:
  Status Append(ByteSpan data) override {
    bytes_.insert(bytes_.end(), data.begin(), data.end());
    return Status::OK();
  }
  Status Sync() override { return Status::OK(); }
  Status Close() override { return Status::OK(); }
  const std::string& path() const override { return path_; }
  Bytes& bytes() { return bytes_; }

 private:
  std::string path_ = "<memory>";
  Bytes bytes_;
};

struct SeedTensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type = 0;
  Bytes data;  // empty: filled by Fill()
};

struct SeedFile {
  uint32_t version = 3;
  gguf::Metadata metadata;
  std::vector<SeedTensor> tensors;
};

enum class FillKind { kRandom, kZero };

// Bytes of the right size for a tensor: small random F32/F16 values, or
// Q8_0 blocks with scale 1/64 and random quants; or all zeros.
Bytes Fill(const SeedTensor& t, FillKind kind, std::mt19937* rng) {
  Result<uint64_t> n = TensorBytes(t.type, std::span<const uint64_t>(t.ne.data(), t.ne.size()));
  Bytes b(n.ok() ? *n : 0, 0);
  if (kind == FillKind::kZero) return b;
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  if (t.type == ToId(QType::kF32)) {
    for (size_t i = 0; i + 4 <= b.size(); i += 4)
      EncodeU32(&b[i], std::bit_cast<uint32_t>(1.0f + u(*rng)));
  } else if (t.type == ToId(QType::kF16)) {
    for (size_t i = 0; i + 2 <= b.size(); i += 2) {
      const uint16_t h = F32ToFp16(u(*rng));
      b[i] = static_cast<uint8_t>(h);
      b[i + 1] = static_cast<uint8_t>(h >> 8);
    }
  } else if (t.type == ToId(QType::kQ8_0)) {
    const uint16_t scale = F32ToFp16(1.0f / 64);
    for (size_t i = 0; i + 34 <= b.size(); i += 34) {
      b[i] = static_cast<uint8_t>(scale);
      b[i + 1] = static_cast<uint8_t>(scale >> 8);
      for (size_t k = 2; k < 34; ++k) b[i + k] = static_cast<uint8_t>((*rng)() % 64 - 32);
    }
  } else {
    for (uint8_t& x : b) x = static_cast<uint8_t>((*rng)());
  }
  return b;
}

Bytes Encode(SeedFile f, FillKind kind, uint32_t seed, uint64_t alignment = 32) {
  std::mt19937 rng(seed);
  gguf::FileSpec spec;
  spec.version = f.version;
  spec.alignment = alignment;
  spec.n_kv = f.metadata.entries.size();
  spec.kv = gguf::EncodeMetadata(f.metadata);
  for (SeedTensor& t : f.tensors) {
    gguf::TensorInfo ti;
    ti.name = t.name;
    ti.n_dims = static_cast<uint32_t>(t.ne.size());
    for (size_t d = 0; d < t.ne.size(); ++d) ti.ne[d] = t.ne[d];
    ti.type = t.type;
    spec.tensors.push_back(ti);
    if (t.data.empty()) t.data = Fill(t, kind, &rng);
  }
  Status s = gguf::AssignOffsets(&spec);
  if (!s.ok()) Fail(s.ToString());
  BytesFile out;
  s = gguf::WriteFile(&out, spec,
                      [&](size_t i) -> Result<ByteSpan> { return ByteSpan(f.tensors[i].data); });
  if (!s.ok()) Fail(s.ToString());
  return std::move(out.bytes());
}

// A one-block llama, 32 wide, with an 8-token vocabulary: the smallest
// model the runtime accepts.
SeedFile TinyLlama(uint32_t weight_type) {
  SeedFile f;
  gguf::Metadata& md = f.metadata;
  md.Set("general.architecture", Value::String("llama"));
  md.Set("general.name", Value::String("tiny"));
  md.Set("llama.context_length", Value::Uint(ValueType::kU32, 64));
  md.Set("llama.embedding_length", Value::Uint(ValueType::kU32, 32));
  md.Set("llama.feed_forward_length", Value::Uint(ValueType::kU32, 32));
  md.Set("llama.block_count", Value::Uint(ValueType::kU32, 1));
  md.Set("llama.attention.head_count", Value::Uint(ValueType::kU32, 2));
  md.Set("llama.attention.head_count_kv", Value::Uint(ValueType::kU32, 1));
  md.Set("llama.rope.dimension_count", Value::Uint(ValueType::kU32, 16));
  md.Set("llama.attention.layer_norm_rms_epsilon", Value::Float(ValueType::kF32, 1e-5));
  std::vector<Value> tokens, scores, types;
  const std::string sp = "\xE2\x96\x81";  // U+2581, SentencePiece's word start
  const std::string kTokens[] = {"<unk>", "<s>", "</s>", sp, "a", "b", sp + "a", "ab"};
  const int32_t kTypes[] = {2, 3, 3, 1, 1, 1, 1, 1};
  for (size_t i = 0; i < std::size(kTokens); ++i) {
    tokens.push_back(Value::String(kTokens[i]));
    scores.push_back(Value::Float(ValueType::kF32, -static_cast<double>(i)));
    types.push_back(Value::Int(ValueType::kI32, kTypes[i]));
  }
  md.Set("tokenizer.ggml.model", Value::String("llama"));
  md.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, tokens));
  md.Set("tokenizer.ggml.scores", Value::Array(ValueType::kF32, scores));
  md.Set("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, types));
  md.Set("tokenizer.ggml.bos_token_id", Value::Uint(ValueType::kU32, 1));
  md.Set("tokenizer.ggml.eos_token_id", Value::Uint(ValueType::kU32, 2));
  const uint32_t f32 = ToId(QType::kF32);
  const uint64_t e = 32, kv = 16, ff = 32, vocab = std::size(kTokens);
  f.tensors = {
      {"token_embd.weight", {e, vocab}, weight_type, {}},
      {"output_norm.weight", {e}, f32, {}},
      {"output.weight", {e, vocab}, weight_type, {}},
      {"blk.0.attn_norm.weight", {e}, f32, {}},
      {"blk.0.attn_q.weight", {e, e}, weight_type, {}},
      {"blk.0.attn_k.weight", {e, kv}, weight_type, {}},
      {"blk.0.attn_v.weight", {e, kv}, weight_type, {}},
      {"blk.0.attn_output.weight", {e, e}, weight_type, {}},
      {"blk.0.ffn_norm.weight", {e}, f32, {}},
      {"blk.0.ffn_gate.weight", {e, ff}, weight_type, {}},
      {"blk.0.ffn_up.weight", {e, ff}, weight_type, {}},
      {"blk.0.ffn_down.weight", {ff, e}, weight_type, {}},
  };
  return f;
}

// One key of every value type, arrays of scalars, strings and arrays.
SeedFile EveryValueType() {
  SeedFile f;
  gguf::Metadata& md = f.metadata;
  md.Set("general.architecture", Value::String("llama"));
  md.Set("general.alignment", Value::Uint(ValueType::kU32, 32));
  md.Set("t.u8", Value::Uint(ValueType::kU8, 200));
  md.Set("t.i8", Value::Int(ValueType::kI8, -100));
  md.Set("t.u16", Value::Uint(ValueType::kU16, 60000));
  md.Set("t.i16", Value::Int(ValueType::kI16, -30000));
  md.Set("t.u32", Value::Uint(ValueType::kU32, 4000000000u));
  md.Set("t.i32", Value::Int(ValueType::kI32, -2000000000));
  md.Set("t.f32", Value::Float(ValueType::kF32, 0.25));
  md.Set("t.bool", Value::Bool(true));
  md.Set("t.string", Value::String("caf\xC3\xA9"));
  md.Set("t.u64", Value::Uint(ValueType::kU64, ~uint64_t{0}));
  md.Set("t.i64", Value::Int(ValueType::kI64, INT64_MIN));
  md.Set("t.f64", Value::Float(ValueType::kF64, -1e300));
  md.Set("t.ints", Value::Array(ValueType::kI32,
                                {Value::Int(ValueType::kI32, -1), Value::Int(ValueType::kI32, 7)}));
  md.Set("t.floats", Value::Array(ValueType::kF32, {Value::Float(ValueType::kF32, 1.5)}));
  md.Set("t.bools", Value::Array(ValueType::kBool, {Value::Bool(false), Value::Bool(true)}));
  md.Set("t.strings", Value::Array(ValueType::kString, {Value::String("x"), Value::String("")}));
  md.Set("t.nested", Value::Array(ValueType::kArray,
                                  {Value::Array(ValueType::kU8, {Value::Uint(ValueType::kU8, 1)}),
                                   Value::Array(ValueType::kString, {Value::String("y")})}));
  md.Set("general.file_type", Value::Uint(ValueType::kU32, 1));
  f.tensors = {{"a.weight", {4}, ToId(QType::kF32), {}},
               {"b.weight", {8, 2}, ToId(QType::kF16), {}}};
  return f;
}

void Write(const std::string& dir, const std::string& target, const std::string& name,
           ByteSpan bytes) {
  const std::string d = JoinPath(dir, target);
  std::filesystem::create_directories(d);
  const std::string path = JoinPath(d, name);
  Status s = WriteScratchFile(path, bytes);
  if (!s.ok()) Fail(s.ToString());
  std::printf("%8zu %s\n", bytes.size(), path.c_str());
}

template <typename T>
T Must(Result<T> r) {
  if (!r.ok()) Fail(r.status().ToString());
  return std::move(*r);
}

void Must(const Status& s) {
  if (!s.ok()) Fail(s.ToString());
}

// A new store in the scratch directory holding the given GGUF files, named
// "<model>-<label>" so that the names give model and label.
std::unique_ptr<store::Store> StoreWith(const std::string& name,
                                        const std::vector<std::pair<std::string, Bytes>>& files) {
  const std::string dir = JoinPath(ScratchDir(), name);
  Must(store::Store::Init(Env::Default(), dir));
  auto st = Must(store::Store::Open(Env::Default(), dir));
  for (const auto& [file, bytes] : files) {
    const std::string path = JoinPath(ScratchDir(), file);
    Must(WriteScratchFile(path, bytes));
    store::ImportOptions opts;
    opts.threads = 1;
    Must(store::ImportGguf(st.get(), path, opts).status());
  }
  return st;
}

// Writes the pack, then puts its index in 512-byte pages.
Bytes SmallPack(store::Store* st, pack::Codec codec) {
  const std::string path = JoinPath(ScratchDir(), "seed.fqpack");
  pack::PackOptions opts;
  opts.codec = codec;
  Must(pack::WritePack(st, opts, path).status());
  const Bytes file = Must(ReadFileBytes(Env::Default(), path));
  const std::optional<PackParts> parts = SplitPack(file);
  if (!parts) Fail("the writer's pack does not split");
  const Bytes index = Must(RepageIndex(parts->index, 512));
  return JoinPack(parts->payloads, parts->gap, index);
}

// The F16 and Q8_0 QMs of the zero llama, an ensemble that lowers one
// matrix per step, and a dynamic precision model between the two.
Bytes EnsemblePack() {
  auto st =
      StoreWith("ensemble-store",
                {{"tiny-F16.gguf", Encode(TinyLlama(ToId(QType::kF16)), FillKind::kZero, 1)},
                 {"tiny-Q8_0.gguf", Encode(TinyLlama(ToId(QType::kQ8_0)), FillKind::kZero, 1)}});
  const store::ModelInfo model = Must(st->FindModel("tiny"));
  const store::QmInfo up = Must(st->FindQm(model.id, "F16"));
  const store::QmInfo low = Must(st->FindQm(model.id, "Q8_0"));
  const std::vector<store::ModuleRef> up_mods = Must(st->QmModules(up.id));
  const std::vector<store::ModuleRef> low_mods = Must(st->QmModules(low.id));
  store::NewEnsemble e;
  e.model_id = model.id;
  e.name = "walk";
  e.up_qm_id = up.id;
  e.low_qm_id = low.id;
  e.library = {"F16", "Q8_0"};
  e.params.Set("stem", int64_t{1})
      .Set("branch", int64_t{2})
      .Set("metric", std::string("kl"))
      .Set("tokens", int64_t{64})
      .Set("n_ctx", int64_t{32})
      .Set("include_embed", false);
  std::vector<store::NewEqm> eqms;
  std::vector<bool> lowered(up_mods.size(), false);
  for (size_t step = 0;; ++step) {
    store::NewEqm q;
    q.step = static_cast<int>(step);
    for (size_t i = 0; i < up_mods.size(); ++i) {
      const store::ModuleRef& m = lowered[i] ? low_mods[i] : up_mods[i];
      q.modules.push_back(m.key);
      q.source_qm_ids.push_back(lowered[i] ? low.id : up.id);
      q.footprint += m.raw_bytes;
    }
    q.calib_metric = 0.01 * static_cast<double>(step);
    q.calib_kl = q.calib_metric;
    eqms.push_back(q);
    // The next slot whose two modules differ (the norms are shared).
    size_t next = 0;
    while (next < up_mods.size() && (lowered[next] || up_mods[next].key == low_mods[next].key))
      ++next;
    if (next == up_mods.size()) break;
    lowered[next] = true;
  }
  Must(st->AddEnsemble(e, eqms).status());

  store::DynamicModelInfo d;
  d.model_id = model.id;
  d.hi_qm_id = up.id;
  d.lo_qm_id = low.id;
  d.n_weights = 0;
  for (const store::ModuleRef& m : up_mods) d.n_weights += m.desc.n_elements();
  d.hi_bytes = up.weight_bytes;
  d.lo_bytes = low.weight_bytes;
  d.target_bits = 12;
  d.calib_bits = 11.5;
  d.calib_tokens = 4;
  d.calib_starts = 1;
  d.entropies = {0.5, 1.0, 2.0};
  d.params.Set("n_ctx", int64_t{32}).Set("tokens", int64_t{4}).Set("metric", std::string("kl"));
  d.units = {{0, "blk.0", 0, 0.25, 1000, 1.0}, {1, "output.weight", -1, 0.125, 100, INFINITY}};
  Must(st->PutDynamicModel(d).status());
  return SmallPack(st.get(), pack::Codec::kAuto);
}

Bytes QmRawPack() {
  auto st =
      StoreWith("raw-store",
                {{"tiny-Q8_0.gguf", Encode(TinyLlama(ToId(QType::kQ8_0)), FillKind::kRandom, 2)}});
  return SmallPack(st.get(), pack::Codec::kRaw);
}

// Two tensors with the same bytes: the second is stored once.
SeedFile SharedBytes() {
  SeedFile f;
  f.metadata.Set("general.architecture", Value::String("llama"));
  Bytes same(64, 0x3c);
  f.tensors = {{"a.weight", {16, 2}, ToId(QType::kF16), same},
               {"b.weight", {16, 2}, ToId(QType::kF16), same}};
  return f;
}

}  // namespace
}  // namespace fqpack::fuzz

int main(int argc, char** argv) {
  using namespace fqpack;
  using namespace fqpack::fuzz;
  const std::string dir = argc > 1 ? argv[1] : FQ_FUZZ_SOURCE_DIR "/corpus";
  const Bytes llama = Encode(TinyLlama(ToId(QType::kQ8_0)), FillKind::kRandom, 3);
  const Bytes every = Encode(EveryValueType(), FillKind::kRandom, 4);
  SeedFile v2;
  v2.version = 2;
  v2.metadata.Set("general.alignment", gguf::Value::Uint(gguf::ValueType::kU32, 64));
  v2.tensors = {{"x", {3}, ToId(QType::kF32), {}}};
  // A last tensor of 12 bytes, so that the file ends in 20 bytes of padding.
  SeedFile dirty = SharedBytes();
  dirty.tensors.push_back({"c.weight", {3}, ToId(QType::kF32), {}});
  Bytes padded = Encode(dirty, FillKind::kRandom, 5);
  padded.back() = 0x55;
  for (const char* target : {"fuzz_gguf", "fuzz_gguf_import"}) {
    Write(dir, target, "tiny-llama-q8_0", llama);
    Write(dir, target, "every-value-type", every);
    Write(dir, target, "v2-align64", Encode(v2, FillKind::kRandom, 6, 64));
  }
  Write(dir, "fuzz_gguf", "vocab-only", TinyVocabGguf());
  Write(dir, "fuzz_gguf_import", "shared-bytes", Encode(SharedBytes(), FillKind::kRandom, 5));
  Write(dir, "fuzz_gguf_import", "nonzero-padding", padded);
  Write(dir, "fuzz_pack", "ensemble-zstd", EnsemblePack());
  Write(dir, "fuzz_pack", "qm-raw", QmRawPack());
  Bytes vocab = {1};
  const Bytes tiny_vocab = TinyVocabGguf();
  vocab.insert(vocab.end(), tiny_vocab.begin(), tiny_vocab.end());
  Write(dir, "fuzz_tokenizer", "vocab-file-tiny", vocab);
  Bytes bpe_vocab = {1};
  const Bytes tiny_bpe = TinyBpeVocabGguf();
  bpe_vocab.insert(bpe_vocab.end(), tiny_bpe.begin(), tiny_bpe.end());
  Write(dir, "fuzz_tokenizer", "vocab-file-bpe", bpe_vocab);
  return 0;
}
