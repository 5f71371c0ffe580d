// Crash safety of every command that writes: quantize, search, pack and
// gc --prune (import's loops are in tests/store/crash_test.cc). Each runs
// the library call its command runs (cli/*_commands.cc) in a forked child
// that crashes at every file operation (kill) and at every fsync (power
// cut), and after each crash the parent proves: the store opens and
// verifies, its index is exactly as before the operation or as after it
// (for gc --prune: or between its two transactions), the QMs committed
// before export byte for byte, a pack on disk is either absent or complete,
// and running the operation again ends in the same store as an
// uninterrupted run.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "pack/reader.h"
#include "pack/writer.h"
#include "quantize/pipeline.h"
#include "search/ensemble.h"
#include "search/prune.h"
#include "store/gc.h"
#include "store/gguf_export.h"
#include "tests/search/search_fixture.h"
#include "tests/support/crash_loop.h"
#include "tests/support/store_util.h"

namespace fqpack {
namespace {

using testing::CrashKind;
using testing::CrashLoop;
using testing::CrashLoopResult;
using testing::CrashPoint;

// The store's index as text, timestamps blanked.
std::string Index(const std::string& store_dir) {
  return testing::WithoutTimes(testing::SnapshotStore(store_dir, false));
}

Result<std::unique_ptr<store::Store>> OpenStore(Env* env, const std::string& dir) {
  return store::Store::Open(env, dir + "/store");
}

// Problems with the store in `dir` right after a crash: verify's errors, an
// index that is none of `states` (or not the last one, once the operation
// had returned), a QM in `keep` that no longer exports as its GGUF file
// `dir`/<label>.gguf.
std::string CheckAfterCrash(const std::string& dir, const CrashPoint& p,
                            const std::vector<std::string>& states,
                            const std::vector<std::string>& keep) {
  std::string problems = testing::VerifyErrors(dir + "/store");
  const std::string index = Index(dir + "/store");
  bool known = false;
  for (const std::string& s : states) known = known || index == s;
  if (p.after_op() ? index != states.back() : !known) {
    problems += p.after_op() ? "the operation returned, but its result is not all there\n"
                             : "the index is in none of the states the operation passes through\n";
  }
  auto store = OpenStore(testing::FastEnv(), dir);
  if (!store.ok()) return problems + store.status().ToString() + "\n";
  for (const std::string& label : keep) {
    const std::string out = dir + "/export-" + label + ".gguf";
    Result<store::ExportResult> e = store::ExportQmGguf(store->get(), "tiny", label, out);
    if (!e.ok()) {
      problems += "export " + label + ": " + e.status().ToString() + "\n";
    } else if (*ReadFileBytes(Env::Default(), out) !=
               *ReadFileBytes(Env::Default(), dir + "/" + label + ".gguf")) {
      problems += "QM " + label + " does not export byte for byte\n";
    }
  }
  return problems;
}

// Problems after the operation was run again: verify's errors, or an index
// other than an uninterrupted run's.
std::string CheckAfterRerun(const std::string& dir, const std::string& expected) {
  std::string problems = testing::VerifyErrors(dir + "/store");
  if (Index(dir + "/store") != expected)
    problems += "run again, it does not end where an uninterrupted run does\n";
  return problems;
}

void Report(const char* command, CrashKind kind, const CrashLoopResult& r) {
  EXPECT_TRUE(r.failures.empty()) << r.Summary();
  EXPECT_GT(r.points, 1);
  std::printf("%s: %lld %s points (%lld steps, %lld of them syncs)\n", command,
              static_cast<long long>(r.points), testing::CrashKindName(kind),
              static_cast<long long>(r.steps), static_cast<long long>(r.sync_steps));
}

constexpr char kCalib[] = "calib.txt";

// The store every loop starts from: model "tiny" (one layer) as F32, Q8_0,
// Q5_1, Q4_1 and Q4_0, the GGUF files they came from, and calibration text;
// `searched_` adds the ensemble Q8_0 > Q5_1 > Q4_1 > Q4_0.
class CrashLoops : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    library_ = tmp_->Join("library");
    Env* env = testing::FastEnv();
    ASSERT_TRUE(env->CreateDir(library_).ok());
    ASSERT_TRUE(store::Store::Init(env, library_ + "/store").ok());
    {
      auto st = OpenStore(env, library_);
      ASSERT_TRUE(st.ok());
      for (const auto& [label, type] :
           std::vector<std::pair<std::string, QType>>{{"F32", QType::kF32},
                                                      {"Q8_0", QType::kQ8_0},
                                                      {"Q5_1", QType::kQ5_1},
                                                      {"Q4_1", QType::kQ4_1},
                                                      {"Q4_0", QType::kQ4_0}}) {
        const std::string file = library_ + "/" + label + ".gguf";
        testing::WriteTinyGguf(file, testing::SearchSpec(ToId(type), 1));
        store::ImportOptions opts;
        opts.model = "tiny";
        opts.label = label;
        opts.threads = 1;
        auto r = store::ImportGguf(st->get(), file, opts);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
      }
    }
    const std::string text = testing::RandomText(600, 21);
    ASSERT_TRUE(PublishFile(env, library_ + "/" + kCalib,
                            ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
                    .ok());
    searched_ = tmp_->Join("searched");
    testing::CopyTree(library_, searched_);
    ASSERT_TRUE(Search(env, searched_).ok());
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }

