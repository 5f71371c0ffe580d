#include "cli/model_resolution.h"

#include "cli/output.h"
#include "schema/gguf.h"
#include "schema/units.h"

namespace fqpack::cli {

void ModelSourceArgs::AddOptions(CLI::App* cmd, bool with_qm, bool elastic) {
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
                  "largest EQM that fits; 'auto[:RESERVE]' follows the memory the system has "
                  "left (MemAvailable, the cgroup's limit, PSI) minus RESERVE (default 10% of "
                  "RAM, 64 MiB to 1 GiB)");
  cmd->add_option("--budget-trace", budget_trace,
                  "File of 'token_index,budget' lines: the budget changes while it runs")
      ->check(CLI::ExistingFile);
  cmd->add_option(
      "--transitions-json", transitions_json,
      "Write every transition (from, to, modules swapped, bytes read, ms) to this file as JSON");
  cmd->add_flag("--static-ladder", static_ladder,
                "Use only the pack's whole QMs (what switching static checkpoints gives)");
  cmd->add_option("-b,--batch-size", n_batch,
                  "Tokens per forward pass of a .fqpack run; its activations count in the budget "
                  "(default: 64 for run, a whole chunk for ppl)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
}

Result<bool> ParseAutoBudget(const std::string& text, uint64_t* reserve) {
  *reserve = 0;
  if (text != "auto" && text.rfind("auto:", 0) != 0) return false;
  if (text.size() > 5) {
    Result<uint64_t> r = ParseBytes(text.substr(5));
    if (!r.ok()) {
      return Status::InvalidArgument("--budget '" + text +
                                     "': the reserve: " + r.status().message());
    }
    if (*r == 0) return Status::InvalidArgument("--budget '" + text + "': a reserve of 0 bytes");
    *reserve = *r;
  }
  return true;
}

Result<std::unique_ptr<runtime::MemoryGovernor>> StartGovernor(Context& ctx,
                                                               runtime::ElasticRuntime* elastic,
                                                               uint64_t reserve) {
  runtime::GovernorOptions o;
  o.policy.reserve = reserve;
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<runtime::MemoryGovernor> g,
                      runtime::MemoryGovernor::Open(ctx.env, elastic->residency(), o));
  const runtime::GovernorState st = g->state();
  ctx.Note("budget auto: " + st.source + " " + FormatBytes(st.available) + " available, reserve " +
           FormatBytes(st.reserve) + ", budget " + FormatBytes(st.effective) + "; " + st.trigger);
  FQ_RETURN_IF_ERROR(g->Start());
  return g;
}

