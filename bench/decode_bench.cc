// End-to-end speed of the llama forward pass: decode (one token at a time
// against a KV cache) and prompt processing (a batch of 128 tokens), for each
// weight type, kernel tier and thread count, on generated models of real
// shapes (their weights random floats put through each type's reference
// quantizer):
//   tinyllama  TinyLlama-1.1B: 22 layers, n_embd 2048, n_ff 5632, 32/4 heads,
//              vocab 32000, separate output matrix;
//   llama32    Llama-3.2-1B: 16 layers, 2048, n_ff 8192, 32/8 heads, vocab
//              128256, output tied to the embedding;
//   qwen25     Qwen2.5-1.5B: qwen2, 28 layers, 1536, n_ff 8960, 12/2 heads,
//              vocab 151936, tied, q/k/v biases;
// and on GGUF files: those under $FQ_TESTDATA/models (stories260K,
// tinystories-3M) with FQ_BENCH_GGUF=1, or the files FQ_BENCH_GGUF lists.
//
// Decode reads every weight once per token, so its speed is bounded by how
// fast the cores can read memory. The run measures that ceiling itself:
//   ReadBW/threads:<n>   every thread sums a disjoint part of a 1 GiB buffer
//                        with 512-bit loads (the weights' access pattern);
//   Memcpy/256MiB        memcpy, which reads and writes each byte;
// and each decode benchmark reports the weight bytes it read per second
// ("weight_GBps") and their fraction of the read bandwidth at its thread
// count: of the best pass of the run ("of_read"), and of passes over 128
// MiB slices of the buffer made between its tokens ("of_read_now", the
// same moments: on a host whose neighbours take a varying share of the
// memory bandwidth, the best pass of a run can be from a quieter minute
// than the tokens). MatVec/<type> is one 2048-wide matrix-vector product
// over 256 MiB of weights: the matmul core alone, for every executable
// weight type including fqpack's group-int types, alternating with a plain
// read of the same matrices in the same shares ("of_plain_read": the
// kernel's speed over that read's, the part of the gap to the read
// bandwidth that is the kernel's own). DotInCache/<type>/<tier>
// is the kernel alone with the weights in L2; on the avx512 tier (the
// widest AVX-512 tier the CPU has) a type with a decode kernel
// (runtime/quant/decode.h) is measured with it, with the per-row dot it
// replaces as DotInCache/<type>/avx512-dot, and, where the tier's kernel is
// the GFNI one, with the kAvx512 kernel as DotInCache/<type>/avx512-nogfni.
//
// Each benchmark runs at every kernel tier the CPU has from AVX2 up (the
// AVX2 tier is the baseline the wider kernels are compared against in the
// same run); bench/speed_table.sh turns the output into a table. Decode on
// several threads also runs once with a pool whose workers sleep between
// matmuls (".../sleeping-pool/threads:N"), the baseline for the pool's spin.
//
// Environment (comma lists): FQ_BENCH_SHAPES (default
// tinyllama,llama32,qwen25), FQ_BENCH_LAYERS (layers of every shape; default
// each shape's own), FQ_BENCH_TYPES (default
// Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,Q3_K,Q2_K,IQ4_NL), FQ_BENCH_MATVEC_TYPES (default:
// every executable quantized type; "none" skips), FQ_BENCH_THREADS (default
// 1 and all cores), FQ_BENCH_TIERS (avx2, avx512, avx512-nogfni; default
// avx2,avx512),
// FQ_BENCH_SLEEPING_POOL (0 skips that baseline), FQ_BENCH_GGUF, FQ_TESTDATA.
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/arch.h"
#include "runtime/llama.h"
#include "runtime/matmul.h"
#include "runtime/model.h"
#include "runtime/quant/decode.h"
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

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::vector<std::string> EnvList(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return Split(v != nullptr && *v != 0 ? v : fallback);
}

// One pool per thread count and spin time, shared by every benchmark that
// uses it.
ThreadPool& Pool(int threads, int spin_micros = ThreadPool::kSpinMicros) {
  static std::map<std::pair<int, int>, std::unique_ptr<ThreadPool>> pools;
  std::unique_ptr<ThreadPool>& p = pools[{threads, spin_micros}];
  if (p == nullptr) p = std::make_unique<ThreadPool>(threads, spin_micros);
  return *p;
}

