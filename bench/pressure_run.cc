// A real memory-pressure run: `fqpack serve --budget auto:RESERVE` generates
// for a client without pause while a second process (the hog) takes memory
// in steps, touching every page, and gives it back. Sampled every 50 ms:
// MemAvailable, the server's budget and its EQM (GET /v1/budget); at the
// end, every transition the server made (GET /v1/transitions, with wall
// times), the reaction time from each step of the hog to the finished
// transition, the perplexity of each EQM the run used, and a plot.
//
//   pressure_run --fqpack build/cli/fqpack --pack model.fqpack --out DIR
//                [--steps 0,3,6,9,12,6,0] [--hold 3] [--margin 2] [--ctx 256]
//                [--eval-text tinystories_val.ppl.txt] [--chunks 16]
//
// Steps are MiB the hog holds, each for --hold seconds. The reserve is set
// so that, when the run starts, the budget is the largest EQM's need plus
// --margin MiB: each MiB the hog takes then costs the model one MiB. On a
// shared machine the hog's largest step is all it takes.
//
// Outputs in DIR: timeline.csv, transitions.json, server.log, pressure.png
// and pressure.svg; a summary (markdown) on stdout. Exit 1 when the server
// died (an OOM kill included) or answered errors.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "plot/plot.h"
#include "runtime/elastic.h"
#include "runtime/memory_source.h"
#include "schema/thread_pool.h"

namespace {

using Json = nlohmann::json;
constexpr double kMiB = 1024.0 * 1024.0;

double WallNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// MemAvailable, read as the server's governor reads it.
uint64_t MemAvailable() {
  static std::unique_ptr<fqpack::runtime::MemorySource> meminfo = [] {
    auto s = fqpack::runtime::OpenMeminfoSource(fqpack::Env::Default(), "");
    return s.ok() ? std::move(*s) : nullptr;
  }();
  if (meminfo == nullptr) return 0;
  auto r = meminfo->Read();
  return r.ok() ? r->available : 0;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "pressure_run: %s\n", what.c_str());
  std::exit(1);
}

// The hog: a child process that holds as many MiB as it is told, each MiB
// its own mapping with every page written, and answers with the wall time
// at which the memory was in place.
struct Hog {
  pid_t pid = -1;
  int to = -1;
  int from = -1;

  static Hog Start() {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) Die("pipe");
    Hog h;
    h.pid = fork();
    if (h.pid < 0) Die("fork");
    if (h.pid == 0) {
      close(down[1]);
      close(up[0]);
      std::vector<void*> held;
      const size_t mib = 1 << 20;
      for (;;) {
        char buf[32] = {0};
        ssize_t n = read(down[0], buf, sizeof(buf) - 1);
        if (n <= 0) _exit(0);
        const long want = std::atol(buf);
        if (want < 0) _exit(0);
        while (static_cast<long>(held.size()) > want) {
          munmap(held.back(), mib);
          held.pop_back();
        }
        while (static_cast<long>(held.size()) < want) {
          void* p = mmap(nullptr, mib, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
          if (p == MAP_FAILED) _exit(3);
          std::memset(p, 0x5a, mib);  // every page, really
          held.push_back(p);
        }
        char out[64];
        const int len = std::snprintf(out, sizeof(out), "%.6f\n", WallNow());
        if (write(up[1], out, static_cast<size_t>(len)) != len) _exit(4);
      }
    }
    close(down[0]);
    close(up[1]);
    h.to = down[1];
    h.from = up[0];
    return h;
  }

  // Holds `mib` MiB; returns when they are in place.
  double Hold(int mib) {
    const std::string cmd = std::to_string(mib) + "\n";
    if (write(to, cmd.data(), cmd.size()) != static_cast<ssize_t>(cmd.size())) Die("hog write");
    char buf[64] = {0};
    if (read(from, buf, sizeof(buf) - 1) <= 0) Die("the hog died");
    return std::atof(buf);
  }

  int Stop() {
    const char* q = "-1\n";
    (void)!write(to, q, 3);
    close(to);
    close(from);
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
  }
};

struct Sample {
  double t = 0;
  uint64_t mem_available = 0;
  uint64_t available = 0;  // what the server's source says
  uint64_t effective = 0;  // after its own share and the reserve
  uint64_t need = 0;       // the running EQM's footprint + overhead
  int step = -1;
  int hog_mib = 0;
};

