// Crash loops: an operation runs in a forked child whose FaultInjectionEnv
// crashes at its Nth step, for every N, and the parent checks what the crash
// left after each (leveldb's fault_injection_test, SQLite's crash tests).
//
// Two kinds of crash:
//   kKill       the child _exits at the step: a kill -9, the page cache
//               survives, every write made so far is there. Every step is a
//               crash point.
//   kPowerLoss  the child drops everything not yet durable, then _exits
//               (FaultInjectionEnv::DropUnsyncedData). Only a sync changes
//               what is durable, so the crash points are every sync step,
//               plus one right after the operation returned: what it
//               reported done must have been durable.
//
// The child runs with real fsyncs off (the durability model decides what a
// power cut keeps), so a loop costs forks and copies, not disk flushes.
//
// $FQ_CRASH_STRIDE=k runs every k-th crash point only (the last ones
// always), for slow builds such as the sanitizers'.
#ifndef FQPACK_TESTS_SUPPORT_CRASH_LOOP_H_
#define FQPACK_TESTS_SUPPORT_CRASH_LOOP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "schema/env.h"
#include "tests/support/test_util.h"

namespace fqpack::testing {

enum class CrashKind { kKill, kPowerLoss };
const char* CrashKindName(CrashKind kind);

struct CrashPoint {
  CrashKind kind = CrashKind::kKill;
  // The step (kKill) or sync step (kPowerLoss) at which the child crashed;
  // 0: after the operation had returned OK (kPowerLoss), or no crash at all
  // (kKill: the dry run).
  int64_t at = 0;
  std::string what;  // what that step was doing, from the dry run
  bool after_op() const { return at == 0; }
  // "power-loss at sync step 3 of 7 (fsync /.../index.sqlite-wal)", for messages.
  std::string ToString() const;
};

struct CrashLoop {
  // The directory every run starts from (a store, and whatever else the
  // operation reads); copied afresh for each crash point.
  std::string base;
  // The operation, run in the child on the copy `dir` through `env`.
  std::function<Status(Env* env, const std::string& dir)> op;
  // Checks the copy after a crash at `point` (in the parent): "" when all is
  // well, else what is wrong. Also called on the dry run's result.
  std::function<std::string(const std::string& dir, const CrashPoint& point)> check;
  // Changes the child's Env before the run (e.g. DropFileSyncs).
  std::function<void(FaultInjectionEnv* env)> configure;
};

struct CrashLoopResult {
  bool dry_run_ok = false;  // the operation succeeded without a fault
  int64_t points = 0;       // crash points run
  int64_t steps = 0;        // steps of the operation (dry run)
  int64_t sync_steps = 0;   // of which sync steps
  // "<point>: <problem>" for each point whose check failed, or where the
  // child did not crash as the dry run said it would.
  std::vector<std::string> failures;
  // The first few failures, one per line.
  std::string Summary() const;
};

// The dry run (counting steps, then checked as a completed run), then a
// crash at every point of `kind`. The caller judges the failures.
CrashLoopResult RunCrashLoop(const CrashLoop& loop, CrashKind kind);

// $FQ_CRASH_STRIDE, default 1.
int64_t CrashStride();

// Copies the directory tree `from` to `to` (which must not exist).
void CopyTree(const std::string& from, const std::string& to);
// Makes `to` a copy of `from` again, creating and removing only what
// differs: a store's 256 fan-out directories are made once per loop, not
// once per crash point (mkdir is the slow part of a copy).
void ResetTree(const std::string& from, const std::string& to);

// An Env for a test's own reruns and set-up: the POSIX Env without real
// fsyncs (nothing here needs to survive a power cut of the test machine).
Env* FastEnv();

// `snapshot` with every ISO-8601 timestamp ("2026-01-02T03:04:05Z") blanked,
// so that runs of the same operation at different times compare equal.
std::string WithoutTimes(std::string snapshot);

}  // namespace fqpack::testing

#endif  // FQPACK_TESTS_SUPPORT_CRASH_LOOP_H_
