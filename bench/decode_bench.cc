// End-to-end speed of the llama forward pass: decode (one token at a time
// against a KV cache) and prompt processing (a batch of tokens), for each
// weight type, on
// - a generated model of TinyLlama-1.1B's shape (n_embd 2048, n_ff 5632,
//   32 heads, 4 KV heads, vocab 32000; 22 layers unless FQ_BENCH_LAYERS says
//   otherwise), its weights random floats put through each type's reference
//   quantizer, and
// - the GGUF files under $FQ_TESTDATA/models (stories260K, tinystories-3M).
//
// Decode reads every weight once per token, so its speed is bounded by
// memory bandwidth: each decode benchmark reports the weight bytes it read
// per second ("weight_GBps") next to memcpy's bandwidth measured in the same
// run ("of_memcpy" = the ratio). Prompt processing is compute-bound.
//
// Environment: FQ_BENCH_LAYERS (default 22), FQ_BENCH_TYPES (comma list,
// default F32,F16,Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,Q3_K,Q2_K), FQ_BENCH_THREADS
// (default: all cores), FQ_TESTDATA.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/llama.h"
#include "runtime/model.h"
#include "runtime/quant/quant.h"
#include "schema/env.h"
#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "store/module_key.h"

namespace fqpack::runtime {
namespace {

constexpr int64_t kPromptTokens = 128;
// Decoding runs from position kPromptTokens up to kDecodeEnd, then starts
// over, so attention works on a context of a few hundred tokens.
constexpr int64_t kDecodeEnd = 384;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == 0 ? fallback : std::atoi(v);
}

ThreadPool& Pool() {
  static ThreadPool pool(EnvInt("FQ_BENCH_THREADS", 0));
  return pool;
}

// Bytes per second memcpy moves between two 256 MiB buffers (each byte read
// once and written once), the best of a few runs.
double MemcpyBandwidth() {
  static const double bw = [] {
    const size_t n = 256u << 20;
    std::vector<uint8_t> a(n, 1), b(n, 2);
    double best = 0;
    for (int i = 0; i < 5; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      std::memcpy(b.data(), a.data(), n);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      benchmark::DoNotOptimize(b.data());
      best = std::max(best, static_cast<double>(n) / s);
    }
    return best;
  }();
  return bw;
}

// Modules kept in memory by key (the generated model).
class MemorySource : public store::ModuleSource {
 public:
  store::ModuleKey Add(const store::ModuleDesc& desc, Bytes bytes) {
    store::ModuleKey key = store::ComputeModuleKey(desc, bytes);
    modules_[key.Hex()] = store::ModuleData::Owned(std::move(bytes));
    return key;
  }
  Result<store::ModuleData> Load(const store::ModuleKey& key) override {
    auto it = modules_.find(key.Hex());
    if (it == modules_.end()) return Status::NotFound(key.Hex());
    return it->second;
  }

