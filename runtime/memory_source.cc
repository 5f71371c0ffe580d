#include "runtime/memory_source.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <utility>

namespace fqpack::runtime {
namespace {

// v1 writes "no limit" as the largest page-aligned value below 2^63.
constexpr uint64_t kNoLimitAbove = uint64_t{1} << 62;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

bool ParseU64(std::string_view s, uint64_t* out) {
  s = Trim(s);
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// "max" (v2) or a number; nullopt for no limit.
Result<std::optional<uint64_t>> ParseLimit(std::string_view text, const std::string& name) {
  std::string_view v = Trim(text);
  if (v == "max") return std::optional<uint64_t>();
  uint64_t n = 0;
  if (!ParseU64(v, &n)) {
    return Status::Corruption(name + ": not a number or \"max\": \"" + std::string(v) + "\"");
  }
  if (n >= kNoLimitAbove) return std::optional<uint64_t>();
  return std::optional<uint64_t>(n);
}

std::string Under(const std::string& root, const std::string& path) {
  if (root.empty()) return path;
  if (!root.empty() && root.back() == '/') return root + path.substr(1);
  return root + path;
}

class MeminfoSource final : public MemorySource {
 public:
  MeminfoSource(Env* env, std::string path, std::string pressure)
      : env_(env), path_(std::move(path)), pressure_(std::move(pressure)) {}
  const std::string& name() const override { return name_; }
  const std::string& pressure_path() const override { return pressure_; }

  Result<MemoryReading> Read() override {
    FQ_ASSIGN_OR_RETURN(std::string text, env_->ReadSmallFile(path_));
    FQ_ASSIGN_OR_RETURN(Meminfo m, ParseMeminfo(text, path_));
    MemoryReading r;
    r.source = name_;
    r.available = m.available;
    r.total = m.total;
    if (!pressure_.empty()) {
      auto p = env_->ReadSmallFile(pressure_);
      if (p.ok()) {
        FQ_ASSIGN_OR_RETURN(PressureStall s, ParsePressure(*p, pressure_));
        r.pressure = s;
      }
    }
    return r;
  }

 private:
  Env* env_;
  std::string name_ = "meminfo";
  std::string path_;
  std::string pressure_;
};

// One cgroup level with a limit (or the leaf, for its pressure file).
struct CgroupLevel {
  std::string dir;   // directory of this cgroup
  std::string path;  // its path in the hierarchy, for messages
};

class CgroupSource final : public MemorySource {
 public:
  CgroupSource(Env* env, int version, std::vector<CgroupLevel> levels, std::string pressure)
      : env_(env), version_(version), levels_(std::move(levels)), pressure_(std::move(pressure)) {
    name_ = "cgroup" + std::to_string(version_) + ":" + levels_.front().path;
  }
  const std::string& name() const override { return name_; }
  const std::string& pressure_path() const override { return pressure_; }

  Result<MemoryReading> Read() override {
    MemoryReading best;
    bool any = false;
    for (const CgroupLevel& level : levels_) {
      FQ_ASSIGN_OR_RETURN(std::optional<MemoryReading> r, ReadLevel(level));
      if (!r.has_value()) continue;
      if (!any || r->available < best.available) best = std::move(*r);
      any = true;
    }
    if (!any) {
      return Status::NotFound(name_ + ": no memory limit on the cgroup's path any more");
    }
    if (!pressure_.empty()) {
      auto p = env_->ReadSmallFile(pressure_);
      if (p.ok()) {
        FQ_ASSIGN_OR_RETURN(PressureStall s, ParsePressure(*p, pressure_));
        best.pressure = s;
      }
    }
    return best;
  }

  // The limit of one level, or nullopt when it has none.
  Result<std::optional<uint64_t>> Limit(const CgroupLevel& level) {
    if (version_ == 2) {
      std::optional<uint64_t> limit;
      for (const char* file : {"memory.max", "memory.high"}) {
        const std::string path = level.dir + "/" + file;
        if (!env_->FileExists(path)) continue;
        FQ_ASSIGN_OR_RETURN(std::string text, env_->ReadSmallFile(path));
        FQ_ASSIGN_OR_RETURN(std::optional<uint64_t> v, ParseLimit(text, path));
        if (v.has_value()) limit = limit.has_value() ? std::min(*limit, *v) : *v;
      }
      return limit;
    }
    const std::string path = level.dir + "/memory.limit_in_bytes";
    if (!env_->FileExists(path)) return std::optional<uint64_t>();
    FQ_ASSIGN_OR_RETURN(std::string text, env_->ReadSmallFile(path));
    return ParseLimit(text, path);
  }

 private:
  Result<std::optional<MemoryReading>> ReadLevel(const CgroupLevel& level) {
    FQ_ASSIGN_OR_RETURN(std::optional<uint64_t> limit, Limit(level));
    if (!limit.has_value()) return std::optional<MemoryReading>();
    const bool v2 = version_ == 2;
    const std::string usage_path = level.dir + (v2 ? "/memory.current" : "/memory.usage_in_bytes");
    const std::string stat_path = level.dir + "/memory.stat";
    FQ_ASSIGN_OR_RETURN(std::string usage_text, env_->ReadSmallFile(usage_path));
    uint64_t usage = 0;
    if (!ParseU64(usage_text, &usage)) {
      return Status::Corruption(usage_path + ": not a number: \"" + std::string(Trim(usage_text)) +
                                "\"");
    }
    FQ_ASSIGN_OR_RETURN(std::string stat, env_->ReadSmallFile(stat_path));
    FQ_ASSIGN_OR_RETURN(uint64_t inactive_file,
                        ParseStatValue(stat, v2 ? "inactive_file" : "total_inactive_file", stat_path));
    const uint64_t working_set = usage > inactive_file ? usage - inactive_file : 0;
    MemoryReading r;
    r.source = "cgroup" + std::to_string(version_) + ":" + level.path;
    r.total = *limit;
    r.available = *limit > working_set ? *limit - working_set : 0;
    r.counts_own_mapped = true;
    return std::optional<MemoryReading>(std::move(r));
  }

  Env* env_;
  int version_;
  std::vector<CgroupLevel> levels_;  // leaf first
  std::string pressure_;
  std::string name_;
};

struct Mount {
  std::string root;        // the mount's root inside the hierarchy
  std::string mountpoint;  // where it is mounted
};

// The cgroup2 mount, or the v1 mount with the memory controller.
std::optional<Mount> FindMount(std::string_view mountinfo, bool v2) {
  for (std::string_view line : Lines(mountinfo)) {
    // "<id> <parent> <maj:min> <root> <mountpoint> <options> [tags...] - <fstype> <source> <super options>"
    size_t dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    std::vector<std::string_view> head = Fields(line.substr(0, dash));
    std::vector<std::string_view> tail = Fields(line.substr(dash + 3));
    if (head.size() < 5 || tail.size() < 3) continue;
    if (v2) {
      if (tail[0] != "cgroup2") continue;
    } else {
      if (tail[0] != "cgroup") continue;
      bool memory = false;
      std::string_view opts = tail[2];
      while (!opts.empty()) {
        size_t comma = opts.find(',');
        if (opts.substr(0, comma) == "memory") memory = true;
        if (comma == std::string_view::npos) break;
        opts.remove_prefix(comma + 1);
      }
      if (!memory) continue;
    }
    return Mount{std::string(head[3]), std::string(head[4])};
  }
  return std::nullopt;
}

// The process's path in the v2 hierarchy ("0::/x") or v1's memory one ("N:memory:/x").
std::optional<std::string> CgroupPath(std::string_view self_cgroup, bool v2) {
  for (std::string_view line : Lines(self_cgroup)) {
    size_t a = line.find(':');
    if (a == std::string_view::npos) continue;
    size_t b = line.find(':', a + 1);
    if (b == std::string_view::npos) continue;
    std::string_view id = line.substr(0, a);
    std::string_view controllers = line.substr(a + 1, b - a - 1);
    std::string path(Trim(line.substr(b + 1)));
    if (v2) {
      if (id == "0" && controllers.empty()) return path;
      continue;
    }
    while (!controllers.empty()) {
      size_t comma = controllers.find(',');
      if (controllers.substr(0, comma) == "memory") return path;
      if (comma == std::string_view::npos) break;
      controllers.remove_prefix(comma + 1);
    }
  }
  return std::nullopt;
}

}  // namespace

Result<Meminfo> ParseMeminfo(std::string_view text, const std::string& name) {
  Meminfo m;
  bool have_total = false, have_available = false;
  for (std::string_view line : Lines(text)) {
    std::vector<std::string_view> f = Fields(line);
    if (f.size() < 2) continue;
    uint64_t* dst = nullptr;
    if (f[0] == "MemTotal:") {
      dst = &m.total;
      have_total = true;
    } else if (f[0] == "MemAvailable:") {
      dst = &m.available;
      have_available = true;
    } else {
      continue;
    }
    uint64_t v = 0;
    if (!ParseU64(f[1], &v) || (f.size() > 2 && f[2] != "kB")) {
      return Status::Corruption(name + ": bad line \"" + std::string(line) + "\"");
    }
    if (v > (uint64_t{1} << 53)) return Status::Corruption(name + ": absurd value in \"" + std::string(line) + "\"");
    *dst = f.size() > 2 ? v * 1024 : v;
  }
  if (!have_available) {
    return Status::Corruption(name + ": no MemAvailable line (a kernel before 3.14?)");
  }
  if (!have_total) return Status::Corruption(name + ": no MemTotal line");
  return m;
}

Result<PressureStall> ParsePressure(std::string_view text, const std::string& name) {
  PressureStall s;
  bool some = false;
  for (std::string_view line : Lines(text)) {
    std::vector<std::string_view> f = Fields(line);
    if (f.empty() || (f[0] != "some" && f[0] != "full")) continue;
    double avg10 = -1;
    for (size_t i = 1; i < f.size(); ++i) {
      if (f[i].substr(0, 6) != "avg10=") continue;
      std::string v(f[i].substr(6));
      char* end = nullptr;
      avg10 = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || avg10 < 0 || avg10 > 100) {
        return Status::Corruption(name + ": bad avg10 in \"" + std::string(line) + "\"");
      }
    }
    if (avg10 < 0) return Status::Corruption(name + ": no avg10 in \"" + std::string(line) + "\"");
    if (f[0] == "some") {
      s.some_avg10 = avg10;
      some = true;
    } else {
      s.full_avg10 = avg10;
    }
  }
  if (!some) return Status::Corruption(name + ": no \"some\" line");
  return s;
}

Result<uint64_t> ParseStatValue(std::string_view text, std::string_view key,
                                const std::string& name) {
  for (std::string_view line : Lines(text)) {
    std::vector<std::string_view> f = Fields(line);
    if (f.size() != 2 || f[0] != key) continue;
    uint64_t v = 0;
    if (!ParseU64(f[1], &v)) {
      return Status::Corruption(name + ": bad value in \"" + std::string(line) + "\"");
    }
    return v;
  }
  return Status::Corruption(name + ": no \"" + std::string(key) + "\" line");
}

Result<std::unique_ptr<MemorySource>> OpenMeminfoSource(Env* env, const std::string& root) {
  const std::string path = Under(root, "/proc/meminfo");
  const std::string pressure = Under(root, "/proc/pressure/memory");
  auto source = std::make_unique<MeminfoSource>(env, path,
                                                env->FileExists(pressure) ? pressure : "");
  FQ_RETURN_IF_ERROR(source->Read().status());
  return std::unique_ptr<MemorySource>(std::move(source));
}

Result<std::unique_ptr<MemorySource>> OpenCgroupSource(Env* env, const std::string& root) {
  const std::string self_cgroup = Under(root, "/proc/self/cgroup");
  const std::string mountinfo_path = Under(root, "/proc/self/mountinfo");
  if (!env->FileExists(self_cgroup) || !env->FileExists(mountinfo_path)) {
    return std::unique_ptr<MemorySource>();
  }
  FQ_ASSIGN_OR_RETURN(std::string cgroups, env->ReadSmallFile(self_cgroup));
  FQ_ASSIGN_OR_RETURN(std::string mountinfo, env->ReadSmallFile(mountinfo_path));
  for (int version : {2, 1}) {
    std::optional<Mount> mount = FindMount(mountinfo, version == 2);
    std::optional<std::string> path = CgroupPath(cgroups, version == 2);
    if (!mount.has_value() || !path.has_value()) continue;
    // The process's path relative to what is mounted (a cgroup namespace
    // mounts its own cgroup as the root).
    std::string rel = *path;
    if (mount->root != "/" && rel.compare(0, mount->root.size(), mount->root) == 0) {
      rel = rel.substr(mount->root.size());
    }
    if (rel.empty()) rel = "/";
    const std::string base = Under(root, mount->mountpoint);
    std::vector<CgroupLevel> levels;
    std::string walk = rel;
    for (;;) {
      std::string dir = walk == "/" ? base : base + walk;
      levels.push_back({dir, walk});
      if (walk == "/") break;
      size_t slash = walk.rfind('/');
      walk = slash == 0 ? "/" : walk.substr(0, slash);
    }
    if (!env->IsDirectory(levels.front().dir)) continue;
    const std::string pressure = levels.front().dir + "/memory.pressure";
    auto source = std::make_unique<CgroupSource>(env, version, levels,
                                                 env->FileExists(pressure) ? pressure : "");
    bool limited = false;
    for (const CgroupLevel& level : levels) {
      FQ_ASSIGN_OR_RETURN(std::optional<uint64_t> limit, source->Limit(level));
      if (limit.has_value()) limited = true;
    }
    // Without a limit here, a hybrid system may still limit through v1's
    // memory controller.
    if (!limited) continue;
    FQ_RETURN_IF_ERROR(source->Read().status());
    return std::unique_ptr<MemorySource>(std::move(source));
  }
  return std::unique_ptr<MemorySource>();
}

Result<std::vector<std::unique_ptr<MemorySource>>> OpenSystemSources(Env* env,
                                                                     const std::string& root) {
  std::vector<std::unique_ptr<MemorySource>> sources;
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<MemorySource> meminfo, OpenMeminfoSource(env, root));
  sources.push_back(std::move(meminfo));
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<MemorySource> cgroup, OpenCgroupSource(env, root));
  if (cgroup != nullptr) sources.push_back(std::move(cgroup));
  return sources;
}

}  // namespace fqpack::runtime
