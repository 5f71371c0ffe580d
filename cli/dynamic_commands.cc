// fqpack calibrate-dynamic: the offline half of dynamic precision switching
// (runtime/dynamic.h). Measures how much each unit of a model (a block, the
// output matrix, the embedding) hurts when it alone runs the lo QM, and
// stores the precision requirement model for the (hi, lo) pair in the
// store, where `fqpack run/ppl --dynamic` and `fqpack pack` find it.

#include <cmath>
#include <cstdio>

#include "cli/app.h"
#include "cli/output.h"
#include "runtime/dynamic.h"
#include "runtime/tokenizer.h"
#include "schema/json.h"
#include "schema/sha256.h"
#include "schema/units.h"

namespace fqpack::cli {
namespace {

struct CalibrateDynamicArgs {
  std::string model;
  std::string hi;
  std::string lo;
  std::string calib_file;
  double target_bits = NAN;
  int64_t n_ctx = 0;
  int64_t tokens = 8192;
};

// The modules of both QMs, each pinned by its own PinQm.
class PinnedPair : public store::ModuleSource {
 public:
  PinnedPair(store::PinnedModules* hi, store::PinnedModules* lo) : hi_(hi), lo_(lo) {}
  Result<store::ModuleData> Load(const store::ModuleKey& key) override {
    Result<store::ModuleData> d = hi_->Load(key);
    return d.ok() || !d.status().IsNotFound() ? d : lo_->Load(key);
  }

 private:
  store::PinnedModules* hi_;
  store::PinnedModules* lo_;
};

std::string Threshold(double t) { return std::isfinite(t) ? FormatDouble(t, 4) : "never"; }

Status RunCalibrateDynamic(Context& ctx, const CalibrateDynamicArgs& args) {
  ThreadPool pool(ctx.Threads());
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<store::Store> st, ctx.OpenStore());
  FQ_ASSIGN_OR_RETURN(auto lock, st->WriterLock());
  FQ_ASSIGN_OR_RETURN(store::ModelInfo m, st->ResolveModel(args.model));
  FQ_ASSIGN_OR_RETURN(store::QmInfo hi_qm, st->FindQm(m.id, args.hi));
  FQ_ASSIGN_OR_RETURN(store::QmInfo lo_qm, st->FindQm(m.id, args.lo));
  // Pinned under the shared lock: a gc meanwhile cannot take the modules away.
  FQ_ASSIGN_OR_RETURN(store::PinnedModel hi, st->PinQm(m.name, args.hi));
  FQ_ASSIGN_OR_RETURN(store::PinnedModel lo, st->PinQm(m.name, args.lo));
  FQ_RETURN_IF_ERROR(runtime::CheckDynamicPair(hi.manifest, lo.manifest));