// The kernel tier a benchmark runs at, for the whole benchmark.
class TierScope {
 public:
  explicit TierScope(quant::SimdLevel tier) { quant::SetSimdCap(tier); }
  ~TierScope() { quant::SetSimdCap(quant::kWidestSimd); }
};

// "avx512" names the widest AVX-512 tier the CPU has (kAvx512Gfni where it
// has GFNI), "avx512-nogfni" kAvx512 on a CPU that has GFNI.
const char* TierName(quant::SimdLevel tier) {
  if (tier < quant::SimdLevel::kAvx512) return "avx2";
  return tier < quant::CpuSimdLevel() ? "avx512-nogfni" : "avx512";
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

// The sum of the bytes [p, p + n) as 64-bit lanes, read with 512-bit loads
// (n a multiple of 256). Four accumulators keep several loads in flight.
__attribute__((target("avx512f"))) uint64_t SumBytes512(const uint8_t* p, size_t n) {
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
  for (size_t i = 0; i < n; i += 256) {
    for (int k = 0; k < 4; ++k) {
      acc[k] = _mm512_add_epi64(acc[k], _mm512_loadu_si512(p + i + 64 * k));
    }
  }
  // Through memory rather than _mm512_reduce_add_epi64, whose GCC 12
  // expansion warns of an uninitialized merge source.
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(
      lanes, _mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3])));
  uint64_t sum = 0;
  for (uint64_t v : lanes) sum += v;
  return sum;
}

// The same with 256-bit loads, for CPUs without AVX-512.
__attribute__((target("avx2"))) uint64_t SumBytes256(const uint8_t* p, size_t n) {
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};
  for (size_t i = 0; i < n; i += 128) {
    for (int k = 0; k < 4; ++k) {
      acc[k] = _mm256_add_epi64(
          acc[k], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32 * k)));
    }
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(
      reinterpret_cast<__m256i*>(lanes),
      _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3])));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

// The 1 GiB buffer the read bandwidth is measured on, touched once so its
// pages exist.
constexpr size_t kReadBytes = size_t{1} << 30;
const uint8_t* ReadBuffer() {
  static const uint8_t* buf = [] {
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, kReadBytes));
    std::memset(p, 1, kReadBytes);
    return p;
  }();
  return buf;
}

// One pass over bytes [offset, offset + bytes) of the buffer on `threads`
// threads, each summing a disjoint slice (bytes a multiple of 256 *
// threads); returns the seconds it took.
double ReadPass(int threads, size_t offset = 0, size_t bytes = kReadBytes) {
  const uint8_t* buf = ReadBuffer() + offset;
  const bool wide = quant::CpuSimdLevel() >= quant::SimdLevel::kAvx512;
  const size_t slice = bytes / static_cast<size_t>(threads);
  std::vector<uint64_t> sums(static_cast<size_t>(threads));
  const auto t0 = std::chrono::steady_clock::now();
  Pool(threads).ParallelFor(threads, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const uint8_t* p = buf + static_cast<size_t>(i) * slice;
      sums[static_cast<size_t>(i)] = wide ? SumBytes512(p, slice) : SumBytes256(p, slice);
    }
  });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  benchmark::DoNotOptimize(sums.data());
  return s;
}

// Bytes per second `threads` threads read, the best pass seen so far in the
// run; the ceiling of a decode step at that thread count. `refresh` adds a
// pass, so a machine busier at the start than later does not leave a
// too-low ceiling behind.
double ReadBandwidth(int threads, bool refresh = false) {
  static std::map<int, double> cache;
  double& bw = cache[threads];
  const int passes = bw == 0 ? 5 : refresh ? 1 : 0;
  for (int i = 0; i < passes; ++i) {
    bw = std::max(bw, static_cast<double>(kReadBytes) / ReadPass(threads));
  }
  return bw;
}

