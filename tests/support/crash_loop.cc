#include "tests/support/crash_loop.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <vector>

namespace fqpack::testing {
namespace {

struct ChildReport {
  int exit_code = -1;
  int64_t steps = -1;
  int64_t sync_steps = -1;
  std::string status;            // the operation's Status, when it returned
  std::vector<std::string> log;  // what each step did (dry run)
};

// Runs loop.op on `dir` in a child, crashing at `point` (no crash when
// point.at == 0 and the kind is kKill).
ChildReport RunChild(const CrashLoop& loop, const std::string& dir, const CrashPoint& point,
                     bool dry_run) {
  ChildReport report;
  int fds[2];
  if (::pipe(fds) != 0) return report;
  std::fflush(nullptr);  // a child must not print the parent's buffered output again
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    FaultInjectionEnv env(Env::Default());
    env.SetRealSyncs(false);
    if (loop.configure) loop.configure(&env);
    if (dry_run || point.after_op()) {
      env.FailAt(-1);
    } else if (point.kind == CrashKind::kKill) {
      env.FailAt(point.at, FaultInjectionEnv::Mode::kCrash);
    } else {
      env.FailAtSync(point.at, FaultInjectionEnv::Mode::kPowerLoss);
    }
    Status s = loop.op(&env, dir);
    std::ostringstream out;
    out << env.steps() << " " << env.sync_steps() << "\n" << s.ToString() << "\n";
    if (dry_run) {
      for (const std::string& line : env.StepLog()) out << line << "\n";
    }
    const std::string text = out.str();
    (void)!::write(fds[1], text.data(), text.size());
    ::close(fds[1]);
    if (!dry_run && s.ok() && point.kind == CrashKind::kPowerLoss && point.after_op())
      env.PowerLoss();
    ::_exit(s.ok() ? 0 : 2);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  report.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::istringstream in(text);
  in >> report.steps >> report.sync_steps;
  std::getline(in, report.status);
  std::getline(in, report.status);
  for (std::string line; std::getline(in, line);) report.log.push_back(line);
  return report;
}

bool IsSyncStep(const std::string& what) { return what.rfind("fsync ", 0) == 0; }

}  // namespace

const char* CrashKindName(CrashKind kind) {
  return kind == CrashKind::kKill ? "kill" : "power-loss";
}

std::string CrashPoint::ToString() const {
  std::string s = CrashKindName(kind);
  if (after_op())
    return s + (kind == CrashKind::kKill ? ": no crash" : " right after the operation returned");
  s += kind == CrashKind::kKill ? " at step " : " at sync step ";
  return s + std::to_string(at) + " (" + what + ")";
}

int64_t CrashStride() {
  const char* s = std::getenv("FQ_CRASH_STRIDE");
  const int64_t k = s != nullptr ? std::atoll(s) : 1;
  return k >= 1 ? k : 1;
}

void CopyTree(const std::string& from, const std::string& to) {
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
}

void ResetTree(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  if (!fs::exists(to)) {
    CopyTree(from, to);
    return;
  }
  for (const fs::directory_entry& e : fs::directory_iterator(to)) {
    const fs::path src = fs::path(from) / e.path().filename();
    if (!fs::exists(src) || fs::is_directory(src) != e.is_directory()) fs::remove_all(e.path());
  }
  for (const fs::directory_entry& e : fs::directory_iterator(from)) {
    const fs::path dst = fs::path(to) / e.path().filename();
    if (e.is_directory()) {
      ResetTree(e.path().string(), dst.string());
    } else {
      fs::copy_file(e.path(), dst, fs::copy_options::overwrite_existing);
    }
  }
}

Env* FastEnv() {
  static FaultInjectionEnv* env = [] {
    auto* e = new FaultInjectionEnv(Env::Default());
    e->SetRealSyncs(false);
    return e;
  }();
  return env;
}

std::string WithoutTimes(std::string s) {
  // dddd-dd-ddTdd:dd:ddZ
  static const char kShape[] = "dddd-dd-ddTdd:dd:ddZ";
  const size_t n = sizeof(kShape) - 1;
  for (size_t i = 0; i + n <= s.size(); ++i) {
    bool match = true;
    for (size_t j = 0; j < n && match; ++j) {
      const char c = s[i + j];
      match = kShape[j] == 'd' ? std::isdigit(static_cast<unsigned char>(c)) != 0 : c == kShape[j];
    }
    if (match) s.replace(i, n, "<time>");
  }
  return s;
}

std::string CrashLoopResult::Summary() const {
  std::string s;
  for (size_t i = 0; i < failures.size() && i < 5; ++i) s += failures[i] + "\n";
  if (failures.size() > 5) s += "... and " + std::to_string(failures.size() - 5) + " more\n";
  return s;
}

CrashLoopResult RunCrashLoop(const CrashLoop& loop, CrashKind kind) {
  CrashLoopResult result;
  TempDir tmp;
  // The dry run: counts the steps, and must itself leave a good store.
  const std::string dry = tmp.Join("dry");
  CopyTree(loop.base, dry);
  ChildReport counted = RunChild(loop, dry, {kind, 0, ""}, true);
  if (counted.exit_code != 0) {
    result.failures.push_back("the operation failed without a fault: " + counted.status);
    return result;
  }
  result.dry_run_ok = true;
  // Step descriptions name the dry run's files; "<dir>" reads better.
  for (std::string& what : counted.log) {
    for (size_t at; (at = what.find(dry)) != std::string::npos;)
      what.replace(at, dry.size(), "<dir>");
  }
  result.steps = counted.steps;
  result.sync_steps = counted.sync_steps;
  if (std::string problem = loop.check(dry, {CrashKind::kKill, 0, ""}); !problem.empty()) {
    result.failures.push_back("no crash: " + problem);
  }

  std::vector<CrashPoint> points;
  const int64_t stride = CrashStride();
  if (kind == CrashKind::kKill) {
    for (int64_t at = 1; at <= counted.steps; at += stride) points.push_back({kind, at, ""});
    if (points.empty() || points.back().at != counted.steps)
      points.push_back({kind, counted.steps, ""});
    for (CrashPoint& p : points) p.what = counted.log[static_cast<size_t>(p.at - 1)];
  } else {
    std::vector<std::string> syncs;
    for (const std::string& what : counted.log) {
      if (IsSyncStep(what)) syncs.push_back(what);
    }
    if (static_cast<int64_t>(syncs.size()) != counted.sync_steps) {
      result.failures.push_back("the step log does not match the sync count");
      return result;
    }
    for (int64_t at = 1; at <= counted.sync_steps; at += stride) points.push_back({kind, at, ""});
    if (counted.sync_steps > 0 && points.back().at != counted.sync_steps) {
      points.push_back({kind, counted.sync_steps, ""});
    }
    for (CrashPoint& p : points) p.what = syncs[static_cast<size_t>(p.at - 1)];
    points.push_back({kind, 0, ""});
  }
  for (const CrashPoint& p : points) {
    const std::string dir = tmp.Join("run");
    ResetTree(loop.base, dir);
    ChildReport r = RunChild(loop, dir, p, false);
    ++result.points;
    if (r.exit_code != 99) {
      result.failures.push_back(p.ToString() + ": the child did not crash there (exit " +
                                std::to_string(r.exit_code) + ", " + r.status + ")");
      continue;
    }
    if (std::string problem = loop.check(dir, p); !problem.empty()) {
      result.failures.push_back(p.ToString() + ": " + problem);
    }
  }
  return result;
}

}  // namespace fqpack::testing
