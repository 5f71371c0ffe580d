#include "serve/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/elastic.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"
#include "schema/gguf.h"
#include "schema/json.h"
#include "schema/units.h"
#include "serve/budget_controller.h"

namespace fqpack::serve {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Models emit bytes, and a token may end inside a UTF-8 character; JSON
// must be UTF-8, so what cannot be decoded becomes U+FFFD.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Bytes at the end of `text` that start a UTF-8 character the next token
// may complete: held back from a stream so each chunk is whole characters.
size_t IncompleteUtf8Tail(std::string_view text) {
  const size_t n = text.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t need = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

// The longest end of `text` that begins one of `stops`: it may become a
// stop string with the next token, so a stream holds it back.
size_t PartialStopTail(std::string_view text, const std::vector<std::string>& stops) {
  size_t longest = 0;
  for (const std::string& stop : stops) {
    const std::string_view s = stop;
    for (size_t k = std::min(s.size() - 1, text.size()); k > longest; --k) {
      if (text.substr(text.size() - k) == s.substr(0, k)) {
        longest = k;
        break;
      }
    }
  }
  return longest;
}

int HttpStatusOf(const Status& s) {
  if (s.IsInvalidArgument()) return 400;
  if (s.IsNotSupported()) return 501;
  if (s.IsBusy()) return 503;
  return 500;
}

const char* ErrorTypeOf(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 404:
      return "not_found_error";
    case 501:
      return "not_supported_error";
    case 503:
      return "unavailable_error";
    default:
      return "server_error";
  }
}

void ReplyJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

void ReplyError(httplib::Response& res, int status, const std::string& message) {
  ReplyJson(res, status, {{"error", {{"message", message}, {"type", ErrorTypeOf(status)}}}});
}

std::string TypeName(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

Status WrongType(const char* field, const char* want, const json& got) {
  return Status::InvalidArgument("'" + std::string(field) + "' must be " + want + ", not " +
                                 TypeName(got));
}

// The request body as a JSON object.
Result<json> ParseBody(const httplib::Request& req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded()) return Status::InvalidArgument("the request body is not valid JSON");
  if (!body.is_object()) {
    return Status::InvalidArgument("the request body must be a JSON object, not " + TypeName(body));
  }
  return body;
}

// One generation: filled by a handler, run by the worker, read back by the
// handler (or its stream) under `mu`.
struct Job {
  std::vector<int32_t> prompt;
  runtime::GenerateOptions options;
  std::vector<std::string> stops;
  std::atomic<bool> cancel{false};  // the client went away

  std::mutex mu;
  std::condition_variable cv;
  std::string text;  // the text so far (cut before a stop string)
  size_t ready = 0;  // bytes of text that may be sent
  int64_t completion_tokens = 0;
  bool done = false;
  std::string finish_reason;  // "stop", "length", "cancelled"
  Status error;
};

// What a handler reports about its request for the log and the metrics.
struct RequestInfo {
  std::string method;
  std::string endpoint;
  Clock::time_point start;
  int64_t tokens = -1;    // generated, when it generated
  bool deferred = false;  // a stream: logged when it ends
};

// Parsed sampling and output fields shared by both generation endpoints.
struct GenerationRequest {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;  // llama.cpp's server extension: go on past end of text
  std::string prompt_text;
  int64_t max_tokens = -1;
  runtime::SamplerOptions sampling;
  std::vector<std::string> stops;
};

Status ParseGenerationFields(const json& body, bool chat, GenerationRequest* g) {
  g->chat = chat;
  // OpenAI's default for completions is 16 tokens; a chat goes on to the
  // end of the answer.
  g->max_tokens = chat ? -1 : 16;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!body.contains(key) || body[key].is_null()) continue;
    const json& v = body[key];
    if (!v.is_number_integer()) return WrongType(key, "an integer", v);
    if (v.get<int64_t>() < 0)
      return Status::InvalidArgument(std::string("'") + key + "' must be >= 0");
    g->max_tokens = v.get<int64_t>();
  }
  g->sampling.temperature = 0.8f;
  g->sampling.top_p = 0.95f;
  if (body.contains("temperature") && !body["temperature"].is_null()) {
    if (!body["temperature"].is_number())
      return WrongType("temperature", "a number", body["temperature"]);
    g->sampling.temperature = body["temperature"].get<float>();
  }
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    if (!body["top_p"].is_number()) return WrongType("top_p", "a number", body["top_p"]);
    g->sampling.top_p = body["top_p"].get<float>();
  }
  if (Status s = runtime::Sampler::Check(g->sampling); !s.ok()) return s;
  if (body.contains("seed") && !body["seed"].is_null()) {
    if (!body["seed"].is_number_integer()) return WrongType("seed", "an integer", body["seed"]);
    g->sampling.seed = static_cast<uint64_t>(body["seed"].get<int64_t>());
  } else {
    g->sampling.seed = std::random_device{}();
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& v = body["stop"];
    if (v.is_string()) {
      g->stops.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      for (const json& s : v) {
        if (!s.is_string()) return WrongType("stop", "a string or an array of strings", s);
        g->stops.push_back(s.get<std::string>());
      }
    } else {
      return WrongType("stop", "a string or an array of strings", v);
    }
    std::erase_if(g->stops, [](const std::string& s) { return s.empty(); });
  }
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) return WrongType("stream", "a boolean", body["stream"]);
    g->stream = body["stream"].get<bool>();
  }
  if (body.contains("ignore_eos") && !body["ignore_eos"].is_null()) {
    if (!body["ignore_eos"].is_boolean())
      return WrongType("ignore_eos", "a boolean", body["ignore_eos"]);
    g->ignore_eos = body["ignore_eos"].get<bool>();
  }
  if (body.contains("stream_options") && body["stream_options"].is_object()) {
    const json& o = body["stream_options"];
    g->include_usage = o.contains("include_usage") && o["include_usage"].is_boolean() &&
                       o["include_usage"].get<bool>();
  }
  if (body.contains("n") && !body["n"].is_null() &&
      !(body["n"].is_number_integer() && body["n"].get<int64_t>() == 1)) {
    return Status::InvalidArgument("'n' must be 1: fqpack generates one choice per request");
  }
  return Status::OK();
}

