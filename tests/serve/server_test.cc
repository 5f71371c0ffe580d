// fqpack serve's HTTP server against real clients on 127.0.0.1: answers
// equal what the runtime generates directly, streams, queues, cancels,
// budgets, metrics and errors.
#include "serve/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <csignal>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/runtime/elastic_test_util.h"

namespace fqpack::serve {
namespace {

using json = nlohmann::json;
using testing::ElasticLadder;

class ServerTest : public ::testing::Test {
 protected:
  // Twice the tiny model's training context, for the chat templates' text.
  static constexpr int64_t kContext = 128;

  static void SetUpTestSuite() {
    std::signal(SIGPIPE, SIG_IGN);
    ladder_ = new ElasticLadder();
    pack_path_ = new std::string(ladder_->Pack(pack::Codec::kRaw));
  }
  static void TearDownTestSuite() {
    delete ladder_;
    delete pack_path_;
  }

  void SetUp() override { StartServer({}); }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  void StartServer(ServerOptions o) {
    if (server_) server_->Shutdown();
    o.port = 0;
    o.log = [this](std::string_view line) {
      std::lock_guard<std::mutex> l(log_mu_);
      log_ += std::string(line) + "\n";
    };
    server_ = std::make_unique<Server>(o);
    ASSERT_TRUE(server_->Start([this] { return Open(&pool_); }).ok());
    Status s = server_->WaitUntilLoaded();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // A runtime of the pack on `pool` (one pool per runtime: the server's
  // worker and a test's reference run at the same time).
  Result<std::unique_ptr<runtime::ElasticRuntime>> Open(ThreadPool* pool) {
    runtime::ElasticOptions o;
    o.n_ctx = kContext;
    FQ_ASSIGN_OR_RETURN(auto rt,
                        runtime::ElasticRuntime::Open(Env::Default(), *pack_path_, o, pool));
    FQ_RETURN_IF_ERROR(rt->Start({}));
    return rt;
  }

  // What the runtime generates for `text` on its own, greedily.
  struct Reference {
    std::string text;
    int64_t prompt_tokens = 0;
    int64_t generated = 0;
  };
  Reference Direct(const std::string& text, int64_t max_tokens) {
    ThreadPool pool(1);
    auto rt = Open(&pool);
    EXPECT_TRUE(rt.ok());
    const runtime::Tokenizer& tok = (*rt)->tokenizer();
    std::vector<int32_t> prompt = tok.Encode(text, true, true);
    runtime::GenerateOptions o;
    o.n_predict = max_tokens;
    o.sampling.temperature = 0;
    o.bos = tok.bos();
    o.eos = tok.eos();
    o.eot = tok.eot();
    runtime::DecodeStream ds(&tok, prompt.back());
    Reference ref;
    auto r = (*rt)->Generate(prompt, o, {}, [&](int32_t t) {
      ref.text += ds.Next(t);
      return Status::OK();
    });
    if (!r.ok()) {
      ADD_FAILURE() << r.status().ToString();
      return ref;
    }
    ref.prompt_tokens = static_cast<int64_t>(prompt.size());
    ref.generated = r->generate.generated;
    return ref;
  }

  httplib::Client Client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(30, 0);
    return c;
  }

  httplib::Result Post(const std::string& path, const std::string& body) {
    return Client().Post(path.c_str(), body, "application/json");
  }

  json PostJson(const std::string& path, const json& body, int want_status = 200) {
    auto r = Post(path, body.dump());
    EXPECT_TRUE(r) << path;
    if (!r) return json();
    EXPECT_EQ(r->status, want_status) << path << ": " << r->body;
    return json::parse(r->body);
  }

  json GetJson(const std::string& path) {
    auto r = Client().Get(path.c_str());
    EXPECT_TRUE(r && r->status == 200) << path;
    return r ? json::parse(r->body) : json();
  }

  std::map<std::string, double> Metrics() {
    auto r = Client().Get("/metrics");
    EXPECT_TRUE(r && r->status == 200);
    std::map<std::string, double> m;
    std::istringstream in(r ? r->body : "");
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      const size_t sp = line.rfind(' ');
      m[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
    }
    return m;
  }