void BM_ReadBW(benchmark::State& state, int threads) {
  double seconds = 0;
  for (auto _ : state) seconds += ReadPass(threads);
  state.counters["GBps"] = static_cast<double>(kReadBytes) * state.iterations() / seconds / 1e9;
  state.counters["best_GBps"] = ReadBandwidth(threads) / 1e9;
  state.counters["memcpy_GBps"] = MemcpyBandwidth() / 1e9;
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

// A model shape: the metadata of a real model's architecture.
struct Shape {
  const char* name;
  const char* arch;
  int layers;
  int64_t embd, ff, heads, heads_kv, vocab;
  bool tied;
};
constexpr Shape kShapes[] = {
    {"tinyllama", "llama", 22, 2048, 5632, 32, 4, 32000, false},
    {"llama32", "llama", 16, 2048, 8192, 32, 8, 128256, true},
    {"qwen25", "qwen2", 28, 1536, 8960, 12, 2, 151936, true},
};

// A generated model of `shape` with `n_layer` layers, every matrix in `type`
// and the vectors (norms, biases) in F32. Each matrix shape is quantized
// once; layers hold copies with their rows rotated by a per-layer amount, so
// each layer's bytes are its own (decode streams them all from memory) while
// the model builds in seconds.
Result<std::unique_ptr<Model>> MakeModel(const Shape& shape, uint32_t type, int n_layer) {
  gguf::Metadata md;
  using gguf::Value;
  using gguf::ValueType;
  auto u32 = [](int64_t v) { return Value::Uint(ValueType::kU32, static_cast<uint64_t>(v)); };
  const std::string a = shape.arch;
  md.Set("general.architecture", Value::String(a));
  md.Set(a + ".context_length", u32(2048));
  md.Set(a + ".embedding_length", u32(shape.embd));
  md.Set(a + ".feed_forward_length", u32(shape.ff));
  md.Set(a + ".attention.head_count", u32(shape.heads));
  md.Set(a + ".attention.head_count_kv", u32(shape.heads_kv));
  md.Set(a + ".block_count", u32(n_layer));
  md.Set(a + ".rope.dimension_count", u32(shape.embd / shape.heads));
  md.Set(a + ".attention.layer_norm_rms_epsilon", Value::Float(ValueType::kF32, 1e-5));
  std::vector<Value> tokens(static_cast<size_t>(shape.vocab), Value::String("t"));
  md.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, tokens));
  FQ_ASSIGN_OR_RETURN(Hparams hp, ReadHparams(md, shape.name));
  store::ModelManifest manifest;
  manifest.model = std::string(shape.name) + "-shape";
  manifest.label = QTypeName(type);
  manifest.metadata = gguf::EncodeMetadata(md);
  manifest.n_kv = md.entries.size();

  const quant::TypeTraits* traits = quant::FindTraits(type);
  if (traits == nullptr || traits->quantize == nullptr) {
    return Status::NotSupported("no reference quantizer for " + QTypeName(type));
  }
  MemorySource source;
  uint64_t state = 0x9E3779B97F4A7C15ull * (type + 1);
  auto noise = [&](float* v, int64_t n, float scale) {
    for (int64_t i = 0; i < n; ++i) {
      // xorshift64*: cheap noise in [-scale, scale).
      state ^= state >> 12;
      state ^= state << 25;
      state ^= state >> 27;
      const uint64_t x = state * 0x2545F4914F6CDD1Dull;
      v[i] = scale * (static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f);
    }
  };
  // One quantized matrix per (ne0, ne1), made on first use.
  std::map<std::pair<uint64_t, uint64_t>, Bytes> matrices;
  const uint32_t f32 = ToId(QType::kF32);
  for (const ExpectedTensor& t : ExpectedTensors(hp)) {
    const bool matrix = t.ne[1] > 1;
    if (!t.required && (t.name != "output.weight" || shape.tied)) continue;
    const int64_t ne0 = static_cast<int64_t>(t.ne[0]), ne1 = static_cast<int64_t>(t.ne[1]);
    const uint32_t tt = matrix ? type : f32;
    FQ_ASSIGN_OR_RETURN(uint64_t rb, RowBytes(tt, t.ne[0]));
    Bytes bytes(static_cast<size_t>(rb) * static_cast<size_t>(ne1));
    if (!matrix) {
      // Norm weights near 1, biases near 0.
      const bool bias = t.name.find(".bias") != std::string::npos;
      std::vector<float> v(static_cast<size_t>(ne0));
      noise(v.data(), ne0, bias ? 0.1f : 0.2f);
      for (float& x : v) x += bias ? 0.0f : 1.0f;
      std::memcpy(bytes.data(), v.data(), bytes.size());
    } else {
      Bytes& m = matrices[{t.ne[0], t.ne[1]}];
      if (m.empty()) {
        m.resize(bytes.size());
        std::vector<float> row(static_cast<size_t>(ne0));
        const float scale = t.name == "token_embd.weight" ? 1.0f : 0.03f;
        for (int64_t r = 0; r < ne1; ++r) {
          noise(row.data(), ne0, scale);
          traits->quantize(row.data(), m.data() + r * rb, ne0);
        }
      }
      const size_t rot =
          static_cast<size_t>(rb * static_cast<uint64_t>((std::hash<std::string>()(t.name) % ne1)));
      std::memcpy(bytes.data(), m.data() + rot, m.size() - rot);
      std::memcpy(bytes.data() + (m.size() - rot), m.data(), rot);
    }
    store::ManifestSlot s;
    s.idx = static_cast<int>(manifest.slots.size());
    s.name = t.name;
    s.kind = store::SlotKindOf(t.name, &s.layer);
    s.desc.qtype = tt;
    s.desc.n_dims = matrix ? 2 : 1;
    s.desc.ne = {t.ne[0], t.ne[1], 1, 1};
    s.bytes = bytes.size();
    s.key = source.Add(s.desc, std::move(bytes));
    manifest.slots.push_back(s);
  }
  return Model::Load(manifest, &source, &Pool(2));
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

