// What `fqpack ppl` and `fqpack run` share: which model to run (a QM of the
// store, or a .fqpack file under a memory budget, runtime/elastic.h; or a
// pair of QMs switched per token, runtime/dynamic.h), resolved and opened,
// with its tokenizer and context size.
#ifndef FQPACK_CLI_MODEL_RESOLUTION_H_
#define FQPACK_CLI_MODEL_RESOLUTION_H_

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cli/app.h"
#include "runtime/dynamic.h"
#include "runtime/elastic.h"
#include "runtime/memory_governor.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "schema/status.h"
#include "schema/thread_pool.h"
#include "store/store.h"

namespace fqpack::cli {

// Which model to run: a QM of a model in the store, or a .fqpack file, run
// elastically: one EQM (--eqm), the largest that fits a budget (--budget), a
// budget that changes as it runs (--budget-trace), else the largest.
struct ModelSourceArgs {
  std::string model;  // --model; may be empty when the store holds one model
  std::string qm;     // --qm
  std::string pack;   // positional: a .fqpack file
  std::string ensemble;
  int eqm = -1;
  std::string budget;        // --budget, with units
  std::string budget_trace;  // --budget-trace FILE
  std::string transitions_json;
  bool static_ladder = false;
  int64_t n_batch = 0;  // -b, packs only

  // The positional pack, -m and --qm; with `elastic` the pack-only options
  // (--eqm, --ensemble, --budget, --budget-trace, --transitions-json,
  // --static-ladder, -b).
  void AddOptions(CLI::App* cmd, bool with_qm, bool elastic = true);
  bool elastic_flags() const {
    return eqm >= 0 || !ensemble.empty() || !budget.empty() || !budget_trace.empty() ||
           !transitions_json.empty() || static_ladder || n_batch > 0;
  }
};

// A resolved source: the manifest to run and what provides its modules.
struct ModelSource {
  std::unique_ptr<store::Store> store;  // owns the ModuleSource below
  store::ModuleSource* modules = nullptr;
  // A QM of the store: its module files, pinned when the manifest was read,
  // so a gc sweeping meanwhile cannot take them away.
  std::shared_ptr<store::PinnedModules> pinned;
  store::ModelManifest manifest;
  std::string display;  // "stories260K/Q4_K_M"
  // A .fqpack: the runtime that holds its levels, model and session.
  std::unique_ptr<runtime::ElasticRuntime> elastic;
  std::vector<runtime::BudgetChange> trace;
  // --budget auto: follows the system's memory (declared after `elastic`,
  // so it stops before the runtime it drives goes away).
  std::unique_ptr<runtime::MemoryGovernor> governor;
};

// `--budget auto[:RESERVE]`: true (and *reserve, 0 for the default) when
// `text` asks for it; InvalidArgument for a bad reserve.
Result<bool> ParseAutoBudget(const std::string& text, uint64_t* reserve);
// Opens a governor for a started runtime and starts its thread, with a note
// on stderr saying what it watches.
Result<std::unique_ptr<runtime::MemoryGovernor>> StartGovernor(Context& ctx,
                                                               runtime::ElasticRuntime* elastic,
                                                               uint64_t reserve);

// What opening a pack needs beyond the arguments.
struct ElasticSetup {
  ThreadPool* pool = nullptr;
  runtime::Workload workload = runtime::Workload::kGenerate;
  int64_t n_ctx = 0;
  int64_t n_batch = 0;
  // --budget auto: start a governor that follows the system (false: the
  // caller runs its own, as the server does).
  bool start_governor = true;
};

// `need_modules` false: only the metadata is wanted (tokenize), so no QM has
// to be chosen.
Result<ModelSource> ResolveModelSource(Context& ctx, const ModelSourceArgs& args, bool need_modules,
                                       const ElasticSetup& setup = {});
Result<std::unique_ptr<runtime::Model>> LoadModel(const ModelSource& src, ThreadPool* pool);
Result<runtime::Tokenizer> TokenizerOf(const store::ModelManifest& manifest);
// -c: 0 means the model's training context. Larger than that is allowed
// with a warning, as llama.cpp allows it (stories260K's GGUF says 128 for a
// model trained at 512).
Result<int64_t> ContextSize(Context& ctx, const runtime::Model& model, int64_t requested);
// Aborted once Ctrl-C was pressed: the per-token and per-chunk callbacks poll it.
Status CheckInterrupt();

// --dynamic hi=LABEL,lo=LABEL [--target-bits B]: per-token precision
// switching between two QMs (runtime/dynamic.h), from the store or a pack.
struct DynamicArgs {
  std::string spec;
  double target_bits = NAN;  // NaN: the target the model was calibrated for

  void AddOptions(CLI::App* cmd);
  bool on() const { return !spec.empty(); }
};

struct DynamicRun {
  std::string hi;
  std::string lo;
  store::DynamicModelInfo info;
  runtime::DynamicPlan plan;
  std::unique_ptr<runtime::Model> model;  // a store's lo QM (a pack's lives in its runtime)
  std::unique_ptr<runtime::DynamicRunner> runner;
  uint64_t lo_bytes = 0;        // the lo QM's weights, resident
  uint64_t resident_bytes = 0;  // lo weights plus the hi copies held next to them
  uint64_t budget = 0;          // --budget, 0: none
};

// The --dynamic flags against the others: InvalidArgument naming the clash.
Status CheckDynamicArgs(const ModelSourceArgs& source, const DynamicArgs& dyn,
                        const std::string& kl_base);
// Opens the pair and its dynamic model, loads the lo QM and holds the hi
// copies of the units that may run hi. Fills *src (the lo QM's manifest; a
// pack's ElasticRuntime at the lo QM, or the store).
Result<DynamicRun> OpenDynamic(Context& ctx, const ModelSourceArgs& args, const DynamicArgs& dargs,
                               ModelSource* src, ThreadPool* pool, int64_t n_ctx);

}  // namespace fqpack::cli

#endif  // FQPACK_CLI_MODEL_RESOLUTION_H_
