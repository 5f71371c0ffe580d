// The elastic runtime's costs against what a llama.cpp user does today.
//
// Two models, each as a library of three QMs walked one slot at a time
// (tests/support/walk_ensemble.h stands in for a searched ensemble: the
// costs measured here depend on which modules differ, not on why):
// - tinystories-3M from $FQ_TESTDATA, its llama.cpp ladder Q8_0 > Q4_K_M > Q2_K;
// - a generated llama (`fqpack synth`, then RTN to Q8_0 > Q4_K > Q2_K), about
//   65 M parameters unless FQ_BENCH_SYNTH_LAYERS / _EMBD / _FF say otherwise.
// Each is packed twice: --codec raw (modules mapped in place) and auto
// (zstd where it saves 1/64: modules decoded into memory of their own).
//
// Google Benchmark cases (time = the transition itself):
//   transition/step/<model>/<codec>   every one-EQM step of the walk, down and up
//   transition/walk/<model>/<codec>   QM(n_up) -> QM(n_low), step by step
//   reload/<model>/<QM>/{mmap,read}   the static alternative: a whole GGUF of
//                                     that QM mapped (or read), parsed, built
//                                     into a Model and faulted in, from the
//                                     page cache
// Then a report (FQ_BENCH_REPORT=0 skips it): the walk step by step against
// reloading a GGUF of the same size, resident memory measured against each
// EQM's footprint at several budgets, a trace replay (a few hundred budget
// changes over a perplexity run: elastic ensemble against a static ladder
// that reloads whole QMs), and pack size against the store's bytes.
//
// Environment: FQ_TESTDATA, FQ_BENCH_DIR (keep the generated stores and
// packs there and reuse them), FQ_BENCH_MODELS (comma list: tinystories,
// synth), FQ_BENCH_THREADS, FQ_BENCH_REPLAY_CHUNKS (default 300).
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "pack/writer.h"
#include "quantize/pipeline.h"
#include "runtime/elastic.h"
#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "schema/units.h"
#include "store/gguf_export.h"
#include "store/gguf_import.h"
#include "store/synthetic.h"
#include "tests/support/walk_ensemble.h"

namespace fqpack::bench {
namespace {

using Clock = std::chrono::steady_clock;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == 0 ? fallback : std::atoi(v);
}
std::string EnvStr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == 0 ? fallback : v;
}
double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

ThreadPool& Pool() {
  static ThreadPool pool(EnvInt("FQ_BENCH_THREADS", 0));
  return pool;
}