// What one benchmark runs on.
struct Setup {
  int threads = 1;
  quant::SimdLevel tier = quant::SimdLevel::kAvx2;
  // The pool's spin time; 0 is the baseline where workers sleep between
  // matmuls and each one wakes them through the kernel.
  int spin_micros = ThreadPool::kSpinMicros;
};

void BM_Decode(benchmark::State& state, std::shared_ptr<Model> model, Setup setup) {
  TierScope tier(setup.tier);
  ThreadPool& pool = Pool(setup.threads, setup.spin_micros);
  const int64_t n_ctx = std::min<int64_t>(
      kDecodeEnd, std::max<int64_t>(model->hparams().n_ctx_train, kPromptTokens + 64));
  Session session(model.get(), n_ctx, &pool);
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
  // Between tokens, a read pass over the next kSliceBytes of the read
  // buffer: the read bandwidth of the same moments as the tokens.
  constexpr size_t kSliceBytes = size_t{128} << 20;
  size_t slice = 0;
  double read_seconds = 0;
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
    state.PauseTiming();
    read_seconds += ReadPass(setup.threads, slice * kSliceBytes, kSliceBytes);
    slice = (slice + 1) % (kReadBytes / kSliceBytes);
    state.ResumeTiming();
  }
  const double bytes = static_cast<double>(BytesPerToken(*model));
  const double weight_bw =
      bytes * static_cast<double>(state.iterations()) / std::max(decode_seconds, 1e-9);
  state.counters["tokens_per_s"] =
      static_cast<double>(state.iterations()) / std::max(decode_seconds, 1e-9);
  state.counters["weight_MB"] = bytes / 1e6;
  state.counters["weight_GBps"] = weight_bw / 1e9;
  const double read_bw = ReadBandwidth(setup.threads, /*refresh=*/true);
  state.counters["read_GBps"] = read_bw / 1e9;
  state.counters["of_read"] = weight_bw / read_bw;
  const double read_now = static_cast<double>(kSliceBytes) *
                          static_cast<double>(state.iterations()) / std::max(read_seconds, 1e-9);
  state.counters["read_now_GBps"] = read_now / 1e9;
  state.counters["of_read_now"] = weight_bw / read_now;
  state.counters["of_memcpy"] = weight_bw / MemcpyBandwidth();
}