struct Options {
  std::string fqpack, pack, out = "pressure-out", eval_text;
  std::vector<int> steps = {0, 3, 6, 9, 12, 6, 0};
  double hold = 3;
  double margin_mib = 2;
  int ctx = 256;
  int chunks = 16;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--fqpack") {
      o.fqpack = next();
    } else if (a == "--pack") {
      o.pack = next();
    } else if (a == "--out") {
      o.out = next();
    } else if (a == "--eval-text") {
      o.eval_text = next();
    } else if (a == "--steps") {
      o.steps.clear();
      std::stringstream ss(next());
      std::string part;
      while (std::getline(ss, part, ',')) o.steps.push_back(std::atoi(part.c_str()));
    } else if (a == "--hold") {
      o.hold = std::atof(next().c_str());
    } else if (a == "--margin") {
      o.margin_mib = std::atof(next().c_str());
    } else if (a == "--ctx") {
      o.ctx = std::atoi(next().c_str());
    } else if (a == "--chunks") {
      o.chunks = std::atoi(next().c_str());
    } else {
      Die("unknown argument " + a + " (see the comment at the top of bench/pressure_run.cc)");
    }
  }
  if (o.fqpack.empty() || o.pack.empty()) Die("--fqpack and --pack are required");
  return o;
}

// A port nobody listens on now (bound, read back, closed).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) Die("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    Die("cannot find a free port");
  }
  close(fd);
  return ntohs(a.sin_port);
}

