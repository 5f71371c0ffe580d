// fqpack run: generate text from a prompt with a QM of the store, a .fqpack
// under a memory budget that may change while it runs, or a --dynamic pair;
// the text streams to stdout.

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "cli/app.h"
#include "cli/model_resolution.h"
#include "cli/output.h"
#include "cli/run_report.h"
#include "runtime/dynamic.h"
#include "runtime/elastic.h"
#include "runtime/generate.h"
#include "runtime/llama.h"
#include "schema/json.h"
#include "schema/units.h"

namespace fqpack::cli {
namespace {

// `text` with every byte that does not start or continue a valid UTF-8
// sequence replaced by U+FFFD: a model may stop in the middle of a
// character (or emit stray byte tokens), and a JSON document must be UTF-8.
std::string ValidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t n = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xE  ? 3
                     : (c >> 3) == 0x1E ? 4
                                        : 0;
    bool ok = n > 0 && i + n <= text.size() && !(n == 2 && c < 0xC2) && c <= 0xF4;
    for (size_t k = 1; ok && k < n; ++k)
      ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
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

struct RunArgs {
  ModelSourceArgs source;
  DynamicArgs dynamic;
  std::string prompt;
  int64_t n_predict = -1;
  int64_t n_ctx = 0;
  float temperature = 0.8f;
  float top_p = 0.95f;
  int64_t seed = -1;
  int64_t keep = 0;
  bool no_context_shift = false;
};

Status RunRun(Context& ctx, const RunArgs& args) {
  FQ_RETURN_IF_ERROR(CheckDynamicArgs(args.source, args.dynamic, ""));
  ThreadPool pool(ctx.Threads());
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
  FQ_ASSIGN_OR_RETURN(int64_t n_ctx,
                      ContextSize(ctx, rt != nullptr ? *rt->model() : *model, args.n_ctx));

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
  opts.eot = tok.eot();
  opts.context_shift = !args.no_context_shift;
  // llama.cpp's rule: --keep N prompt tokens after the BOS, which a shift
  // always keeps; -1 (or more than the prompt has) keeps the whole prompt.
  const auto prompt_size = static_cast<int64_t>(prompt.size());
  const int64_t with_bos = args.keep + (prompt.front() == tok.bos() ? 1 : 0);
  opts.n_keep = args.keep < 0 ? prompt_size : std::min(with_bos, prompt_size);
  if (dyn.runner != nullptr) {
    opts.before_token = [&dyn](std::span<const float> previous) {
      return dyn.runner->BeforeToken(previous);
    };
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
      if (one_terminal && !ctx.json && !text.empty() && text.back() != '\n')
        std::fputc('\n', stderr);
      log(t);
    };
    Result<runtime::ElasticGenerateResult> er =
        rt->Generate(prompt, opts, src.trace, on_token, on_transition);
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
  if (rt != nullptr)
    FQ_RETURN_IF_ERROR(WriteTransitionsFile(ctx, args.source.transitions_json, transitions));
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
        .Key("context_shifts").Int(r->context_shifts)
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
  if (r->context_shifts > 0) {
    ctx.Note("context shifts: " + std::to_string(r->context_shifts) + " (n_keep " +
             std::to_string(opts.n_keep) + "; evaluating the kept tokens again took " +
             FormatSeconds(r->shift_seconds) + ")");
  }
  if (dyn.runner != nullptr) {
    NoteDynamic(ctx, dyn, r->generated / std::max(r->generate_seconds, 1e-9));
  } else if (rt != nullptr) {
    ctx.Note(ResidencySummary(rt));
  }
  return Status::OK();
}

}  // namespace

void RegisterRunCommand(CLI::App& app, Context& ctx) {
  auto run = std::make_shared<RunArgs>();
  CLI::App* r = app.add_subcommand(
      "run",
      "Generate text from a prompt (a QM, or a .fqpack under a memory budget that may "
      "change while it runs); the text streams to stdout");
  run->source.AddOptions(r, true);
  r->add_option("-p,--prompt", run->prompt, "Prompt text (empty: start from BOS alone)");
  r->add_option("-n,--n-predict", run->n_predict,
                "Tokens to generate at most; past a full context, the oldest half of it (after "
                "--keep) is dropped (default -1: until end of text or a full context)")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 24));
  r->add_option("-c,--ctx-size", run->n_ctx, "Context length (default: the model's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  r->add_option("--keep", run->keep,
                "Prompt tokens (after the BOS) a context shift keeps; -1: the whole prompt "
                "(default 0)")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 24));
  r->add_flag("--no-context-shift", run->no_context_shift,
              "Stop when the context is full instead of dropping the oldest half of it");
  r->add_option("--temp", run->temperature, "Temperature; 0 is greedy (default 0.8)")
      ->check(CLI::Range(0.0f, 100.0f));
  r->add_option("--top-p", run->top_p, "Nucleus sampling threshold in (0, 1] (default 0.95)");
  r->add_option("-s,--seed", run->seed, "Random seed (default: a random one, printed on stderr)")
      ->check(CLI::Range(int64_t{0}, INT64_MAX));
  run->dynamic.AddOptions(r);
  r->callback([&ctx, run] { ctx.action = [&ctx, run] { return RunRun(ctx, *run); }; });
}

}  // namespace fqpack::cli