  // Sends a streaming request; `on_data` sees the bytes so far and returns
  // false to hang up.
  std::string Stream(const std::string& path, const json& body,
                     const std::function<bool(const std::string&)>& on_data = {}) {
    httplib::Client c = Client();
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    std::string got;
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      got.append(data, n);
      return on_data ? on_data(got) : true;
    };
    httplib::Response res;
    httplib::Error err;
    c.send(req, res, err);
    return got;
  }

  // The text of a stream's chunks, its last finish reason, and whether it
  // ended with [DONE].
  struct Sse {
    std::string text;
    std::string finish;
    bool done = false;
    int chunks = 0;
  };
  static Sse ParseSse(const std::string& body, bool chat) {
    Sse s;
    size_t at = 0;
    while (at < body.size()) {
      const size_t end = body.find("\n\n", at);
      if (end == std::string::npos) break;
      const std::string ev = body.substr(at, end - at);
      at = end + 2;
      EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
      const std::string data = ev.substr(6);
      if (data == "[DONE]") {
        s.done = true;
        continue;
      }
      EXPECT_FALSE(s.done) << "a chunk after [DONE]";
      json j = json::parse(data);
      ++s.chunks;
      const json& c = j["choices"][0];
      if (chat) {
        EXPECT_EQ(j["object"], "chat.completion.chunk");
        if (c["delta"].contains("content")) s.text += c["delta"]["content"].get<std::string>();
      } else {
        EXPECT_EQ(j["object"], "text_completion");
        s.text += c["text"].get<std::string>();
      }
      if (!c["finish_reason"].is_null()) s.finish = c["finish_reason"];
    }
    return s;
  }

  static ElasticLadder* ladder_;
  static std::string* pack_path_;
  ThreadPool pool_{2};
  std::mutex log_mu_;  // the server logs from its threads
  std::string log_;
  std::unique_ptr<Server> server_;
};

ElasticLadder* ServerTest::ladder_ = nullptr;
std::string* ServerTest::pack_path_ = nullptr;

const char kPrompt[] = "t5t9t12";

TEST_F(ServerTest, HealthAndModels) {
  EXPECT_EQ(GetJson("/health"), json({{"status", "ok"}}));
  json m = GetJson("/v1/models");
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "tiny");
  EXPECT_EQ(m["data"][0]["object"], "model");
}

TEST_F(ServerTest, HealthIs503WhileTheModelLoads) {
  server_->Shutdown();
  std::atomic<bool> go{false};
  ServerOptions o;
  o.port = 0;
  server_ = std::make_unique<Server>(o);
  ASSERT_TRUE(server_
                  ->Start([&]() {
                    while (!go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                    return Open(&pool_);
                  })
                  .ok());
  auto h = Client().Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  EXPECT_EQ(json::parse(h->body)["status"], "loading");
  auto c = Post("/v1/completions", "{\"prompt\": \"t5\"}");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 503);
  EXPECT_EQ(json::parse(c->body)["error"]["message"], "the model is still loading");
  go.store(true);
  ASSERT_TRUE(server_->WaitUntilLoaded().ok());
  EXPECT_EQ(GetJson("/health")["status"], "ok");
}