namespace {

Status CheckSourceArgs(const ModelSourceArgs& args) {
  if (args.pack.empty()) {
    if (args.elastic_flags()) {
      return Status::InvalidArgument(
          "--budget, --budget-trace, --eqm, --ensemble, --transitions-json, --static-ladder and -b "
          "run a "
          ".fqpack file; a QM of the store has one fixed size (write a pack with `fqpack pack -o "
          "model.fqpack`, then `fqpack run model.fqpack --budget ...`)");
    }
    return Status::OK();
  }
  if (!args.model.empty()) {
    return Status::InvalidArgument(
        "--model picks a model of the store; a .fqpack file holds one model");
  }
  int choices = (args.eqm >= 0) + !args.qm.empty() + !args.budget.empty();
  if (choices > 1) return Status::InvalidArgument("choose one of --eqm, --qm and --budget");
  if (!args.budget_trace.empty() && (args.eqm >= 0 || !args.qm.empty())) {
    return Status::InvalidArgument(
        "--budget-trace moves between EQMs; it cannot be combined with --eqm or --qm");
  }
  if (args.static_ladder && args.eqm >= 0) {
    return Status::InvalidArgument(
        "--static-ladder runs the pack's whole QMs; choose one with --qm, not --eqm");
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
  FQ_ASSIGN_OR_RETURN(src.elastic,
                      runtime::ElasticRuntime::Open(ctx.env, args.pack, opts, setup.pool));
  runtime::LevelChoice choice;
  choice.eqm = args.eqm;
  choice.qm = args.qm;
  uint64_t reserve = 0;
  FQ_ASSIGN_OR_RETURN(const bool auto_budget, ParseAutoBudget(args.budget, &reserve));
  if (auto_budget) {
    if (!args.budget_trace.empty()) {
      return Status::InvalidArgument("--budget auto follows the system; drop --budget-trace");
    }
    // Start at what the system has now, so a tight device never loads the
    // largest EQM first.
    runtime::GovernorOptions o;
    o.policy.reserve = reserve;
    FQ_ASSIGN_OR_RETURN(runtime::GovernorState st, runtime::MemoryGovernor::Probe(ctx.env, o));
    const uint64_t minimum = src.elastic->residency()->MinimumBudget();
    if (st.effective < minimum) {
      ctx.Note("warning: budget auto: " + st.source + " leaves " + FormatBytes(st.effective) +
               " after the reserve, below the smallest EQM's " + FormatBytes(minimum) +
               "; starting there");
    }
    choice.budget = std::max(st.effective, minimum);
  } else if (!args.budget.empty()) {
    Result<uint64_t> b = ParseBytes(args.budget);
    if (!b.ok())
      return Status::InvalidArgument("--budget '" + args.budget + "': " + b.status().message());
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
  if (auto_budget && setup.start_governor) {
    FQ_ASSIGN_OR_RETURN(src.governor, StartGovernor(ctx, src.elastic.get(), reserve));
  }
  src.manifest = src.elastic->residency()->manifest();
  src.manifest.label = src.elastic->residency()->stats().label;
  src.modules = src.elastic->pack();
  src.display = src.manifest.model + "/" + src.manifest.label;
  return src;
}

Status ParseDynamicSpec(const std::string& spec, std::string* hi, std::string* lo) {
  const std::string bad =
      "--dynamic '" + spec + "': expected hi=LABEL,lo=LABEL (e.g. hi=Q8_0,lo=Q4_K_M)";
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

}  // namespace

Result<ModelSource> ResolveModelSource(Context& ctx, const ModelSourceArgs& args, bool need_modules,
                                       const ElasticSetup& setup) {
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

Result<std::unique_ptr<runtime::Model>> LoadModel(const ModelSource& src, ThreadPool* pool) {
  return runtime::Model::Load(src.manifest, src.modules, pool);
}

Result<runtime::Tokenizer> TokenizerOf(const store::ModelManifest& manifest) {
  FQ_ASSIGN_OR_RETURN(gguf::Metadata md,
                      gguf::ParseMetadata(manifest.metadata, manifest.n_kv, manifest.model));
  return runtime::Tokenizer::FromMetadata(md, manifest.model);
}

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

void DynamicArgs::AddOptions(CLI::App* cmd) {
  cmd->add_option(
      "--dynamic", spec,
      "Switch precision per token between two QMs, e.g. hi=Q8_0,lo=Q4_K_M (needs `fqpack "
      "calibrate-dynamic` for that pair)");
  cmd->add_option("--target-bits", target_bits,
                  "Average bits per weight --dynamic aims at (default: the calibrated target)");
}

Status CheckDynamicArgs(const ModelSourceArgs& source, const DynamicArgs& dyn,
                        const std::string& kl_base) {
  if (!dyn.on()) {
    if (!std::isnan(dyn.target_bits))
      return Status::InvalidArgument("--target-bits goes with --dynamic hi=...,lo=...");
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
    return Status::InvalidArgument(
        "--model picks a model of the store; a .fqpack file holds one model");
  }
  return Status::OK();
}

Result<DynamicRun> OpenDynamic(Context& ctx, const ModelSourceArgs& args, const DynamicArgs& dargs,
                               ModelSource* src, ThreadPool* pool, int64_t n_ctx) {
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
    FQ_ASSIGN_OR_RETURN(src->elastic,
                        runtime::ElasticRuntime::Open(ctx.env, args.pack, opts, pool));
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
    if (!budget.ok())
      return Status::InvalidArgument("--budget '" + args.budget +
                                     "': " + budget.status().message());
    const uint64_t floor = d.lo_bytes + src->elastic->overhead().total();
    if (*budget < floor) {
      return Status::InvalidArgument(
          "budget " + std::to_string(*budget) + " bytes (" + FormatBytes(*budget) +
          ") is below what --dynamic needs for " + d.lo + " alone: " + std::to_string(floor) +
          " bytes (" + FormatBytes(floor) + "): weights " + FormatBytes(d.lo_bytes) +
          " + KV cache and scratch " + FormatBytes(src->elastic->overhead().total()));
    }
    runtime::CapPlanHiBytes(d.info, hi, src->manifest, *budget - floor, &d.plan);
    d.budget = *budget;
  }
  if (src->elastic != nullptr) {
    runtime::LevelChoice choice;
    choice.qm = d.lo;
    FQ_RETURN_IF_ERROR(src->elastic->Start(choice));
    src->modules = src->elastic->pack();
    FQ_ASSIGN_OR_RETURN(d.runner,
                        runtime::DynamicRunner::OverResidency(src->elastic->residency(), hi,
                                                              src->manifest, d.info, d.plan));
    d.resident_bytes = src->elastic->residency()->resident_bytes();
  } else {
    src->modules = src->store.get();
    FQ_ASSIGN_OR_RETURN(d.model, runtime::Model::Load(src->manifest, src->modules, pool));
    FQ_ASSIGN_OR_RETURN(
        d.runner, runtime::DynamicRunner::OverModel(d.model.get(), hi, src->manifest, src->modules,
                                                    d.info, d.plan));
    d.resident_bytes = d.lo_bytes + d.runner->hi_copy_bytes();
  }
  src->display = src->manifest.model + " dynamic hi=" + d.hi + ",lo=" + d.lo;
  return d;
}

}  // namespace fqpack::cli