std::string Capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  // The hog forks before any thread exists.
  Hog hog = Hog::Start();
  if (std::system(("mkdir -p '" + o.out + "'").c_str()) != 0) Die("cannot create " + o.out);

  // The largest EQM's need as the server will count it.
  uint64_t top_need = 0, min_need = 0;
  {
    fqpack::ThreadPool pool(2);
    fqpack::runtime::ElasticOptions eo;
    eo.n_ctx = o.ctx;
    auto rt = fqpack::runtime::ElasticRuntime::Open(fqpack::Env::Default(), o.pack, eo, &pool);
    if (!rt.ok()) Die(rt.status().ToString());
    const uint64_t overhead = (*rt)->overhead().total();
    for (const auto& l : (*rt)->residency()->levels()) {
      top_need = std::max(top_need, l.footprint + overhead);
      min_need =
          min_need == 0 ? l.footprint + overhead : std::min(min_need, l.footprint + overhead);
    }
  }
  const uint64_t avail0 = MemAvailable();
  const auto margin = static_cast<uint64_t>(o.margin_mib * kMiB);
  if (avail0 < top_need + margin + (uint64_t{256} << 20)) Die("too little memory for this run");
  const uint64_t reserve0 = avail0 - top_need - margin;

  const int port = FreePort();
  const std::string log_path = o.out + "/server.log";
  pid_t server = fork();
  if (server < 0) Die("fork");
  if (server == 0) {
    FILE* log = std::freopen(log_path.c_str(), "w", stderr);
    (void)log;
    const std::string port_s = std::to_string(port);
    const std::string budget = "auto:" + std::to_string(reserve0);
    const std::string ctx = std::to_string(o.ctx);
    execl(o.fqpack.c_str(), o.fqpack.c_str(), "-t", "1", "serve", o.pack.c_str(), "--host",
          "127.0.0.1", "--port", port_s.c_str(), "--budget", budget.c_str(), "-c", ctx.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(60, 0);
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    auto r = cli.Get("/health");
    up = r && r->status == 200;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!up) Die("the server did not come up; see " + log_path);

  // The client: one request after another for the whole run.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> tokens{0}, requests{0}, errors{0};
  std::thread client([&] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    for (int i = 0; !stop.load(); ++i) {
      Json req = {
          {"prompt", "Once upon a time"}, {"max_tokens", 96}, {"temperature", 0.8}, {"seed", i}};
      auto r = c.Post("/v1/completions", req.dump(), "application/json");
      if (!r || r->status != 200) {
        ++errors;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      ++requests;
      tokens += Json::parse(r->body)["usage"]["completion_tokens"].get<int64_t>();
    }
  });

  // Once the server has served a while (its buffers, threads and caches in
  // place), set the reserve so that its budget is the largest EQM's need
  // plus the margin: what the server itself took since the first reading
  // is then not counted as pressure.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  uint64_t reserve = reserve0;
  {
    auto r = cli.Get("/v1/budget");
    if (!r || r->status != 200) Die("GET /v1/budget failed");
    const Json j = Json::parse(r->body);
    const auto effective = j["auto"]["effective"].get<uint64_t>();
    const uint64_t want = top_need + margin;
    reserve = effective > want ? reserve0 + (effective - want) : reserve0 - (want - effective);
    auto p = cli.Post("/v1/budget", Json({{"auto", true}, {"reserve", reserve}}).dump(),
                      "application/json");
    if (!p || p->status != 200) Die("POST /v1/budget {auto, reserve} failed");
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double t0 = WallNow();

  // The sampler.
  std::mutex mu;
  std::vector<Sample> samples;
  std::atomic<int> hog_mib{0};
  std::thread sampler([&] {
    httplib::Client c("127.0.0.1", port);
    while (!stop.load()) {
      Sample s;
      s.t = WallNow() - t0;
      s.mem_available = MemAvailable();
      s.hog_mib = hog_mib.load();
      auto r = c.Get("/v1/budget");
      if (r && r->status == 200) {
        Json j = Json::parse(r->body, nullptr, false);
        if (!j.is_discarded()) {
          if (j.contains("eqm")) {
            s.step = j["eqm"].value("step", -1);
            s.need =
                j["eqm"].value("footprint", uint64_t{0}) + j.value("overhead_bytes", uint64_t{0});
          }
          if (j.contains("auto")) {
            s.available = j["auto"].value("available", uint64_t{0});
            s.effective = j["auto"].value("effective", uint64_t{0});
          }
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        samples.push_back(s);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });

  // The hog's steps.
  struct StepEvent {
    int mib;
    double start;  // wall time the hog started taking (or giving back) memory
    double done;   // wall time the memory was in place
  };
  std::vector<StepEvent> events;
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(o.hold * 1000)));
  for (int mib : o.steps) {
    const double start = WallNow();
    const double done = hog.Hold(mib);
    hog_mib = mib;
    events.push_back({mib, start, done});
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(o.hold * 1000)));
  }
  stop = true;
  client.join();
  sampler.join();
  const int hog_status = hog.Stop();

  auto tr = cli.Get("/v1/transitions");
  Json transitions = tr && tr->status == 200 ? Json::parse(tr->body, nullptr, false) : Json();
  if (!transitions.is_object() || !transitions.contains("transitions")) {
    Die("GET /v1/transitions failed; see " + log_path);
  }
  transitions = transitions["transitions"];
  kill(server, SIGTERM);
  int server_status = 0;
  waitpid(server, &server_status, 0);
  const bool server_clean = WIFEXITED(server_status) && WEXITSTATUS(server_status) == 0;
  {
    std::ofstream f(o.out + "/transitions.json");
    f << transitions.dump(2) << "\n";
  }

  // Reaction: from the start of a step that took memory (the hog touches
  // its pages as it goes, so available memory starts falling then) to the
  // end of the last transition before the next step (the run settled
  // under the new budget).
  std::vector<double> reactions;
  int steps_down = 0, steps_moved = 0;
  std::printf(
      "| hog holds | hog took | MemAvailable after | transitions | ended at | reaction |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < events.size(); ++i) {
    const double start = events[i].start;
    const double end = i + 1 < events.size() ? events[i + 1].start : 1e300;
    int n = 0;
    double last = 0;
    std::string to;
    // The run of down moves the step set off; an up move after them (the
    // signal recovered a little, and held for the dwell) is not reaction.
    bool going_down = true;
    auto step_of = [](const std::string& label) {
      return label.rfind("eqm:", 0) == 0 ? std::atoi(label.c_str() + 4) : -1;
    };
    for (const Json& t : transitions) {
      const double at = t.value("finished_at", 0.0);
      if (at <= start || at >= end) continue;
      ++n;
      to = t.value("to", "");
      if (step_of(to) < step_of(t.value("from", ""))) going_down = false;
      if (going_down) last = std::max(last, at);
    }
    const bool took = i > 0 ? events[i].mib > events[i - 1].mib : events[i].mib > 0;
    uint64_t after = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (const Sample& s : samples) {
        if (s.t + t0 > events[i].done) {
          after = s.mem_available;
          break;
        }
      }
    }
    std::string reaction = "-";
    if (took) ++steps_down;
    if (took && last > 0) {
      ++steps_moved;
      reactions.push_back((last - start) * 1e3);
      char b[32];
      std::snprintf(b, sizeof(b), "%.0f ms", reactions.back());
      reaction = b;
    }
    std::printf("| %d MiB | %.0f ms | %.1f MiB | %d | %s | %s |\n", events[i].mib,
                (events[i].done - events[i].start) * 1e3, static_cast<double>(after) / kMiB, n,
                n > 0 ? to.c_str() : "(stayed)", reaction.c_str());
  }

  // Time in each EQM and its perplexity.
  std::map<int, double> seconds_at;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 1; i < samples.size(); ++i) {
      if (samples[i - 1].step >= 0)
        seconds_at[samples[i - 1].step] += samples[i].t - samples[i - 1].t;
    }
  }
  double total_s = 0, weighted_nll = 0;
  std::map<int, double> ppl_of;
  if (!o.eval_text.empty()) {
    for (const auto& [step, secs] : seconds_at) {
      const std::string out =
          Capture(o.fqpack + " --json -t 2 ppl '" + o.pack + "' --eqm " + std::to_string(step) +
                  " -f '" + o.eval_text + "' -c " + std::to_string(o.ctx) + " --chunks " +
                  std::to_string(o.chunks) + " 2>/dev/null");
      Json j = Json::parse(out, nullptr, false);
      if (j.is_discarded()) Die("ppl of eqm " + std::to_string(step) + " failed");
      ppl_of[step] = j["ppl"].get<double>();
      total_s += secs;
      weighted_nll += secs * std::log(ppl_of[step]);
    }
  }

  // Timeline and plot.
  fqpack::plot::PlotSpec spec;
  spec.title = "serve --budget auto: the budget follows MemAvailable (reserve " +
               std::to_string(static_cast<long long>(reserve / (1 << 20))) + " MiB)";
  spec.x_label = "time (s)";
  spec.y_label = "MiB";
  fqpack::plot::PlotSeries s_avail{"MemAvailable - reserve",
                                   fqpack::plot::PlotSeries::Style::kLine};
  fqpack::plot::PlotSeries s_eff{"budget the server derived",
                                 fqpack::plot::PlotSeries::Style::kLine};
  fqpack::plot::PlotSeries s_need{"running EQM: weights + KV + scratch",
                                  fqpack::plot::PlotSeries::Style::kLine};
  fqpack::plot::PlotSeries s_hog{"hog holds", fqpack::plot::PlotSeries::Style::kLine};
  for (auto* s : {&s_avail, &s_eff, &s_need, &s_hog}) s->markers = false;
  {
    std::ofstream csv(o.out + "/timeline.csv");
    csv << "t,mem_available,server_available,budget,eqm_step,need,hog_mib\n";
    std::lock_guard<std::mutex> lock(mu);
    for (const Sample& s : samples) {
      csv << s.t << "," << s.mem_available << "," << s.available << "," << s.effective << ","
          << s.step << "," << s.need << "," << s.hog_mib << "\n";
      const double avail_mib =
          (static_cast<double>(s.mem_available) - static_cast<double>(reserve)) / kMiB;
      s_avail.points.push_back({s.t, avail_mib, ""});
      if (s.effective > 0)
        s_eff.points.push_back({s.t, static_cast<double>(s.effective) / kMiB, ""});
      if (s.need > 0) s_need.points.push_back({s.t, static_cast<double>(s.need) / kMiB, ""});
      s_hog.points.push_back({s.t, static_cast<double>(s.hog_mib), ""});
    }
  }
  spec.series = {s_avail, s_eff, s_need, s_hog};
  for (const char* ext : {".png", ".svg"}) {
    fqpack::Status st = fqpack::plot::WritePlot(spec, o.out + "/pressure" + ext);
    if (!st.ok()) Die(st.ToString());
  }

  std::printf("\n| EQM | time there | perplexity |\n|---|---|---|\n");
  for (const auto& [step, secs] : seconds_at) {
    std::printf("| eqm:%d | %.1f s | %s |\n", step, secs,
                ppl_of.count(step) ? std::to_string(ppl_of[step]).c_str() : "-");
  }
  std::printf(
      "\nrun: %.1f s, %lld requests, %lld tokens, %lld errors; %zu transitions; hog steps that "
      "took memory: %d, of which %d moved the model\n",
      samples.empty() ? 0.0 : samples.back().t, static_cast<long long>(requests.load()),
      static_cast<long long>(tokens.load()), static_cast<long long>(errors.load()),
      transitions.size(), steps_down, steps_moved);
  if (!reactions.empty()) {
    std::printf(
        "reaction (hog starts taking memory -> last transition finished): median %.0f ms, worst "
        "%.0f ms\n",
        Median(reactions), *std::max_element(reactions.begin(), reactions.end()));
  }
  if (total_s > 0) {
    std::printf("perplexity over the run (time-weighted geometric mean of the EQMs used): %.4f\n",
                std::exp(weighted_nll / total_s));
  }
  std::printf("server: %s; hog: %s; range of needs %.2f-%.2f MiB\n",
              server_clean ? "exited 0 after SIGTERM (no OOM kill)"
                           : ("ended with status " + std::to_string(server_status)).c_str(),
              WIFEXITED(hog_status) && WEXITSTATUS(hog_status) == 0 ? "exited 0" : "failed",
              static_cast<double>(min_need) / kMiB, static_cast<double>(top_need) / kMiB);
  std::printf("outputs: %s/{timeline.csv,transitions.json,server.log,pressure.png,pressure.svg}\n",
              o.out.c_str());
  return server_clean && errors.load() == 0 ? 0 : 1;
}
