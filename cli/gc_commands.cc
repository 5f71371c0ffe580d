// fqpack rm | gc: dropping references, and garbage collection.

#include <cmath>

#include "cli/app.h"
#include "cli/output.h"
#include "schema/json.h"
#include "schema/units.h"
#include "search/prune.h"
#include "store/gc.h"

namespace fqpack::cli {
namespace {

struct RmArgs {
  std::string model;
  std::string qm;
  std::string ensemble;
};

Status RunRm(Context& ctx, const RmArgs& args) {
  if (!args.qm.empty() && !args.ensemble.empty()) {
    return Status::InvalidArgument("give --qm or --ensemble, not both");
  }
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  Result<store::RemoveResult> r =
      !args.qm.empty()         ? store::RemoveQm(store.get(), args.model, args.qm)
      : !args.ensemble.empty() ? store::RemoveEnsemble(store.get(), args.model, args.ensemble)
                               : store::RemoveModel(store.get(), args.model);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject()
        .Key("qms")
        .Uint(r->qms)
        .Key("ensembles")
        .Uint(r->ensembles)
        .Key("eqms")
        .Uint(r->eqms)
        .Key("references")
        .Uint(r->references)
        .Key("model")
        .Bool(r->model)
        .EndObject();
    ctx.Print(w.str());
  } else {
    ctx.Print("removed " + std::to_string(r->qms) + " QM(s), " + std::to_string(r->ensembles) +
              " ensemble(s) (" + std::to_string(r->eqms) + " EQMs)" +
              (r->model ? " and the model" : "") + ": " + std::to_string(r->references) +
              " module references dropped; `fqpack gc` frees what nothing uses");
  }
  return Status::OK();
}

struct GcArgs {
  bool dry_run = false;
  bool wait = false;
  double prune = -1;  // < 0: no pruning
  std::string cap;    // "" : no cap
  std::string rank = "area";
  std::string model;
  std::string ensemble;
};

std::string PplOrDash(double v) { return std::isnan(v) || v <= 0 ? "-" : FormatDouble(v, 4); }

// The pruning half of `gc --prune/--cap`: plan, repair, apply (not with
// --dry-run); prints what goes and the quality at the static footprints.
Status RunPrune(Context& ctx, store::Store* store, const GcArgs& args, JsonWriter* w,
                std::string* text) {
  search::PruneRequest req;
  req.model = args.model;
  req.ensemble = args.ensemble;
  req.fraction = args.prune;
  req.dry_run = args.dry_run;
  req.threads = ctx.Threads();
  FQ_ASSIGN_OR_RETURN(req.ranking, search::ParsePruneRanking(args.rank));
  if (!args.cap.empty()) {
    Result<uint64_t> cap = ParseBytes(args.cap);
    if (!cap.ok())
      return Status::InvalidArgument("--cap '" + args.cap + "': " + cap.status().message());
    if (*cap == 0) return Status::InvalidArgument("--cap must be more than 0 bytes");
    req.cap = *cap;
  }
  SearchBars bars(ctx, "repair: ");
  req.cancelled = [] { return InterruptFlag().load(); };
  req.progress = [&bars](const search::SearchProgress& p) { bars.Update(p); };
  Result<search::PruneOutcome> r = search::PruneEnsemble(store, req);
  bars.Finish();
  if (!r.ok()) {
    if (r.status().IsAborted())
      return Status::Aborted("gc interrupted during the repair; the store is unchanged");
    return r.status();
  }
  const store::PrunePlan& plan = r->plan;
  uint64_t raw = 0, stored = 0;
  for (size_t i = 0; i < plan.n_pruned; ++i) {
    raw += plan.ranked[i].raw_bytes;
    stored += plan.ranked[i].stored_bytes;
  }
  w->Key("prune")
      .BeginObject()
      .Key("ensemble")
      .String(plan.ensemble.name)
      .Key("candidates")
      .Uint(plan.ranked.size())
      .Key("pruned")
      .Uint(plan.n_pruned)
      .Key("fraction")
      .Double(plan.fraction)
      .Key("ranking")
      .String(search::PruneRankingName(r->ranking))
      .Key("ranking_seconds")
      .Double(r->ranking_seconds)
      .Key("pruned_bytes")
      .Uint(raw)
      .Key("pruned_stored_bytes")
      .Uint(stored)
      .Key("store_bytes_before")
      .Uint(plan.store_bytes_before)
      .Key("store_bytes_after")
      .Uint(plan.store_bytes_after)
      .Key("eqms_before")
      .Uint(r->eqms_before)
      .Key("eqms_after")
      .Uint(r->eqms_after)
      .Key("metric")
      .String(r->metric)
      .Key("repair_seconds")
      .Double(r->search_seconds)
      .Key("applied")
      .Bool(r->applied)
      .Key("quality")
      .BeginArray();
  Table table(
      {"static QM", "footprint", "EQM before", "calib PPL", "EQM after", "calib PPL", "change"},
      "lrrrrrr");
  for (const search::PruneQuality& q : r->quality) {
    w->BeginObject()
        .Key("label")
        .String(q.label)
        .Key("static_footprint")
        .Uint(q.static_footprint)
        .Key("before_step")
        .Int(q.before_step)
        .Key("before_calib_ppl")
        .Double(q.before_ppl)
        .Key("before_calib_metric")
        .Double(q.before_metric)
        .Key("after_step")
        .Int(q.after_step)
        .Key("after_calib_ppl")
        .Double(q.after_ppl)
        .Key("after_calib_metric")
        .Double(q.after_metric)
        .EndObject();
    const bool both = q.before_step >= 0 && q.after_step >= 0;
    table.AddRow({q.label, FormatBytes(q.static_footprint),
                  q.before_step < 0 ? "-" : std::to_string(q.before_step), PplOrDash(q.before_ppl),
                  q.after_step < 0 ? "-" : std::to_string(q.after_step), PplOrDash(q.after_ppl),
                  both ? FormatDouble(q.ppl_change_pct(), 2) + "%" : "-"});
  }
  w->EndArray().EndObject();
  const std::string verb = args.dry_run ? "would prune " : "pruned ";
  *text += verb + std::to_string(plan.n_pruned) + " of " + std::to_string(plan.ranked.size()) +
           " n_mid-only modules of ensemble " + plan.ensemble.name + ", ranked by " +
           search::PruneRankingName(r->ranking) + " (" + FormatBytes(raw) + ", " +
           FormatBytes(stored) + " stored); store " + FormatBytes(plan.store_bytes_before) +
           " -> " + FormatBytes(plan.store_bytes_after) + "\n";
  if (plan.n_pruned > 0) {
    *text += (args.dry_run ? "the repaired ensemble would have " : "repaired the ensemble: ") +
             std::to_string(r->eqms_after) + " EQMs (was " + std::to_string(r->eqms_before) +
             "), searched in " + FormatSeconds(r->search_seconds) +
             "; calibration perplexity at the static footprints:\n" + table.Render("  ");
  }
  return Status::OK();
}

Status RunGc(Context& ctx, const GcArgs& args) {
  if (args.prune >= 0 && !args.cap.empty())
    return Status::InvalidArgument("give --prune or --cap, not both");
  if ((!args.model.empty() || !args.ensemble.empty()) && args.prune < 0 && args.cap.empty()) {
    return Status::InvalidArgument("--model and --ensemble choose what --prune or --cap prunes");
  }
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  JsonWriter w;
  w.BeginObject().Key("dry_run").Bool(args.dry_run);
  std::string text;
  if (args.prune >= 0 || !args.cap.empty())
    FQ_RETURN_IF_ERROR(RunPrune(ctx, store.get(), args, &w, &text));
  store::SweepOptions opts;
  opts.dry_run = args.dry_run;
  opts.wait = args.wait;
  FQ_ASSIGN_OR_RETURN(store::SweepResult r, store::Sweep(store.get(), opts));
  if (ctx.json) {
    w.Key("blobs")
        .Uint(r.blobs)
        .Key("blob_bytes")
        .Uint(r.blob_bytes)
        .Key("orphans")
        .Uint(r.orphans)
        .Key("orphan_bytes")
        .Uint(r.orphan_bytes)
        .Key("freed_bytes")
        .Uint(r.freed())
        .EndObject();
    ctx.Print(w.str());
  } else {
    if (!text.empty()) ctx.Print(text);
    const bool pruning = args.prune >= 0 || !args.cap.empty();
    ctx.Print(std::string(args.dry_run ? (pruning ? "besides the pruned modules, would free "
                                                  : "would free ")
                                       : "freed ") +
              FormatBytes(r.freed()) + ": " + std::to_string(r.blobs) +
              " unreferenced module(s) (" + FormatBytes(r.blob_bytes) + "), " +
              std::to_string(r.orphans) + " orphan file(s) (" + FormatBytes(r.orphan_bytes) + ")");
  }
  return Status::OK();
}

}  // namespace