void BM_Prompt(benchmark::State& state, std::shared_ptr<Model> model, Setup setup) {
  TierScope tier(setup.tier);
  ThreadPool& pool = Pool(setup.threads);
  const int64_t n =
      std::min<int64_t>(kPromptTokens, std::max<int64_t>(model->hparams().n_ctx_train, 16));
  Session session(model.get(), n, &pool);
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

// The matmul core alone: one token through 2048-wide matrices, cycling over
// 256 MiB of them so that every call streams its weights from memory.
constexpr int64_t kMatVecCols = 2048;
constexpr size_t kMatVecBytes = size_t{256} << 20;

struct MatVecData {
  uint32_t type = 0;
  int64_t rows = 0;  // rows of one matrix
  size_t row_bytes = 0;
  Bytes weights;  // the matrices back to back
  std::vector<float> x;
};

// The weights of the type last asked for (one type in memory at a time).
const MatVecData& MatVecFor(uint32_t type) {
  static MatVecData d;
  if (!d.weights.empty() && d.type == type) return d;
  d = MatVecData();
  d.type = type;
  d.row_bytes = static_cast<size_t>(RowBytes(type, kMatVecCols).value());
  // FQ_BENCH_MATVEC_ROWS: rows of one matrix (default 4096), to see what
  // the thread hand-off costs on small matrices.
  d.rows = EnvInt("FQ_BENCH_MATVEC_ROWS", 4096);
  const int64_t total_rows = static_cast<int64_t>(kMatVecBytes / d.row_bytes);
  d.weights.resize(static_cast<size_t>(total_rows) * d.row_bytes);
  const quant::TypeTraits* t = quant::FindTraits(type);
  std::vector<float> row(static_cast<size_t>(kMatVecCols));
  uint64_t state = 88172645463325252ull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<float>(state >> 40) * (2.0f / 16777216.0f) - 1.0f;
  };
  // A few hundred distinct rows, repeated: the speed does not depend on the
  // values, only on the bytes being in memory.
  constexpr int64_t kDistinct = 512;
  for (int64_t r = 0; r < std::min(kDistinct, total_rows); ++r) {
    for (float& v : row) v = 0.03f * next();
    t->quantize(row.data(), d.weights.data() + r * d.row_bytes, kMatVecCols);
  }
  for (int64_t r = kDistinct; r < total_rows; ++r) {
    std::memcpy(d.weights.data() + r * d.row_bytes,
                d.weights.data() + (r % kDistinct) * d.row_bytes, d.row_bytes);
  }
  d.x.resize(static_cast<size_t>(kMatVecCols));
  for (float& v : d.x) v = next();
  return d;
}

// The plain read of one matrix as the decode path splits it (the shares of
// runtime/matmul.h, DecodeShareStart), taken by the pool's threads, each
// summed with 512-bit loads (SumBytes512). Its speed is what the matmul
// core could reach if computing cost nothing, on the same bytes in the same
// pattern.
uint64_t PlainRead(const uint8_t* p, size_t bytes, ThreadPool* pool) {
  const int threads = pool->size();
  const int64_t shares = DecodeShareCount(threads);
  // Share boundaries in 256-byte multiples, as SumBytes512 reads them (the
  // last few bytes of a matrix may go unread).
  const auto bound = [&](int64_t s) {
    return static_cast<size_t>(static_cast<double>(bytes) * DecodeShareStart(s, threads)) &
           ~size_t{255};
  };
  std::vector<uint64_t> sums(static_cast<size_t>(shares));
  pool->ParallelFor(shares, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      sums[static_cast<size_t>(s)] = SumBytes512(p + bound(s), bound(s + 1) - bound(s));
    }
  });
  uint64_t total = 0;
  for (uint64_t v : sums) total += v;
  return total;
}

// Iterations alternate between the matmul on one matrix and a plain read
// of the next (PlainRead), each timed on its own, so the two see the same
// machine: "of_plain_read" is the matmul's weight bytes per second over the
// plain read's, the share of the achievable stream the kernel reaches.
void BM_MatVec(benchmark::State& state, uint32_t type, Setup setup) {
  TierScope tier(setup.tier);
  ThreadPool& pool = Pool(setup.threads);
  const MatVecData& d = MatVecFor(type);
  const int64_t n_mats = static_cast<int64_t>(d.weights.size() / d.row_bytes) / d.rows;
  const size_t bytes = static_cast<size_t>(d.rows) * d.row_bytes;
  const bool wide = quant::CpuSimdLevel() >= quant::SimdLevel::kAvx512;
  std::vector<float> y(static_cast<size_t>(d.rows));
  int64_t next = 0, matmuls = 0, reads = 0;
  double matmul_seconds = 0, read_seconds = 0;
  uint64_t sink = 0;
  for (auto _ : state) {
    const uint8_t* m = d.weights.data() + static_cast<size_t>(next++ % n_mats) * bytes;
    const auto t0 = std::chrono::steady_clock::now();
    if (!wide || next % 2 == 1) {
      MatMul(WeightView{type, kMatVecCols, d.rows, m, d.row_bytes}, d.x.data(), 1, y.data(), &pool);
      benchmark::DoNotOptimize(y.data());
      benchmark::ClobberMemory();
      matmul_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++matmuls;
    } else {
      sink += PlainRead(m, bytes, &pool);
      read_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++reads;
    }
  }
  benchmark::DoNotOptimize(sink);
  const double weight_bw = static_cast<double>(bytes) * matmuls / std::max(matmul_seconds, 1e-9);
  state.counters["weight_GBps"] = weight_bw / 1e9;
  if (reads > 0) {
    const double plain_bw = static_cast<double>(bytes) * reads / std::max(read_seconds, 1e-9);
    state.counters["plain_read_GBps"] = plain_bw / 1e9;
    state.counters["of_plain_read"] = weight_bw / plain_bw;
  }
  state.counters["read_GBps"] = ReadBandwidth(setup.threads, /*refresh=*/true) / 1e9;
}

