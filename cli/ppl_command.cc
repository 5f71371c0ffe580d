// fqpack ppl: perplexity (and KL against a base QM) of a QM of the store, of
// a .fqpack under a budget or a budget trace, or of a --dynamic pair,
// computed as llama.cpp's llama-perplexity does.

#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli/app.h"
#include "cli/model_resolution.h"
#include "cli/output.h"
#include "cli/run_report.h"
#include "runtime/dynamic.h"
#include "runtime/elastic.h"
#include "runtime/perplexity.h"
#include "schema/json.h"
#include "schema/units.h"

namespace fqpack::cli {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// llama-perplexity's chunking of `n_tokens` tokens (at most `chunks`, -1:
// all), with a progress bar over the chunks that also polls Ctrl-C.
struct PplPlan {
  runtime::PerplexityOptions opts;
  std::unique_ptr<Progress> progress;
};
PplPlan PlanPerplexity(Context& ctx, const runtime::Tokenizer& tok, size_t n_tokens, int64_t n_ctx,
                       int64_t chunks, const std::string& display, bool show_progress = true) {
  PplPlan plan;
  plan.opts.n_ctx = n_ctx;
  plan.opts.bos = tok.add_bos() ? tok.bos() : -1;
  plan.opts.max_chunks = chunks;
  const int64_t total =
      std::min<int64_t>(static_cast<int64_t>(n_tokens) / n_ctx, chunks < 0 ? INT64_MAX : chunks);
  plan.progress = std::make_unique<Progress>("perplexity " + display, static_cast<uint64_t>(total),
                                             show_progress && ctx.ShowProgress());
  plan.opts.progress = [bar = plan.progress.get()](int64_t done, int64_t) {
    bar->Update(static_cast<uint64_t>(done));
    return CheckInterrupt();
  };
  return plan;
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
  ThreadPool pool(ctx.Threads());
  ModelSource src;
  FQ_ASSIGN_OR_RETURN(DynamicRun d,
                      OpenDynamic(ctx, args.source, args.dynamic, &src, &pool, args.n_ctx));
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
  Result<runtime::PerplexityResult> r =
      runtime::DynamicPerplexity(session, d.runner.get(), tokens, plan.opts);
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
  ctx.Print(std::string(line) + "  (" + src.display + ", " + std::to_string(r->chunks) +
            " chunks of " + std::to_string(r->n_ctx) + " tokens, " + std::to_string(r->scored) +
            " scored of " + std::to_string(r->tokens) + ")");
  NoteDynamic(ctx, d, tps);
  ctx.Note(FormatSeconds(secs) + ", a token at a time; " + std::to_string(ctx.Threads()) +
           " threads");
  return Status::OK();
}

Status RunPpl(Context& ctx, const PplArgs& args) {
  FQ_RETURN_IF_ERROR(CheckDynamicArgs(args.source, args.dynamic, args.kl_base));
  if (args.dynamic.on()) return RunPplDynamic(ctx, args);
  if (!args.source.pack.empty()) return RunPplPack(ctx, args);
  ThreadPool pool(ctx.Threads());
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
  Result<runtime::PerplexityResult> r =
      runtime::Perplexity(*model, tokens, plan.opts, &pool, base.get());
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
  ThreadPool pool(ctx.Threads());
  ElasticSetup setup{&pool, runtime::Workload::kPerplexity, args.n_ctx, args.source.n_batch};
  FQ_ASSIGN_OR_RETURN(ModelSource src, ResolveModelSource(ctx, args.source, true, setup));
  runtime::ElasticRuntime* rt = src.elastic.get();
  FQ_ASSIGN_OR_RETURN(int64_t n_ctx, ContextSize(ctx, *rt->model(), args.n_ctx));
  std::unique_ptr<runtime::Model> base;
  if (!args.kl_base.empty()) {
    if (!src.trace.empty())
      return Status::InvalidArgument("--kl-base needs a fixed EQM; drop --budget-trace");
    FQ_ASSIGN_OR_RETURN(store::ModelManifest base_manifest, rt->pack()->QmManifest(args.kl_base));
    FQ_ASSIGN_OR_RETURN(base, runtime::Model::Load(base_manifest, rt->pack(), &pool));
  }
  FQ_ASSIGN_OR_RETURN(Bytes text, ReadFileBytes(ctx.env, args.text_file));
  const Clock::time_point t_tok = Clock::now();
  const std::vector<int32_t> tokens = rt->tokenizer().Encode(
      std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), true);
  const double tokenize_seconds = SecondsSince(t_tok);
  // Transition notes would tear a progress bar: none with a trace.
  PplPlan plan = PlanPerplexity(ctx, rt->tokenizer(), tokens.size(), n_ctx, args.chunks,
                                src.display, src.trace.empty());
  const Clock::time_point t0 = Clock::now();
  runtime::ElasticPerplexityResult er;
  if (base != nullptr) {
    Result<runtime::PerplexityResult> r =
        runtime::Perplexity(*rt->model(), tokens, plan.opts, &pool, base.get());
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
  const std::string what = src.trace.empty()
                               ? src.display
                               : src.manifest.model + " following " + args.source.budget_trace;
  std::string out = std::string(line) + "  (" + what + ", " + std::to_string(r.chunks) +
                    " chunks of " + std::to_string(r.n_ctx) + " tokens, " +
                    std::to_string(r.scored) + " scored of " + std::to_string(r.tokens) + ")";
  if (r.has_kl) {
    std::snprintf(
        line, sizeof(line),
        "\nKL(%s || %s) = %.6f +/- %.6f nats/token; same top token %.2f%%; base PPL = %.4f",
        args.kl_base.c_str(), src.display.c_str(), r.kl, r.kl_err, 100 * r.same_top, r.base_ppl);
    out += line;
  }
  ctx.Print(out);
  ctx.Note(ResidencySummary(rt));
  const double evaluated = static_cast<double>(r.chunks * r.n_ctx) * (base ? 2 : 1);
  ctx.Note(FormatSeconds(secs) + " for " + std::to_string(static_cast<int64_t>(evaluated)) +
           " tokens (" + FormatDouble(evaluated / std::max(secs, 1e-9), 1) + " tokens/s, " +
           std::to_string(ctx.Threads()) + " threads)");
  return Status::OK();
}

}  // namespace

void RegisterPplCommand(CLI::App& app, Context& ctx) {
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
}

}  // namespace fqpack::cli