  FQ_ASSIGN_OR_RETURN(gguf::Metadata md, gguf::ParseMetadata(m.metadata, m.n_kv, m.name));
  FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, runtime::Tokenizer::FromMetadata(md));
  FQ_ASSIGN_OR_RETURN(runtime::Hparams hp, runtime::ReadHparams(md, m.name));
  FQ_ASSIGN_OR_RETURN(Bytes text, ReadFileBytes(ctx.env, args.calib_file));
  const std::vector<int32_t> tokens =
      tok.Encode(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), true);

  runtime::DynamicCalibrationOptions opts;
  opts.n_ctx = args.n_ctx > 0 ? args.n_ctx : hp.n_ctx_train;
  opts.bos = tok.add_bos() ? tok.bos() : -1;
  opts.max_tokens = args.tokens;
  opts.target_bits = args.target_bits;
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>(args.tokens / opts.n_ctx,
                                             static_cast<int64_t>(tokens.size()) / opts.n_ctx));
  Progress progress("calibrate-dynamic " + m.name + " hi=" + args.hi + ",lo=" + args.lo,
                    static_cast<uint64_t>(chunks), ctx.ShowProgress());
  opts.progress = [&](int64_t done, int64_t) {
    progress.Update(static_cast<uint64_t>(done));
    if (InterruptFlag().load()) return Status::Aborted("interrupted");
    return Status::OK();
  };
  PinnedPair both(hi.source.get(), lo.source.get());
  Result<store::DynamicModelInfo> r =
      runtime::CalibrateDynamic(hi.manifest, lo.manifest, &both, tokens, opts, &pool);
  if (!r.ok()) return r.status().WithContext(args.calib_file);
  progress.Finish();
  store::DynamicModelInfo d = std::move(*r);
  d.model_id = m.id;
  d.hi_qm_id = hi_qm.id;
  d.lo_qm_id = lo_qm.id;
  d.calib_sha256 = Sha256::HexOf(text);
  d.params.Set("n_ctx", static_cast<int64_t>(opts.n_ctx))
      .Set("max_tokens", static_cast<int64_t>(opts.max_tokens))
      .Set("metric", std::string("kl"));
  FQ_ASSIGN_OR_RETURN(d.id, st->PutDynamicModel(d));

  if (ctx.json) {
    JsonWriter w(true);
    // clang-format off
    w.BeginObject()
        .Key("model").String(m.name)
        .Key("hi").String(args.hi)
        .Key("lo").String(args.lo)
        .Key("hi_bits").Double(d.hi_bits())
        .Key("lo_bits").Double(d.lo_bits())
        .Key("target_bits").Double(d.target_bits)
        .Key("calib_bits").Double(d.calib_bits)
        .Key("calib_tokens").Int(d.calib_tokens)
        .Key("calib_chunks").Int(d.calib_starts)
        .Key("n_ctx").Int(opts.n_ctx)
        .Key("calib_sha256").String(d.calib_sha256)
        .Key("units").BeginArray();
    // clang-format on
    for (const store::DynamicUnitInfo& u : d.units) {
      w.BeginObject()
          .Key("rank")
          .Int(u.rank)
          .Key("unit")
          .String(u.name)
          .Key("sensitivity")
          .Double(u.sensitivity)
          .Key("extra_bytes")
          .Int(u.extra_bytes);
      if (std::isfinite(u.threshold)) {
        w.Key("threshold").Double(u.threshold);
      } else {
        w.Key("threshold").Null();
      }
      w.EndObject();
    }
    w.EndArray().EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  Table t({"rank", "unit", "KL if lo (nats)", "extra", "hi when H >="}, "rlrrr");
  for (const store::DynamicUnitInfo& u : d.units) {
    t.AddRow({std::to_string(u.rank), u.name, FormatDouble(u.sensitivity, 6),
              FormatBytesSigned(u.extra_bytes), Threshold(u.threshold)});
  }
  ctx.Print("dynamic precision model " + m.name + " hi=" + args.hi + " (" +
            FormatDouble(d.hi_bits(), 3) + " bits/w), lo=" + args.lo + " (" +
            FormatDouble(d.lo_bits(), 3) + " bits/w): target " + FormatDouble(d.target_bits, 3) +
            " bits/w, " + FormatDouble(d.calib_bits, 3) + " on the calibration text (" +
            std::to_string(d.calib_tokens) + " tokens in " + std::to_string(d.calib_starts) +
            " chunks of " + std::to_string(opts.n_ctx) + ")\n" + t.Render("  "));
  return Status::OK();
}

}  // namespace

void RegisterDynamicCommands(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<CalibrateDynamicArgs>();
  CLI::App* c = app.add_subcommand("calibrate-dynamic",
                                   "Calibrate per-token dynamic precision between two QMs (layer "
                                   "sensitivity by KL, an entropy-to-precision "
                                   "model meeting a target of bits per weight); stored for run/ppl "
                                   "--dynamic and carried by pack");
  c->add_option("-m,--model", a->model, "Model (needed when the store holds several)");
  c->add_option("--hi", a->hi, "High-precision QM, e.g. Q8_0")->required();
  c->add_option("--lo", a->lo, "Low-precision QM, e.g. Q4_K_M")->required();
  c->add_option("--calib", a->calib_file, "Calibration text (never the evaluation text)")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("--target-bits", a->target_bits,
                "Average bits per weight to meet (default: halfway between lo and hi)");
  c->add_option("-c,--ctx-size", a->n_ctx,
                "Tokens per calibration chunk (default: the model's context length)")
      ->check(CLI::Range(int64_t{4}, int64_t{1} << 20));
  c->add_option("--tokens", a->tokens, "Calibration tokens at most (whole chunks; default 8192)")
      ->check(CLI::Range(int64_t{4}, int64_t{1} << 30));
  c->callback([&ctx, a] { ctx.action = [&ctx, a] { return RunCalibrateDynamic(ctx, *a); }; });
}

}  // namespace fqpack::cli
