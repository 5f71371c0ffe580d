// fqpack ppl | run | tokenize: running a model, a QM of the store or a
// .fqpack file under a memory budget (runtime/elastic.h); and the export of
// a pack's EQM as a GGUF.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "cli/app.h"
#include "cli/output.h"
#include "runtime/dynamic.h"
#include "runtime/elastic.h"
#include "runtime/generate.h"
#include "runtime/llama.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/tokenizer.h"
#include "schema/json.h"
#include "schema/units.h"
#include "store/gguf_export.h"

namespace fqpack::cli {
namespace {

using Clock = std::chrono::steady_clock;

// `text` with every byte that does not start or continue a valid UTF-8
// sequence replaced by U+FFFD: a model may stop in the middle of a
// character (or emit stray byte tokens), and a JSON document must be UTF-8.
std::string ValidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= text.size() && !(n == 2 && c < 0xC2) && c <= 0xF4;
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    if (ok && n >= 3) {  // no overlong forms, surrogates or code points above U+10FFFF
      const auto c1 = static_cast<unsigned char>(text[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0) && !(c == 0xF0 && c1 < 0x90) &&
           !(c == 0xF4 && c1 >= 0x90);
    }
    if (ok) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Which model to run: a QM of a model in the store, or a .fqpack file, run
// elastically: one EQM (--eqm), the largest that fits a budget (--budget), a
// budget that changes as it runs (--budget-trace), else the largest.
struct ModelSourceArgs {
  std::string model;  // --model; may be empty when the store holds one model
  std::string qm;     // --qm
  std::string pack;   // positional: a .fqpack file
  std::string ensemble;
  int eqm = -1;
  std::string budget;        // --budget, with units
  std::string budget_trace;  // --budget-trace FILE
  std::string transitions_json;
  bool static_ladder = false;
  int64_t n_batch = 0;  // -b, packs only

  void AddOptions(CLI::App* cmd, bool with_qm, bool elastic = true) {
    cmd->add_option("pack", pack, "A .fqpack file to run (default: a QM of the store)")
        ->check(CLI::ExistingFile);
    cmd->add_option("-m,--model", model, "Model name (needed when the store holds several)");
    if (with_qm) cmd->add_option("--qm", qm, "QM label (needed when the model has several)");
    if (!elastic) return;
    cmd->add_option("--eqm", eqm, "Run this EQM (step) of the pack's ensemble")
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("-e,--ensemble", ensemble, "Ensemble of the pack (default: the newest)");
    cmd->add_option("--budget", budget,
                    "Memory budget (weights + KV cache + scratch), e.g. 600KB, 1.5GiB: runs the "
                    "largest EQM that fits");
    cmd->add_option("--budget-trace", budget_trace,
                    "File of 'token_index,budget' lines: the budget changes while it runs")
        ->check(CLI::ExistingFile);
    cmd->add_option("--transitions-json", transitions_json,
                    "Write every transition (from, to, modules swapped, bytes read, ms) to this file as JSON");
    cmd->add_flag("--static-ladder", static_ladder,
                  "Use only the pack's whole QMs (what switching static checkpoints gives)");
    cmd->add_option("-b,--batch-size", n_batch,
                    "Tokens per forward pass of a .fqpack run; its activations count in the budget "
                    "(default: 64 for run, a whole chunk for ppl)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  }
  bool elastic_flags() const {
    return eqm >= 0 || !ensemble.empty() || !budget.empty() || !budget_trace.empty() ||
           !transitions_json.empty() || static_ladder || n_batch > 0;
  }
};

// A resolved source: the manifest to run and what provides its modules.
struct ModelSource {
  std::unique_ptr<store::Store> store;  // owns the ModuleSource below
  store::ModuleSource* modules = nullptr;
  // A QM of the store: its module files, pinned when the manifest was read,
  // so a gc sweeping meanwhile cannot take them away.
  std::shared_ptr<store::PinnedModules> pinned;
  store::ModelManifest manifest;
  std::string display;  // "stories260K/Q4_K_M"
  // A .fqpack: the runtime that holds its levels, model and session.
  std::unique_ptr<runtime::ElasticRuntime> elastic;
  std::vector<runtime::BudgetChange> trace;
};

// What opening a pack needs beyond the arguments.
struct ElasticSetup {
  runtime::ThreadPool* pool = nullptr;
  runtime::Workload workload = runtime::Workload::kGenerate;
  int64_t n_ctx = 0;
  int64_t n_batch = 0;
};

Status CheckSourceArgs(const ModelSourceArgs& args) {
  if (args.pack.empty()) {
    if (args.elastic_flags()) {
      return Status::InvalidArgument(
          "--budget, --budget-trace, --eqm, --ensemble, --transitions-json, --static-ladder and -b run a "
          ".fqpack file; a QM of the store has one fixed size (write a pack with `fqpack pack -o "
          "model.fqpack`, then `fqpack run model.fqpack --budget ...`)");
    }
    return Status::OK();
  }
  if (!args.model.empty()) {
    return Status::InvalidArgument("--model picks a model of the store; a .fqpack file holds one model");
  }
  int choices = (args.eqm >= 0) + !args.qm.empty() + !args.budget.empty();
  if (choices > 1) return Status::InvalidArgument("choose one of --eqm, --qm and --budget");
  if (!args.budget_trace.empty() && (args.eqm >= 0 || !args.qm.empty())) {
    return Status::InvalidArgument("--budget-trace moves between EQMs; it cannot be combined with --eqm or --qm");
  }
  if (args.static_ladder && args.eqm >= 0) {
    return Status::InvalidArgument("--static-ladder runs the pack's whole QMs; choose one with --qm, not --eqm");
  }
  return Status::OK();
}

Result<ModelSource> OpenPackSource(Context& ctx, const ModelSourceArgs& args, bool need_modules,
                                   const ElasticSetup& setup) {
  ModelSource src;
  if (!need_modules) {
    FQ_ASSIGN_OR_RETURN(auto reader, pack::PackReader::Open(ctx.env, args.pack));
    const store::ModelInfo& m = reader->model();
    src.manifest.model = m.name;
    src.manifest.arch = m.arch;
    src.manifest.gguf_version = m.gguf_version;
    src.manifest.n_kv = m.n_kv;
    src.manifest.metadata = m.metadata;
    src.display = m.name;
    return src;
  }
  runtime::ElasticOptions opts;
  opts.residency.ensemble = args.ensemble;
  opts.residency.qms_only = args.static_ladder || !args.qm.empty();
  opts.n_ctx = setup.n_ctx;
  opts.n_batch = setup.n_batch;
  opts.workload = setup.workload;
  FQ_ASSIGN_OR_RETURN(src.elastic, runtime::ElasticRuntime::Open(ctx.env, args.pack, opts, setup.pool));
  runtime::LevelChoice choice;
  choice.eqm = args.eqm;
  choice.qm = args.qm;
  if (!args.budget.empty()) {
    Result<uint64_t> b = ParseBytes(args.budget);
    if (!b.ok()) return Status::InvalidArgument("--budget '" + args.budget + "': " + b.status().message());
    if (*b == 0) return Status::InvalidArgument("--budget must be more than 0 bytes");
    choice.budget = *b;
  }
  if (!args.budget_trace.empty()) {
    FQ_ASSIGN_OR_RETURN(src.trace, runtime::ReadBudgetTrace(ctx.env, args.budget_trace));
    FQ_RETURN_IF_ERROR(src.elastic->CheckTrace(src.trace, args.budget_trace));
    // A trace that starts at token 0 picks the first level itself: load that
    // one rather than the largest and a transition right away.
    if (choice.budget == 0 && choice.eqm < 0 && choice.qm.empty() && src.trace.front().token == 0) {
      choice.budget = src.trace.front().budget;
    }
  }
  FQ_RETURN_IF_ERROR(src.elastic->Start(choice));
  src.manifest = src.elastic->residency()->manifest();
  src.manifest.label = src.elastic->residency()->stats().label;
  src.modules = src.elastic->pack();
  src.display = src.manifest.model + "/" + src.manifest.label;
  return src;
}

// `need_modules` false: only the metadata is wanted (tokenize), so no QM has
// to be chosen.
Result<ModelSource> ResolveModelSource(Context& ctx, const ModelSourceArgs& args, bool need_modules,
                                       const ElasticSetup& setup = {}) {
  FQ_RETURN_IF_ERROR(CheckSourceArgs(args));
  if (!args.pack.empty()) return OpenPackSource(ctx, args, need_modules, setup);
  ModelSource src;
  FQ_ASSIGN_OR_RETURN(src.store, ctx.OpenStore());
  FQ_ASSIGN_OR_RETURN(store::ModelInfo m, src.store->ResolveModel(args.model));
  std::string label = args.qm;
  if (label.empty()) {
    if (!need_modules) {
      src.manifest.model = m.name;
      src.manifest.arch = m.arch;
      src.manifest.gguf_version = m.gguf_version;
      src.manifest.n_kv = m.n_kv;
      src.manifest.metadata = m.metadata;
      src.display = m.name;
      return src;
    }
    FQ_ASSIGN_OR_RETURN(std::vector<store::QmInfo> qms, src.store->ListQms(m.id));
    if (qms.size() != 1) {
      std::string names;
      for (const auto& q : qms) names += (names.empty() ? "" : ", ") + q.label;
      return Status::InvalidArgument("model '" + m.name + "' has " + std::to_string(qms.size()) +
                                     " QMs; choose one with --qm (" + names + ")");
    }
    label = qms[0].label;
  }
  FQ_ASSIGN_OR_RETURN(store::PinnedModel pinned, src.store->PinQm(m.name, label));
  src.manifest = std::move(pinned.manifest);
  src.pinned = std::move(pinned.source);
  src.modules = src.pinned.get();
  src.display = m.name + "/" + src.manifest.label;
  return src;
}

Result<std::unique_ptr<runtime::Model>> LoadModel(const ModelSource& src,
                                                  runtime::ThreadPool* pool) {
  return runtime::Model::Load(src.manifest, src.modules, pool);
}

Result<runtime::Tokenizer> TokenizerOf(const store::ModelManifest& manifest) {
  FQ_ASSIGN_OR_RETURN(gguf::Metadata md,
                      gguf::ParseMetadata(manifest.metadata, manifest.n_kv, manifest.model));
  return runtime::Tokenizer::FromMetadata(md);
}

// -c: 0 means the model's training context. Larger than that is allowed
// with a warning, as llama.cpp allows it (stories260K's GGUF says 128 for a
// model trained at 512).
Result<int64_t> ContextSize(Context& ctx, const runtime::Model& model, int64_t requested) {
  const int64_t train = model.hparams().n_ctx_train;
  if (requested < 0) return Status::InvalidArgument("-c must be positive");
  if (requested == 0) return train;
  if (requested > train) {
    ctx.Note("warning: context of " + std::to_string(requested) + " tokens is longer than the " +
             std::to_string(train) + " the model was trained with; quality may drop beyond that");
  }
  return requested;
}

Status CheckInterrupt() {
  if (InterruptFlag().load()) return Status::Aborted("interrupted");
  return Status::OK();
}

// llama-perplexity's chunking of `n_tokens` tokens (at most `chunks`, -1:
// all), with a progress bar over the chunks that also polls Ctrl-C.
struct PplPlan {
  runtime::PerplexityOptions opts;
  std::unique_ptr<Progress> progress;
};
PplPlan PlanPerplexity(Context& ctx, const runtime::Tokenizer& tok, size_t n_tokens, int64_t n_ctx, int64_t chunks,
                       const std::string& display, bool show_progress = true) {
  PplPlan plan;
  plan.opts.n_ctx = n_ctx;
  plan.opts.bos = tok.add_bos() ? tok.bos() : -1;
  plan.opts.max_chunks = chunks;
  const int64_t total = std::min<int64_t>(static_cast<int64_t>(n_tokens) / n_ctx, chunks < 0 ? INT64_MAX : chunks);
  plan.progress = std::make_unique<Progress>("perplexity " + display, static_cast<uint64_t>(total),
                                             show_progress && ctx.ShowProgress());
  plan.opts.progress = [bar = plan.progress.get()](int64_t done, int64_t) {
    bar->Update(static_cast<uint64_t>(done));
    return CheckInterrupt();
  };
  return plan;
}

// Elastic runs log each transition on stderr as it happens.
runtime::TransitionCallback LogTransitions(Context& ctx) {
  return [&ctx](const runtime::TransitionRecord& t) { ctx.Note("transition " + runtime::DescribeTransition(t)); };
}

Status WriteTransitionsFile(Context& ctx, const std::string& path,
                            const std::vector<runtime::TransitionRecord>& transitions) {
  if (path.empty()) return Status::OK();
  JsonWriter w(true);
  w.BeginArray();
  for (const auto& t : transitions) runtime::WriteTransitionJson(&w, t);
  w.EndArray();
  std::string text = w.str() + "\n";
  return PublishFile(ctx.env, path, ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

// The residency state after a run, for --json.
void WriteResidencyJson(JsonWriter* w, runtime::ElasticRuntime* rt,
                        const std::vector<runtime::TransitionRecord>& transitions) {
  const runtime::ResidencyStats s = rt->residency()->stats();
  // clang-format off
  w->Key("pack").String(rt->pack()->path())
      .Key("ensemble").String(rt->residency()->ensemble_name())
      .Key("level").String(s.label)
      .Key("eqm").Int(s.step)
      .Key("footprint").Uint(s.footprint)
      .Key("resident_bytes").Uint(s.resident_bytes)
      .Key("kv_cache_bytes").Uint(rt->overhead().kv_cache)
      .Key("scratch_bytes").Uint(rt->overhead().scratch)
      .Key("budget").Uint(s.budget)
      .Key("minimum_budget").Uint(rt->residency()->MinimumBudget())
      .Key("transition_count").Int(s.transitions)
      .Key("modules_swapped").Int(s.modules_swapped)
      .Key("transition_bytes_read").Uint(s.bytes_read)
      .Key("transition_ms").Double(s.transition_seconds * 1e3)
      .Key("transitions").BeginArray();
  // clang-format on
  for (const auto& t : transitions) runtime::WriteTransitionJson(w, t);
  w->EndArray();
}

// "eqm:17 (2.10 MiB of weights + 300 KiB KV cache and scratch); 12 transitions: ..."
std::string ResidencySummary(runtime::ElasticRuntime* rt) {
  const runtime::ResidencyStats s = rt->residency()->stats();
  std::string out = "ran " + s.label + " at the end (" + FormatBytes(s.resident_bytes) + " of weights + " +
                    FormatBytes(rt->overhead().total()) + " KV cache and scratch" +
                    (s.budget > 0 ? ", budget " + FormatBytes(s.budget) : "") + ")";
  if (s.transitions > 0) {
    out += "; " + std::to_string(s.transitions) + " transitions: " + std::to_string(s.modules_swapped) +
           " modules swapped, " + FormatBytes(s.bytes_read) + " read, " +
           FormatDouble(s.transition_seconds * 1e3, 1) + " ms";
  }
  return out;
}


// --dynamic hi=LABEL,lo=LABEL [--target-bits B]: per-token precision
// switching between two QMs (runtime/dynamic.h), from the store or a pack.
struct DynamicArgs {
  std::string spec;
  double target_bits = NAN;  // NaN: the target the model was calibrated for

  void AddOptions(CLI::App* cmd) {
    cmd->add_option("--dynamic", spec,
                    "Switch precision per token between two QMs, e.g. hi=Q8_0,lo=Q4_K_M (needs `fqpack "
                    "calibrate-dynamic` for that pair)");
    cmd->add_option("--target-bits", target_bits,
                    "Average bits per weight --dynamic aims at (default: the calibrated target)");
  }
  bool on() const { return !spec.empty(); }
};

struct DynamicRun {
  std::string hi;
  std::string lo;
  store::DynamicModelInfo info;
  runtime::DynamicPlan plan;
  std::unique_ptr<runtime::Model> model;  // a store's lo QM (a pack's lives in its runtime)
  std::unique_ptr<runtime::DynamicRunner> runner;
  uint64_t lo_bytes = 0;       // the lo QM's weights, resident
  uint64_t resident_bytes = 0; // lo weights plus the hi copies held next to them
  uint64_t budget = 0;         // --budget, 0: none
};

Status ParseDynamicSpec(const std::string& spec, std::string* hi, std::string* lo) {
  const std::string bad = "--dynamic '" + spec + "': expected hi=LABEL,lo=LABEL (e.g. hi=Q8_0,lo=Q4_K_M)";
  const size_t comma = spec.find(',');
  if (comma == std::string::npos || spec.find(',', comma + 1) != std::string::npos) {
    return Status::InvalidArgument(bad);
  }
  for (const std::string& part : {spec.substr(0, comma), spec.substr(comma + 1)}) {
    if (part.rfind("hi=", 0) == 0) {
      *hi = part.substr(3);
    } else if (part.rfind("lo=", 0) == 0) {
      *lo = part.substr(3);
    } else {
      return Status::InvalidArgument(bad);
    }
  }
  if (hi->empty() || lo->empty()) return Status::InvalidArgument(bad);
  return Status::OK();
}

Status CheckDynamicArgs(const ModelSourceArgs& source, const DynamicArgs& dyn, const std::string& kl_base) {
  if (!dyn.on()) {
    if (!std::isnan(dyn.target_bits)) return Status::InvalidArgument("--target-bits goes with --dynamic hi=...,lo=...");
    return Status::OK();
  }
  ModelSourceArgs others = source;
  others.budget.clear();  // a budget bounds the hi copies (a .fqpack only)
  if (!source.qm.empty() || others.elastic_flags() || !kl_base.empty()) {
    return Status::InvalidArgument(
        "--dynamic runs the two QMs it names; it does not combine with --qm, --eqm, --ensemble, "
        "--budget-trace, --static-ladder, --transitions-json, -b or --kl-base");
  }
  if (!source.budget.empty() && source.pack.empty()) {
    return Status::InvalidArgument("--budget with --dynamic runs a .fqpack file");
  }
  if (!source.pack.empty() && !source.model.empty()) {
    return Status::InvalidArgument("--model picks a model of the store; a .fqpack file holds one model");
  }
  return Status::OK();
}

// Opens the pair and its dynamic model, loads the lo QM and holds the hi
// copies of the units that may run hi. Fills *src (the lo QM's manifest; a
// pack's ElasticRuntime at the lo QM, or the store).
Result<DynamicRun> OpenDynamic(Context& ctx, const ModelSourceArgs& args, const DynamicArgs& dargs, ModelSource* src,
                               runtime::ThreadPool* pool, int64_t n_ctx) {
  DynamicRun d;
  FQ_RETURN_IF_ERROR(ParseDynamicSpec(dargs.spec, &d.hi, &d.lo));
  store::ModelManifest hi;
  if (args.pack.empty()) {
    FQ_ASSIGN_OR_RETURN(src->store, ctx.OpenStore());
    FQ_ASSIGN_OR_RETURN(store::ModelInfo m, src->store->ResolveModel(args.model));
    FQ_ASSIGN_OR_RETURN(hi, src->store->QmManifest(m.name, d.hi));
    FQ_ASSIGN_OR_RETURN(src->manifest, src->store->QmManifest(m.name, d.lo));
    FQ_RETURN_IF_ERROR(runtime::CheckDynamicPair(hi, src->manifest));
    FQ_ASSIGN_OR_RETURN(d.info, src->store->FindDynamicModel(m.id, d.hi, d.lo));
  } else {
    runtime::ElasticOptions opts;
    opts.residency.qms_only = true;
    opts.n_ctx = n_ctx;
    opts.workload = runtime::Workload::kGenerate;  // every token goes alone
    FQ_ASSIGN_OR_RETURN(src->elastic, runtime::ElasticRuntime::Open(ctx.env, args.pack, opts, pool));
    pack::PackReader* pack = src->elastic->pack();
    FQ_ASSIGN_OR_RETURN(hi, pack->QmManifest(d.hi));
    FQ_ASSIGN_OR_RETURN(src->manifest, pack->QmManifest(d.lo));
    FQ_RETURN_IF_ERROR(runtime::CheckDynamicPair(hi, src->manifest));
    FQ_ASSIGN_OR_RETURN(d.info, pack->FindDynamicModel(d.hi, d.lo));
  }
  if (std::isnan(dargs.target_bits)) {
    d.plan = runtime::StoredPlan(d.info);
  } else {
    FQ_ASSIGN_OR_RETURN(d.plan, runtime::PlanForTarget(d.info, dargs.target_bits));
  }
  d.lo_bytes = src->manifest.weight_bytes();
  if (!args.budget.empty()) {
    // The lo QM, the KV cache and scratch first; the hi copies of the most
    // sensitive units in what is left.
    Result<uint64_t> budget = ParseBytes(args.budget);
    if (!budget.ok()) return Status::InvalidArgument("--budget '" + args.budget + "': " + budget.status().message());
    const uint64_t floor = d.lo_bytes + src->elastic->overhead().total();
    if (*budget < floor) {
      return Status::InvalidArgument("budget " + std::to_string(*budget) + " bytes (" + FormatBytes(*budget) +
                                     ") is below what --dynamic needs for " + d.lo + " alone: " +
                                     std::to_string(floor) + " bytes (" + FormatBytes(floor) + "): weights " +
                                     FormatBytes(d.lo_bytes) + " + KV cache and scratch " +
                                     FormatBytes(src->elastic->overhead().total()));
    }
    runtime::CapPlanHiBytes(d.info, hi, src->manifest, *budget - floor, &d.plan);
    d.budget = *budget;
  }
  if (src->elastic != nullptr) {
    runtime::LevelChoice choice;
    choice.qm = d.lo;
    FQ_RETURN_IF_ERROR(src->elastic->Start(choice));
    src->modules = src->elastic->pack();
    FQ_ASSIGN_OR_RETURN(d.runner, runtime::DynamicRunner::OverResidency(src->elastic->residency(), hi, src->manifest,
                                                                        d.info, d.plan));
    d.resident_bytes = src->elastic->residency()->resident_bytes();
  } else {
    src->modules = src->store.get();
    FQ_ASSIGN_OR_RETURN(d.model, runtime::Model::Load(src->manifest, src->modules, pool));
    FQ_ASSIGN_OR_RETURN(d.runner, runtime::DynamicRunner::OverModel(d.model.get(), hi, src->manifest, src->modules,
                                                                    d.info, d.plan));
    d.resident_bytes = d.lo_bytes + d.runner->hi_copy_bytes();
  }
  src->display = src->manifest.model + " dynamic hi=" + d.hi + ",lo=" + d.lo;
  return d;
}

// "k=0 31.2%, k=1 12.0%, ..." over the hi units per token.
std::string HiUnitsHistogram(const runtime::DynamicStats& s) {
  std::string out;
  for (size_t k = 0; k < s.hi_units_tokens.size(); ++k) {
    const double share = s.tokens == 0 ? 0 : 100.0 * static_cast<double>(s.hi_units_tokens[k]) / s.tokens;
    out += (k ? ", " : "") + std::to_string(k) + ": " + FormatDouble(share, 1) + "%";
  }
  return out;
}

void WriteDynamicJson(JsonWriter* w, const DynamicRun& d, double tokens_per_second) {
  const runtime::DynamicStats& s = d.runner->stats();
  // clang-format off
  w->Key("dynamic").BeginObject()
      .Key("hi").String(d.hi)
      .Key("lo").String(d.lo)
      .Key("hi_bits").Double(d.info.hi_bits())
      .Key("lo_bits").Double(d.info.lo_bits())
      .Key("target_bits").Double(d.plan.target_bits)
      .Key("calib_bits").Double(d.plan.calib_bits)
      .Key("mean_bits").Double(s.mean_bits())
      .Key("mean_hi_share").Double(s.mean_hi_share())
      .Key("tokens").Int(s.tokens)
      .Key("tokens_per_second").Double(tokens_per_second)
      .Key("units").Int(d.runner->units())
      .Key("switchable_units").Int(d.plan.max_hi)
      .Key("lo_bytes").Uint(d.lo_bytes)
      .Key("hi_copy_bytes").Uint(d.runner->hi_copy_bytes())
      .Key("resident_bytes").Uint(d.resident_bytes)
      .Key("budget").Uint(d.budget)
      .Key("binds").Int(s.binds)
      .Key("hi_units_histogram").BeginArray();
  // clang-format on
  for (int64_t n : s.hi_units_tokens) w->Int(n);
  w->EndArray().Key("thresholds").BeginArray();
  for (size_t u = 0; u < d.plan.thresholds.size(); ++u) {
    w->BeginObject().Key("unit").String(d.info.units[u].name).Key("sensitivity").Double(d.info.units[u].sensitivity);
    if (std::isfinite(d.plan.thresholds[u])) {
      w->Key("threshold").Double(d.plan.thresholds[u]);
    } else {
      w->Key("threshold").Null();
    }
    w->EndObject();
  }
  w->EndArray().EndObject();
}

// Notes on stderr: what was resident, the bits read, the hi units per token.
void NoteDynamic(Context& ctx, const DynamicRun& d, double tokens_per_second) {
  const runtime::DynamicStats& s = d.runner->stats();
  ctx.Note("dynamic hi=" + d.hi + " (" + FormatDouble(d.info.hi_bits(), 3) + " bits/w), lo=" + d.lo + " (" +
           FormatDouble(d.info.lo_bits(), 3) + "): target " + FormatDouble(d.plan.target_bits, 3) +
           " bits/w (calibration text: " + FormatDouble(d.plan.calib_bits, 3) + "); read " +
           FormatDouble(s.mean_bits(), 3) + " bits per weight per token over " + std::to_string(s.tokens) +
           " tokens, " + FormatDouble(tokens_per_second, 1) + " tokens/s");
  ctx.Note("hi units per token (of " + std::to_string(d.runner->units()) + ", " + std::to_string(d.plan.max_hi) +
           " switchable; mean share " + FormatDouble(100 * s.mean_hi_share(), 1) + "%): " + HiUnitsHistogram(s));
  ctx.Note("resident weights " + FormatBytes(d.resident_bytes) + ": lo " + FormatBytes(d.lo_bytes) + " + hi copies " +
           FormatBytes(d.runner->hi_copy_bytes()) +
           (d.budget == 0 ? std::string()
                          : " (budget " + FormatBytes(d.budget) + ": " + std::to_string(d.plan.max_hi) + " of " +
                                std::to_string(d.runner->units()) + " units may run hi)"));
}

struct PplArgs {
  ModelSourceArgs source;
  DynamicArgs dynamic;
  std::string text_file;
  int64_t n_ctx = 0;
  int64_t chunks = -1;
  std::string kl_base;
};

Status RunPplPack(Context& ctx, const PplArgs& args);

// ppl --dynamic: every chunk a token at a time, each token's precision
// chosen from the previous token's distribution (runtime::DynamicPerplexity).
Status RunPplDynamic(Context& ctx, const PplArgs& args) {
  runtime::ThreadPool pool(ctx.Threads());
  ModelSource src;
  FQ_ASSIGN_OR_RETURN(DynamicRun d, OpenDynamic(ctx, args.source, args.dynamic, &src, &pool, args.n_ctx));
  runtime::Model* model = src.elastic != nullptr ? src.elastic->model() : d.model.get();
  FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, TokenizerOf(src.manifest));
  FQ_ASSIGN_OR_RETURN(int64_t n_ctx, ContextSize(ctx, *model, args.n_ctx));
  std::unique_ptr<runtime::Session> own_session;
  runtime::Session* session = src.elastic != nullptr ? src.elastic->session() : nullptr;
  if (session == nullptr) {
    own_session = std::make_unique<runtime::Session>(model, n_ctx, &pool);
    session = own_session.get();
  }
  FQ_ASSIGN_OR_RETURN(Bytes text, ReadFileBytes(ctx.env, args.text_file));
  const std::vector<int32_t> tokens =
      tok.Encode(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), true);
  PplPlan plan = PlanPerplexity(ctx, tok, tokens.size(), n_ctx, args.chunks, src.display);
  d.runner->ResetStats();
  const Clock::time_point t0 = Clock::now();
  Result<runtime::PerplexityResult> r = runtime::DynamicPerplexity(session, d.runner.get(), tokens, plan.opts);
  if (!r.ok()) return r.status().WithContext(args.text_file);
  const double secs = SecondsSince(t0);
  plan.progress->Finish();
  const double tps = static_cast<double>(d.runner->stats().tokens) / std::max(secs, 1e-9);
  if (ctx.json) {
    JsonWriter w(true);
    // clang-format off
    w.BeginObject()
        .Key("model").String(src.manifest.model)
        .Key("text").String(args.text_file)
        .Key("ppl").Double(r->ppl)
        .Key("ppl_err").Double(r->ppl_err)
        .Key("nll").Double(r->nll)
        .Key("tokens").Int(r->tokens)
        .Key("n_ctx").Int(r->n_ctx)
        .Key("chunks").Int(r->chunks)
        .Key("scored").Int(r->scored)
        .Key("threads").Int(ctx.Threads())
        .Key("seconds").Double(secs);
    // clang-format on
    WriteDynamicJson(&w, d, tps);
    w.EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  char line[256];
  std::snprintf(line, sizeof(line), "PPL = %.4f +/- %.5f", r->ppl, r->ppl_err);
  ctx.Print(std::string(line) + "  (" + src.display + ", " + std::to_string(r->chunks) + " chunks of " +
            std::to_string(r->n_ctx) + " tokens, " + std::to_string(r->scored) + " scored of " +
            std::to_string(r->tokens) + ")");
  NoteDynamic(ctx, d, tps);
  ctx.Note(FormatSeconds(secs) + ", a token at a time; " + std::to_string(ctx.Threads()) + " threads");
  return Status::OK();
}

Status RunPpl(Context& ctx, const PplArgs& args) {
  FQ_RETURN_IF_ERROR(CheckDynamicArgs(args.source, args.dynamic, args.kl_base));
  if (args.dynamic.on()) return RunPplDynamic(ctx, args);
  if (!args.source.pack.empty()) return RunPplPack(ctx, args);
  runtime::ThreadPool pool(ctx.Threads());
  FQ_ASSIGN_OR_RETURN(ModelSource src, ResolveModelSource(ctx, args.source, true));
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> model, LoadModel(src, &pool));
  std::unique_ptr<runtime::Model> base;
  std::string base_display;
  if (!args.kl_base.empty()) {
    ModelSourceArgs base_args = args.source;
    base_args.model = src.manifest.model;
    base_args.qm = args.kl_base;
    FQ_ASSIGN_OR_RETURN(ModelSource base_src, ResolveModelSource(ctx, base_args, true));
    FQ_ASSIGN_OR_RETURN(base, LoadModel(base_src, &pool));
    base_display = base_src.display;
  }
  FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, TokenizerOf(src.manifest));
  FQ_ASSIGN_OR_RETURN(Bytes text, ReadFileBytes(ctx.env, args.text_file));
  FQ_ASSIGN_OR_RETURN(int64_t n_ctx, ContextSize(ctx, *model, args.n_ctx));

  const Clock::time_point t_tok = Clock::now();
  const std::vector<int32_t> tokens =
      tok.Encode(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), true);
  const double tokenize_seconds = SecondsSince(t_tok);

  PplPlan plan = PlanPerplexity(ctx, tok, tokens.size(), n_ctx, args.chunks, src.display);
  const Clock::time_point t0 = Clock::now();
  Result<runtime::PerplexityResult> r = runtime::Perplexity(*model, tokens, plan.opts, &pool, base.get());
  if (!r.ok()) return r.status().WithContext(args.text_file);
  const double secs = SecondsSince(t0);
  plan.progress->Finish();

  if (ctx.json) {
    JsonWriter w(true);
    // clang-format off
    w.BeginObject()
        .Key("model").String(src.manifest.model)
        .Key("qm").String(src.manifest.label)
        .Key("text").String(args.text_file)
        .Key("ppl").Double(r->ppl)
        .Key("ppl_err").Double(r->ppl_err)
        .Key("nll").Double(r->nll)
        .Key("tokens").Int(r->tokens)
        .Key("n_ctx").Int(r->n_ctx)
        .Key("chunks").Int(r->chunks)
        .Key("scored").Int(r->scored)
        .Key("threads").Int(ctx.Threads())
        .Key("seconds").Double(secs)
        .Key("tokenize_seconds").Double(tokenize_seconds);
    if (r->has_kl) {
      w.Key("kl_base").String(args.kl_base)
          .Key("kl").Double(r->kl)
          .Key("kl_err").Double(r->kl_err)
          .Key("base_ppl").Double(r->base_ppl)
          .Key("same_top").Double(r->same_top);
    }
    // clang-format on
    w.EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  char line[256];
  std::snprintf(line, sizeof(line), "PPL = %.4f +/- %.5f", r->ppl, r->ppl_err);
  std::string out = std::string(line) + "  (" + src.display + ", " + std::to_string(r->chunks) +
                    " chunks of " + std::to_string(r->n_ctx) + " tokens, " +
                    std::to_string(r->scored) + " scored of " + std::to_string(r->tokens) + ")";
  if (r->has_kl) {
    std::snprintf(
        line, sizeof(line),
        "\nKL(%s || %s) = %.6f +/- %.6f nats/token; same top token %.2f%%; base PPL = %.4f",
        base_display.c_str(), src.display.c_str(), r->kl, r->kl_err, 100 * r->same_top,
        r->base_ppl);
    out += line;
  }
  ctx.Print(out);
  const double evaluated = static_cast<double>(r->chunks * r->n_ctx) * (base ? 2 : 1);
  ctx.Note(FormatSeconds(secs) + " for " + std::to_string(static_cast<int64_t>(evaluated)) +
           " tokens (" + FormatDouble(evaluated / std::max(secs, 1e-9), 1) + " tokens/s, " +
           std::to_string(ctx.Threads()) + " threads)");
  return Status::OK();
}

// ppl of a .fqpack: chunk by chunk on one session, following --budget-trace
// between chunks. With --kl-base (a QM of the pack) the level stays fixed and
// runtime::Perplexity compares the two.
Status RunPplPack(Context& ctx, const PplArgs& args) {
  runtime::ThreadPool pool(ctx.Threads());
  ElasticSetup setup{&pool, runtime::Workload::kPerplexity, args.n_ctx, args.source.n_batch};
  FQ_ASSIGN_OR_RETURN(ModelSource src, ResolveModelSource(ctx, args.source, true, setup));
  runtime::ElasticRuntime* rt = src.elastic.get();
  FQ_ASSIGN_OR_RETURN(int64_t n_ctx, ContextSize(ctx, *rt->model(), args.n_ctx));
  std::unique_ptr<runtime::Model> base;
  if (!args.kl_base.empty()) {
    if (!src.trace.empty()) return Status::InvalidArgument("--kl-base needs a fixed EQM; drop --budget-trace");
    FQ_ASSIGN_OR_RETURN(store::ModelManifest base_manifest, rt->pack()->QmManifest(args.kl_base));
    FQ_ASSIGN_OR_RETURN(base, runtime::Model::Load(base_manifest, rt->pack(), &pool));
  }
  FQ_ASSIGN_OR_RETURN(Bytes text, ReadFileBytes(ctx.env, args.text_file));
  const Clock::time_point t_tok = Clock::now();
  const std::vector<int32_t> tokens = rt->tokenizer().Encode(
      std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), true);
  const double tokenize_seconds = SecondsSince(t_tok);
  // Transition notes would tear a progress bar: none with a trace.
  PplPlan plan = PlanPerplexity(ctx, rt->tokenizer(), tokens.size(), n_ctx, args.chunks, src.display,
                                src.trace.empty());
  const Clock::time_point t0 = Clock::now();
  runtime::ElasticPerplexityResult er;
  if (base != nullptr) {
    Result<runtime::PerplexityResult> r = runtime::Perplexity(*rt->model(), tokens, plan.opts, &pool, base.get());
    if (!r.ok()) return r.status().WithContext(args.text_file);
    er.total = *r;
  } else {
    Result<runtime::ElasticPerplexityResult> r =
        rt->Perplexity(tokens, args.chunks, src.trace, plan.opts.progress, LogTransitions(ctx));
    if (!r.ok()) return r.status().WithContext(args.text_file);
    er = std::move(*r);
  }
  const double secs = SecondsSince(t0);
  plan.progress->Finish();
  FQ_RETURN_IF_ERROR(WriteTransitionsFile(ctx, args.source.transitions_json, er.transitions));
  const runtime::PerplexityResult& r = er.total;
  if (ctx.json) {
    JsonWriter w(true);
    // clang-format off
    w.BeginObject()
        .Key("model").String(src.manifest.model)
        .Key("text").String(args.text_file)
        .Key("ppl").Double(r.ppl)
        .Key("ppl_err").Double(r.ppl_err)
        .Key("nll").Double(r.nll)
        .Key("tokens").Int(r.tokens)
        .Key("n_ctx").Int(r.n_ctx)
        .Key("chunks").Int(r.chunks)
        .Key("scored").Int(r.scored)
        .Key("threads").Int(ctx.Threads())
        .Key("seconds").Double(secs)
        .Key("tokenize_seconds").Double(tokenize_seconds);
    if (r.has_kl) {
      w.Key("kl_base").String(args.kl_base)
          .Key("kl").Double(r.kl)
          .Key("kl_err").Double(r.kl_err)
          .Key("base_ppl").Double(r.base_ppl)
          .Key("same_top").Double(r.same_top);
    }
    WriteResidencyJson(&w, rt, er.transitions);
    if (!src.trace.empty()) {
      w.Key("per_chunk").BeginArray();
      for (const runtime::ChunkResult& c : er.chunks) {
        w.BeginObject().Key("chunk").Int(c.index).Key("level").String(c.label).Key("footprint").Uint(c.footprint)
            .Key("budget").Uint(c.budget).Key("nll").Double(c.nll).Key("scored").Int(c.scored).EndObject();
      }
      w.EndArray();
    }
    // clang-format on
    w.EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  char line[256];
  std::snprintf(line, sizeof(line), "PPL = %.4f +/- %.5f", r.ppl, r.ppl_err);
  const std::string what = src.trace.empty() ? src.display
                                             : src.manifest.model + " following " + args.source.budget_trace;
  std::string out = std::string(line) + "  (" + what + ", " + std::to_string(r.chunks) + " chunks of " +
                    std::to_string(r.n_ctx) + " tokens, " + std::to_string(r.scored) + " scored of " +
                    std::to_string(r.tokens) + ")";
  if (r.has_kl) {
    std::snprintf(line, sizeof(line),
                  "\nKL(%s || %s) = %.6f +/- %.6f nats/token; same top token %.2f%%; base PPL = %.4f",
                  args.kl_base.c_str(), src.display.c_str(), r.kl, r.kl_err, 100 * r.same_top, r.base_ppl);
    out += line;
  }
  ctx.Print(out);
  ctx.Note(ResidencySummary(rt));
  const double evaluated = static_cast<double>(r.chunks * r.n_ctx) * (base ? 2 : 1);
  ctx.Note(FormatSeconds(secs) + " for " + std::to_string(static_cast<int64_t>(evaluated)) + " tokens (" +
           FormatDouble(evaluated / std::max(secs, 1e-9), 1) + " tokens/s, " + std::to_string(ctx.Threads()) +
           " threads)");
  return Status::OK();
}

struct RunArgs {
  ModelSourceArgs source;
  DynamicArgs dynamic;
  std::string prompt;
  int64_t n_predict = -1;
  int64_t n_ctx = 0;
  float temperature = 0.8f;
  float top_p = 0.95f;
  int64_t seed = -1;
};

Status RunRun(Context& ctx, const RunArgs& args) {
  FQ_RETURN_IF_ERROR(CheckDynamicArgs(args.source, args.dynamic, ""));
  runtime::ThreadPool pool(ctx.Threads());
  ElasticSetup setup{&pool, runtime::Workload::kGenerate, args.n_ctx, args.source.n_batch};
  ModelSource src;
  DynamicRun dyn;
  if (args.dynamic.on()) {
    FQ_ASSIGN_OR_RETURN(dyn, OpenDynamic(ctx, args.source, args.dynamic, &src, &pool, args.n_ctx));
  } else {
    FQ_ASSIGN_OR_RETURN(src, ResolveModelSource(ctx, args.source, true, setup));
  }
  runtime::ElasticRuntime* rt = src.elastic.get();
  std::unique_ptr<runtime::Model> model = std::move(dyn.model);
  if (rt == nullptr && model == nullptr) {
    FQ_ASSIGN_OR_RETURN(model, LoadModel(src, &pool));
  }
  FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, TokenizerOf(src.manifest));
  FQ_ASSIGN_OR_RETURN(int64_t n_ctx, ContextSize(ctx, rt != nullptr ? *rt->model() : *model, args.n_ctx));

  std::vector<int32_t> prompt = tok.Encode(args.prompt, true);
  if (prompt.empty()) {
    if (tok.bos() == runtime::Tokenizer::kNoToken) {
      return Status::InvalidArgument(
          "the prompt is empty and the vocabulary has no BOS to start from");
    }
    prompt.push_back(tok.bos());
  }
  if (static_cast<int64_t>(prompt.size()) >= n_ctx) {
    return Status::InvalidArgument("the prompt has " + std::to_string(prompt.size()) +
                                   " tokens; a context of " + std::to_string(n_ctx) +
                                   " leaves no room to generate (raise -c)");
  }
  runtime::GenerateOptions opts;
  opts.n_predict = args.n_predict;
  opts.sampling.temperature = args.temperature;
  opts.sampling.top_p = args.top_p;
  opts.sampling.seed = args.seed >= 0 ? static_cast<uint64_t>(args.seed) : std::random_device{}();
  opts.bos = tok.bos();
  opts.eos = tok.eos();
  if (dyn.runner != nullptr) {
    opts.before_token = [&dyn](std::span<const float> previous) { return dyn.runner->BeforeToken(previous); };
  }
  FQ_RETURN_IF_ERROR(runtime::Sampler::Check(opts.sampling));
  if (args.temperature > 0 && args.seed < 0) {
    ctx.Note("seed " + std::to_string(opts.sampling.seed));
  }

  runtime::DecodeStream stream(&tok, prompt.back());
  std::string text;
  auto on_token = [&](int32_t token) -> Status {
    const std::string piece = stream.Next(token);
    text += piece;
    if (!ctx.json) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return CheckInterrupt();
  };
  std::vector<runtime::TransitionRecord> transitions;
  Result<runtime::GenerateStats> r = Status::Aborted("not run");
  if (rt != nullptr) {
    // Transition notes go to stderr between streamed pieces of text.
    auto log = LogTransitions(ctx);
    // On one terminal, a note starts on a line of its own.
    const bool one_terminal = ::isatty(STDOUT_FILENO) && ::isatty(STDERR_FILENO);
    auto on_transition = [&](const runtime::TransitionRecord& t) {
      std::fflush(stdout);
      if (one_terminal && !ctx.json && !text.empty() && text.back() != '\n') std::fputc('\n', stderr);
      log(t);
    };
    Result<runtime::ElasticGenerateResult> er = rt->Generate(prompt, opts, src.trace, on_token, on_transition);
    if (er.ok()) {
      transitions = std::move(er->transitions);
      r = std::move(er->generate);
    } else {
      r = er.status();
    }
  } else {
    runtime::Session session(model.get(), n_ctx, &pool);
    r = runtime::Generate(&session, prompt, opts, on_token);
  }
  if (!r.ok()) {
    std::fflush(stdout);
    return r.status();
  }
  if (rt != nullptr) FQ_RETURN_IF_ERROR(WriteTransitionsFile(ctx, args.source.transitions_json, transitions));
  if (ctx.json) {
    JsonWriter w(true);
    // clang-format off
    w.BeginObject()
        .Key("model").String(src.manifest.model)
        .Key("qm").String(src.manifest.label)
        .Key("text").String(ValidUtf8(text))
        .Key("prompt_tokens").Int(r->prompt_tokens)
        .Key("generated_tokens").Int(r->generated)
        .Key("stop").String(runtime::StopReasonName(r->stop))
        .Key("prompt_seconds").Double(r->prompt_seconds)
        .Key("generate_seconds").Double(r->generate_seconds)
        .Key("seed").Uint(opts.sampling.seed)
        .Key("tokens").BeginArray();
    // clang-format on
    for (int32_t t : r->tokens) w.Int(t);
    w.EndArray();
    if (dyn.runner != nullptr) {
      WriteDynamicJson(&w, dyn, r->generated / std::max(r->generate_seconds, 1e-9));
    } else if (rt != nullptr) {
      WriteResidencyJson(&w, rt, transitions);
    }
    w.EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  // A terminal gets its prompt back on a line of its own; a pipe gets exactly
  // the generated text.
  if (::isatty(STDOUT_FILENO) == 1 && !text.empty() && text.back() != '\n')
    std::fputc('\n', stdout);
  std::fflush(stdout);
  auto rate = [](int64_t n, double s) { return FormatDouble(s > 0 ? n / s : 0, 1); };
  ctx.Note("prompt: " + std::to_string(r->prompt_tokens) + " tokens in " +
           FormatSeconds(r->prompt_seconds) + " (" + rate(r->prompt_tokens, r->prompt_seconds) +
           " tokens/s); generation: " + std::to_string(r->generated) + " tokens in " +
           FormatSeconds(r->generate_seconds) + " (" + rate(r->generated, r->generate_seconds) +
           " tokens/s); stopped at " + runtime::StopReasonName(r->stop) + "; " +
           std::to_string(ctx.Threads()) + " threads");
  if (dyn.runner != nullptr) {
    NoteDynamic(ctx, dyn, r->generated / std::max(r->generate_seconds, 1e-9));
  } else if (rt != nullptr) {
    ctx.Note(ResidencySummary(rt));
  }
  return Status::OK();
}

struct TokenizeArgs {
  ModelSourceArgs source;
  std::string text;
  bool no_special = false;
  bool parse_special = false;
};

Status RunTokenize(Context& ctx, const TokenizeArgs& args) {
  FQ_ASSIGN_OR_RETURN(ModelSource src, ResolveModelSource(ctx, args.source, false));
  FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, TokenizerOf(src.manifest));
  const std::vector<int32_t> ids = tok.Encode(args.text, !args.no_special, args.parse_special);
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject().Key("model").String(src.manifest.model);
    w.Key("n_tokens").Int(static_cast<int64_t>(ids.size()));
    w.Key("tokens").BeginArray();
    for (int32_t id : ids) w.Int(id);
    w.EndArray().Key("pieces").BeginArray();
    for (int32_t id : ids) w.String(tok.TokenToPiece(id, true));
    w.EndArray().EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  std::string out;
  char line[32];
  for (int32_t id : ids) {
    std::snprintf(line, sizeof(line), "%6d -> '", id);
    out += line + tok.TokenToPiece(id, true) + "'\n";
  }
  ctx.Print(out.empty() ? "(no tokens)" : out);
  return Status::OK();
}

}  // namespace

void RegisterRuntimeCommands(CLI::App& app, Context& ctx) {
  auto ppl = std::make_shared<PplArgs>();
  CLI::App* p = app.add_subcommand(
      "ppl",
      "Perplexity of a QM or a .fqpack (one EQM, a budget, or a budget trace) on a text file, "
      "computed as llama.cpp's llama-perplexity does");
  ppl->source.AddOptions(p, true);
  p->add_option("-f,--text", ppl->text_file, "Text file to evaluate")
      ->required()
      ->check(CLI::ExistingFile);
  p->add_option("-c,--ctx-size", ppl->n_ctx,
                "Tokens per chunk (default: the model's context length)")
      ->check(CLI::Range(int64_t{4}, int64_t{1} << 24));
  p->add_option("--chunks", ppl->chunks, "Evaluate only the first N chunks")
      ->check(CLI::PositiveNumber);
  p->add_option(
      "--kl-base", ppl->kl_base,
      "Also report the KL divergence of this QM's next-token distribution from that QM's");
  ppl->dynamic.AddOptions(p);
  p->callback([&ctx, ppl] { ctx.action = [&ctx, ppl] { return RunPpl(ctx, *ppl); }; });

  auto run = std::make_shared<RunArgs>();
  CLI::App* r =
      app.add_subcommand("run",
                         "Generate text from a prompt (a QM, or a .fqpack under a memory budget that may "
                         "change while it runs); the text streams to stdout");
  run->source.AddOptions(r, true);
  r->add_option("-p,--prompt", run->prompt, "Prompt text (empty: start from BOS alone)");
  r->add_option("-n,--n-predict", run->n_predict,
                "Tokens to generate at most (default -1: until end of text or a full context)")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 24));
  r->add_option("-c,--ctx-size", run->n_ctx, "Context length (default: the model's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  r->add_option("--temp", run->temperature, "Temperature; 0 is greedy (default 0.8)")
      ->check(CLI::Range(0.0f, 100.0f));
  r->add_option("--top-p", run->top_p, "Nucleus sampling threshold in (0, 1] (default 0.95)");
  r->add_option("-s,--seed", run->seed, "Random seed (default: a random one, printed on stderr)")
      ->check(CLI::Range(int64_t{0}, INT64_MAX));
  run->dynamic.AddOptions(r);
  r->callback([&ctx, run] { ctx.action = [&ctx, run] { return RunRun(ctx, *run); }; });

  auto tk = std::make_shared<TokenizeArgs>();
  CLI::App* t = app.add_subcommand("tokenize",
                                   "Show the tokens of a text as the model's tokenizer splits it");
  tk->source.AddOptions(t, false, false);
  t->add_option("--text", tk->text, "Text to tokenize")->required();
  t->add_flag("--no-bos", tk->no_special,
              "Do not add BOS/EOS even when the vocabulary asks for them");
  t->add_flag("--parse-special", tk->parse_special,
              "Turn control tokens written in the text (\"<s>\") into those tokens");
  t->callback([&ctx, tk] { ctx.action = [&ctx, tk] { return RunTokenize(ctx, *tk); }; });
}

Status ExportPackGguf(Context& ctx, const std::string& pack_path, const std::string& ensemble, int eqm,
                      const std::string& qm, const std::string& out) {
  if ((eqm >= 0) == !qm.empty()) return Status::InvalidArgument("export from a .fqpack needs one of --eqm K and --qm LABEL");
  FQ_ASSIGN_OR_RETURN(auto reader, pack::PackReader::Open(ctx.env, pack_path));
  store::ModelManifest manifest;
  if (eqm >= 0) {
    // The residency manager's reading of the ensemble gives the range message.
    runtime::ResidencyOptions ro;
    ro.ensemble = ensemble;
    FQ_ASSIGN_OR_RETURN(auto levels, runtime::ResidencyManager::Open(reader.get(), ro));
    FQ_RETURN_IF_ERROR(levels->LevelOfStep(eqm).status());
    FQ_ASSIGN_OR_RETURN(store::EnsembleInfo e, reader->FindEnsemble(ensemble));
    FQ_ASSIGN_OR_RETURN(manifest, reader->EqmManifest(e.id, eqm));
  } else {
    FQ_ASSIGN_OR_RETURN(manifest, reader->QmManifest(qm));
  }
  Progress progress("export " + manifest.label, 1000, ctx.ShowProgress());
  Result<store::ExportResult> r = store::ExportManifestGguf(
      ctx.env, reader.get(), manifest, out,
      [&](size_t done, size_t total) { progress.Update(done * 1000 / std::max<size_t>(total, 1)); });
  if (!r.ok()) return r.status().WithContext(pack_path + ": " + manifest.label);
  progress.Finish();
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject().Key("file").String(out).Key("pack").String(pack_path).Key("level").String(manifest.label)
        .Key("bytes").Uint(r->bytes).Key("tensors").Uint(r->tensors).Key("weight_bytes").Uint(manifest.weight_bytes())
        .EndObject();
    ctx.Print(w.str());
  } else {
    ctx.Print("wrote " + out + ": " + manifest.model + " " + manifest.label + ", " + std::to_string(r->tensors) +
              " tensors, " + FormatBytes(r->bytes));
  }
  return Status::OK();
}

}  // namespace fqpack::cli
