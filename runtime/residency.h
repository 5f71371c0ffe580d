// The residency manager: which modules of a .fqpack are in memory, and how
// that set follows a memory budget.
//
// A pack holds several runnable configurations of one model, here called
// levels: the EQMs of an ensemble (step 0 = QM(n_up) down to QM(n_low)), or,
// for a pack without ensembles (or a static-ladder baseline), its whole QMs.
// Each level is one module per slot; its footprint is the bytes of those
// modules. A budget covers weights plus a fixed overhead (KV cache, scratch
// of the forward pass; EstimateOverhead), so the level for a budget is the
// largest footprint <= budget - overhead (ties: the lower step, which the
// search judged better).
//
// A transition changes only the slots whose module differs, one slot at a
// time, between tokens (nothing reads the model meanwhile): the new module is
// loaded (a raw payload is mapped in place, in a mapping of its own whose
// pages are faulted in at once; a zstd payload is decoded by the PackReader
// into memory of its own, and the compressed pages handed back), bound with
// Model::SetSlot, and the old one released (unmapped, or its buffer freed)
// as soon as no slot uses it. A transition never holds two whole models.
// Each module is verified against its key the first time it is loaded.
//
// Peak memory during a transition, in accounted bytes (module bytes held):
// - Raw (mapped) payloads: never above max(start, end). Going down, memory
//   only falls slot by slot: the slots that free the most go first, and an
//   old module is released before its replacement is loaded whenever both
//   would not fit under the start. Going up, it rises slot by slot to the end.
// - Decoded (zstd) payloads: a decoded old module can only be freed once its
//   slot points at the replacement, so that slot briefly holds both. Such
//   slots go after the mapped ones, smallest replacement first; the peak is
//   at most max(start, end) plus one module, and stays within max(start,
//   end) once earlier swaps freed as much as the next replacement takes.
// TransitionRecord::peak_bytes reports the peak of each transition; packs
// meant to follow a budget closely are best written with `--codec raw`
// (also the fastest to swap: no decoding).
//
// Two copies of a slot: the modules of the current level stay resident
// whichever copy a slot runs. HoldCopy keeps a second module for a slot
// resident (counted in resident bytes and against every budget whose level
// does not use it), and UseCopy binds the slot to its level's module or a
// held copy without I/O. Per-token dynamic precision plugs in there: hold the
// low (or high) copy of the layers it switches, and call UseCopy between
// tokens. A transition binds every slot back to its new level's module; the
// copies stay held until DropCopies.
//
// Ownership and thread-safety: the manager owns the Model it drives (and
// through it shares the module bytes); the PackReader must outlive it.
// RequestBudget, MinimumBudget, LevelForBudget and stats() may be called
// from any thread at any time. Everything else, and every forward pass over
// model(), belongs to one owner thread; transitions happen only there, so
// they always fall between tokens.
#ifndef FQPACK_RUNTIME_RESIDENCY_H_
#define FQPACK_RUNTIME_RESIDENCY_H_

#include <atomic>
#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "pack/reader.h"
#include "runtime/model.h"
#include "runtime/os_memory.h"
#include "schema/status.h"
#include "schema/thread_pool.h"

