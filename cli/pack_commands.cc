// fqpack pack | info: the single file a device runs. (`fqpack verify FILE`
// lives with the store's verify in store_commands.cc.)

#include <cmath>

#include "cli/app.h"
#include "cli/output.h"
#include "pack/reader.h"
#include "pack/writer.h"
#include "schema/json.h"
#include "schema/quant_types.h"
#include "schema/units.h"

namespace fqpack::cli {
namespace {

struct PackArgs {
  std::string model;
  std::vector<std::string> ensembles;
  std::vector<std::string> qms;
  std::string codec = "auto";
  std::string out;
};

Status RunPack(Context& ctx, const PackArgs& args) {
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  pack::PackOptions opts;
  opts.model = args.model;
  opts.ensembles = args.ensembles;
  opts.qms = args.qms;
  FQ_ASSIGN_OR_RETURN(opts.codec, pack::ParseCodec(args.codec));
  Progress progress("pack", 1000, ctx.ShowProgress());
  opts.progress = [&](size_t done, size_t total) {
    progress.Update(done * 1000 / std::max<size_t>(total, 1));
  };
  FQ_ASSIGN_OR_RETURN(pack::PackResult r, pack::WritePack(store.get(), opts, args.out));
  progress.Finish();
  if (ctx.json) {
    JsonWriter w(true);
    w.BeginObject()
        .Key("file")
        .String(args.out)
        .Key("model")
        .String(r.model)
        .Key("file_bytes")
        .Uint(r.file_bytes)
        .Key("module_bytes")
        .Uint(r.module_bytes)
        .Key("payload_bytes")
        .Uint(r.payload_bytes)
        .Key("index_bytes")
        .Uint(r.index_bytes)
        .Key("padding_bytes")
        .Uint(r.padding_bytes)
        .Key("modules")
        .Uint(r.modules)
        .Key("raw_modules")
        .Uint(r.raw_modules)
        .Key("zstd_modules")
        .Uint(r.zstd_modules)
        .Key("eqms")
        .Uint(r.eqms)
        .Key("qms")
        .BeginArray();
    for (const auto& q : r.qms) w.String(q);
    w.EndArray().Key("ensembles").BeginArray();
    for (const auto& e : r.ensembles) w.String(e);
    w.EndArray().EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  std::string qms, ens;
  for (const auto& q : r.qms) qms += (qms.empty() ? "" : ", ") + q;
  for (const auto& e : r.ensembles) ens += (ens.empty() ? "" : ", ") + e;
  ctx.Print("wrote " + args.out + ": " + FormatBytes(r.file_bytes) + ", model " + r.model + ", " +
            std::to_string(r.modules) + " modules (" + std::to_string(r.raw_modules) + " raw, " +
            std::to_string(r.zstd_modules) + " zstd) of " + FormatBytes(r.module_bytes) + " in " +
            FormatBytes(r.payload_bytes) + "; index " + FormatBytes(r.index_bytes) + "; QMs: " +
            (qms.empty() ? "none" : qms) + "; ensembles: " + (ens.empty() ? "none" : ens) + " (" +
            std::to_string(r.eqms) + " EQMs)");
  return Status::OK();
}

std::string Metric(double v) { return std::isnan(v) ? "-" : FormatDouble(v, 5); }

Status RunInfo(Context& ctx, const std::string& path) {
  FQ_ASSIGN_OR_RETURN(auto reader, pack::PackReader::Open(ctx.env, path));
  const store::ModelInfo& m = reader->model();
  FQ_ASSIGN_OR_RETURN(auto qms, reader->Qms());
  FQ_ASSIGN_OR_RETURN(auto ensembles, reader->Ensembles());
  uint64_t raw_bytes = 0, zstd_bytes = 0, zstd_raw = 0, module_bytes = 0;
  size_t raw_n = 0, zstd_n = 0;
  for (const auto& p : reader->payloads()) {
    module_bytes += p.raw_bytes;
    if (p.zstd) {
      zstd_bytes += p.stored_bytes;
      zstd_raw += p.raw_bytes;
      ++zstd_n;
    } else {
      raw_bytes += p.stored_bytes;
      ++raw_n;
    }
  }
  JsonWriter w(true);
  w.BeginObject()
      .Key("file")
      .String(path)
      .Key("file_bytes")
      .Uint(reader->file_size())
      .Key("model")
      .String(m.name)
      .Key("arch")
      .String(m.arch)
      .Key("hparams")
      .Raw(store::ToJson(m.hparams))
      .Key("modules")
      .Uint(reader->payloads().size())
      .Key("module_bytes")
      .Uint(module_bytes)
      .Key("codecs")
      .BeginObject()
      .Key("raw")
      .BeginObject()
      .Key("modules")
      .Uint(raw_n)
      .Key("bytes")
      .Uint(raw_bytes)
      .EndObject()
      .Key("zstd")
      .BeginObject()
      .Key("modules")
      .Uint(zstd_n)
      .Key("bytes")
      .Uint(zstd_bytes)
      .Key("raw_bytes")
      .Uint(zstd_raw)
      .EndObject()
      .EndObject()
      .Key("index_bytes")
      .Uint(reader->footer().index_size)
      .Key("qms")
      .BeginArray();
  std::string text =
      path + ": " + FormatBytes(reader->file_size()) + ", model " + m.name + " (" + m.arch + ")\n";
  text += "modules: " + std::to_string(reader->payloads().size()) + " (" +
          FormatBytes(module_bytes) + "): " + std::to_string(raw_n) + " raw " +
          FormatBytes(raw_bytes) + ", " + std::to_string(zstd_n) + " zstd " +
          FormatBytes(zstd_raw) + " -> " + FormatBytes(zstd_bytes) + "; index " +
          FormatBytes(reader->footer().index_size) + "\n";
  Table qt({"QM", "bits/w", "size"}, "lrr");
  for (const auto& q : qms) {
    w.BeginObject()
        .Key("label")
        .String(q.label)
        .Key("bits_per_weight")
        .Double(q.bits_per_weight)
        .Key("bytes")
        .Uint(q.weight_bytes)
        .EndObject();
    qt.AddRow({q.label, FormatDouble(q.bits_per_weight, 2), FormatBytes(q.weight_bytes)});
  }
  w.EndArray().Key("ensembles").BeginArray();
  if (!qt.empty()) text += qt.Render();
  for (const auto& e : ensembles) {
    FQ_ASSIGN_OR_RETURN(auto eqms, reader->Eqms(e.id));
    w.BeginObject()
        .Key("name")
        .String(e.name)
        .Key("library")
        .Raw(store::ToJson(e.library))
        .Key("params")
        .Raw(store::ToJson(e.params))
        .Key("eqms")
        .BeginArray();
    Table et({"EQM", "footprint", "calib metric", "calib ppl", "calib KL"}, "rrrrr");
    for (const auto& q : eqms) {
      w.BeginObject()
          .Key("step")
          .Int(q.step)
          .Key("footprint")
          .Uint(q.footprint)
          .Key("calib_metric")
          .Double(q.calib_metric)
          .Key("calib_ppl")
          .Double(q.calib_ppl)
          .Key("calib_kl")
          .Double(q.calib_kl)
          .EndObject();
      et.AddRow({std::to_string(q.step), FormatBytes(q.footprint), Metric(q.calib_metric),
                 Metric(q.calib_ppl), Metric(q.calib_kl)});
    }
    w.EndArray().EndObject();
    text += "ensemble " + e.name + ": " + std::to_string(eqms.size()) + " EQMs\n" + et.Render("  ");
  }
  w.EndArray().Key("dynamic").BeginArray();
  FQ_ASSIGN_OR_RETURN(auto dynamic, reader->DynamicModels());
  for (const auto& d : dynamic) {
    w.BeginObject()
        .Key("hi")
        .String(d.hi_label)
        .Key("lo")
        .String(d.lo_label)
        .Key("target_bits")
        .Double(d.target_bits)
        .Key("calib_bits")
        .Double(d.calib_bits)
        .Key("units")
        .Uint(d.units.size())
        .EndObject();
    text += "dynamic precision hi=" + d.hi_label + ",lo=" + d.lo_label + ": " +
            std::to_string(d.units.size()) + " units, calibrated to " +
            FormatDouble(d.target_bits, 2) + " bits/weight (" + FormatDouble(d.calib_bits, 2) +
            " on its calibration text)\n";
  }
  w.EndArray().EndObject();
  ctx.Print(ctx.json ? w.str() : text);
  return Status::OK();
}

}  // namespace

void RegisterPackCommands(CLI::App& app, Context& ctx) {
  auto pack_args = std::make_shared<PackArgs>();
  CLI::App* p = app.add_subcommand(
      "pack", "Write one .fqpack file: a model's ensembles and QMs, ready to ship");
  p->add_option("-m,--model", pack_args->model, "Model (needed when the store holds several)");
  p->add_option("-e,--ensemble", pack_args->ensembles,
                "Ensemble(s) to carry (default: all of the model's)");
  p->add_option("--qm", pack_args->qms,
                "QM(s) to carry whole (default: those the ensembles build on)");
  p->add_option("--codec", pack_args->codec, "Payload codec: auto (zstd where it saves), raw, zstd")
      ->capture_default_str();
  p->add_option("-o,--output", pack_args->out, "Output .fqpack file")->required();
  p->callback(
      [&ctx, pack_args] { ctx.action = [&ctx, pack_args] { return RunPack(ctx, *pack_args); }; });

  auto info_path = std::make_shared<std::string>();
  CLI::App* info = app.add_subcommand(
      "info", "Describe a .fqpack file: model, EQMs with footprint and quality, codecs");
  info->add_option("file", *info_path, "The .fqpack file")->required()->check(CLI::ExistingFile);
  info->callback(
      [&ctx, info_path] { ctx.action = [&ctx, info_path] { return RunInfo(ctx, *info_path); }; });
}

}  // namespace fqpack::cli