TEST_F(ServerTest, GreedyCompletionEqualsTheRuntimesOwnGeneration) {
  const Reference ref = Direct(kPrompt, 20);
  ASSERT_FALSE(ref.text.empty());
  json r = PostJson("/v1/completions",
                    {{"prompt", kPrompt}, {"max_tokens", 20}, {"temperature", 0}, {"seed", 7}});
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["model"], "tiny");
  EXPECT_EQ(r["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_TRUE(r["created"].is_number_integer());
  EXPECT_EQ(r["choices"][0]["text"], ref.text);
  EXPECT_EQ(r["choices"][0]["finish_reason"], ref.generated == 20 ? "length" : "stop");
  EXPECT_EQ(r["usage"]["prompt_tokens"], ref.prompt_tokens);
  EXPECT_EQ(r["usage"]["completion_tokens"], ref.generated);
  EXPECT_EQ(r["usage"]["total_tokens"], ref.prompt_tokens + ref.generated);
  // A prompt given as an array of one string is the same prompt.
  json a =
      PostJson("/v1/completions", {{"prompt", {kPrompt}}, {"max_tokens", 20}, {"temperature", 0}});
  EXPECT_EQ(a["choices"][0]["text"], ref.text);
}

TEST_F(ServerTest, StreamedChunksAddUpToTheSameText) {
  const Reference ref = Direct(kPrompt, 24);
  const std::string body =
      Stream("/v1/completions",
             {{"prompt", kPrompt}, {"max_tokens", 24}, {"temperature", 0}, {"stream", true}});
  Sse s = ParseSse(body, false);
  EXPECT_EQ(s.text, ref.text);
  EXPECT_TRUE(s.done) << body;
  EXPECT_EQ(s.finish, ref.generated == 24 ? "length" : "stop");
  EXPECT_EQ(body.substr(body.size() - 14), "data: [DONE]\n\n");
}

TEST_F(ServerTest, StopStringCutsTheTextBeforeIt) {
  const Reference ref = Direct(kPrompt, 30);
  // A stop string from the middle of the reference text.
  ASSERT_GT(ref.text.size(), 12u);
  const std::string stop = ref.text.substr(6, 4);
  const std::string want = ref.text.substr(0, ref.text.find(stop));
  json r = PostJson("/v1/completions", {{"prompt", kPrompt},
                                        {"max_tokens", 30},
                                        {"temperature", 0},
                                        {"stop", {"never-there", stop}}});
  EXPECT_EQ(r["choices"][0]["text"], want);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  Sse s = ParseSse(Stream("/v1/completions", {{"prompt", kPrompt},
                                              {"max_tokens", 30},
                                              {"temperature", 0},
                                              {"stop", stop},
                                              {"stream", true}}),
                   false);
  EXPECT_EQ(s.text, want);
  EXPECT_EQ(s.finish, "stop");
}

TEST_F(ServerTest, ChatRendersTheTemplateAndAnswersAsTheRuntimeDoes) {
  StartServer({.chat_template = ChatTemplate::kChatml});
  const std::vector<ChatMessage> messages = {{"system", "t7"}, {"user", "t5t9"}};
  const Reference ref = Direct(ApplyChatTemplate(ChatTemplate::kChatml, messages), 16);
  json body = {{"messages",
                {{{"role", "system"}, {"content", "t7"}}, {{"role", "user"}, {"content", "t5t9"}}}},
               {"max_tokens", 16},
               {"temperature", 0}};
  json r = PostJson("/v1/chat/completions", body);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["message"]["content"], ref.text);
  EXPECT_EQ(r["usage"]["prompt_tokens"], ref.prompt_tokens);
  EXPECT_EQ(r["usage"]["completion_tokens"], ref.generated);
  body["stream"] = true;
  Sse s = ParseSse(Stream("/v1/chat/completions", body), true);
  EXPECT_EQ(s.text, ref.text);
  EXPECT_TRUE(s.done);
}

TEST_F(ServerTest, ChatWithoutATemplateIs400NamingTheTemplates) {
  json r = PostJson("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "t5"}}}}},
                    400);
  const std::string msg = r["error"]["message"];
  EXPECT_NE(msg.find("no chat template"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--chat-template"), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama2, llama3, chatml, gemma, phi3"), std::string::npos) << msg;
  EXPECT_EQ(r["error"]["type"], "invalid_request_error");
}