 private:
  std::map<std::string, store::ModuleData> modules_;
};

// Tensors of a GGUF file, served straight from its mapping.
class GgufSource : public store::ModuleSource {
 public:
  static Result<std::unique_ptr<GgufSource>> Open(const std::string& path,
                                                  store::ModelManifest* manifest) {
    auto src = std::make_unique<GgufSource>();
    FQ_ASSIGN_OR_RETURN(MappedFile file, Env::Default()->MapFile(path));
    src->file_ = std::make_shared<MappedFile>(std::move(file));
    FQ_ASSIGN_OR_RETURN(gguf::Header h, gguf::ParseFile(src->file_->bytes(), path));
    manifest->model = BaseName(path);
    manifest->label = "gguf";
    manifest->n_kv = h.n_kv;
    const ByteSpan kv = h.KvBytes(src->file_->bytes());
    manifest->metadata.assign(kv.begin(), kv.end());
    for (size_t i = 0; i < h.tensors.size(); ++i) {
      const gguf::TensorInfo& t = h.tensors[i];
      store::ManifestSlot s;
      s.idx = static_cast<int>(i);
      s.name = t.name;
      s.kind = store::SlotKindOf(t.name, &s.layer);
      s.desc.qtype = t.type;
      s.desc.n_dims = t.n_dims;
      s.desc.ne = t.ne;
      const ByteSpan bytes = h.TensorBytes(src->file_->bytes(), i);
      s.key = store::ComputeModuleKey(s.desc, bytes);
      s.bytes = bytes.size();
      src->tensors_[s.key.Hex()] = bytes;
      manifest->slots.push_back(s);
    }
    return src;
  }
  Result<store::ModuleData> Load(const store::ModuleKey& key) override {
    auto it = tensors_.find(key.Hex());
    if (it == tensors_.end()) return Status::NotFound(key.Hex());
    return store::ModuleData::View(it->second, file_);
  }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, ByteSpan> tensors_;
};

// A generated model of TinyLlama-1.1B's shape, every matrix in `type`.
Result<std::unique_ptr<Model>> MakeModel(uint32_t type, int n_layer) {
  const int64_t e = 2048, ff = 5632, n_head = 32, n_head_kv = 4, vocab = 32000;
  const int64_t ekv = e / n_head * n_head_kv;
  gguf::Metadata md;
  using gguf::Value;
  using gguf::ValueType;
  auto u32 = [](int64_t v) { return Value::Uint(ValueType::kU32, static_cast<uint64_t>(v)); };
  md.Set("general.architecture", Value::String("llama"));
  md.Set("llama.context_length", u32(2048));
  md.Set("llama.embedding_length", u32(e));
  md.Set("llama.feed_forward_length", u32(ff));
  md.Set("llama.attention.head_count", u32(n_head));
  md.Set("llama.attention.head_count_kv", u32(n_head_kv));
  md.Set("llama.block_count", u32(n_layer));
  md.Set("llama.rope.dimension_count", u32(e / n_head));
  md.Set("llama.attention.layer_norm_rms_epsilon", Value::Float(ValueType::kF32, 1e-5));
  std::vector<Value> tokens(static_cast<size_t>(vocab), Value::String("t"));
  md.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, tokens));
  store::ModelManifest manifest;
  manifest.model = "tinyllama-shape";
  manifest.label = QTypeName(type);
  manifest.metadata = gguf::EncodeMetadata(md);
  manifest.n_kv = md.entries.size();

  const quant::TypeTraits* traits = quant::FindTraits(type);
  if (traits == nullptr || traits->quantize == nullptr) {
    return Status::NotSupported("no reference quantizer for " + QTypeName(type));
  }
  MemorySource source;
  uint64_t state = 0x9E3779B97F4A7C15ull * (type + 1);
  std::vector<float> row;
  auto add = [&](const std::string& name, int64_t ne0, int64_t ne1, uint32_t t,
                 float scale) -> Status {
    const quant::TypeTraits* tr = quant::FindTraits(t);
    FQ_ASSIGN_OR_RETURN(uint64_t rb, RowBytes(t, static_cast<uint64_t>(ne0)));
    Bytes bytes(static_cast<size_t>(rb * ne1));
    row.resize(static_cast<size_t>(ne0));
    for (int64_t r = 0; r < ne1; ++r) {
      for (float& v : row) {
        // xorshift64*: cheap noise in [-scale, scale).
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        const uint64_t x = state * 0x2545F4914F6CDD1Dull;
        v = scale * (static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f);
      }
      tr->quantize(row.data(), bytes.data() + r * rb, ne0);
    }
    store::ManifestSlot s;
    s.idx = static_cast<int>(manifest.slots.size());
    s.name = name;
    s.kind = store::SlotKindOf(name, &s.layer);
    s.desc.qtype = t;
    s.desc.n_dims = ne1 == 1 ? 1 : 2;
    s.desc.ne = {static_cast<uint64_t>(ne0), static_cast<uint64_t>(ne1), 1, 1};
    s.bytes = bytes.size();
    s.key = source.Add(s.desc, std::move(bytes));
    manifest.slots.push_back(s);
    return Status::OK();
  };
  const uint32_t f32 = ToId(QType::kF32);
  const float w = 0.03f;
  FQ_RETURN_IF_ERROR(add("token_embd.weight", e, vocab, type, 1.0f));
  FQ_RETURN_IF_ERROR(add("output_norm.weight", e, 1, f32, 1.0f));
  FQ_RETURN_IF_ERROR(add("output.weight", e, vocab, type, w));
  for (int l = 0; l < n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    FQ_RETURN_IF_ERROR(add(p + "attn_norm.weight", e, 1, f32, 1.0f));
    FQ_RETURN_IF_ERROR(add(p + "attn_q.weight", e, e, type, w));
    FQ_RETURN_IF_ERROR(add(p + "attn_k.weight", e, ekv, type, w));
    FQ_RETURN_IF_ERROR(add(p + "attn_v.weight", e, ekv, type, w));
    FQ_RETURN_IF_ERROR(add(p + "attn_output.weight", e, e, type, w));
    FQ_RETURN_IF_ERROR(add(p + "ffn_norm.weight", e, 1, f32, 1.0f));
    FQ_RETURN_IF_ERROR(add(p + "ffn_gate.weight", e, ff, type, w));
    FQ_RETURN_IF_ERROR(add(p + "ffn_up.weight", e, ff, type, w));
    FQ_RETURN_IF_ERROR(add(p + "ffn_down.weight", ff, e, type, w));
  }
  return Model::Load(manifest, &source, &Pool());
}

