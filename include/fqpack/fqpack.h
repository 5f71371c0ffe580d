// fqpack for applications: run a .fqpack under a memory budget that may
// change at any moment, from any thread.
//
//   auto model = fqpack::ElasticModel::Open("model.fqpack");
//   if (!model.ok()) { /* model.status().message() says why */ }
//   (*model)->SetBudget(600'000);  // bytes: weights + KV cache + scratch
//   auto text = (*model)->Generate({.prompt = "Once upon a time", .max_tokens = 100},
//                                  [](std::string_view piece) { fputs(...); return true; });
//   fqpack::ElasticStats s = (*model)->Stats();  // current EQM, resident bytes, transitions
//
// A budget picks the largest EQM of the pack's ensemble whose weights fit
// after the KV cache and scratch; changing it swaps only the modules that
// differ, between two tokens. Errors are fqpack::Status values
// (schema/status.h): InvalidArgument for a bad request or a budget below the
// smallest EQM (the message gives the minimum), Corruption for a damaged
// file, NotFound or IOError from the file system.
//
// The budget from the device. FollowSystemMemory (Linux, Android with
// /proc) reads MemAvailable, the process's cgroup and PSI itself and sets the
// budget as they change; FollowHostReports reads nothing and waits for the
// host app to pass on what its platform says, one call per kind of signal:
//
//   Android   ComponentCallbacks2.onTrimMemory(level)  -> ReportAndroidTrimLevel(level)
//             (ActivityManager.MemoryInfo.availMem       -> ReportAvailableBytes)
//   iOS       os_proc_available_memory()               -> ReportAvailableBytes(bytes)
//             UIApplicationDidReceiveMemoryWarning     -> ReportPressure(kModerate)
//   macOS     DISPATCH_SOURCE_TYPE_MEMORYPRESSURE      ->
//   ReportPressure(kNormal/kModerate/kCritical)
//             (DISPATCH_MEMORYPRESSURE_NORMAL / WARN / CRITICAL)
//
// Either way a drop in available memory moves to a smaller EQM at once
// (between two tokens, or right away when idle); more memory moves up only
// after it has lasted two seconds and with 10% to spare, so a noisy signal
// does not swap back and forth. Moderate pressure steps down about 20% per
// two seconds while it lasts; critical pressure goes to the smallest EQM.
// `reserve` bytes are left to the rest of the system (0: 10% of RAM or of
// the cgroup's limit, between 64 MiB and 1 GiB). SetBudget stops following.
//
// Ownership and thread-safety: Open returns the model's only owner; it maps
// the file until destroyed. SetBudget, MinimumBudget, Stats and Transitions
// may be called from any thread at any time, also while another thread is
// inside Generate or Perplexity: a budget set then takes effect before the
// next token (or chunk), one set while the model is idle at once. Generate
// and Perplexity run one at a time (concurrent calls wait for each other).
#ifndef FQPACK_INCLUDE_FQPACK_FQPACK_H_
#define FQPACK_INCLUDE_FQPACK_FQPACK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"

namespace fqpack {

struct OpenOptions {
  std::string ensemble;  // "" = the pack's newest ensemble
  int64_t context = 0;   // context length in tokens; 0 = the model's training context
  int threads = 0;       // 0 = one per core
  uint64_t budget = 0;   // starting budget in bytes; 0 = the largest EQM
  int eqm = -1;          // start with this EQM (step) instead
  bool evaluation =
      false;  // size the scratch for Perplexity (half a context of logits) rather than generation
};

enum class MemoryPressure { kNormal, kModerate, kCritical };

// What FollowSystemMemory / FollowHostReports see now.
struct MemoryStatus {
  bool following = false;
  std::string source;      // "meminfo", "cgroup2:/x", "cgroup1:/x", "host"
  uint64_t available = 0;  // bytes the source says are left
  uint64_t reserve = 0;
  uint64_t budget = 0;  // the budget that follows from them
  MemoryPressure pressure = MemoryPressure::kNormal;
};

struct GenerateRequest {
  std::string prompt;  // "" starts from BOS alone
  // -1: until the end of the text or a full context; a limit goes on past a
  // full context, dropping the oldest half of it after the first token.
  int64_t max_tokens = 128;
  float temperature = 0.8f;  // 0 = greedy
  float top_p = 0.95f;
  uint64_t seed = 0;
};

struct TransitionInfo {
  int64_t token = -1;  // generated tokens before it happened (-1: while idle)
  std::string from;    // "eqm:3"
  std::string to;
  int modules_swapped = 0;
  uint64_t bytes_read = 0;
  double milliseconds = 0;
};

struct ElasticStats {
  std::string eqm;              // current EQM ("eqm:17"), or QM label
  int step = -1;                // its step; -1 for a QM
  int levels = 0;               // EQMs to choose from
  uint64_t budget = 0;          // last budget applied; 0 when none was set
  uint64_t weight_bytes = 0;    // module bytes resident now
  uint64_t overhead_bytes = 0;  // KV cache + scratch, counted in every budget
  uint64_t minimum_budget = 0;  // the smallest budget accepted
  uint64_t largest_budget = 0;  // the budget the largest EQM needs
  int64_t transitions = 0;
  int64_t modules_swapped = 0;
  uint64_t bytes_read = 0;
  double transition_milliseconds = 0;
};

class ElasticModel {
 public:
  static Result<std::unique_ptr<ElasticModel>> Open(const std::string& path,
                                                    const OpenOptions& options = {});
  ~ElasticModel();
  ElasticModel(const ElasticModel&) = delete;
  ElasticModel& operator=(const ElasticModel&) = delete;

  // Any thread. InvalidArgument (giving the minimum) when no EQM fits; the
  // budget in force stays then.
  Status SetBudget(uint64_t bytes);
  uint64_t MinimumBudget() const;

  // The budget from the device (see the file comment). Either call replaces
  // the other; SetBudget or StopFollowing ends it.
  Status FollowSystemMemory(uint64_t reserve = 0);
  Status FollowHostReports(uint64_t reserve = 0);
  void StopFollowing();
  // Host signals; ignored unless FollowHostReports is on.
  void ReportAvailableBytes(uint64_t bytes);
  void ReportPressure(MemoryPressure level);
  void ReportAndroidTrimLevel(int level);
  MemoryStatus Memory() const;

  // Generates from the prompt; `on_piece` gets each piece of text as it is
  // made and may return false to stop. Returns the whole text.
  Result<std::string> Generate(const GenerateRequest& request,
                               const std::function<bool(std::string_view piece)>& on_piece = {});

  // Perplexity of `text` as llama.cpp's llama-perplexity computes it, in
  // chunks of the context length; budgets apply between chunks.
  Result<double> Perplexity(std::string_view text);

  ElasticStats Stats() const;
  // Every transition since Open, oldest first.
  std::vector<TransitionInfo> Transitions() const;

 private:
  struct Impl;
  explicit ElasticModel(std::unique_ptr<Impl> impl);
  Result<std::string> GenerateLocked(const GenerateRequest& request,
                                     const std::function<bool(std::string_view piece)>& on_piece);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fqpack

#endif  // FQPACK_INCLUDE_FQPACK_FQPACK_H_