Result<std::vector<ChatMessage>> ParseMessages(const json& body) {
  if (!body.contains("messages")) return Status::InvalidArgument("'messages' is missing");
  const json& v = body["messages"];
  if (!v.is_array()) return WrongType("messages", "an array", v);
  if (v.empty()) return Status::InvalidArgument("'messages' is empty");
  std::vector<ChatMessage> out;
  for (const json& m : v) {
    if (!m.is_object()) return WrongType("messages[]", "an object", m);
    if (!m.contains("role") || !m["role"].is_string()) {
      return Status::InvalidArgument("each message needs a string 'role'");
    }
    ChatMessage cm;
    cm.role = m["role"].get<std::string>();
    const json c = m.contains("content") ? m["content"] : json();
    if (c.is_string()) {
      cm.content = c.get<std::string>();
    } else if (c.is_array()) {  // content parts: only text ones
      for (const json& part : c) {
        if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
            !part.contains("text") || !part["text"].is_string()) {
          return Status::InvalidArgument(
              "message content parts must be {\"type\": \"text\", \"text\": ...}");
        }
        cm.content += part["text"].get<std::string>();
      }
    } else if (!c.is_null()) {
      return WrongType("content", "a string or an array of text parts", c);
    }
    out.push_back(std::move(cm));
  }
  return out;
}