  // The end state of an uninterrupted `op` from `base`.
  static std::string Uninterrupted(const std::string& base,
                                   const std::function<Status(Env*, const std::string&)>& op) {
    testing::TempDir t;
    const std::string dir = t.Join("w");
    testing::CopyTree(base, dir);
    Status s = op(testing::FastEnv(), dir);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return Index(dir + "/store");
  }

  // fqpack quantize --from F32 --types Q8_0 --embed-bits 8 --threads 1
  static Status Quantize(Env* env, const std::string& dir) {
    FQ_ASSIGN_OR_RETURN(auto st, OpenStore(env, dir));
    quantize::QuantizeRequest req;
    req.model = "tiny";
    req.from = "F32";
    req.targets.push_back({ToId(QType::kQ8_0), "Q8_0-rtn"});
    req.threads = 1;
    return quantize::QuantizeModel(st.get(), req).status();
  }

  // fqpack search --up Q8_0 --mid Q5_1,Q4_1 --low Q4_0 --tokens 64 -c 32 --stem 1 --branch 2
  static Status Search(Env* env, const std::string& dir) {
    FQ_ASSIGN_OR_RETURN(auto st, OpenStore(env, dir));
    search::SearchRequest req;
    req.model = "tiny";
    req.up = "Q8_0";
    req.mids = {"Q5_1", "Q4_1"};
    req.low = "Q4_0";
    FQ_ASSIGN_OR_RETURN(req.calib_text, ReadFileBytes(env, dir + "/" + kCalib));
    req.tokens = 64;
    req.n_ctx = 32;
    req.search.stem = 1;
    req.search.branch = 2;
    req.threads = 1;
    return search::SearchEnsemble(st.get(), req).status();
  }

  // fqpack pack --model tiny -o out.fqpack
  static Status Pack(Env* env, const std::string& dir) {
    FQ_ASSIGN_OR_RETURN(auto st, OpenStore(env, dir));
    pack::PackOptions opts;
    opts.model = "tiny";
    return pack::WritePack(st.get(), opts, dir + "/out.fqpack").status();
  }

  // fqpack gc --prune 0.5: the prune (one transaction), then the sweep.
  static Status Prune(Env* env, const std::string& dir) {
    FQ_ASSIGN_OR_RETURN(auto st, OpenStore(env, dir));
    search::PruneRequest req;
    req.model = "tiny";
    req.fraction = 0.5;
    req.threads = 1;
    FQ_RETURN_IF_ERROR(search::PruneEnsemble(st.get(), req).status());
    return store::Sweep(st.get()).status();
  }
  static Status PruneOnly(Env* env, const std::string& dir) {
    FQ_ASSIGN_OR_RETURN(auto st, OpenStore(env, dir));
    search::PruneRequest req;
    req.model = "tiny";
    req.fraction = 0.5;
    req.threads = 1;
    return search::PruneEnsemble(st.get(), req).status();
  }
  static Status SweepOnly(Env* env, const std::string& dir) {
    FQ_ASSIGN_OR_RETURN(auto st, OpenStore(env, dir));
    return store::Sweep(st.get()).status();
  }

