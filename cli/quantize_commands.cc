// fqpack quantize: a ladder of QMs (fqpack's group-int types and/or GGUF
// types, by RTN or GPTQ) from a float QM of a model in the store.

#include <cstdio>
#include <memory>

#include "cli/app.h"
#include "cli/output.h"
#include "quantize/pipeline.h"
#include "schema/json.h"
#include "schema/quant_types.h"
#include "schema/units.h"

namespace fqpack::cli {
namespace {

namespace rq = fqpack::quantize;

struct QuantizeArgs {
  std::string model;
  std::string from;
  std::vector<int> bits;
  int group = 64;
  std::vector<std::string> types;
  std::string method = "rtn";
  std::string calib;
  int embed_bits = 8;
  std::string label;
  double damp = 0.01;
  bool act_order = false;
  int64_t calib_ctx = 256;
  int64_t calib_chunks = 128;
};

Status CheckInterrupt() {
  if (InterruptFlag().load()) return Status::Aborted("interrupted");
  return Status::OK();
}

// The request a command line asks for.
Result<rq::QuantizeRequest> MakeRequest(Context& ctx, const QuantizeArgs& args,
                                        store::Store* store) {
  rq::QuantizeRequest req;
  req.model = args.model;
  req.threads = ctx.Threads();
  if (args.method == "rtn") {
    req.method = rq::Method::kRtn;
  } else if (args.method == "gptq") {
    req.method = rq::Method::kGptq;
  } else {
    return Status::InvalidArgument("--method must be rtn or gptq, not '" + args.method + "'");
  }
  for (int b : args.bits) {
    FQ_ASSIGN_OR_RETURN(uint32_t type, rq::GroupIntTarget(b, args.group));
    req.targets.push_back({type, ""});
  }
  if (args.bits.empty()) FQ_RETURN_IF_ERROR(rq::GroupIntTarget(8, args.group).status());
  for (const std::string& name : args.types) {
    Result<uint32_t> type = ParseQTypeName(name);
    if (!type.ok()) {
      return Status::InvalidArgument("--types: unknown type '" + name +
                                     "' (GGUF types such as Q4_K or Q8_0, or int3-g64)");
    }
    req.targets.push_back({*type, ""});
  }
  if (req.targets.empty()) {
    return Status::InvalidArgument("say what to make: --bits 8,6,4,3 and/or --types Q8_0,Q4_K");
  }
  if (!args.label.empty()) {
    if (req.targets.size() != 1) {
      return Status::InvalidArgument("--label names one QM; give one bit width or type with it");
    }
    req.targets[0].label = args.label;
  }
  req.embed_bits = args.embed_bits;
  req.gptq.damp = args.damp;
  req.gptq.act_order = args.act_order;
  req.calib_ctx = args.calib_ctx;
  req.calib_chunks = args.calib_chunks;
  if (req.method == rq::Method::kGptq) {
    if (args.calib.empty()) {
      return Status::InvalidArgument("--method gptq needs calibration text: --calib FILE");
    }
    FQ_ASSIGN_OR_RETURN(Bytes text, ReadFileBytes(ctx.env, args.calib));
    req.calib_text.assign(text.begin(), text.end());
    req.calib_name = args.calib;
  } else if (!args.calib.empty()) {
    ctx.Note("note: --calib is used only by --method gptq; ignored");
  }

  // --from: the one float QM when the model has exactly one.
  req.from = args.from;
  if (req.from.empty()) {
    FQ_ASSIGN_OR_RETURN(store::ModelInfo m, store->ResolveModel(args.model));
    FQ_ASSIGN_OR_RETURN(std::vector<store::QmInfo> qms, store->ListQms(m.id));
    std::vector<std::string> floats;
    for (const store::QmInfo& q : qms) {
      FQ_ASSIGN_OR_RETURN(std::vector<store::ModuleRef> mods, store->QmModules(q.id));
      bool all_float = true;
      for (const store::ModuleRef& r : mods) {
        const QTypeInfo* t = FindGgmlType(r.desc.qtype);
        all_float = all_float && t != nullptr && t->is_float;
      }
      if (all_float) floats.push_back(q.label);
    }
    if (floats.size() != 1) {
      std::string names;
      for (const auto& f : floats) names += (names.empty() ? "" : ", ") + f;
      const std::string which =
          names.empty() ? " (model '" + m.name + "' has none)" : " (" + names + ")";
      return Status::InvalidArgument("choose the float QM to quantize with --from" + which);
    }
    req.from = floats[0];
  }
  return req;
}

std::string Rmse(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3e", v);
  return buf;
}

Status RunQuantize(Context& ctx, const QuantizeArgs& args) {
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  FQ_ASSIGN_OR_RETURN(rq::QuantizeRequest req, MakeRequest(ctx, args, store.get()));

  std::unique_ptr<Progress> progress;
  std::string phase;
  req.progress = [&](const rq::QuantizeProgress& p) {
    if (p.phase != phase) {
      if (progress) progress->Finish();
      phase = p.phase;
      progress = std::make_unique<Progress>(
          p.phase == "calibrate" ? "calibrate on " + BaseName(req.calib_name) : "quantize",
          static_cast<uint64_t>(p.total), ctx.ShowProgress());
    }
    progress->Update(static_cast<uint64_t>(p.done),
                     p.phase == "quantize" ? p.label + " " + p.tensor : "");
    return CheckInterrupt();
  };
  Result<rq::QuantizeResult> r = rq::QuantizeModel(store.get(), req);
  if (!r.ok()) return r.status();
  if (progress) progress->Finish();
  for (const std::string& w : r->warnings) ctx.Note("warning: " + w);

  if (ctx.json) {
    JsonWriter w(true);
    // clang-format off
    w.BeginObject()
        .Key("model").String(r->model)
        .Key("from").String(r->from)
        .Key("method").String(args.method);
    if (req.method == rq::Method::kGptq) {
      w.Key("calib").String(req.calib_name)
          .Key("calib_sha256").String(r->calib_sha256)
          .Key("calib_tokens").Int(r->calib_tokens)
          .Key("calib_chunks").Int(r->calib_chunks)
          .Key("calib_seconds").Double(r->calib_seconds);
    }
    w.Key("warnings").BeginArray();
    for (const std::string& s : r->warnings) w.String(s);
    w.EndArray().Key("qms").BeginArray();
    for (const rq::QmResult& q : r->qms) {
      w.BeginObject()
          .Key("label").String(q.label)
          .Key("type").String(QTypeName(q.type))
          .Key("nothing_to_do").Bool(q.nothing_to_do)
          .Key("bits_per_weight").Double(q.bits_per_weight)
          .Key("bytes").Uint(q.weight_bytes)
          .Key("new_modules").Uint(q.new_modules)
          .Key("reused_modules").Uint(q.reused_modules)
          .Key("new_stored_bytes").Uint(q.new_stored_bytes)
          .Key("params").Raw(q.params_json)
          .Key("tensors").BeginArray();
      for (const rq::TensorResult& t : q.tensors) {
        w.BeginObject()
            .Key("tensor").String(t.tensor)
            .Key("type").String(QTypeName(t.type))
            .Key("method").String(t.method)
            .Key("rmse").Double(t.rmse);
        if (t.output_error >= 0) w.Key("output_error").Double(t.output_error);
        w.Key("seconds").Double(t.seconds).Key("note").String(t.note).EndObject();
      }
      w.EndArray().EndObject();
    }
    w.EndArray().EndObject();
    // clang-format on
    ctx.Print(w.str());
    return Status::OK();
  }

  std::string text;
  if (req.method == rq::Method::kGptq) {
    text += "calibration: " + std::to_string(r->calib_tokens) + " tokens of " + req.calib_name +
            " in " + std::to_string(r->calib_chunks) + " chunks (" +
            FormatSeconds(r->calib_seconds) + ")\n";
  }
  Table summary({"QM", "bits/w", "size", "new", "stored", "result"}, "lrrrrl");
  for (const rq::QmResult& q : r->qms) {
    const bool gptq = req.method == rq::Method::kGptq;
    Table table(
        gptq ? std::vector<std::string>{"tensor", "type", "method", "RMSE", "out.err", "seconds",
                                        "note"}
             : std::vector<std::string>{"tensor", "type", "method", "RMSE", "seconds", "note"},
        gptq ? "lllrrrl" : "lllrrl");
    for (const rq::TensorResult& t : q.tensors) {
      std::vector<std::string> row = {t.tensor, QTypeName(t.type), t.method, Rmse(t.rmse)};
      if (gptq) row.push_back(t.output_error >= 0 ? FormatDouble(t.output_error, 4) : "");
      row.push_back(FormatDouble(t.seconds, 3));
      row.push_back(t.note);
      table.AddRow(std::move(row));
    }
    text += q.label + ":\n" + table.Render("  ") + "\n";
    summary.AddRow({q.label, FormatDouble(q.bits_per_weight, 2), FormatBytes(q.weight_bytes),
                    std::to_string(q.new_modules), FormatBytes(q.new_stored_bytes),
                    q.nothing_to_do ? "already in the store (nothing to do)" : "added"});
  }
  text += "model " + r->model + ", from " + r->from + ":\n" + summary.Render("  ");
  ctx.Print(text);
  return Status::OK();
}

}  // namespace

void RegisterQuantizeCommands(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<QuantizeArgs>();
  CLI::App* q = app.add_subcommand(
      "quantize",
      "Make quantized QMs from a float QM: fqpack's group-int types (--bits) and/or GGUF types "
      "(--types), by RTN or GPTQ");
  q->add_option("-m,--model", args->model, "Model name (needed when the store holds several)");
  q->add_option("--from", args->from,
                "Float QM to quantize (F32/F16/BF16; default: the model's only float QM)");
  q->add_option("--bits", args->bits, "Group-int bit widths to make, e.g. 8,6,5,4,3,2")
      ->delimiter(',');
  q->add_option("--group", args->group,
                "Weights per group of the group-int types: 32, 64 or 128 (default 64)");
  q->add_option("--types", args->types, "GGUF types to make, e.g. Q8_0,Q6_K,Q4_K")->delimiter(',');
  q->add_option("--method", args->method, "rtn (default) or gptq");
  q->add_option("--calib", args->calib, "Calibration text for GPTQ (never the evaluation text)")
      ->check(CLI::ExistingFile);
  q->add_option("--embed-bits", args->embed_bits,
                "Bits of the token embedding and output matrix: 2-8, 16 (F16), 32 (F32), 0 (as "
                "the rest); default 8");
  q->add_option("--label", args->label, "QM label when one width or type is made");
  q->add_option("--damp", args->damp,
                "GPTQ damping, a fraction of H's mean diagonal (default 0.01)");
  q->add_flag("--act-order", args->act_order, "GPTQ: quantize columns by decreasing H[j][j]");
  q->add_option("--calib-ctx", args->calib_ctx, "Tokens per calibration chunk (default 256)");
  q->add_option("--calib-chunks", args->calib_chunks, "Calibration chunks at most (default 128)")
      ->check(CLI::PositiveNumber);
  q->callback([&ctx, args] { ctx.action = [&ctx, args] { return RunQuantize(ctx, *args); }; });
}

}  // namespace fqpack::cli