std::string PrometheusLine(const char* name, const char* type, const char* help, uint64_t value) {
  return std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
         name + " " + std::to_string(value) + "\n";
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions o) : options(std::move(o)) {}

  ServerOptions options;
  httplib::Server http;
  std::thread http_thread;
  std::thread worker;
  int port = -1;
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  std::atomic<uint64_t> next_id{0};

  // Load state: set by the worker under mu, read by handlers after ready.
  std::atomic<bool> ready{false};
  bool load_finished = false;
  Status load_status;
  std::unique_ptr<runtime::ElasticRuntime> rt;
  std::unique_ptr<BudgetController> budget;
  std::string model_name;
  std::optional<ChatTemplate> chat_template;
  std::string template_problem;  // why chat is off, when it is

  // The queue: guarded by mu; the worker waits on cv.
  std::mutex mu;
  std::condition_variable cv;
  std::condition_variable load_cv;
  std::deque<std::shared_ptr<Job>> queue;
  std::shared_ptr<Job> current;
  bool stopping = false;
  std::atomic<bool> stop_flag{false};  // stopping, read without mu by the token callback
  bool shut_down = false;
  // Generation requests whose response is not written yet; Shutdown waits
  // for them (httplib stops writing a stream the moment it stops).
  int in_flight = 0;
  std::condition_variable idle_cv;

  // Metrics.
  std::atomic<uint64_t> tokens_generated{0};
  std::atomic<uint64_t> prompt_tokens{0};
  std::mutex metrics_mu;
  // The most recent transitions, oldest first (GET /v1/transitions).
  std::mutex transitions_mu;
  std::deque<runtime::TransitionRecord> recent_transitions;
  static constexpr size_t kRecentTransitions = 1000;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (endpoint, code)
  std::mutex log_mu;

  void Log(const std::string& line) {
    if (!options.log) return;
    std::lock_guard<std::mutex> l(log_mu);
    options.log(line);
  }

  void Wake() {
    std::lock_guard<std::mutex> l(mu);
    cv.notify_all();
  }

  void Finish(const RequestInfo& info, int code) {
    {
      std::lock_guard<std::mutex> l(metrics_mu);
      ++requests[{info.endpoint, code}];
    }
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - info.start).count();
    std::string line = info.method + " " + info.endpoint + " " + std::to_string(code);
    if (info.tokens >= 0) line += " " + std::to_string(info.tokens) + " tokens";
    char buf[32];
    std::snprintf(buf, sizeof buf, " %.1f ms", ms);
    Log(line + buf);
  }

  using Handler = std::function<Status(const httplib::Request&, httplib::Response&,
                                       const std::shared_ptr<RequestInfo>&)>;

  // Every route: errors become OpenAI-shaped JSON (an exception too: the
  // server never dies on a request), and each request is counted and logged.
  httplib::Server::Handler Route(const std::string& endpoint, const Handler& h) {
    return [this, endpoint, h](const httplib::Request& req, httplib::Response& res) {
      auto info = std::make_shared<RequestInfo>();
      info->method = req.method;
      info->endpoint = endpoint;
      info->start = Clock::now();
      Status s;
      try {
        s = h(req, res, info);
      } catch (const std::exception& e) {
        s = Status::IOError(std::string("internal error: ") + e.what());
      } catch (...) {
        s = Status::IOError("internal error");
      }
      if (!s.ok()) {
        info->deferred = false;
        ReplyError(res, HttpStatusOf(s), s.message());
      }
      if (!info->deferred) Finish(*info, res.status == -1 ? 200 : res.status);
    };
  }

  Status CheckReady() const {
    if (ready.load(std::memory_order_acquire)) return Status::OK();
    return Status::Busy("the model is still loading");
  }

  // ---- the worker ----

  // An exception on the worker (std::bad_alloc, say) would end the
  // process; it becomes the failure of the load or of the one request.
  static Status Guarded(const std::function<Status()>& fn) {
    try {
      return fn();
    } catch (const std::exception& e) {
      return Status::IOError(std::string("internal error: ") + e.what());
    } catch (...) {
      return Status::IOError("internal error");
    }
  }

  void WorkerMain(const RuntimeLoader& load) {
    Status s = Guarded([&] { return Load(load); });
    {
      std::lock_guard<std::mutex> l(mu);
      load_finished = true;
      load_status = s;
      if (s.ok()) ready.store(true, std::memory_order_release);
    }
    load_cv.notify_all();
    if (!s.ok()) return;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(
            l, [&] { return stopping || !queue.empty() || rt->residency()->has_pending_budget(); });
        if (!queue.empty()) {
          job = queue.front();
          queue.pop_front();
          current = job;
        } else if (stopping) {
          break;
        }
      }
      if (job == nullptr) {
        ApplyPendingBudget();
        continue;
      }
      Status failed = Guarded([&] {
        RunJob(job.get());
        return Status::OK();
      });
      if (!failed.ok()) {
        std::lock_guard<std::mutex> jl(job->mu);
        job->error = failed;
        job->done = true;
        job->cv.notify_all();
      }
      std::lock_guard<std::mutex> l(mu);
      current.reset();
    }
    budget->Stop();
  }

  Status Load(const RuntimeLoader& load) {
    Result<std::unique_ptr<runtime::ElasticRuntime>> r = load();
    if (!r.ok()) return r.status();
    rt = std::move(*r);
    const store::ModelManifest& m = rt->residency()->manifest();
    model_name = m.model;
    chat_template = options.chat_template;
    if (!chat_template) {
      Result<gguf::Metadata> md = gguf::ParseMetadata(m.metadata, m.n_kv, m.model);
      if (!md.ok()) return md.status();
      if (!md->Has("tokenizer.chat_template")) {
        template_problem = "the model has no chat template (tokenizer.chat_template)";
      } else if (Result<std::string> t = md->GetString("tokenizer.chat_template"); t.ok()) {
        chat_template = DetectChatTemplate(*t);
        if (!chat_template)
          template_problem = "the model's chat template is none of those fqpack has built in";
      } else {
        return t.status();
      }
    }
    Log(chat_template ? std::string("chat template: ") + ChatTemplateName(*chat_template)
                      : "chat template: none; " + template_problem);
    budget = std::make_unique<BudgetController>(options.env, rt->residency(), options.budget_source,
                                                options.governor, [this] { Wake(); });
    if (options.auto_reserve) {
      FQ_RETURN_IF_ERROR(budget->SetAuto(*options.auto_reserve));
      const BudgetState st = budget->State();
      if (st.governor.has_value()) {
        const runtime::GovernorState& g = *st.governor;
        Log("budget auto: " + g.source + " " + FormatBytes(g.available) + " available, reserve " +
            FormatBytes(g.reserve) + ", budget " + FormatBytes(g.effective) + "; " + g.trigger);
      }
    }
    return Status::OK();
  }

  void LogTransition(const runtime::TransitionRecord& t) {
    budget->TransitionDone();
    Log(runtime::DescribeTransition(t));
    std::lock_guard<std::mutex> l(transitions_mu);
    recent_transitions.push_back(t);
    if (recent_transitions.size() > kRecentTransitions) recent_transitions.pop_front();
  }

  Status HandleTransitions(httplib::Response& res) {
    JsonWriter w;
    w.BeginObject().Key("transitions").BeginArray();
    {
      std::lock_guard<std::mutex> l(transitions_mu);
      for (const runtime::TransitionRecord& t : recent_transitions) {
        runtime::WriteTransitionJson(&w, t);
      }
    }
    w.EndArray().EndObject();
    res.status = 200;
    res.set_content(w.str(), "application/json");
    return Status::OK();
  }

  void ApplyPendingBudget() {
    Result<std::optional<runtime::TransitionRecord>> r = rt->residency()->ApplyPendingBudget();
    if (!r.ok()) {
      Log("budget change failed: " + r.status().message());
    } else if (r->has_value() && (*r)->modules_swapped > 0) {
      LogTransition(**r);
    }
  }

  void RunJob(Job* job) {
    prompt_tokens.fetch_add(job->prompt.size());
    runtime::DecodeStream decode(&rt->tokenizer(), job->prompt.back());
    std::string text;
    size_t scanned = 0;  // stop strings were searched for before this byte
    bool hit_stop = false;
    int64_t n = 0;
    auto on_token = [&](int32_t token) -> Status {
      tokens_generated.fetch_add(1, std::memory_order_relaxed);
      ++n;
      text += decode.Next(token);
      size_t cut = std::string::npos;
      for (const std::string& s : job->stops) {
        const size_t from = scanned >= s.size() ? scanned - s.size() + 1 : 0;
        cut = std::min(cut, text.find(s, from));
      }
      scanned = text.size();
      if (cut != std::string::npos) {
        text.resize(cut);
        hit_stop = true;
      }
      const size_t ready_bytes =
          hit_stop
              ? text.size()
              : text.size() - std::max(PartialStopTail(text, job->stops), IncompleteUtf8Tail(text));
      {
        std::lock_guard<std::mutex> l(job->mu);
        if (text.size() >= job->text.size()) {
          job->text.append(text, job->text.size());
        } else {
          job->text.resize(text.size());
        }
        job->ready = ready_bytes;
        job->completion_tokens = n;
      }
      job->cv.notify_all();
      if (hit_stop) return Status::Aborted("stop string");
      if (job->cancel.load() || stop_flag.load()) return Status::Aborted("cancelled");
      return Status::OK();
    };
    Result<runtime::ElasticGenerateResult> r =
        rt->Generate(job->prompt, job->options, {}, on_token,
                     [this](const runtime::TransitionRecord& t) { LogTransition(t); });
    std::lock_guard<std::mutex> l(job->mu);
    if (r.ok()) {
      const runtime::StopReason why = r->generate.stop;
      job->finish_reason =
          why == runtime::StopReason::kLength || why == runtime::StopReason::kContextFull ? "length"
                                                                                          : "stop";
    } else if (hit_stop) {
      job->finish_reason = "stop";
    } else if (r.status().IsAborted()) {
      job->finish_reason = "cancelled";
    } else {
      job->error = r.status();
    }
    job->ready = job->text.size();
    job->completion_tokens = n;
    job->done = true;
    job->cv.notify_all();
  }

  // ---- generation endpoints ----

  Status Enqueue(const std::shared_ptr<Job>& job) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (stopping) return Status::Busy("the server is shutting down");
      queue.push_back(job);
      ++in_flight;
    }
    cv.notify_all();
    return Status::OK();
  }

  // The response of an enqueued job is written (or abandoned).
  void Answered() {
    {
      std::lock_guard<std::mutex> l(mu);
      --in_flight;
    }
    idle_cv.notify_all();
  }

  json Usage(int64_t prompt, int64_t completion) const {
    return {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion}};
  }

  Status HandleGenerate(const httplib::Request& req, httplib::Response& res,
                        const std::shared_ptr<RequestInfo>& info, bool chat) {
    FQ_RETURN_IF_ERROR(CheckReady());
    FQ_ASSIGN_OR_RETURN(json body, ParseBody(req));
    GenerationRequest g;
    FQ_RETURN_IF_ERROR(ParseGenerationFields(body, chat, &g));
    const runtime::Tokenizer& tok = rt->tokenizer();
    if (chat) {
      if (!chat_template) {
        return Status::InvalidArgument(
            template_problem + "; start the server with --chat-template NAME, one of " +
            ChatTemplateNames() + " (/v1/completions works without one)");
      }
      FQ_ASSIGN_OR_RETURN(std::vector<ChatMessage> messages, ParseMessages(body));
      g.prompt_text = ApplyChatTemplate(*chat_template, messages);
    } else {
      if (!body.contains("prompt")) return Status::InvalidArgument("'prompt' is missing");
      const json& p = body["prompt"];
      if (p.is_string()) {
        g.prompt_text = p.get<std::string>();
      } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
        g.prompt_text = p[0].get<std::string>();
      } else {
        return WrongType("prompt", "a string or an array of one string", p);
      }
    }
    auto job = std::make_shared<Job>();
    job->prompt = tok.Encode(g.prompt_text, true, true);
    if (job->prompt.empty()) {
      if (tok.bos() == runtime::Tokenizer::kNoToken) {
        return Status::InvalidArgument(
            "the prompt is empty and the vocabulary has no BOS to start from");
      }
      job->prompt.push_back(tok.bos());
    }
    const auto n_prompt = static_cast<int64_t>(job->prompt.size());
    if (n_prompt >= rt->n_ctx()) {
      return Status::InvalidArgument(
          "the prompt has " + std::to_string(n_prompt) + " tokens; the context holds " +
          std::to_string(rt->n_ctx()) +
          " and must leave room for at least one more (fqpack serve -c)");
    }
    runtime::GenerateOptions& o = job->options;
    o.n_predict = g.max_tokens;
    o.sampling = g.sampling;
    if (!g.ignore_eos) {
      o.bos = tok.bos();
      o.eos = tok.eos();
      o.eot = tok.eot();
    }
    o.context_shift = true;
    o.n_keep = std::min<int64_t>(job->prompt.front() == tok.bos() ? 1 : 0, n_prompt);
    job->stops = g.stops;
    bool enqueued = false;
    if (g.max_tokens == 0) {  // nothing to run
      job->done = true;
      job->finish_reason = "length";
    } else {
      FQ_RETURN_IF_ERROR(Enqueue(job));
      enqueued = true;
    }

    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(created) + "-" +
                           std::to_string(next_id.fetch_add(1));
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    json base = {{"id", id},
                 {"object", chat ? (g.stream ? "chat.completion.chunk" : "chat.completion")
                                 : "text_completion"},
                 {"created", now},
                 {"model", model_name}};
    if (!g.stream) {
      std::unique_lock<std::mutex> l(job->mu);
      job->cv.wait(l, [&] { return job->done; });
      if (enqueued) Answered();
      if (!job->error.ok()) return job->error;
      info->tokens = job->completion_tokens;
      json choice = {{"index", 0}, {"finish_reason", job->finish_reason}};
      if (chat) {
        choice["message"] = {{"role", "assistant"}, {"content", job->text}};
      } else {
        choice["text"] = job->text;
        choice["logprobs"] = nullptr;
      }
      json out = base;
      out["choices"] = json::array({choice});
      out["usage"] = Usage(n_prompt, job->completion_tokens);
      l.unlock();
      ReplyJson(res, 200, out);
      return Status::OK();
    }

    // Server-sent events: one chunk per piece of text, the finish reason in
    // the last, then [DONE].
    info->deferred = true;
    auto sent = std::make_shared<size_t>(0);
    auto first = std::make_shared<bool>(true);
    auto chunk = [base, chat](const std::string& text, const json& finish, bool role) {
      json c = base;
      json choice = {{"index", 0}, {"finish_reason", finish}};
      if (chat) {
        choice["delta"] = json::object();
        if (role) choice["delta"]["role"] = "assistant";
        if (!text.empty()) choice["delta"]["content"] = text;
      } else {
        choice["text"] = text;
        choice["logprobs"] = nullptr;
      }
      c["choices"] = json::array({choice});
      return "data: " + Dump(c) + "\n\n";
    };
    const bool include_usage = g.include_usage;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, sent, first, chunk, base, include_usage, n_prompt](
            size_t, httplib::DataSink& sink) -> bool {
          std::unique_lock<std::mutex> l(job->mu);
          job->cv.wait_for(l, std::chrono::milliseconds(200),
                           [&] { return job->done || job->ready > *sent; });
          std::string delta = job->text.substr(*sent, job->ready - *sent);
          *sent = job->ready;
          const bool done = job->done;
          const Status error = job->error;
          const std::string finish = job->finish_reason;
          const int64_t completion = job->completion_tokens;
          l.unlock();
          std::string out;
          if (!delta.empty() || *first) out += chunk(delta, nullptr, *first);
          *first = false;
          if (done) {
            if (!error.ok()) {
              json e = {{"error", {{"message", error.message()}, {"type", "server_error"}}}};
              out += "data: " + Dump(e) + "\n\n";
            } else {
              out += chunk("", finish, false);
              if (include_usage) {
                json u = base;
                u["choices"] = json::array();
                u["usage"] = Usage(n_prompt, completion);
                out += "data: " + Dump(u) + "\n\n";
              }
            }
            out += "data: [DONE]\n\n";
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            job->cancel.store(true);  // the client went away
            return false;
          }
          if (done) sink.done();
          return true;
        },
        [this, job, info, enqueued](bool success) {
          if (!success) job->cancel.store(true);
          if (enqueued) Answered();
          {
            std::lock_guard<std::mutex> l(job->mu);
            info->tokens = job->completion_tokens;
          }
          Finish(*info, 200);
        });
    return Status::OK();
  }

  // ---- budget ----

  json LevelJson(const std::string& label, int step, uint64_t footprint) const {
    return {{"label", label}, {"step", step}, {"footprint", footprint}};
  }

  Status HandleGetBudget(httplib::Response& res) {
    FQ_RETURN_IF_ERROR(CheckReady());
    const BudgetState s = budget->State();
    json levels = json::array();
    const uint64_t overhead = rt->residency()->overhead();
    for (const runtime::ResidencyLevel& lv : rt->residency()->levels()) {
      json j = LevelJson(lv.label, lv.step, lv.footprint);
      j["budget_needed"] = lv.footprint + overhead;
      levels.push_back(j);
    }
    json out = {{"source", s.source},
                {"budget", s.budget},
                {"eqm", LevelJson(s.stats.label, s.stats.step, s.stats.footprint)},
                {"resident_bytes", s.stats.resident_bytes},
                {"overhead_bytes", s.stats.overhead_bytes},
                {"minimum_budget", s.minimum_budget},
                {"pending", s.pending},
                {"transitions", s.stats.transitions},
                {"levels", levels}};
    if (s.governor) {
      const runtime::GovernorState& g = *s.governor;
      out["auto"] = {{"source", g.source},
                     {"available", g.available},
                     {"effective", g.effective},
                     {"reserve", g.reserve},
                     {"pressure", runtime::PressureName(g.pressure)},
                     {"trigger", g.trigger},
                     {"requested", g.requested},
                     {"requests", g.requests},
                     {"reason", g.reason},
                     {"below_minimum", g.below_minimum},
                     {"error", g.error}};
    }
    ReplyJson(res, 200, out);
    return Status::OK();
  }

  Status HandlePostBudget(const httplib::Request& req, httplib::Response& res) {
    FQ_RETURN_IF_ERROR(CheckReady());
    FQ_ASSIGN_OR_RETURN(json body, ParseBody(req));
    if (body.contains("auto")) {
      if (!body["auto"].is_boolean()) return WrongType("auto", "a boolean", body["auto"]);
      if (body["auto"].get<bool>()) {
        uint64_t reserve = 0;
        if (body.contains("reserve")) {
          const json& r = body["reserve"];
          if (r.is_number_unsigned()) {
            reserve = r.get<uint64_t>();
          } else if (r.is_string()) {
            Result<uint64_t> b = ParseBytes(r.get<std::string>());
            if (!b.ok()) return Status::InvalidArgument("'reserve': " + b.status().message());
            reserve = *b;
          } else {
            return WrongType("reserve", "a size in bytes or a string with units", r);
          }
        }
        FQ_RETURN_IF_ERROR(budget->SetAuto(reserve));
        return HandleGetBudget(res);
      }
    }
    if (!body.contains("bytes")) {
      return Status::InvalidArgument(
          "expected {\"bytes\": N} (a number, or a string with units such as \"600KB\") or "
          "{\"auto\": true}");
    }
    const json& v = body["bytes"];
    uint64_t bytes = 0;
    if (v.is_number_unsigned()) {
      bytes = v.get<uint64_t>();
    } else if (v.is_string()) {
      Result<uint64_t> b = ParseBytes(v.get<std::string>());
      if (!b.ok()) return Status::InvalidArgument("'bytes': " + b.status().message());
      bytes = *b;
    } else {
      return WrongType("bytes", "a non-negative integer or a string with units", v);
    }
    FQ_ASSIGN_OR_RETURN(BudgetChoice c, budget->SetFixed(bytes));
    // An idle worker applies it at once, a busy one before its next token;
    // the stats show the budget once its transition is complete. Answer
    // then, or after a while with "applied": false.
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    auto applied = [&] {
      return !rt->residency()->has_pending_budget() && rt->residency()->stats().budget == bytes;
    };
    while (!applied() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const BudgetState s = budget->State();
    ReplyJson(res, 200,
              {{"source", s.source},
               {"budget", c.budget},
               {"eqm", LevelJson(c.label, c.step, c.footprint)},
               {"applied", applied()},
               {"minimum_budget", s.minimum_budget}});
    return Status::OK();
  }

  // ---- health, models, metrics ----

  Status HandleHealth(httplib::Response& res) {
    std::lock_guard<std::mutex> l(mu);
    if (ready.load()) {
      ReplyJson(res, 200, {{"status", "ok"}});
    } else if (load_finished) {
      ReplyJson(res, 503, {{"status", "error"}, {"message", load_status.message()}});
    } else {
      ReplyJson(res, 503, {{"status", "loading"}});
    }
    return Status::OK();
  }

  Status HandleModels(httplib::Response& res) {
    FQ_RETURN_IF_ERROR(CheckReady());
    ReplyJson(res, 200,
              {{"object", "list"},
               {"data", json::array({{{"id", model_name},
                                      {"object", "model"},
                                      {"created", created},
                                      {"owned_by", "fqpack"}}})}});
    return Status::OK();
  }

  Status HandleMetrics(httplib::Response& res) {
    std::string out;
    if (ready.load(std::memory_order_acquire)) {
      const BudgetState s = budget->State();
      out += PrometheusLine("fqpack_budget_bytes", "gauge",
                            "Memory budget in force (weights, KV cache and scratch); 0: none set.",
                            s.budget);
      out += PrometheusLine("fqpack_minimum_budget_bytes", "gauge",
                            "Smallest budget any level of the pack fits in.", s.minimum_budget);
      out +=
          "# HELP fqpack_eqm_step EQM step running now; -1 for a whole QM.\n"
          "# TYPE fqpack_eqm_step gauge\nfqpack_eqm_step " +
          std::to_string(s.stats.step) + "\n";
      out += PrometheusLine("fqpack_weights_resident_bytes", "gauge",
                            "Bytes of weight modules held in memory.", s.stats.resident_bytes);
      out += PrometheusLine("fqpack_footprint_bytes", "gauge",
                            "Weight bytes of the level running now.", s.stats.footprint);
      out += PrometheusLine("fqpack_transitions_total", "counter",
                            "Transitions between levels that changed at least one module.",
                            static_cast<uint64_t>(s.stats.transitions));
      out += PrometheusLine("fqpack_bytes_swapped_total", "counter",
                            "Bytes of modules made resident, the initial load included.",
                            s.stats.bytes_in);
      out += PrometheusLine("fqpack_bytes_read_total", "counter",
                            "Bytes read from the pack by transitions.", s.stats.bytes_read);
      out +=
          "# HELP fqpack_budget_auto 1 while the budget follows the system's memory.\n"
          "# TYPE fqpack_budget_auto gauge\nfqpack_budget_auto " +
          std::string(s.governor ? "1" : "0") + "\n";
      if (s.governor) {
        const runtime::GovernorState& g = *s.governor;
        out += PrometheusLine("fqpack_memory_available_bytes", "gauge",
                              "Memory the tightest source (meminfo, cgroup) says is available.",
                              g.available);
        out += PrometheusLine("fqpack_memory_effective_bytes", "gauge",
                              "Available memory plus this process's share, less the reserve.",
                              g.effective);
        out += PrometheusLine("fqpack_memory_reserve_bytes", "gauge",
                              "Memory auto mode leaves to others.", g.reserve);
        out += PrometheusLine("fqpack_memory_pressure", "gauge",
                              "Memory pressure: 0 normal, 1 moderate, 2 critical.",
                              static_cast<uint64_t>(g.pressure));
      }
    }
    out += PrometheusLine("fqpack_tokens_generated_total", "counter", "Tokens generated.",
                          tokens_generated.load());
    out += PrometheusLine("fqpack_prompt_tokens_total", "counter", "Prompt tokens evaluated.",
                          prompt_tokens.load());
    size_t depth = 0;
    {
      std::lock_guard<std::mutex> l(mu);
      depth = queue.size();
    }
    out +=
        PrometheusLine("fqpack_queue_depth", "gauge",
                       "Generation requests waiting for the worker (not the running one).", depth);
    out +=
        "# HELP fqpack_requests_total HTTP requests answered, by endpoint and status code.\n"
        "# TYPE fqpack_requests_total counter\n";
    {
      std::lock_guard<std::mutex> l(metrics_mu);
      for (const auto& [key, n] : requests) {
        out += "fqpack_requests_total{endpoint=\"" + key.first + "\",code=\"" +
               std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
      }
    }
    res.status = 200;
    res.set_content(out, "text/plain; version=0.0.4");
    return Status::OK();
  }

  void SetUpRoutes() {
    http.Get("/health",
             Route("/health", [this](auto&, auto& res, auto&) { return HandleHealth(res); }));
    http.Get("/v1/models",
             Route("/v1/models", [this](auto&, auto& res, auto&) { return HandleModels(res); }));
    http.Get("/metrics",
             Route("/metrics", [this](auto&, auto& res, auto&) { return HandleMetrics(res); }));
    http.Post("/v1/completions", Route("/v1/completions", [this](auto& req, auto& res, auto& info) {
                return HandleGenerate(req, res, info, false);
              }));
    http.Post("/v1/chat/completions",
              Route("/v1/chat/completions", [this](auto& req, auto& res, auto& info) {
                return HandleGenerate(req, res, info, true);
              }));
    http.Get("/v1/budget",
             Route("/v1/budget", [this](auto&, auto& res, auto&) { return HandleGetBudget(res); }));
    http.Get("/v1/transitions", Route("/v1/transitions", [this](auto&, auto& res, auto&) {
               return HandleTransitions(res);
             }));
    http.Post("/v1/budget", Route("/v1/budget", [this](auto& req, auto& res, auto&) {
                return HandlePostBudget(req, res);
              }));
    // Unknown routes (and httplib's own errors) in OpenAI's error shape.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      ReplyError(res, res.status,
                 req.method + " " + req.path + ": " +
                     (res.status == 404 ? std::string("no such endpoint")
                                        : "HTTP error " + std::to_string(res.status)));
      RequestInfo info{req.method, "other", Clock::now()};
      Finish(info, res.status);
    });
    http.set_payload_max_length(size_t{16} << 20);
    // Shutdown waits for idle keep-alive connections at most this long.
    http.set_keep_alive_timeout(1);
    http.new_task_queue = [] { return new httplib::ThreadPool(16); };
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() { Shutdown(); }