TEST_F(ServerTest, ConcurrentClientsAllGetTheFullAnswerInTurn) {
  const Reference ref = Direct(kPrompt, 40);
  std::vector<std::string> texts(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 2; ++k) {
        const json body = {{"prompt", kPrompt}, {"max_tokens", 40}, {"temperature", 0}};
        if (k == 0) {
          auto r = Post("/v1/completions", body.dump());
          if (r && r->status == 200) texts[2 * i] = json::parse(r->body)["choices"][0]["text"];
        } else {
          json b = body;
          b["stream"] = true;
          texts[2 * i + 1] = ParseSse(Stream("/v1/completions", b), false).text;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& t : texts) EXPECT_EQ(t, ref.text);
}

TEST_F(ServerTest, AClientThatHangsUpCancelsItsGenerationAndTheNextIsServed) {
  const double before = Metrics()["fqpack_tokens_generated_total"];
  // Far more tokens than a context holds, past any end of text: generation
  // goes on with context shifts until the client is gone.
  const int64_t kMax = 200000;
  const std::string got =
      Stream("/v1/completions",
             {{"prompt", kPrompt},
              {"max_tokens", kMax},
              {"ignore_eos", true},
              {"temperature", 0},
              {"stream", true}},
             [](const std::string& so_far) { return so_far.find("\n\n") == std::string::npos; });
  EXPECT_NE(got.find("data: "), std::string::npos);
  const Reference ref = Direct(kPrompt, 10);
  json r =
      PostJson("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 10}, {"temperature", 0}});
  EXPECT_EQ(r["choices"][0]["text"], ref.text);
  const double generated = Metrics()["fqpack_tokens_generated_total"] - before;
  EXPECT_LT(generated, kMax / 10.0);
  EXPECT_GE(generated, 10);
}

TEST_F(ServerTest, BadRequestsAre400WithAMessage) {
  struct Case {
    std::string path;
    std::string body;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {"/v1/completions", "{\"prompt\": \"t5\",", "not valid JSON"},
      {"/v1/completions", "[1, 2]", "must be a JSON object"},
      {"/v1/completions", "{\"max_tokens\": 3}", "'prompt' is missing"},
      {"/v1/completions", "{\"prompt\": 5}",
       "'prompt' must be a string or an array of one string, not an integer"},
      {"/v1/completions", "{\"prompt\": \"t5\", \"max_tokens\": \"ten\"}",
       "'max_tokens' must be an integer, not a string"},
      {"/v1/completions", "{\"prompt\": \"t5\", \"temperature\": \"hot\"}",
       "'temperature' must be a number"},
      {"/v1/completions", "{\"prompt\": \"t5\", \"stop\": 3}",
       "'stop' must be a string or an array of strings"},
      {"/v1/completions", "{\"prompt\": \"t5\", \"stream\": \"yes\"}",
       "'stream' must be a boolean"},
      {"/v1/completions", "{\"prompt\": \"t5\", \"top_p\": 0}", "top-p must be in (0, 1]"},
      {"/v1/budget", "{\"bytes\": true}", "'bytes' must be a non-negative integer"},
      {"/v1/budget", "{\"bytes\": \"lots\"}", "'bytes': "},
      {"/v1/budget", "{}", "expected {\"bytes\": N}"},
  };
  for (const Case& c : cases) {
    auto r = Post(c.path, c.body);
    ASSERT_TRUE(r) << c.body;
    EXPECT_EQ(r->status, 400) << c.body << ": " << r->body;
    json j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.contains("error")) << r->body;
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_NE(j["error"]["message"].get<std::string>().find(c.message_part), std::string::npos)
        << c.body << ": " << j["error"]["message"];
  }
  // The server is still there.
  EXPECT_EQ(GetJson("/health")["status"], "ok");
}

TEST_F(ServerTest, APromptLongerThanTheContextIs400) {
  std::string prompt;
  for (int i = 0; i < 130; ++i) prompt += "t5";  // 130 tokens and more; the context holds 128
  json r = PostJson("/v1/completions", {{"prompt", prompt}, {"max_tokens", 4}}, 400);
  const std::string msg = r["error"]["message"];
  EXPECT_NE(msg.find("the context holds 128"), std::string::npos) << msg;
}

TEST_F(ServerTest, BudgetDownAndUpMovesTheEqm) {
  json b = GetJson("/v1/budget");
  EXPECT_EQ(b["source"], "none");
  const json levels = b["levels"];
  ASSERT_GE(levels.size(), 3u);
  EXPECT_EQ(b["eqm"]["step"], levels[0]["step"]);
  const uint64_t minimum = b["minimum_budget"];
  const double transitions = Metrics()["fqpack_transitions_total"];

  // The smallest level's need, as a string with units.
  const json& last = levels[levels.size() - 1];
  json down = PostJson("/v1/budget",
                       {{"bytes", std::to_string(last["budget_needed"].get<uint64_t>()) + "B"}});
  EXPECT_EQ(down["source"], "fixed");
  EXPECT_EQ(down["eqm"]["label"], last["label"]);
  EXPECT_EQ(down["applied"], true);
  json now = GetJson("/v1/budget");
  EXPECT_EQ(now["eqm"]["label"], last["label"]);
  EXPECT_EQ(now["eqm"]["footprint"], last["footprint"]);
  EXPECT_EQ(now["resident_bytes"], last["footprint"]);
  EXPECT_EQ(now["budget"], last["budget_needed"]);
  auto m = Metrics();
  EXPECT_EQ(m["fqpack_transitions_total"], transitions + 1);
  EXPECT_EQ(m["fqpack_eqm_step"], last["step"].get<double>());
  EXPECT_EQ(m["fqpack_budget_bytes"], last["budget_needed"].get<double>());

  json up = PostJson("/v1/budget", {{"bytes", levels[0]["budget_needed"]}});
  EXPECT_EQ(up["eqm"]["label"], levels[0]["label"]);
  EXPECT_EQ(GetJson("/v1/budget")["eqm"]["label"], levels[0]["label"]);
  EXPECT_EQ(Metrics()["fqpack_transitions_total"], transitions + 2);
  // The last two transitions, with when they finished.
  const json tr = GetJson("/v1/transitions")["transitions"];
  ASSERT_GE(tr.size(), 2u);
  const json& t_down = tr[tr.size() - 2];
  const json& t_up = tr[tr.size() - 1];
  EXPECT_EQ(t_down["to"], last["label"]);
  EXPECT_EQ(t_up["from"], last["label"]);
  EXPECT_EQ(t_up["to"], levels[0]["label"]);
  EXPECT_GT(t_down["modules_swapped"].get<int>(), 0);
  EXPECT_GT(t_down["finished_at"].get<double>(), 1.7e9);  // seconds since 1970
  EXPECT_GE(t_up["finished_at"].get<double>(), t_down["finished_at"].get<double>());
  {
    std::lock_guard<std::mutex> l(log_mu_);
    EXPECT_NE(log_.find("->"), std::string::npos) << "transitions are logged: " << log_;
  }

  // Generation still matches the largest level's.
  const Reference ref = Direct(kPrompt, 12);
  EXPECT_EQ(
      PostJson("/v1/completions",
               {{"prompt", kPrompt}, {"max_tokens", 12}, {"temperature", 0}})["choices"][0]["text"],
      ref.text);

  json low = PostJson("/v1/budget", {{"bytes", minimum - 1}}, 400);
  EXPECT_NE(
      low["error"]["message"].get<std::string>().find("needs at least " + std::to_string(minimum)),
      std::string::npos)
      << low;
  EXPECT_EQ(GetJson("/v1/budget")["eqm"]["label"], levels[0]["label"]);
}

TEST_F(ServerTest, AutoBudgetFollowsTheSystemsMemoryAndFixedEndsIt) {
  // A fake /proc whose MemAvailable leaves just the smallest level's need
  // after a 1 MiB reserve (the pack's pages are mapped, so nothing of this
  // process is added back but its KV cache and scratch).
  testing::TempDir tree;
  ASSERT_TRUE(Env::Default()->CreateDir(tree.Join("proc")).ok());
  ServerOptions o;
  o.governor.root = tree.path();
  o.governor.poll_interval = 0.01;
  o.governor.psi_trigger = false;
  StartServer(o);
  const json levels = GetJson("/v1/budget")["levels"];
  const json& last = levels[levels.size() - 1];
  const uint64_t overhead = GetJson("/v1/budget")["overhead_bytes"];
  const uint64_t kMiB = 1 << 20;
  const uint64_t available = last["budget_needed"].get<uint64_t>() + 10 + kMiB - overhead;
  const std::string meminfo =
      "MemTotal: 8388608 kB\nMemAvailable: " + std::to_string(available / 1024 + 1) + " kB\n";
  ASSERT_TRUE(
      PublishFile(Env::Default(), tree.Join("proc/meminfo"),
                  ByteSpan(reinterpret_cast<const uint8_t*>(meminfo.data()), meminfo.size()))
          .ok());

  json r = PostJson("/v1/budget", {{"auto", true}, {"reserve", "1MiB"}});
  EXPECT_EQ(r["source"], "auto");
  EXPECT_EQ(r["auto"]["source"], "meminfo");
  EXPECT_EQ(r["auto"]["reserve"], kMiB);
  EXPECT_EQ(r["auto"]["available"], (available / 1024 + 1) * 1024);
  // The governor asks for less at once; the idle worker applies it.
  json b;
  for (int i = 0; i < 500; ++i) {
    b = GetJson("/v1/budget");
    if (b["eqm"]["label"] == last["label"]) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(b["eqm"]["label"], last["label"]) << b.dump();
  EXPECT_EQ(b["auto"]["reason"], "down") << b.dump();
  auto m = Metrics();
  EXPECT_EQ(m["fqpack_budget_auto"], 1);
  EXPECT_EQ(m["fqpack_memory_reserve_bytes"], kMiB);
  EXPECT_GT(m["fqpack_memory_available_bytes"], 0);

  // A fixed budget ends auto mode.
  json f = PostJson("/v1/budget", {{"bytes", levels[0]["budget_needed"]}});
  EXPECT_EQ(f["source"], "fixed");
  b = GetJson("/v1/budget");
  EXPECT_EQ(b["source"], "fixed");
  EXPECT_FALSE(b.contains("auto"));
  EXPECT_EQ(b["eqm"]["label"], levels[0]["label"]);
  EXPECT_EQ(Metrics()["fqpack_budget_auto"], 0);

  // A governor that cannot read its source: 500 naming the file, mode unchanged.
  ASSERT_TRUE(Env::Default()->RemoveFile(tree.Join("proc/meminfo")).ok());
  json bad = PostJson("/v1/budget", {{"auto", true}}, 500);
  EXPECT_NE(bad["error"]["message"].get<std::string>().find("meminfo"), std::string::npos) << bad;
  EXPECT_EQ(GetJson("/v1/budget")["source"], "fixed");
}

TEST_F(ServerTest, MetricsAreValidPrometheusText) {
  PostJson("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 5}, {"temperature", 0}});
  auto r = Client().Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/plain", 0), 0u);
  const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9]+(\.[0-9]+)?$)");
  const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$)");
  const std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$)");
  std::map<std::string, std::string> types;
  std::map<std::string, int> samples;
  std::istringstream in(r->body);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, help)) continue;
    if (std::regex_match(line, m, type)) {
      types[m[1]] = m[2];
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, m, sample)) << "not Prometheus text: " << line;
    EXPECT_TRUE(types.count(m[1])) << m[1] << " has no # TYPE line before it";
    ++samples[m[1]];
  }
  for (const char* name :
       {"fqpack_budget_bytes", "fqpack_eqm_step", "fqpack_weights_resident_bytes",
        "fqpack_transitions_total", "fqpack_bytes_swapped_total", "fqpack_tokens_generated_total",
        "fqpack_prompt_tokens_total", "fqpack_requests_total", "fqpack_queue_depth"}) {
    EXPECT_GE(samples[name], 1) << name;
  }
  auto values = Metrics();
  EXPECT_EQ(values["fqpack_tokens_generated_total"], 5);
  EXPECT_EQ(values["fqpack_prompt_tokens_total"], Direct(kPrompt, 1).prompt_tokens);
  EXPECT_EQ(values["fqpack_requests_total{endpoint=\"/v1/completions\",code=\"200\"}"], 1);
  EXPECT_EQ(values["fqpack_queue_depth"], 0);
}

TEST_F(ServerTest, ShutdownEndsAStreamInFlight) {
  std::string got;
  std::atomic<bool> first{false};
  std::thread client([&] {
    got = Stream("/v1/completions",
                 {{"prompt", kPrompt},
                  {"max_tokens", 1000000},
                  {"ignore_eos", true},
                  {"temperature", 0},
                  {"stream", true}},
                 [&](const std::string&) {
                   first.store(true);
                   return true;
                 });
  });
  while (!first.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server_->Shutdown();
  client.join();
  Sse s = ParseSse(got, false);
  EXPECT_TRUE(s.done) << got.substr(got.size() > 300 ? got.size() - 300 : 0);
  EXPECT_EQ(s.finish, "cancelled");
  // Nothing listens any more.
  EXPECT_FALSE(Client().Get("/health"));
}

}  // namespace
}  // namespace fqpack::serve