namespace fqpack::runtime {

// Memory a forward pass needs besides the weights.
struct RuntimeOverhead {
  uint64_t kv_cache = 0;  // KvCacheBytes(hp, n_ctx)
  uint64_t scratch = 0;   // activations, logits, converted activations, norm values
  uint64_t total() const { return kv_cache + scratch; }
};

// The overhead of a Session of `n_ctx` positions that evaluates up to
// `n_batch` tokens per Eval and asks for `n_logit_rows` rows of logits at
// once, with `threads` threads. Per evaluated row (at most 512, the largest
// micro-batch): the residual stream and the block's buffers, 5 x n_embd +
// 2 x n_embd_kv + 2 x n_ff + n_rot floats, plus the converted activations of
// one matmul, at most max(n_embd, n_ff) floats; n_logit_rows x n_vocab floats
// of logits; per thread an attention row of n_ctx floats; the float copies of
// the one-dimensional slots (`norm_floats`). An upper bound: buffers grow
// only to what is used.
RuntimeOverhead EstimateOverhead(const Hparams& hp, int64_t n_ctx, int64_t n_batch,
                                 int64_t n_logit_rows, int threads, uint64_t norm_floats);

// One runnable configuration (see the file comment).
struct ResidencyLevel {
  std::string label;       // "eqm:17", or a QM label
  int step = -1;           // EQM step; -1 for a whole QM
  uint64_t footprint = 0;  // bytes of its distinct modules (one two slots share counts once)
  double calib_metric = NAN;
  std::vector<int> modules;  // per slot position: index into modules()
};

struct ResidentModuleInfo {
  store::ModuleKey key;
  store::ModuleDesc desc;
  uint64_t bytes = 0;  // raw size: what it takes in memory
  size_t payload = 0;  // index into PackReader::payloads()
  bool zstd = false;   // decoded into an owned buffer when loaded
};

// What one transition did.
struct TransitionRecord {
  int64_t token = -1;   // token index it happened before; -1 when not generating
  uint64_t budget = 0;  // the budget that asked for it (0: chosen by level)
  int from = -1;        // level indices; -1 for a mixed state after a failure
  int to = -1;
  std::string from_label;
  std::string to_label;
  int modules_swapped = 0;  // slots whose module changed
  uint64_t bytes_in = 0;    // bytes of modules made resident
  uint64_t bytes_out = 0;   // bytes of modules released
  uint64_t bytes_read = 0;  // bytes read from the pack (stored sizes of loaded payloads)
  uint64_t resident_before = 0;
  uint64_t resident_after = 0;
  uint64_t peak_bytes = 0;  // highest accounted resident bytes during it
  double seconds = 0;
  double finished_at = 0;  // wall clock when it finished, seconds since the Unix epoch
};

struct ResidencyStats {
  int level = -1;
  std::string label;
  int step = -1;
  uint64_t footprint = 0;       // of the current level
  uint64_t resident_bytes = 0;  // module bytes held (the level plus extra copies)
  uint64_t owned_bytes = 0;     // of which in decoded buffers (the rest is mapped)
  uint64_t overhead_bytes = 0;
  uint64_t budget = 0;      // last budget applied; 0 when a level was chosen directly
  int64_t transitions = 0;  // transitions that changed at least one slot
  int64_t modules_swapped = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_read = 0;
  double transition_seconds = 0;
  uint64_t max_peak_bytes = 0;  // highest peak of any transition (or the initial load)
};

struct ResidencyOptions {
  std::string ensemble;   // "" = the pack's newest ensemble
  bool qms_only = false;  // levels are the pack's whole QMs (also when it has no ensemble)
  bool prefault = true;   // fault a mapped module's pages in when loading it
};

class ResidencyManager {
 public:
  // Reads the levels from the pack's index and validates the model's
  // manifest. NotFound for an unknown ensemble; InvalidArgument for a pack
  // with nothing runnable.
  static Result<std::unique_ptr<ResidencyManager>> Open(pack::PackReader* pack,
                                                        const ResidencyOptions& options);
  ~ResidencyManager();
  ResidencyManager(const ResidencyManager&) = delete;
  ResidencyManager& operator=(const ResidencyManager&) = delete;

  const Hparams& hparams() const { return hp_; }
  // The manifest of level 0 (metadata and slot names; the modules differ per level).
  const store::ModelManifest& manifest() const { return manifest_; }
  const std::string& ensemble_name() const { return ensemble_name_; }  // "" for QMs
  bool qms_only() const { return qms_only_; }
  const std::vector<ResidencyLevel>& levels() const { return levels_; }
  const std::vector<ResidentModuleInfo>& modules() const { return modules_; }
  // Float copies the model keeps of its one-dimensional slots (for EstimateOverhead).
  uint64_t norm_floats() const { return norm_floats_; }

  // Bytes counted against every budget besides the modules. Set before Start.
  void set_overhead(uint64_t bytes) { overhead_ = bytes; }
  uint64_t overhead() const { return overhead_; }

  // Level index of EQM `step`, or of QM `label`: InvalidArgument naming the
  // range (or the labels) when there is none.
  Result<int> LevelOfStep(int step) const;
  Result<int> LevelOfLabel(const std::string& label) const;
  // The smallest budget any level fits in (its footprint plus the overhead
  // and held copies).
  uint64_t MinimumBudget() const;
  // The level for `budget`; InvalidArgument giving the minimum when none fits.
  Result<int> LevelForBudget(uint64_t budget) const;

  // Loads `level` into a new Model (modules in parallel on `pool`).
  Status Start(int level, ThreadPool* pool = nullptr);
  bool started() const { return model_ != nullptr; }
  Model* model() { return model_.get(); }
  int level() const { return level_; }

  // Moves to `level` (owner thread, between tokens). On failure the slots
  // changed so far keep their new modules, level() becomes -1 (a mixed
  // state that still runs), and the next transition starts from there.
  Result<TransitionRecord> TransitionTo(int level);
  // LevelForBudget, then TransitionTo.
  Result<TransitionRecord> SetBudget(uint64_t budget);

