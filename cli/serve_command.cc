// fqpack serve: an OpenAI-compatible HTTP server over one .fqpack
// (serve/server.h), until SIGINT or SIGTERM.

#include <csignal>
#include <thread>

#include "cli/app.h"
#include "cli/model_resolution.h"
#include "schema/thread_pool.h"
#include "serve/server.h"

namespace fqpack::cli {
namespace {

std::atomic<bool>& TerminateFlag() {
  static std::atomic<bool> flag{false};
  return flag;
}

void OnTerminate(int) { TerminateFlag().store(true); }

struct ServeArgs {
  ModelSourceArgs source;  // pack, --ensemble, --eqm, --budget (bytes), -b
  std::string host = "127.0.0.1";
  int port = 8080;
  int64_t n_ctx = 0;
  std::string chat_template;
};

Status RunServe(Context& ctx, ServeArgs args) {
  serve::ServerOptions opts;
  opts.host = args.host;
  opts.port = args.port;
  if (!args.chat_template.empty()) {
    FQ_ASSIGN_OR_RETURN(opts.chat_template, serve::ParseChatTemplateName(args.chat_template));
  }
  // --budget auto[:RESERVE]: the OS's free memory, less the reserve. The
  // pack starts at what the system has now (ResolveModelSource); the
  // server's budget controller then owns the governor that follows it.
  uint64_t reserve = 0;
  FQ_ASSIGN_OR_RETURN(const bool auto_budget, ParseAutoBudget(args.source.budget, &reserve));
  if (auto_budget) {
    opts.auto_reserve = reserve;
    opts.budget_source = "auto";
  } else if (!args.source.budget.empty()) {
    opts.budget_source = "fixed";
  }
  if (!ctx.quiet) {
    opts.log = [](std::string_view line) {
      std::fwrite(line.data(), 1, line.size(), stderr);
      std::fputc('\n', stderr);
    };
  }

  ThreadPool pool(ctx.Threads());
  // The model loads on the server's worker thread, which then owns it;
  // /health answers 503 meanwhile.
  serve::RuntimeLoader load = [&ctx, &args,
                               &pool]() -> Result<std::unique_ptr<runtime::ElasticRuntime>> {
    ElasticSetup setup{&pool, runtime::Workload::kGenerate, args.n_ctx, args.source.n_batch};
    setup.start_governor = false;  // the server runs its own, which wakes its worker
    FQ_ASSIGN_OR_RETURN(ModelSource src, ResolveModelSource(ctx, args.source, true, setup));
    FQ_RETURN_IF_ERROR(ContextSize(ctx, *src.elastic->model(), args.n_ctx).status());
    return std::move(src.elastic);
  };
  serve::Server server(std::move(opts));
  std::signal(SIGTERM, OnTerminate);
  FQ_RETURN_IF_ERROR(server.Start(std::move(load)));
  std::fprintf(stderr, "listening on http://%s:%d\n", args.host.c_str(), server.port());
  std::fflush(stderr);
  Status loaded = server.WaitUntilLoaded();
  if (!loaded.ok()) {
    server.Shutdown();
    return loaded;
  }
  ctx.Note("ready: " + args.source.pack);
  while (!InterruptFlag().load() && !TerminateFlag().load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ctx.Note(InterruptFlag().load() ? "interrupted: shutting down" : "terminated: shutting down");
  server.Shutdown();
  if (InterruptFlag().load()) return Status::Aborted("interrupted");
  return Status::OK();
}

}  // namespace

void RegisterServeCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* s = app.add_subcommand(
      "serve",
      "Serve a .fqpack over HTTP: OpenAI's /v1/completions and /v1/chat/completions, the "
      "memory budget at /v1/budget, /health and Prometheus /metrics");
  s->add_option("pack", args->source.pack, "The .fqpack file to serve")
      ->required()
      ->check(CLI::ExistingFile);
  s->add_option("--host", args->host, "Address to listen on (default 127.0.0.1)");
  s->add_option("--port", args->port, "Port to listen on; 0 picks a free one (default 8080)")
      ->check(CLI::Range(0, 65535));
  s->add_option("--budget", args->source.budget,
                "Memory budget (weights + KV cache + scratch), e.g. 600KB, 1.5GiB; or "
                "auto[:RESERVE] to follow the OS's free memory. POST /v1/budget changes it");
  s->add_option("--eqm", args->source.eqm, "Start with this EQM (step) of the pack's ensemble")
      ->check(CLI::NonNegativeNumber);
  s->add_option("-e,--ensemble", args->source.ensemble,
                "Ensemble of the pack (default: the newest)");
  s->add_option("-c,--ctx-size", args->n_ctx, "Context length (default: the model's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  s->add_option("-b,--batch-size", args->source.n_batch,
                "Tokens per forward pass of a prompt; its activations count in the budget "
                "(default 64)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  s->add_option("--chat-template", args->chat_template,
                "Chat format for /v1/chat/completions: " + serve::ChatTemplateNames() +
                    " (default: detected from the model's tokenizer.chat_template)");
  s->callback([&ctx, args] { ctx.action = [&ctx, args] { return RunServe(ctx, *args); }; });
}

}  // namespace fqpack::cli