void Die(const Status& s, const std::string& what) {
  if (s.ok()) return;
  std::fprintf(stderr, "transition_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}
template <typename T>
T Must(Result<T> r, const std::string& what) {
  Die(r.status(), what);
  return std::move(r).value();
}

// One model: its library, the GGUF file of each QM, and its packs.
struct Case {
  std::string name;
  std::string model;
  std::vector<std::string> labels;  // highest precision first
  std::map<std::string, std::string> gguf;
  std::string store_dir;
  std::string pack_raw;
  std::string pack_auto;
};

Case Finish(Case c, const std::string& dir, bool fresh) {
  c.pack_raw = JoinPath(dir, c.name + "-raw.fqpack");
  c.pack_auto = JoinPath(dir, c.name + "-auto.fqpack");
  if (!fresh) return c;
  auto store = Must(store::Store::Open(Env::Default(), c.store_dir), "open store");
  Must(testing::AddWalkEnsemble(store.get(), c.model, c.labels, "walk"), "walk ensemble");
  for (auto [codec, path] :
       {std::pair{pack::Codec::kRaw, c.pack_raw}, std::pair{pack::Codec::kAuto, c.pack_auto}}) {
    pack::PackOptions po;
    po.codec = codec;
    Must(pack::WritePack(store.get(), po, path), "pack " + path);
  }
  return c;
}

Case BuildTinystories(const std::string& root) {
  Case c;
  c.name = "tinystories-3M";
  c.model = "tinystories-3M";
  c.labels = {"Q8_0", "Q4_K_M", "Q2_K"};
  const std::string dir = JoinPath(root, c.name);
  c.store_dir = JoinPath(dir, "store");
  for (const auto& l : c.labels) {
    c.gguf[l] = EnvStr("FQ_TESTDATA", "") + "/models/tinystories-3M/tinystories-3M-" + l + ".gguf";
  }
  const bool fresh = !Env::Default()->FileExists(JoinPath(dir, "done"));
  if (fresh) {
    Die(Env::Default()->CreateDir(dir), "mkdir");
    Die(store::Store::Init(Env::Default(), c.store_dir), "init");
    auto store = Must(store::Store::Open(Env::Default(), c.store_dir), "open");
    for (const auto& l : c.labels)
      Must(store::ImportGguf(store.get(), c.gguf[l], {}), "import " + l);
  }
  c = Finish(c, dir, fresh);
  if (fresh) Die(PublishFile(Env::Default(), JoinPath(dir, "done"), {}), "done");
  return c;
}

Case BuildSynthetic(const std::string& root) {
  Case c;
  c.name = "synth";
  c.model = "synth";
  c.labels = {"Q8_0", "Q4_K", "Q2_K"};
  const std::string dir = JoinPath(root, c.name);
  c.store_dir = JoinPath(dir, "store");
  for (const auto& l : c.labels) c.gguf[l] = JoinPath(dir, "synth-" + l + ".gguf");
  const bool fresh = !Env::Default()->FileExists(JoinPath(dir, "done"));
  if (fresh) {
    Die(Env::Default()->CreateDir(dir), "mkdir");
    store::SyntheticLlama spec;
    spec.name = "synth";
    spec.n_embd = static_cast<uint32_t>(EnvInt("FQ_BENCH_SYNTH_EMBD", 768));
    spec.n_layers = static_cast<uint32_t>(EnvInt("FQ_BENCH_SYNTH_LAYERS", 8));
    spec.n_ff = static_cast<uint32_t>(EnvInt("FQ_BENCH_SYNTH_FF", 2048));
    spec.n_heads = 12;
    spec.n_kv_heads = 4;
    spec.n_vocab = 8192;
    spec.n_ctx = 512;
    spec.type = ToId(QType::kF16);
    const std::string f16 = JoinPath(dir, "synth-F16.gguf");
    Die(store::WriteSyntheticLlama(Env::Default(), f16, spec), "synth");
    Die(store::Store::Init(Env::Default(), c.store_dir), "init");
    auto store = Must(store::Store::Open(Env::Default(), c.store_dir), "open");
    store::ImportOptions io;
    io.model = "synth";
    io.label = "F16";
    Must(store::ImportGguf(store.get(), f16, io), "import synth");
    quantize::QuantizeRequest req;
    req.model = "synth";
    req.from = "F16";
    req.embed_bits = 0;  // the embedding and output at each QM's own type: they walk too
    for (QType t : {QType::kQ8_0, QType::kQ4_K, QType::kQ2_K})
      req.targets.push_back({ToId(t), QTypeName(ToId(t))});
    Must(quantize::QuantizeModel(store.get(), req), "quantize synth");
    for (const auto& l : c.labels)
      Must(store::ExportQmGguf(store.get(), "synth", l, c.gguf[l]), "export " + l);
    Die(Env::Default()->RemoveFile(f16), "rm");
  }
  c = Finish(c, dir, fresh);
  if (fresh) Die(PublishFile(Env::Default(), JoinPath(dir, "done"), {}), "done");
  return c;
}

// ---------------------------------------------------------------------------
// The static alternative: a whole GGUF made into a Model.

// Modules of one GGUF file held in memory (mapped or read); keys are slot
// positions, not content hashes: nothing is verified, as llama.cpp verifies
// nothing.
class GgufSource : public store::ModuleSource {
 public:
  GgufSource(std::shared_ptr<const void> keep, ByteSpan file, gguf::Header header)
      : keep_(std::move(keep)), file_(file), header_(std::move(header)) {}
  Result<store::ModuleData> Load(const store::ModuleKey& key) override {
    size_t i = 0;
    std::memcpy(&i, key.bytes.data(), sizeof(i));
    return store::ModuleData::View(header_.TensorBytes(file_, i), keep_);
  }
  store::ModelManifest Manifest() const {
    store::ModelManifest m;
    m.model = "gguf";
    m.arch = "llama";
    m.n_kv = header_.n_kv;
    const ByteSpan kv = header_.KvBytes(file_);
    m.metadata.assign(kv.begin(), kv.end());
    for (size_t i = 0; i < header_.tensors.size(); ++i) {
      const gguf::TensorInfo& t = header_.tensors[i];
      store::ManifestSlot s;
      s.idx = static_cast<int>(i);
      s.name = t.name;
      s.kind = store::SlotKindOf(t.name, &s.layer);
      s.desc.qtype = t.type;
      s.desc.n_dims = t.n_dims;
      s.desc.ne = t.ne;
      s.bytes = t.nbytes;
      std::memcpy(s.key.bytes.data(), &i, sizeof(i));
      m.slots.push_back(s);
    }
    return m;
  }
  uint64_t tensor_bytes() const {
    uint64_t n = 0;
    for (const auto& t : header_.tensors) n += t.nbytes;
    return n;
  }
  ByteSpan data_section() const {
    return file_.subspan(header_.data_offset, file_.size() - header_.data_offset);
  }

 private:
  std::shared_ptr<const void> keep_;
  ByteSpan file_;
  gguf::Header header_;
};

struct StaticModel {
  std::unique_ptr<runtime::Model> model;
  uint64_t tensor_bytes = 0;
};

// What switching to a static checkpoint costs: map (or read) the file, parse
// it, build the model, fault every weight page in.
StaticModel LoadGguf(const std::string& path, bool use_mmap) {
  std::shared_ptr<const void> keep;
  ByteSpan bytes;
  if (use_mmap) {
    auto f = std::make_shared<MappedFile>(Must(Env::Default()->MapFile(path), path));
    bytes = f->bytes();
    keep = f;
  } else {
    auto b = std::make_shared<Bytes>(Must(ReadFileBytes(Env::Default(), path), path));
    bytes = ByteSpan(b->data(), b->size());
    keep = b;
  }
  GgufSource source(keep, bytes, Must(gguf::ParseFile(bytes, path), path));
  StaticModel out;
  out.model = Must(runtime::Model::Load(source.Manifest(), &source, &Pool()), path);
  out.tensor_bytes = source.tensor_bytes();
  if (use_mmap) {
    const ByteSpan data = source.data_section();
    const uintptr_t begin = reinterpret_cast<uintptr_t>(data.data()) & ~uintptr_t{4095};
    ::madvise(reinterpret_cast<void*>(begin),
              reinterpret_cast<uintptr_t>(data.data()) + data.size() - begin, MADV_POPULATE_READ);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Google Benchmark cases.

struct Opened {
  std::unique_ptr<pack::PackReader> pack;
  std::unique_ptr<runtime::ResidencyManager> mgr;
};
Opened OpenManager(const std::string& path) {
  Opened o;
  o.pack = Must(pack::PackReader::Open(Env::Default(), path), path);
  o.mgr = Must(runtime::ResidencyManager::Open(o.pack.get(), {}), path);
  Die(o.mgr->Start(0, &Pool()), "start");
  return o;
}

// Every step of the walk, one per iteration, alternating down the walk and
// back up it.
void BM_Step(benchmark::State& state, const std::string& path) {
  Opened o = OpenManager(path);
  const int n = static_cast<int>(o.mgr->levels().size());
  int level = 0, dir = 1;
  uint64_t bytes = 0;
  int64_t swaps = 0;
  for (auto _ : state) {
    if (level + dir < 0 || level + dir >= n) dir = -dir;
    level += dir;
    const runtime::TransitionRecord rec = Must(o.mgr->TransitionTo(level), "transition");
    state.SetIterationTime(rec.seconds);
    bytes += rec.bytes_in;
    swaps += rec.modules_swapped;
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["KB_in"] =
      benchmark::Counter(static_cast<double>(bytes) / 1e3, benchmark::Counter::kAvgIterations);
  state.counters["modules"] =
      benchmark::Counter(static_cast<double>(swaps), benchmark::Counter::kAvgIterations);
}

void BM_Walk(benchmark::State& state, const std::string& path) {
  Opened o = OpenManager(path);
  const int n = static_cast<int>(o.mgr->levels().size());
  uint64_t bytes = 0;
  for (auto _ : state) {
    double t = 0;
    for (int l = 1; l < n; ++l) {
      const runtime::TransitionRecord rec = Must(o.mgr->TransitionTo(l), "walk");
      t += rec.seconds;
      bytes += rec.bytes_in;
    }
    state.SetIterationTime(t);
    Must(o.mgr->TransitionTo(0), "back");
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["steps"] = n - 1;
  state.counters["MB_in"] =
      benchmark::Counter(static_cast<double>(bytes) / 1e6, benchmark::Counter::kAvgIterations);
}

void BM_Reload(benchmark::State& state, const std::string& gguf, bool use_mmap) {
  StaticModel current = LoadGguf(gguf, use_mmap);  // warms the page cache
  uint64_t bytes = 0;
  for (auto _ : state) {
    const Clock::time_point t0 = Clock::now();
    current = StaticModel();  // the old model goes first, as a memory-bound switch must
    current = LoadGguf(gguf, use_mmap);
    state.SetIterationTime(Seconds(t0));
    bytes += current.tensor_bytes;
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}

// ---------------------------------------------------------------------------
// The report.

double ReloadSeconds(const std::string& gguf) {
  std::vector<double> t;
  StaticModel m = LoadGguf(gguf, true);
  for (int i = 0; i < 7; ++i) {
    const Clock::time_point t0 = Clock::now();
    m = StaticModel();
    m = LoadGguf(gguf, true);
    t.push_back(Seconds(t0));
  }
  return Median(t);
}

void ReportWalk(const Case& c) {
  std::printf("\n== %s: the walk QM(n_up) %s -> QM(n_low) %s step by step, raw and auto packs ==\n",
              c.name.c_str(), c.labels.front().c_str(), c.labels.back().c_str());
  std::map<std::string, double> reload;
  std::map<std::string, uint64_t> qm_bytes;
  for (const auto& l : c.labels) {
    reload[l] = ReloadSeconds(c.gguf.at(l));
    qm_bytes[l] = LoadGguf(c.gguf.at(l), true).tensor_bytes;
    std::printf("reload of %s (%s of tensors, mmap + parse + build + fault in): %.2f ms\n",
                l.c_str(), FormatBytes(qm_bytes[l]).c_str(), reload[l] * 1e3);
  }
  for (const std::string& path : {c.pack_raw, c.pack_auto}) {
    Opened o = OpenManager(path);
    const int n = static_cast<int>(o.mgr->levels().size());
    const int repeats = 5;
    std::vector<std::vector<double>> ms(static_cast<size_t>(n));
    std::vector<uint64_t> in(static_cast<size_t>(n));
    std::vector<std::string> slot(static_cast<size_t>(n));
    for (int r = 0; r < repeats; ++r) {
      for (int l = 1; l < n; ++l) {
        const runtime::TransitionRecord rec = Must(o.mgr->TransitionTo(l), "walk");
        ms[static_cast<size_t>(l)].push_back(rec.seconds * 1e3);
        in[static_cast<size_t>(l)] = rec.bytes_in;
        for (size_t p = 0; p < o.mgr->levels()[static_cast<size_t>(l)].modules.size(); ++p) {
          if (o.mgr->levels()[static_cast<size_t>(l)].modules[p] !=
              o.mgr->levels()[static_cast<size_t>(l) - 1].modules[p]) {
            slot[static_cast<size_t>(l)] = o.mgr->manifest().slots[p].name;
          }
        }
      }
      Must(o.mgr->TransitionTo(0), "back");
    }
    const bool raw = path == c.pack_raw;
    std::printf(
        "\n%s pack (%s): step, slot lowered, bytes in, ms (median of %d walks), reload of the "
        "nearest QM, ratio\n",
        raw ? "raw" : "auto", path.c_str(), repeats);
    std::vector<double> ratios, step_ms, per_mb;
    double total_ms = 0;
    uint64_t total_in = 0;
    for (int l = 1; l < n; ++l) {
      const double t = Median(ms[static_cast<size_t>(l)]);
      const uint64_t footprint = o.mgr->levels()[static_cast<size_t>(l)].footprint;
      std::string nearest = c.labels.front();
      for (const auto& q : c.labels) {
        if (std::llabs(static_cast<long long>(qm_bytes[q]) - static_cast<long long>(footprint)) <
            std::llabs(static_cast<long long>(qm_bytes[nearest]) -
                       static_cast<long long>(footprint))) {
          nearest = q;
        }
      }
      const double ratio = reload[nearest] * 1e3 / std::max(t, 1e-6);
      ratios.push_back(ratio);
      step_ms.push_back(t);
      per_mb.push_back(t / (static_cast<double>(in[static_cast<size_t>(l)]) / 1e6));
      total_ms += t;
      total_in += in[static_cast<size_t>(l)];
      std::printf("  %3d  %-26s %10s %8.3f ms   %-7s %7.2f ms  %7.0fx\n", l,
                  slot[static_cast<size_t>(l)].c_str(),
                  FormatBytes(in[static_cast<size_t>(l)]).c_str(), t, nearest.c_str(),
                  reload[nearest] * 1e3, ratio);
    }
    std::printf(
        "  %s: %d steps, %s swapped in %.2f ms (%.3f ms per MB); median step %.3f ms (%.3f ms per "
        "MB); "
        "reload / step: median %.0fx, min %.0fx\n",
        raw ? "raw" : "auto", n - 1, FormatBytes(total_in).c_str(), total_ms,
        total_ms / (static_cast<double>(total_in) / 1e6), Median(step_ms), Median(per_mb),
        Median(ratios), *std::min_element(ratios.begin(), ratios.end()));
  }
}

void ReportMemory(const Case& c) {
  std::printf("\n== %s: resident memory at several budgets (after 8 decoded tokens) ==\n",
              c.name.c_str());
  for (const std::string& path : {c.pack_raw, c.pack_auto}) {
    runtime::ElasticOptions eo;
    auto rt = Must(runtime::ElasticRuntime::Open(Env::Default(), path, eo, &Pool()), path);
    Die(rt->Start({}), "start");
    const auto& levels = rt->residency()->levels();
    const uint64_t overhead = rt->overhead().total();
    std::printf("%s pack; KV cache + scratch counted in each budget: %s\n",
                path == c.pack_raw ? "raw" : "auto", FormatBytes(overhead).c_str());
    const uint64_t opened = Must(runtime::PackPayloadPresentBytes(*rt->pack()), "pagemap");
    std::printf("  %-10s %-8s %12s %14s %12s %14s %14s %12s\n", "budget", "EQM", "footprint",
                "mapped (pages)", "decoded", "measured/foot", "reader's map", "process RSS");
    const size_t n = levels.size();
    for (size_t l : {size_t{0}, n / 4, n / 2, 3 * n / 4, n - 1, size_t{0}}) {
      const uint64_t budget = levels[l].footprint + overhead;
      Die(rt->residency()->SetBudget(budget).status(), "budget");
      runtime::GenerateOptions go;
      go.n_predict = 8;
      go.sampling.temperature = 0;
      Die(rt->Generate(std::vector<int32_t>{1, 5, 9}, go, {}, [](int32_t) { return Status::OK(); })
              .status(),
          "gen");
      const uint64_t mapped = Must(rt->residency()->MappedPresentBytes(), "pagemap");
      const uint64_t reader = Must(runtime::PackPayloadPresentBytes(*rt->pack()), "pagemap");
      const uint64_t owned = rt->residency()->owned_bytes();
      const uint64_t rss = Must(runtime::ProcessRssBytes(), "statm");
      std::printf("  %-10s %-8s %12s %14s %12s %13.3fx %14s %12s\n", FormatBytes(budget).c_str(),
                  levels[l].label.c_str(), FormatBytes(levels[l].footprint).c_str(),
                  FormatBytes(mapped).c_str(), FormatBytes(owned).c_str(),
                  static_cast<double>(mapped + owned) / static_cast<double>(levels[l].footprint),
                  (FormatBytes(reader) +
                   (reader > opened ? " (+" + FormatBytes(reader - opened) + ")" : ""))
                      .c_str(),
                  FormatBytes(rss).c_str());
    }
  }
}

void ReportReplay(const Case& c) {
  const bool real = c.name == "tinystories-3M";
  const int64_t want_chunks =
      real ? EnvInt("FQ_BENCH_REPLAY_CHUNKS", 300) : EnvInt("FQ_BENCH_SYNTH_REPLAY_CHUNKS", 40);
  runtime::ElasticOptions eo;
  eo.workload = runtime::Workload::kPerplexity;
  auto rt = Must(runtime::ElasticRuntime::Open(Env::Default(), c.pack_raw, eo, &Pool()), "replay");
  const int64_t n_ctx = rt->n_ctx();
  const Bytes text = Must(
      ReadFileBytes(Env::Default(), EnvStr("FQ_TESTDATA", "") + "/text/tinystories_val.ppl.txt"),
      "text");
  const std::vector<int32_t> tokens = rt->tokenizer().Encode(
      std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), true);
  const int64_t chunks =
      std::min<int64_t>(want_chunks, static_cast<int64_t>(tokens.size()) / n_ctx);
  const auto& levels = rt->residency()->levels();
  const uint64_t overhead = rt->overhead().total();
  // The static ladder: the QMs of the library, largest first.
  std::vector<std::pair<std::string, uint64_t>> ladder;
  for (const auto& l : c.labels) ladder.emplace_back(l, LoadGguf(c.gguf.at(l), true).tensor_bytes);
  const uint64_t lo = ladder.back().second + overhead;
  const uint64_t hi = std::max(levels.front().footprint, ladder.front().second) + overhead;
  // Memory the device leaves the model: a random walk with sudden drops and
  // recoveries (another app starting and quitting), about one change per chunk.
  std::mt19937_64 rng(2025);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<runtime::BudgetChange> trace;
  double avail = 1.0;
  for (int64_t i = 0; i < chunks; ++i) {
    const double r = u(rng);
    if (r < 0.15) {
      avail = u(rng);  // a jump anywhere
    } else {
      avail = std::clamp(avail + (u(rng) - 0.5) * 0.2, 0.0, 1.0);  // drift
    }
    const int64_t token =
        i == 0 ? 0 : i * n_ctx - static_cast<int64_t>(u(rng) * static_cast<double>(n_ctx));
    trace.push_back({token, lo + static_cast<uint64_t>(avail * static_cast<double>(hi - lo)),
                     static_cast<int>(i + 1)});
  }
  std::sort(trace.begin(), trace.end(),
            [](const auto& a, const auto& b) { return a.token < b.token; });
  Die(rt->Start({.budget = trace.front().budget}), "start");

  // Elastic.
  const Clock::time_point t0 = Clock::now();
  auto er = Must(rt->Perplexity(tokens, chunks, trace), "elastic ppl");
  const double elastic_seconds = Seconds(t0);
  uint64_t elastic_bytes = 0;
  double elastic_stall = 0;
  for (const auto& t : er.transitions) {
    elastic_bytes += t.bytes_in;
    elastic_stall += t.seconds;
  }

  // Static ladder: the largest QM that fits, reloaded whole on every change.
  std::vector<double> static_nll(static_cast<size_t>(chunks));
  std::vector<uint64_t> static_foot(static_cast<size_t>(chunks));
  uint64_t static_bytes = 0;
  double static_stall = 0;
  int64_t static_switches = 0;
  {
    StaticModel current;
    std::string current_label;
    std::unique_ptr<runtime::Session> session;
    const int32_t bos = rt->tokenizer().bos();
    const auto inputs = runtime::PerplexityChunks(tokens, n_ctx, bos, chunks);
    size_t next = 0;
    uint64_t budget = trace.front().budget;
    std::vector<float> logits;
    const size_t v = static_cast<size_t>(rt->residency()->hparams().n_vocab);
    for (int64_t ch = 0; ch < chunks; ++ch) {
      while (next < trace.size() && trace[next].token <= ch * n_ctx) budget = trace[next++].budget;
      std::string pick = ladder.back().first;
      uint64_t foot = ladder.back().second;
      for (const auto& [label, bytes] : ladder) {
        if (bytes + overhead <= budget) {
          pick = label;
          foot = bytes;
          break;
        }
      }
      if (pick != current_label) {
        const Clock::time_point s0 = Clock::now();
        session.reset();
        current = StaticModel();
        current = LoadGguf(c.gguf.at(pick), true);
        session = std::make_unique<runtime::Session>(current.model.get(), n_ctx, &Pool());
        static_stall += Seconds(s0);
        if (!current_label.empty()) {
          ++static_switches;
          static_bytes += foot;
        }
        current_label = pick;
      }
      session->Reset();
      Die(session->Eval(inputs[static_cast<size_t>(ch)], static_cast<size_t>(n_ctx / 2), &logits),
          "eval");
      runtime::MeanAccumulator acc;
      for (int64_t j = n_ctx / 2; j < n_ctx - 1; ++j) {
        acc.Add(runtime::TokenNll(
            std::span<const float>(logits.data() + static_cast<size_t>(j - n_ctx / 2) * v, v),
            tokens[static_cast<size_t>(ch * n_ctx + j + 1)]));
      }
      static_nll[static_cast<size_t>(ch)] = acc.mean();
      static_foot[static_cast<size_t>(ch)] = foot;
    }
  }

  std::printf(
      "\n== %s: trace replay, %zu budget changes over %lld chunks of %lld tokens (%s .. %s)%s ==\n",
      c.name.c_str(), trace.size(), static_cast<long long>(chunks), static_cast<long long>(n_ctx),
      FormatBytes(lo).c_str(), FormatBytes(hi).c_str(),
      real ? "" : "; random weights: its perplexities mean nothing, its stalls do");
  std::printf("  %-12s %10s %12s %12s %10s %10s\n", "chunks", "budget", "EQM weights", "QM weights",
              "ppl EQM", "ppl QM");
  const int64_t seg = std::max<int64_t>(1, chunks / 10);
  for (int64_t s = 0; s < chunks; s += seg) {
    const int64_t e = std::min(chunks, s + seg);
    double nll_e = 0, nll_s = 0, budget = 0, fe = 0, fs = 0;
    for (int64_t ch = s; ch < e; ++ch) {
      nll_e += er.chunks[static_cast<size_t>(ch)].nll;
      nll_s += static_nll[static_cast<size_t>(ch)];
      budget += static_cast<double>(er.chunks[static_cast<size_t>(ch)].budget);
      fe += static_cast<double>(er.chunks[static_cast<size_t>(ch)].footprint);
      fs += static_cast<double>(static_foot[static_cast<size_t>(ch)]);
    }
    const double k = static_cast<double>(e - s);
    std::printf("  %5lld-%-6lld %10s %12s %12s %10.4f %10.4f\n", static_cast<long long>(s),
                static_cast<long long>(e - 1),
                FormatBytes(static_cast<uint64_t>(budget / k)).c_str(),
                FormatBytes(static_cast<uint64_t>(fe / k)).c_str(),
                FormatBytes(static_cast<uint64_t>(fs / k)).c_str(), std::exp(nll_e / k),
                std::exp(nll_s / k));
  }
  double all_s = 0, mean_fe = 0, mean_fs = 0;
  for (int64_t ch = 0; ch < chunks; ++ch) {
    all_s += static_nll[static_cast<size_t>(ch)];
    mean_fe += static_cast<double>(er.chunks[static_cast<size_t>(ch)].footprint);
    mean_fs += static_cast<double>(static_foot[static_cast<size_t>(ch)]);
  }
  std::printf(
      "  elastic ensemble: ppl %.4f, mean weights %s, %zu transitions, %s swapped, stalls %.1f ms "
      "in all "
      "(%.3f ms each), run %.1f s\n",
      er.total.ppl,
      FormatBytes(static_cast<uint64_t>(mean_fe / static_cast<double>(chunks))).c_str(),
      er.transitions.size(), FormatBytes(elastic_bytes).c_str(), elastic_stall * 1e3,
      er.transitions.empty() ? 0.0
                             : elastic_stall * 1e3 / static_cast<double>(er.transitions.size()),
      elastic_seconds);
  std::printf(
      "  static ladder:    ppl %.4f, mean weights %s, %lld switches, %s reloaded, stalls %.1f ms "
      "in all "
      "(%.3f ms each)\n",
      std::exp(all_s / static_cast<double>(chunks)),
      FormatBytes(static_cast<uint64_t>(mean_fs / static_cast<double>(chunks))).c_str(),
      static_cast<long long>(static_switches), FormatBytes(static_bytes).c_str(),
      static_stall * 1e3,
      static_switches == 0 ? 0.0 : static_stall * 1e3 / static_cast<double>(static_switches));
}

void ReportSizes(const Case& c) {
  auto store = Must(store::Store::Open(Env::Default(), c.store_dir), "store");
  auto m = Must(store->FindModel(c.model), "model");
  auto e = Must(store->FindEnsemble(m.id, "walk"), "ensemble");
  std::map<std::string, uint64_t> stored;  // unique modules of the ensemble and its QMs
  for (const auto& q : Must(store->ListEqms(e.id), "eqms")) {
    for (const auto& ref : Must(store->catalog().EqmModules(q.id), "eqm modules"))
      stored[ref.key.Hex()] = ref.stored_bytes;
  }
  uint64_t store_bytes = 0, gguf_bytes = 0;
  for (const auto& [k, b] : stored) store_bytes += b;
  for (const auto& l : c.labels)
    gguf_bytes += Must(Env::Default()->GetFileSize(c.gguf.at(l)), "size");
  const uint64_t raw = Must(Env::Default()->GetFileSize(c.pack_raw), "size");
  const uint64_t aut = Must(Env::Default()->GetFileSize(c.pack_auto), "size");
  std::printf(
      "\n== %s: sizes ==\n  the three GGUF files: %s; the store's blobs of the ensemble (%zu "
      "modules): %s; "
      "pack --codec raw: %s (%.3fx the store); --codec auto: %s (%.3fx)\n",
      c.name.c_str(), FormatBytes(gguf_bytes).c_str(), stored.size(),
      FormatBytes(store_bytes).c_str(), FormatBytes(raw).c_str(),
      static_cast<double>(raw) / static_cast<double>(store_bytes), FormatBytes(aut).c_str(),
      static_cast<double>(aut) / static_cast<double>(store_bytes));
}

}  // namespace
}  // namespace fqpack::bench

int main(int argc, char** argv) {
  using namespace fqpack::bench;
  benchmark::Initialize(&argc, argv);
  std::string root = EnvStr("FQ_BENCH_DIR", "");
  std::unique_ptr<char, void (*)(char*)> tmp(nullptr, [](char* p) {
    if (p != nullptr) {
      std::system(("rm -rf '" + std::string(p) + "'").c_str());
      std::free(p);
    }
  });
  if (root.empty()) {
    std::string templ = EnvStr("TMPDIR", "/tmp") + "/fqpack-transition-XXXXXX";
    tmp.reset(strdup(templ.c_str()));
    if (::mkdtemp(tmp.get()) == nullptr) return 1;
    root = tmp.get();
  } else {
    Die(fqpack::Env::Default()->CreateDir(root), "mkdir");
  }
  const std::string models = EnvStr("FQ_BENCH_MODELS", "tinystories,synth");
  std::vector<Case> cases;
  if (models.find("tinystories") != std::string::npos) {
    if (EnvStr("FQ_TESTDATA", "").empty()) {
      std::fprintf(stderr, "FQ_TESTDATA is not set: skipping tinystories-3M\n");
    } else {
      cases.push_back(BuildTinystories(root));
    }
  }
  if (models.find("synth") != std::string::npos) cases.push_back(BuildSynthetic(root));
  for (const Case& c : cases) {
    for (const auto& [codec, path] :
         {std::pair{"raw", c.pack_raw}, std::pair{"auto", c.pack_auto}}) {
      benchmark::RegisterBenchmark(("transition/step/" + c.name + "/" + codec).c_str(), BM_Step,
                                   path)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("transition/walk/" + c.name + "/" + codec).c_str(), BM_Walk,
                                   path)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
    for (const auto& l : c.labels) {
      for (bool mm : {true, false}) {
        benchmark::RegisterBenchmark(
            ("reload/" + c.name + "/" + l + (mm ? "/mmap" : "/read")).c_str(), BM_Reload,
            c.gguf.at(l), mm)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  if (EnvInt("FQ_BENCH_REPORT", 1) != 0) {
    for (const Case& c : cases) {
      ReportWalk(c);
      ReportMemory(c);
      ReportReplay(c);
      ReportSizes(c);
    }
  }
  benchmark::Shutdown();
  return 0;
}