// The kernel alone, weights in L2: one thread runs the tier's kernel over
// 1024 rows (under 1 MiB) again and again, so "weight_GBps" is how fast the
// kernel consumes weights when memory is not the limit. Decode runs at
// memory speed only if this is well above the read bandwidth per thread.
// With `decode` set, its row kernel runs (the activation packed once,
// outside the timed loop), as MatMul does for one token from the kAvx512
// tier up; otherwise the per-row dot.
void BM_DotInCache(benchmark::State& state, uint32_t type, quant::SimdLevel level,
                   const quant::DecodeOps* decode) {
  TierScope tier(level);
  const MatVecData& d = MatVecFor(type);
  const quant::TypeTraits* t = quant::FindTraits(type);
  const quant::DotFn dot = quant::BestDot(*t);
  const uint32_t act_type = t->vec_dot_type;
  std::vector<uint8_t> act(static_cast<size_t>(RowBytes(act_type, kMatVecCols).value()));
  if (act_type == ToId(QType::kF32)) {
    std::memcpy(act.data(), d.x.data(), act.size());
  } else {
    quant::BestQuantize (*quant::FindTraits(act_type))(d.x.data(), act.data(), kMatVecCols);
  }
  const int64_t rows =
      std::min<int64_t>(1024, static_cast<int64_t>((size_t{1} << 20) / d.row_bytes));
  float sum = 0;
  if (decode != nullptr) {
    const quant::DecodeOps& ops = *decode;
    std::vector<uint8_t> buffer(ops.act_bytes(kMatVecCols) + 64);
    uint8_t* packed = buffer.data() + (64 - reinterpret_cast<uintptr_t>(buffer.data()) % 64) % 64;
    ops.pack_act(kMatVecCols, act.data(), packed);
    std::vector<float> y(static_cast<size_t>(rows));
    for (auto _ : state) {
      ops.rows(kMatVecCols, d.weights.data(), d.row_bytes, rows, packed, y.data());
      sum += y[static_cast<size_t>(rows) - 1];
    }
  } else {
    for (auto _ : state) {
      for (int64_t r = 0; r < rows; ++r) {
        float out;
        dot(kMatVecCols, d.weights.data() + r * d.row_bytes, act.data(), act.size(), 1, &out);
        sum += out;
      }
    }
  }
  benchmark::DoNotOptimize(sum);
  state.counters["weight_GBps"] =
      benchmark::Counter(static_cast<double>(rows) * static_cast<double>(d.row_bytes) *
                             static_cast<double>(state.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
}

std::vector<int> ThreadCounts() {
  std::vector<int> out;
  for (const std::string& t : EnvList("FQ_BENCH_THREADS", "")) out.push_back(std::atoi(t.c_str()));
  if (out.empty()) {
    out.push_back(1);
    const int all = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (all > 1) out.push_back(all);
  }
  return out;
}

std::vector<quant::SimdLevel> Tiers() {
  std::vector<quant::SimdLevel> out;
  for (const std::string& t : EnvList("FQ_BENCH_TIERS", "avx2,avx512")) {
    quant::SimdLevel level = quant::SimdLevel::kAvx2;
    if (t == "avx512") level = std::max(quant::CpuSimdLevel(), quant::SimdLevel::kAvx512);
    if (t == "avx512-nogfni") level = quant::SimdLevel::kAvx512;
    if (quant::CpuSimdLevel() >= level && std::find(out.begin(), out.end(), level) == out.end()) {
      out.push_back(level);
    }
  }
  return out;
}

std::string SetupTag(const Setup& s) {
  return std::string(TierName(s.tier)) + (s.spin_micros == 0 ? "/sleeping-pool" : "") +
         "/threads:" + std::to_string(s.threads);
}

void RegisterAll() {
  const std::vector<int> threads = ThreadCounts();
  const std::vector<quant::SimdLevel> tiers = Tiers();
  benchmark::RegisterBenchmark("Memcpy/256MiB", BM_Memcpy)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  for (int t : threads) {
    benchmark::RegisterBenchmark(("ReadBW/threads:" + std::to_string(t)).c_str(), BM_ReadBW, t)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }

  std::vector<uint32_t> matvec_types;
  const std::vector<std::string> mv_names = EnvList("FQ_BENCH_MATVEC_TYPES", "all");
  if (mv_names.size() == 1 && mv_names[0] == "all") {
    // Every executable quantized weight type.
    for (const quant::TypeTraits& t : quant::AllTraits()) {
      if (t.dot != nullptr && t.bits_per_weight < 16) matvec_types.push_back(t.type);
    }
  } else if (!(mv_names.size() == 1 && mv_names[0] == "none")) {
    for (const std::string& name : mv_names) {
      Result<uint32_t> type = ParseQTypeName(name);
      if (type.ok())
        matvec_types.push_back(*type);
      else
        std::fprintf(stderr, "decode_bench: unknown type %s\n", name.c_str());
    }
  }
  for (uint32_t type : matvec_types) {
    for (quant::SimdLevel tier : tiers) {
      // On the AVX-512 tier a type with a decode kernel is measured with it
      // (what MatMul runs for one token), as "avx512-nogfni" with the
      // kAvx512 one where the GFNI kernel is the tier's, and as
      // "avx512-dot" with the per-row dot it replaces.
      const quant::TypeTraits& t = *quant::FindTraits(type);
      std::vector<std::pair<std::string, const quant::DecodeOps*>> kernels = {
          {TierName(tier), nullptr}};
      if (tier == quant::CpuSimdLevel() && tier >= quant::SimdLevel::kAvx512 &&
          t.decode != nullptr) {
        const TierScope scope(tier);
        kernels[0].second = quant::BestDecode(t);
        if (kernels[0].second != t.decode) kernels.emplace_back("avx512-nogfni", t.decode);
        kernels.emplace_back("avx512-dot", nullptr);
      }
      for (const auto& [tag, ops] : kernels) {
        benchmark::RegisterBenchmark(
            ("DotInCache/" + QTypeName(type) + "/" + tag).c_str(),
            [type, tier, ops = ops](benchmark::State& s) { BM_DotInCache(s, type, tier, ops); })
            ->Unit(benchmark::kMicrosecond)
            ->MinTime(0.2);
      }
    }
    for (int t : threads) {
      for (quant::SimdLevel tier : tiers) {
        const Setup setup{t, tier};
        benchmark::RegisterBenchmark(
            ("MatVec/" + QTypeName(type) + "/" + SetupTag(setup)).c_str(),
            [type, setup](benchmark::State& s) { BM_MatVec(s, type, setup); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime()
            ->MinTime(0.3);
      }
    }
  }

  const std::vector<std::string> types =
      EnvList("FQ_BENCH_TYPES", "Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,Q3_K,Q2_K,IQ4_NL");
  const int layers_env = EnvInt("FQ_BENCH_LAYERS", 0);
  // FQ_BENCH_SLEEPING_POOL=0 drops the decode baseline whose pool workers
  // sleep between matmuls (default: run it for the widest tier).
  const bool sleeping_pool = EnvInt("FQ_BENCH_SLEEPING_POOL", 1) != 0;
  for (const std::string& shape_name : EnvList("FQ_BENCH_SHAPES", "tinyllama,llama32,qwen25")) {
    if (shape_name == "none") continue;
    const Shape* shape = nullptr;
    for (const Shape& s : kShapes) {
      if (shape_name == s.name) shape = &s;
    }
    if (shape == nullptr) {
      std::fprintf(stderr, "decode_bench: unknown shape %s\n", shape_name.c_str());
      continue;
    }
    const int layers = layers_env > 0 ? layers_env : shape->layers;
    for (const std::string& name : types) {
      Result<uint32_t> type = ParseQTypeName(name);
      if (!type.ok()) {
        std::fprintf(stderr, "decode_bench: unknown type %s\n", name.c_str());
        continue;
      }
      // Built on first use and shared by the benchmarks of the type; dropped
      // after its last one.
      auto holder = std::make_shared<std::shared_ptr<Model>>();
      auto get = [holder, shape, t = *type, layers]() -> std::shared_ptr<Model> {
        if (*holder == nullptr) {
          Result<std::unique_ptr<Model>> m = MakeModel(*shape, t, layers);
          if (!m.ok()) {
            std::fprintf(stderr, "decode_bench: %s\n", m.status().ToString().c_str());
            std::exit(1);
          }
          *holder = std::move(m).value();
        }
        return *holder;
      };
      const std::string tag = std::string(shape->name) + "-" + std::to_string(layers) + "L/" + name;
      const auto decode = [&tag, get](const Setup& setup) {
        benchmark::RegisterBenchmark(
            ("Decode/" + tag + "/" + SetupTag(setup)).c_str(),
            [get, setup](benchmark::State& s) { BM_Decode(s, get(), setup); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(1.0);
      };
      for (int t : threads) {
        for (size_t k = 0; k < tiers.size(); ++k) {
          const Setup setup{t, tiers[k]};
          const bool last = t == threads.back() && k + 1 == tiers.size();
          decode(setup);
          if (t > 1 && k + 1 == tiers.size() && sleeping_pool) {
            Setup sleeping = setup;
            sleeping.spin_micros = 0;
            decode(sleeping);
          }
          benchmark::RegisterBenchmark(("Prompt128/" + tag + "/" + SetupTag(setup)).c_str(),
                                       [get, holder, setup, last](benchmark::State& s) {
                                         BM_Prompt(s, get(), setup);
                                         if (last) holder->reset();
                                       })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime()
              ->MinTime(1.0);
        }
      }
    }
  }

  // GGUF files: FQ_BENCH_GGUF=1 takes those of the test data, or it lists
  // files (bench/side_by_side.sh runs the same files through llama.cpp).
  std::vector<std::string> paths;
  const std::vector<std::string> gguf = EnvList("FQ_BENCH_GGUF", "");
  if (gguf.size() == 1 && gguf[0] == "1") {
    const char* data = std::getenv("FQ_TESTDATA");
    for (const char* model : {"stories260K", "tinystories-3M"}) {
      if (data == nullptr) break;
      const std::string dir = JoinPath(JoinPath(data, "models"), model);
      Result<std::vector<std::string>> files = Env::Default()->GetChildren(dir);
      if (!files.ok()) continue;
      std::sort(files->begin(), files->end());
      for (const std::string& f : *files) {
        if (f.size() > 5 && f.substr(f.size() - 5) == ".gguf") paths.push_back(JoinPath(dir, f));
      }
    }
  } else if (!(gguf.size() == 1 && gguf[0] == "0")) {
    paths = gguf;
  }
  for (const std::string& path : paths) {
    const std::string f = path.substr(path.find_last_of('/') + 1);
    store::ModelManifest manifest;
    Result<std::unique_ptr<GgufSource>> src = GgufSource::Open(path, &manifest);
    Result<std::unique_ptr<Model>> m = src.ok() ? Model::Load(manifest, src->get(), &Pool(2))
                                                : Result<std::unique_ptr<Model>>(src.status());
    if (!m.ok()) {
      std::fprintf(stderr, "decode_bench: %s: %s\n", path.c_str(), m.status().ToString().c_str());
      continue;
    }
    // Load keeps nothing of the source.
    std::shared_ptr<Model> shared = std::move(m).value();
    for (int t : threads) {
      for (quant::SimdLevel tier : tiers) {
        const Setup setup{t, tier};
        benchmark::RegisterBenchmark(
            ("Decode/" + f + "/" + SetupTag(setup)).c_str(),
            [shared, setup](benchmark::State& s) { BM_Decode(s, shared, setup); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(
            ("Prompt128/" + f + "/" + SetupTag(setup)).c_str(),
            [shared, setup](benchmark::State& s) { BM_Prompt(s, shared, setup); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
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