Status Server::Start(RuntimeLoader load) {
  Impl& s = *impl_;
  s.SetUpRoutes();
  const std::string where = s.options.host + ":" + std::to_string(s.options.port);
  if (s.options.port == 0) {
    s.port = s.http.bind_to_any_port(s.options.host);
    if (s.port < 0)
      return Status::IOError("cannot listen on " + where + ": " + std::strerror(errno));
  } else {
    if (!s.http.bind_to_port(s.options.host, s.options.port))
      return Status::IOError("cannot listen on " + where + ": " + std::strerror(errno));
    s.port = s.options.port;
  }
  s.http_thread = std::thread([&s] { s.http.listen_after_bind(); });
  s.worker = std::thread([&s, load = std::move(load)] { s.WorkerMain(load); });
  return Status::OK();
}

int Server::port() const { return impl_->port; }

bool Server::ready() const { return impl_->ready.load(); }

Status Server::WaitUntilLoaded() {
  std::unique_lock<std::mutex> l(impl_->mu);
  impl_->load_cv.wait(l, [&] { return impl_->load_finished; });
  return impl_->load_status;
}

void Server::Shutdown() {
  Impl& s = *impl_;
  if (s.shut_down) return;
  s.shut_down = true;
  {
    std::lock_guard<std::mutex> l(s.mu);
    s.stopping = true;
    s.stop_flag.store(true);
    for (const std::shared_ptr<Job>& job : s.queue) {
      std::lock_guard<std::mutex> jl(job->mu);
      job->done = true;
      job->finish_reason = "cancelled";
      job->cv.notify_all();
    }
    s.queue.clear();
    if (s.current) s.current->cancel.store(true);
  }
  s.cv.notify_all();
  // Cancelled generations end at their next token; their responses are
  // written before the HTTP server stops (a stream then ends with its
  // finish reason and [DONE]).
  {
    std::unique_lock<std::mutex> l(s.mu);
    s.idle_cv.wait_for(l, std::chrono::seconds(10), [&] { return s.in_flight == 0; });
  }
  if (s.http_thread.joinable()) {
    s.http.stop();
    s.http_thread.join();
  }
  if (s.worker.joinable()) s.worker.join();
  s.budget.reset();
  s.rt.reset();
}

}  // namespace fqpack::serve