  // Any thread: asks for `budget` at the owner's next ApplyPendingBudget.
  // InvalidArgument (giving the minimum) when no level fits; nothing changes then.
  Status RequestBudget(uint64_t budget);
  bool has_pending_budget() const { return pending_.load() != 0; }
  // Owner thread: applies the last requested budget, if any.
  Result<std::optional<TransitionRecord>> ApplyPendingBudget();

  // Second copies (dynamic precision; see the file comment). HoldCopy
  // makes `key` (any module of the pack with the slot's shape) resident for
  // slot `slot_idx` without binding it; UseCopy binds the slot to its level's
  // module or a copy held for it, with no I/O; DropCopies binds slots back to
  // their level's modules and releases every held copy.
  Status HoldCopy(int slot_idx, const store::ModuleKey& key);
  Status UseCopy(int slot_idx, const store::ModuleKey& key);
  void DropCopies();
  uint64_t copy_bytes() const;  // held copies outside the current binding

  // Accounted bytes of the modules held now.
  uint64_t resident_bytes() const { return resident_bytes_; }
  // Bytes of resident modules that live in owned (decoded) buffers.
  uint64_t owned_bytes() const { return owned_bytes_; }
  // Bytes of the raw modules' mappings the kernel has mapped into this
  // process now (/proc/self/pagemap): the measured side of resident_bytes().
  Result<uint64_t> MappedPresentBytes() const;
  ResidencyStats stats() const;

 private:
  class Region;
  class StartSource;
  struct Resident {
    store::ModuleData data;
    std::shared_ptr<Region> region;  // a raw module's own mapping
    int refs = 0;                    // the level's slots plus held copies
    bool present = false;            // its bytes are in memory (accounted)
  };

  ResidencyManager() = default;
  // The module table index of `key`, adding the pack's module when new.
  Result<int> ModuleIndex(const store::ModuleKey& key);
  // Adds a reference to module `m`, loading it when it is not present.
  Status Acquire(int m, TransitionRecord* rec);
  // Drops a reference; at zero releases the bytes.
  void Unref(int m, TransitionRecord* rec);
  // Releases the bytes of `m` (pages or buffer) and un-accounts them.
  void Drop(int m, TransitionRecord* rec);
  // A module's bytes: a raw payload mapped on its own (verified the first
  // time), a zstd payload decoded by the reader. Thread-safe for distinct m.
  Result<store::ModuleData> LoadModule(int m, std::shared_ptr<Region>* region) const;
  Status Bind(int position, int m);
  uint64_t ExtraCopyBytes(int level) const;
  void Account(int64_t delta, TransitionRecord* rec);
  void PublishStats();

  pack::PackReader* pack_ = nullptr;
  ResidencyOptions options_;
  Hparams hp_;
  store::ModelManifest manifest_;
  std::string ensemble_name_;
  bool qms_only_ = false;
  std::vector<ResidencyLevel> levels_;
  std::vector<ResidentModuleInfo> modules_;
  std::unordered_map<store::ModuleKey, int, store::ModuleKeyHash> module_of_key_;
  std::unordered_map<store::ModuleKey, size_t, store::ModuleKeyHash> payload_of_key_;
  uint64_t norm_floats_ = 0;
  size_t page_size_ = 4096;
  int fd_ = -1;  // the pack file, for the raw modules' own mappings
  mutable std::deque<std::atomic<bool>> verified_;  // per module: its key was checked

  // Owner-thread state.
  std::unique_ptr<Model> model_;
  std::vector<Resident> resident_;  // parallel to modules_
  // Per slot position: the module the level part holds (one reference
  // each), and the module the model runs, which is that one or a held copy.
  std::vector<int> held_;
  std::vector<int> bound_;
  std::vector<int> slot_idx_;                // per slot position: manifest idx
  std::vector<std::pair<int, int>> copies_;  // (slot position, module) held copies
  int level_ = -1;
  uint64_t overhead_ = 0;
  uint64_t resident_bytes_ = 0;
  uint64_t owned_bytes_ = 0;
  uint64_t budget_ = 0;
  ResidencyStats totals_;

  std::atomic<uint64_t> pending_{0};  // 0: none
  // Guards what other threads read: the published stats and a snapshot of
  // the held copies, (module, bytes), for budget decisions.
  mutable std::mutex stats_mu_;
  ResidencyStats published_;
  std::vector<std::pair<int, uint64_t>> copy_snapshot_;
};

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_RESIDENCY_H_