  static testing::TempDir* tmp_;
  static std::string library_, searched_;
};

testing::TempDir* CrashLoops::tmp_ = nullptr;
std::string CrashLoops::library_, CrashLoops::searched_;

// Quantize makes one QM: its modules, then one transaction.
class QuantizeCrash : public CrashLoops {
 protected:
  CrashLoop Loop() {
    const std::string before = Index(library_ + "/store");
    const std::string after = Uninterrupted(library_, Quantize);
    EXPECT_NE(before, after);
    CrashLoop loop;
    loop.base = library_;
    loop.op = Quantize;
    loop.check = [before, after](const std::string& dir, const CrashPoint& p) {
      std::string problems = CheckAfterCrash(dir, p, {before, after}, {"F32", "Q8_0"});
      if (Status s = Quantize(testing::FastEnv(), dir); !s.ok())
        return problems + "run again: " + s.ToString();
      return problems + CheckAfterRerun(dir, after);
    };
    return loop;
  }
};

TEST_F(QuantizeCrash, KillAtEveryFileOperation) {
  Report("quantize", CrashKind::kKill, testing::RunCrashLoop(Loop(), CrashKind::kKill));
}

TEST_F(QuantizeCrash, PowerLossAtEveryFsync) {
  Report("quantize", CrashKind::kPowerLoss, testing::RunCrashLoop(Loop(), CrashKind::kPowerLoss));
}

// Search writes the ensemble and its EQMs in one transaction at the end.
// Once that committed, running it again is an error (the name is taken), so
// the rerun is only for a crash before.
class SearchCrash : public CrashLoops {
 protected:
  CrashLoop Loop() {
    const std::string before = Index(library_ + "/store");
    const std::string after = Index(searched_ + "/store");
    CrashLoop loop;
    loop.base = library_;
    loop.op = Search;
    loop.check = [before, after](const std::string& dir, const CrashPoint& p) {
      std::string problems = CheckAfterCrash(dir, p, {before, after}, {"Q8_0", "Q4_0"});
      if (Index(dir + "/store") == before) {
        if (Status s = Search(testing::FastEnv(), dir); !s.ok())
          return problems + "run again: " + s.ToString();
      }
      return problems + CheckAfterRerun(dir, after);
    };
    return loop;
  }
};

TEST_F(SearchCrash, KillAtEveryFileOperation) {
  Report("search", CrashKind::kKill, testing::RunCrashLoop(Loop(), CrashKind::kKill));
}

TEST_F(SearchCrash, PowerLossAtEveryFsync) {
  Report("search", CrashKind::kPowerLoss, testing::RunCrashLoop(Loop(), CrashKind::kPowerLoss));
}

// Pack writes one file (temp, fsync, rename, fsync of the directory) and
// reads the store: the index must not change, and out.fqpack is there
// complete or not at all.
class PackCrash : public CrashLoops {
 protected:
  static std::string CheckPack(const std::string& path, bool must_exist) {
    if (!Env::Default()->FileExists(path)) return must_exist ? "the pack is missing\n" : "";
    Result<pack::PackVerifyReport> v = pack::VerifyPack(Env::Default(), path);
    if (!v.ok()) return "the pack does not open: " + v.status().ToString() + "\n";
    std::string problems;
    for (const std::string& e : v->errors) problems += "pack: " + e + "\n";
    return problems;
  }

  CrashLoop Loop() {
    const std::string index = Index(searched_ + "/store");
    CrashLoop loop;
    loop.base = searched_;
    loop.op = Pack;
    loop.check = [index](const std::string& dir, const CrashPoint& p) {
      std::string problems = CheckAfterCrash(dir, p, {index}, {"Q8_0", "Q4_0"});
      problems += CheckPack(dir + "/out.fqpack", p.after_op());
      if (Status s = Pack(testing::FastEnv(), dir); !s.ok())
        return problems + "run again: " + s.ToString();
      return problems + CheckPack(dir + "/out.fqpack", true) + CheckAfterRerun(dir, index);
    };
    return loop;
  }
};

TEST_F(PackCrash, KillAtEveryFileOperation) {
  Report("pack", CrashKind::kKill, testing::RunCrashLoop(Loop(), CrashKind::kKill));
}

TEST_F(PackCrash, PowerLossAtEveryFsync) {
  Report("pack", CrashKind::kPowerLoss, testing::RunCrashLoop(Loop(), CrashKind::kPowerLoss));
}

// gc --prune commits the prune (QMs partial, the ensemble repaired), then
// the sweep's transaction (rows of unreferenced blobs), then deletes files.
// After a crash the rerun is what a user would do: gc --prune again when
// nothing was pruned, else a plain gc.
class PruneCrash : public CrashLoops {
 protected:
  CrashLoop Loop() {
    const std::string before = Index(searched_ + "/store");
    const std::string pruned = Uninterrupted(searched_, PruneOnly);
    const std::string after = Uninterrupted(searched_, Prune);
    EXPECT_NE(before, pruned);
    EXPECT_NE(pruned, after);
    CrashLoop loop;
    loop.base = searched_;
    loop.op = Prune;
    loop.check = [before, pruned, after](const std::string& dir, const CrashPoint& p) {
      std::string problems = CheckAfterCrash(dir, p, {before, pruned, after}, {"Q8_0", "Q4_0"});
      Status s = Index(dir + "/store") == before ? Prune(testing::FastEnv(), dir)
                                                 : SweepOnly(testing::FastEnv(), dir);
      if (!s.ok()) return problems + "run again: " + s.ToString();
      problems += CheckAfterRerun(dir, after);
      // Every blob file the sweep left has a row, and every row its file.
      auto st = OpenStore(testing::FastEnv(), dir);
      if (!st.ok()) return problems + st.status().ToString();
      auto files = (*st)->blobs()->ListFiles();
      auto stats = (*st)->Stats();
      if (!files.ok() || !stats.ok() || files->size() != stats->blobs)
        problems += "blob files and rows differ\n";
      return problems;
    };
    return loop;
  }
};

TEST_F(PruneCrash, KillAtEveryFileOperation) {
  Report("gc --prune", CrashKind::kKill, testing::RunCrashLoop(Loop(), CrashKind::kKill));
}

TEST_F(PruneCrash, PowerLossAtEveryFsync) {
  Report("gc --prune", CrashKind::kPowerLoss, testing::RunCrashLoop(Loop(), CrashKind::kPowerLoss));
}

}  // namespace
}  // namespace fqpack