// Weight bytes one decoded token reads: every matrix once, and one row of
// the embedding (norms are negligible and counted whole).
uint64_t BytesPerToken(const Model& m) {
  uint64_t n = 0;
  for (int i = 0; i < m.n_slots(); ++i) {
    const SlotWeights& s = m.slot_at(i);
    n += &s == &m.token_embd() && &m.output() != &s ? s.view.row_bytes : s.data.size();
  }
  return n;
}

std::vector<int32_t> PromptTokens(const Model& m) {
  std::vector<int32_t> t(static_cast<size_t>(kPromptTokens));
  for (size_t i = 0; i < t.size(); ++i)
    t[i] = static_cast<int32_t>((i * 7919 + 13) % m.hparams().n_vocab);
  return t;
}

void BM_Decode(benchmark::State& state, std::shared_ptr<Model> model) {
  const int64_t n_ctx = std::min<int64_t>(
      kDecodeEnd, std::max<int64_t>(model->hparams().n_ctx_train, kPromptTokens + 64));
  Session session(model.get(), n_ctx, &Pool());
  const std::vector<int32_t> prompt = PromptTokens(*model);
  std::vector<float> logits;
  auto prime = [&] {
    session.Reset();
    if (!session
             .Eval(std::span(prompt).first(
                       static_cast<size_t>(std::min<int64_t>(kPromptTokens, n_ctx / 2))),
                   kPromptTokens, nullptr)
             .ok()) {
      state.SkipWithError("prompt failed");
    }
  };
  prime();
  int32_t token = 1;
  double decode_seconds = 0;  // the decode calls alone, for the bandwidth figure
  for (auto _ : state) {
    if (session.n_past() >= session.n_ctx()) {
      state.PauseTiming();
      prime();
      state.ResumeTiming();
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (!session.Decode(token, &logits).ok()) {
      state.SkipWithError("decode failed");
      break;
    }
    decode_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    token = static_cast<int32_t>((token * 31 + 7) % model->hparams().n_vocab);
  }
  const double bytes = static_cast<double>(BytesPerToken(*model));
  const double weight_bw =
      bytes * static_cast<double>(state.iterations()) / std::max(decode_seconds, 1e-9);
  state.counters["tokens_per_s"] =
      static_cast<double>(state.iterations()) / std::max(decode_seconds, 1e-9);
  state.counters["weight_MB"] = bytes / 1e6;
  state.counters["weight_GBps"] = weight_bw / 1e9;
  state.counters["memcpy_GBps"] = MemcpyBandwidth() / 1e9;
  state.counters["of_memcpy"] = weight_bw / MemcpyBandwidth();
}

void BM_Prompt(benchmark::State& state, std::shared_ptr<Model> model) {
  const int64_t n =
      std::min<int64_t>(kPromptTokens, std::max<int64_t>(model->hparams().n_ctx_train, 16));
  Session session(model.get(), n, &Pool());
  const std::vector<int32_t> prompt = PromptTokens(*model);
  std::vector<float> logits;
  for (auto _ : state) {
    session.Reset();
    if (!session
             .Eval(std::span(prompt).first(static_cast<size_t>(n)), static_cast<size_t>(n - 1),
                   &logits)
             .ok()) {
      state.SkipWithError("prompt failed");
      break;
    }
  }
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
}

void BM_Memcpy(benchmark::State& state) {
  const size_t n = 256u << 20;
  std::vector<uint8_t> a(n, 1), b(n, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

void RegisterAll() {
  benchmark::RegisterBenchmark("Memcpy/256MiB", BM_Memcpy)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  const int layers = EnvInt("FQ_BENCH_LAYERS", 22);
  const char* types_env = std::getenv("FQ_BENCH_TYPES");
  const std::vector<std::string> types =
      Split(types_env != nullptr ? types_env : "F32,F16,Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,Q3_K,Q2_K");
  for (const std::string& name : types) {
    Result<uint32_t> type = ParseQTypeName(name);
    if (!type.ok()) {
      std::fprintf(stderr, "decode_bench: unknown type %s\n", name.c_str());
      continue;
    }
    // Built on first use and shared by the decode and prompt benchmarks of
    // the type; dropped when the process ends.
    auto holder = std::make_shared<std::shared_ptr<Model>>();
    auto get = [holder, t = *type, layers]() -> std::shared_ptr<Model> {
      if (*holder == nullptr) {
        Result<std::unique_ptr<Model>> m = MakeModel(t, layers);
        if (!m.ok()) {
          std::fprintf(stderr, "decode_bench: %s\n", m.status().ToString().c_str());
          std::exit(1);
        }
        *holder = std::move(m).value();
      }
      return *holder;
    };
    const std::string tag = "tinyllama-shape-" + std::to_string(layers) + "L/" + name;
    benchmark::RegisterBenchmark(("Decode/" + tag).c_str(),
                                 [get](benchmark::State& s) { BM_Decode(s, get()); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(2.0);
    benchmark::RegisterBenchmark(("Prompt128/" + tag).c_str(),
                                 [get, holder](benchmark::State& s) {
                                   BM_Prompt(s, get());
                                   holder->reset();  // the last benchmark of this type
                                 })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(2.0);
  }

  const char* data = std::getenv("FQ_TESTDATA");
  if (data == nullptr) return;
  for (const char* model : {"stories260K", "tinystories-3M"}) {
    const std::string dir = JoinPath(JoinPath(data, "models"), model);
    Result<std::vector<std::string>> files = Env::Default()->GetChildren(dir);
    if (!files.ok()) continue;
    std::sort(files->begin(), files->end());
    for (const std::string& f : *files) {
      if (f.size() < 5 || f.substr(f.size() - 5) != ".gguf") continue;
      const std::string path = JoinPath(dir, f);
      auto manifest = std::make_shared<store::ModelManifest>();
      Result<std::unique_ptr<GgufSource>> src = GgufSource::Open(path, manifest.get());
      if (!src.ok()) continue;
      Result<std::unique_ptr<Model>> m = Model::Load(*manifest, src->get(), &Pool());
      if (!m.ok()) {
        std::fprintf(stderr, "decode_bench: %s: %s\n", f.c_str(), m.status().ToString().c_str());
        continue;
      }
      std::shared_ptr<Model> shared = std::move(m).value();
      benchmark::RegisterBenchmark(("Decode/" + f).c_str(),
                                   [shared](benchmark::State& s) { BM_Decode(s, shared); })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(("Prompt128/" + f).c_str(),
                                   [shared](benchmark::State& s) { BM_Prompt(s, shared); })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  }
}

}  // namespace
}  // namespace fqpack::runtime

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  fqpack::runtime::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
