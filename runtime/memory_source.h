// Where the memory figure comes from on Linux: /proc/meminfo, the process's
// cgroup (v2 or v1, with the tightest limit on its path to the root), and PSI
// stall averages. Every read goes through Env::ReadSmallFile under a root
// directory ("" for the real file system), so tests build a fake /proc and
// cgroup tree in a temp directory and point the sources at it.
//
// What each source calls available:
// - meminfo: MemAvailable (the kernel's estimate of what can be allocated
//   without swapping: free memory plus reclaimable page cache and slab).
//   Clean file pages count as available, this process's mapped modules too.
// - cgroup v2, for each ancestor with a limit: min(memory.max, memory.high)
//   minus the working set, memory.current less `inactive_file` of
//   memory.stat (page cache the kernel reclaims first; memory.current alone
//   counts all of it as used, and a budget from it would shrink for no
//   reason as the process reads files).
// - cgroup v1: memory.limit_in_bytes (a value near 2^63 means none) minus
//   memory.usage_in_bytes less `total_inactive_file` (memory.stat).
// A cgroup's working set counts this process's mapped module pages (active
// file pages charged to it); MemoryReading::counts_own_mapped says so.
//
// Thread-safety: a source is used by one thread at a time.
#ifndef FQPACK_RUNTIME_MEMORY_SOURCE_H_
#define FQPACK_RUNTIME_MEMORY_SOURCE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/env.h"
#include "schema/status.h"

namespace fqpack::runtime {

// PSI averages of one pressure file (percent of wall time stalled).
struct PressureStall {
  double some_avg10 = 0;
  double full_avg10 = 0;
};

struct MemoryReading {
  std::string source;      // "meminfo", "cgroup2:/user.slice/x", "cgroup1:/x"
  uint64_t available = 0;  // bytes this process could still take
  uint64_t total = 0;      // MemTotal, or the limit that binds
  bool counts_own_mapped = false;  // our mapped module pages are counted as used
  std::optional<PressureStall> pressure;  // when the source has a pressure file
};

class MemorySource {
 public:
  virtual ~MemorySource() = default;
  virtual const std::string& name() const = 0;
  virtual Result<MemoryReading> Read() = 0;
  // Its PSI file ("" when none), for a trigger.
  virtual const std::string& pressure_path() const = 0;
};

// Parsers, exposed for tests. `name` prefixes errors (Corruption "<name>:
// no MemAvailable line").
struct Meminfo {
  uint64_t total = 0;
  uint64_t available = 0;
};
Result<Meminfo> ParseMeminfo(std::string_view text, const std::string& name);
Result<PressureStall> ParsePressure(std::string_view text, const std::string& name);
// The value of `key` in a "key value" file such as memory.stat.
Result<uint64_t> ParseStatValue(std::string_view text, std::string_view key,
                                const std::string& name);

// /proc/meminfo under `root`; its PSI file is /proc/pressure/memory when present.
Result<std::unique_ptr<MemorySource>> OpenMeminfoSource(Env* env, const std::string& root);

// The process's memory cgroup from /proc/self/cgroup and /proc/self/mountinfo
// under `root`: v2 when the unified hierarchy holds the process, else v1's
// memory controller. nullptr (not an error) when there is no cgroup
// file system or no limit anywhere on the path.
Result<std::unique_ptr<MemorySource>> OpenCgroupSource(Env* env, const std::string& root);

// Every source of this system: meminfo, then the cgroup when it limits.
Result<std::vector<std::unique_ptr<MemorySource>>> OpenSystemSources(Env* env,
                                                                     const std::string& root);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_MEMORY_SOURCE_H_
