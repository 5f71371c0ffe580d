// fqpack rm | gc: dropping references, and garbage collection.

#include "cli/app.h"
#include "cli/output.h"
#include "schema/json.h"
#include "schema/units.h"
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
  Result<store::RemoveResult> r = !args.qm.empty()         ? store::RemoveQm(store.get(), args.model, args.qm)
                                  : !args.ensemble.empty() ? store::RemoveEnsemble(store.get(), args.model, args.ensemble)
                                                           : store::RemoveModel(store.get(), args.model);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject().Key("qms").Uint(r->qms).Key("ensembles").Uint(r->ensembles).Key("eqms").Uint(r->eqms)
        .Key("references").Uint(r->references).Key("model").Bool(r->model).EndObject();
    ctx.Print(w.str());
  } else {
    ctx.Print("removed " + std::to_string(r->qms) + " QM(s), " + std::to_string(r->ensembles) + " ensemble(s) (" +
              std::to_string(r->eqms) + " EQMs)" + (r->model ? " and the model" : "") + ": " +
              std::to_string(r->references) + " module references dropped; `fqpack gc` frees what nothing uses");
  }
  return Status::OK();
}

struct GcArgs {
  bool dry_run = false;
  bool wait = false;
};

Status RunGc(Context& ctx, const GcArgs& args) {
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  store::SweepOptions opts;
  opts.dry_run = args.dry_run;
  opts.wait = args.wait;
  FQ_ASSIGN_OR_RETURN(store::SweepResult r, store::Sweep(store.get(), opts));
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject().Key("dry_run").Bool(args.dry_run).Key("blobs").Uint(r.blobs).Key("blob_bytes").Uint(r.blob_bytes)
        .Key("orphans").Uint(r.orphans).Key("orphan_bytes").Uint(r.orphan_bytes).Key("freed_bytes").Uint(r.freed())
        .EndObject();
    ctx.Print(w.str());
  } else {
    ctx.Print(std::string(args.dry_run ? "would free " : "freed ") + FormatBytes(r.freed()) + ": " +
              std::to_string(r.blobs) + " unreferenced module(s) (" + FormatBytes(r.blob_bytes) + "), " +
              std::to_string(r.orphans) + " orphan file(s) (" + FormatBytes(r.orphan_bytes) + ")");
  }
  return Status::OK();
}

}  // namespace

void RegisterGcCommands(CLI::App& app, Context& ctx) {
  auto rm_args = std::make_shared<RmArgs>();
  CLI::App* rm = app.add_subcommand("rm", "Drop a model, a QM or an ensemble (references only; gc frees the bytes)");
  rm->add_option("-m,--model", rm_args->model, "Model (alone: the whole model)");
  rm->add_option("--qm", rm_args->qm, "Drop this QM of the model");
  rm->add_option("-e,--ensemble", rm_args->ensemble, "Drop this ensemble of the model");
  rm->callback([&ctx, rm_args] { ctx.action = [&ctx, rm_args] { return RunRm(ctx, *rm_args); }; });

  auto gc_args = std::make_shared<GcArgs>();
  CLI::App* gc = app.add_subcommand("gc", "Delete modules nothing references and files interrupted writes left");
  gc->add_flag("-n,--dry-run", gc_args->dry_run, "Say what would go, delete nothing");
  gc->add_flag("--wait", gc_args->wait, "Wait for writers to finish instead of failing");
  gc->callback([&ctx, gc_args] { ctx.action = [&ctx, gc_args] { return RunGc(ctx, *gc_args); }; });
}

}  // namespace fqpack::cli
