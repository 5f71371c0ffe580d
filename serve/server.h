// The HTTP server of `fqpack serve`: OpenAI's completion and chat
// endpoints over one .fqpack, plus its memory budget (/v1/budget), health
// and Prometheus metrics. Every route and response shape is in README.md,
// "Serving over HTTP".
//
// Threads: cpp-httplib's pool runs the handlers; one worker thread loads
// the model and then owns the ElasticRuntime (which is single-owner).
// Handlers parse and tokenize a request (the tokenizer is immutable), queue
// it, and wait for the worker's text; the worker runs the queue first come,
// first served, one generation at a time, and applies budgets between
// tokens, or at once when idle. A streaming client that goes away cancels
// its generation at the next token.
//
// Ownership and thread-safety: a Server owns its worker, the runtime the
// loader returns, and the HTTP threads. Start, Shutdown and the destructor
// belong to one thread; port(), ready() and WaitUntilLoaded() may be called
// from any thread.
#ifndef FQPACK_SERVE_SERVER_H_
#define FQPACK_SERVE_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/elastic.h"
#include "runtime/memory_governor.h"
#include "schema/env.h"
#include "schema/status.h"
#include "serve/chat_template.h"

namespace fqpack::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port)
  // Overrides the format detected from `tokenizer.chat_template`.
  std::optional<ChatTemplate> chat_template;
  // What chose the starting budget, for GET /v1/budget: "fixed" or "none".
  std::string budget_source = "none";
  // Start in auto mode with this reserve (BudgetController::SetAuto; 0 for
  // the default); a failure there fails the load.
  std::optional<uint64_t> auto_reserve;
  // Auto mode's governor: where it reads /proc and the cgroup (tests pass a
  // fake tree), how often; the reserve comes from the request.
  runtime::GovernorOptions governor;
  Env* env = Env::Default();
  // One line per request and per transition; empty: no log. Called from
  // many threads, one call at a time.
  std::function<void(std::string_view line)> log;
};

// Opens and starts the model; runs on the worker thread.
using RuntimeLoader = std::function<Result<std::unique_ptr<runtime::ElasticRuntime>>()>;

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // Shutdown
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port (IOError naming them when it cannot), then starts the
  // HTTP threads and the worker, which runs `load` and serves. GET /health
  // answers 503 until the model is loaded.
  Status Start(RuntimeLoader load);
  int port() const;
  bool ready() const;
  // Blocks until the load finished; its status.
  Status WaitUntilLoaded();
  // Stops accepting, cancels queued and running generations (they end with
  // the text they have, finish_reason "cancelled"), waits for the handlers
  // and joins the worker. Idempotent.
  void Shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fqpack::serve

#endif  // FQPACK_SERVE_SERVER_H_