void RegisterGcCommands(CLI::App& app, Context& ctx) {
  auto rm_args = std::make_shared<RmArgs>();
  CLI::App* rm = app.add_subcommand(
      "rm", "Drop a model, a QM or an ensemble (references only; gc frees the bytes)");
  rm->add_option("-m,--model", rm_args->model, "Model (alone: the whole model)");
  rm->add_option("--qm", rm_args->qm, "Drop this QM of the model");
  rm->add_option("-e,--ensemble", rm_args->ensemble, "Drop this ensemble of the model");
  rm->callback([&ctx, rm_args] { ctx.action = [&ctx, rm_args] { return RunRm(ctx, *rm_args); }; });

  auto gc_args = std::make_shared<GcArgs>();
  CLI::App* gc = app.add_subcommand("gc",
                                    "Delete modules nothing references and files interrupted "
                                    "writes left; with --prune or --cap, first prune "
                                    "the modules an ensemble uses least and repair it");
  gc->add_flag("-n,--dry-run", gc_args->dry_run, "Say what would go, delete nothing");
  gc->add_flag("--wait", gc_args->wait, "Wait for writers to finish instead of failing");
  gc->add_option(
        "--prune", gc_args->prune,
        "Prune this fraction (0..1) of the ensemble's n_mid-only modules, least used first, "
        "and repair the ensemble")
      ->check(CLI::Range(0.0, 1.0));
  gc->add_option("--cap", gc_args->cap,
                 "Prune the least that brings the store's blobs under SIZE (e.g. 300MB)");
  gc->add_option("--rank", gc_args->rank,
                 "What --prune and --cap drop first: area (least loss of the predicted "
                 "metric-versus-footprint curve per byte freed, re-estimated after each) or uses "
                 "(least used by the ensemble, low footprints weighing double)")
      ->capture_default_str()
      ->check(CLI::IsMember({"area", "uses"}));
  gc->add_option("-m,--model", gc_args->model,
                 "Model whose ensemble to prune (needed when the store holds several)");
  gc->add_option("-e,--ensemble", gc_args->ensemble,
                 "Ensemble to prune for (default: the model's newest)");
  gc->callback([&ctx, gc_args] { ctx.action = [&ctx, gc_args] { return RunGc(ctx, *gc_args); }; });
}

}  // namespace fqpack::cli
