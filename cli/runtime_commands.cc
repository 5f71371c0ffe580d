// fqpack ppl | run | tokenize: running a model.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "cli/app.h"
#include "cli/output.h"
#include "runtime/generate.h"
#include "runtime/llama.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/tokenizer.h"
#include "schema/json.h"
#include "schema/units.h"

namespace fqpack::cli {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Which model to run. Today a QM of a model in the store; a .fqpack file and
// an EQM of an ensemble are more fields here and more cases in
// ResolveModelSource, and every runtime command follows.
struct ModelSourceArgs {
  std::string model;  // --model; may be empty when the store holds one model
  std::string qm;     // --qm

  void AddOptions(CLI::App* cmd, bool with_qm) {
    cmd->add_option("-m,--model", model, "Model name (needed when the store holds several)");
    if (with_qm) cmd->add_option("--qm", qm, "QM label (needed when the model has several)");
  }
};

// A resolved source: the manifest to run and what provides its modules.
struct ModelSource {
  std::unique_ptr<store::Store> store;  // owns the ModuleSource below
  store::ModuleSource* modules = nullptr;
  store::ModelManifest manifest;
  std::string display;  // "stories260K/Q4_K_M"
};

// `need_modules` false: only the metadata is wanted (tokenize), so no QM has
// to be chosen.
Result<ModelSource> ResolveModelSource(Context& ctx, const ModelSourceArgs& args,
                                       bool need_modules) {
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
  FQ_ASSIGN_OR_RETURN(src.manifest, src.store->QmManifest(m.name, label));
  src.modules = src.store.get();
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

struct PplArgs {
  ModelSourceArgs source;
  std::string text_file;
  int64_t n_ctx = 0;
  int64_t chunks = -1;
  std::string kl_base;
};

Status RunPpl(Context& ctx, const PplArgs& args) {
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

  runtime::PerplexityOptions opts;
  opts.n_ctx = n_ctx;
  opts.bos = tok.add_bos() ? tok.bos() : -1;
  opts.max_chunks = args.chunks;
  const int64_t total = std::min<int64_t>(static_cast<int64_t>(tokens.size()) / n_ctx,
                                          args.chunks < 0 ? INT64_MAX : args.chunks);
  Progress progress("perplexity " + src.display, static_cast<uint64_t>(total), ctx.ShowProgress());
  opts.progress = [&](int64_t done, int64_t) {
    progress.Update(static_cast<uint64_t>(done));
    return CheckInterrupt();
  };
  const Clock::time_point t0 = Clock::now();
  Result<runtime::PerplexityResult> r =
      runtime::Perplexity(*model, tokens, opts, &pool, base.get());
  if (!r.ok()) return r.status().WithContext(args.text_file);
  const double secs = SecondsSince(t0);
  progress.Finish();

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

struct RunArgs {
  ModelSourceArgs source;
  std::string prompt;
  int64_t n_predict = -1;
  int64_t n_ctx = 0;
  float temperature = 0.8f;
  float top_p = 0.95f;
  int64_t seed = -1;
};

Status RunRun(Context& ctx, const RunArgs& args) {
  runtime::ThreadPool pool(ctx.Threads());
  FQ_ASSIGN_OR_RETURN(ModelSource src, ResolveModelSource(ctx, args.source, true));
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> model, LoadModel(src, &pool));
  FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, TokenizerOf(src.manifest));
  FQ_ASSIGN_OR_RETURN(int64_t n_ctx, ContextSize(ctx, *model, args.n_ctx));

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
  FQ_RETURN_IF_ERROR(runtime::Sampler::Check(opts.sampling));
  if (args.temperature > 0 && args.seed < 0) {
    ctx.Note("seed " + std::to_string(opts.sampling.seed));
  }

  runtime::Session session(model.get(), n_ctx, &pool);
  runtime::DecodeStream stream(&tok, prompt.back());
  std::string text;
  Result<runtime::GenerateStats> r =
      runtime::Generate(&session, prompt, opts, [&](int32_t token) -> Status {
        const std::string piece = stream.Next(token);
        text += piece;
        if (!ctx.json) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
        }
        return CheckInterrupt();
      });
  if (!r.ok()) {
    std::fflush(stdout);
    return r.status();
  }
  if (ctx.json) {
    JsonWriter w(true);
    // clang-format off
    w.BeginObject()
        .Key("model").String(src.manifest.model)
        .Key("qm").String(src.manifest.label)
        .Key("text").String(text)
        .Key("prompt_tokens").Int(r->prompt_tokens)
        .Key("generated_tokens").Int(r->generated)
        .Key("stop").String(runtime::StopReasonName(r->stop))
        .Key("prompt_seconds").Double(r->prompt_seconds)
        .Key("generate_seconds").Double(r->generate_seconds)
        .Key("seed").Uint(opts.sampling.seed)
        .Key("tokens").BeginArray();
    // clang-format on
    for (int32_t t : r->tokens) w.Int(t);
    w.EndArray().EndObject();
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
      "ppl", "Perplexity of a QM on a text file, computed as llama.cpp's llama-perplexity does");
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
  p->callback([&ctx, ppl] { ctx.action = [&ctx, ppl] { return RunPpl(ctx, *ppl); }; });

  auto run = std::make_shared<RunArgs>();
  CLI::App* r =
      app.add_subcommand("run", "Generate text from a prompt; the text streams to stdout");
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
  r->callback([&ctx, run] { ctx.action = [&ctx, run] { return RunRun(ctx, *run); }; });

  auto tk = std::make_shared<TokenizeArgs>();
  CLI::App* t = app.add_subcommand("tokenize",
                                   "Show the tokens of a text as the model's tokenizer splits it");
  tk->source.AddOptions(t, false);
  t->add_option("--text", tk->text, "Text to tokenize")->required();
  t->add_flag("--no-bos", tk->no_special,
              "Do not add BOS/EOS even when the vocabulary asks for them");
  t->add_flag("--parse-special", tk->parse_special,
              "Turn control tokens written in the text (\"<s>\") into those tokens");
  t->callback([&ctx, tk] { ctx.action = [&ctx, tk] { return RunTokenize(ctx, *tk); }; });
}

}  // namespace fqpack::cli
