// How the fqpack command talks to people and scripts: exit codes, progress
// on stderr (a bar on a terminal, a line per tenth otherwise), aligned
// tables. Results go to stdout; everything else goes to stderr, so
// `fqpack ... --json | jq` always sees clean JSON.
#ifndef FQPACK_CLI_OUTPUT_H_
#define FQPACK_CLI_OUTPUT_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"

namespace fqpack::cli {

// Exit codes (README, "Exit codes").
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,        // I/O and other failures
  kExitUsage = 2,          // bad command line or argument
  kExitCorrupt = 3,        // corruption found (verify, a damaged input file)
  kExitNotFound = 4,       // no such store, model, QM, file
  kExitNotSupported = 5,   // a version, type or architecture fqpack does not handle
  kExitBusy = 6,           // the store is locked by another process
  kExitInterrupted = 130,  // Ctrl-C
};

int ExitCodeFor(const Status& s);

bool StderrIsTerminal();

// Progress of one long task on stderr. Thread-safe.
class Progress {
 public:
  // `enabled` false makes every call a no-op (--quiet, --json).
  Progress(std::string task, uint64_t total, bool enabled);
  ~Progress();
  void Update(uint64_t done, std::string_view detail = "");
  void Finish(std::string_view summary = "");

 private:
  std::string task_;
  uint64_t total_;
  bool enabled_;
  bool tty_;
  bool finished_ = false;
  int last_tenth_ = -1;
  std::mutex mu_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// A text table with a header row; columns left- or right-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> headers, std::string right_aligned = "");
  void AddRow(std::vector<std::string> cells);
  std::string Render(std::string_view indent = "") const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::string right_;  // one char per column: 'r' right-aligned, anything else left
  std::vector<std::vector<std::string>> rows_;
};

std::string FormatDouble(double v, int decimals);
std::string FormatRatio(double v);  // "1.49x"
std::string FormatSeconds(double s);

}  // namespace fqpack::cli

#endif  // FQPACK_CLI_OUTPUT_H_
