// Dynamic precision switching per token (the second FlexQuant paper, arXiv
// 2506.12024): two QMs of one model, hi and lo, are resident for the parts
// of the model that switch, and every token runs the most sensitive of them
// at hi precision only when the model is unsure.
//
// Units. A unit is every slot of one transformer block ("blk.3": its
// attention and feed-forward matrices), or one slot outside the blocks (the
// output matrix, the token embedding), counting only slots whose hi and lo
// modules differ. A unit runs hi or lo as a whole.
//
// The precision requirement model (stored as schema/store.sql's
// dynamic_model and dynamic_unit rows), calibrated offline on a text:
// - Sensitivity s_u: the mean KL(P_hi || P_u) in nats over every position
//   of the calibration chunks, where P_hi is the all-hi next-token
//   distribution and P_u the one with only unit u lo. Units are ranked by
//   s_u, most sensitive first (rank 0).
// - Entropy sample: H_t, the entropy (nats) of the all-hi distribution at
//   each calibration position t that has a successor in its chunk; the first
//   position of each chunk is a start (no previous distribution).
// - Per unit a threshold T_u, non-decreasing with rank. For a token whose
//   previous distribution has entropy H, the units with T_u <= H run hi:
//   the k(H) = #{u : T_u <= H} most sensitive ones, so k is non-decreasing
//   in H. A start counts as H = +inf: it runs every unit whose threshold is
//   finite (all of them unless the target leaves some never-hi).
// - Placing the thresholds for a target of B bits per weight: unit u runs
//   hi on a fraction f_u(c) = min(1, c * s_u / s_0) of the sample (more
//   sensitive units more often), T_u = the entropy above which that
//   fraction of the sample lies (+inf when it rounds to none, 0 when it is
//   all). The bits per weight of a token with k hi units are
//   b(k) = 8 * (lo_bytes + sum of extra_bytes over the first k units) /
//   n_weights, the QMs' own bits/weight at k = 0 and k = all. c is found by
//   bisection as the largest c whose average of b(k) over the calibration
//   positions (starts at H = +inf) does not exceed B. B = lo bits gives
//   c = 0 (every unit always lo: exactly the lo QM); B = hi bits gives every
//   threshold 0 (exactly the hi QM).
// The entropy sample is stored, so a run may ask for another target
// without calibrating again. Calibration uses the all-hi entropies; at run
// time the entropy of the dynamic run's own previous distribution decides.
//
// "Bits per weight read per token" is b(k) of the token: like a QM's
// bits/weight, over every weight of the model.
//
// Thread-safety: the functions are reentrant. A DynamicRunner belongs to the
// thread that runs its model's forward passes.
#ifndef FQPACK_RUNTIME_DYNAMIC_H_
#define FQPACK_RUNTIME_DYNAMIC_H_

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/llama.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/residency.h"
#include "schema/thread_pool.h"
#include "store/catalog.h"
#include "store/module_source.h"

namespace fqpack::runtime {

// Entropy of softmax(logits) in nats (in double, max subtracted).
double LogitsEntropy(std::span<const float> logits);

// The thresholds of a dynamic model for one target.
struct DynamicPlan {
  double target_bits = 0;
  std::vector<double> thresholds;  // per unit rank, non-decreasing; +inf: never hi
  double calib_bits = 0;           // average bits/weight on the calibration sample
  int max_hi = 0;                  // units with a finite threshold: what a start runs hi
  double scale = 0;                // c of the file comment
};

// b(k): bits per weight with the k most sensitive units hi.
double BitsWithHiUnits(const store::DynamicModelInfo& m, int k);
// k(H) for `thresholds` (non-decreasing); H = +inf for a start.
int HiUnitsForEntropy(std::span<const double> thresholds, double entropy);
// InvalidArgument unless lo bits <= target <= hi bits (naming both).
Status CheckTargetBits(const store::DynamicModelInfo& m, double target_bits);
// Places the thresholds for `target_bits` (CheckTargetBits first).
Result<DynamicPlan> PlanForTarget(const store::DynamicModelInfo& m, double target_bits);
// The plan the model was stored with (its thresholds and target).
DynamicPlan StoredPlan(const store::DynamicModelInfo& m);

// Under a memory budget the hi copies must fit next to the lo QM: keeps the
// thresholds of the most sensitive units while their hi modules add up to
// at most `hi_bytes`, and makes the rest never run hi (max_hi and
// calib_bits follow). With room for none it is the lo QM.
void CapPlanHiBytes(const store::DynamicModelInfo& m, const store::ModelManifest& hi,
                    const store::ModelManifest& lo, uint64_t hi_bytes, DynamicPlan* plan);
// Bytes of the hi modules of unit `name` (its slots whose modules differ).
uint64_t UnitHiBytes(const store::ModelManifest& hi, const store::ModelManifest& lo,
                     const std::string& name);

// The unit a slot belongs to: "blk.<layer>" inside the blocks, else the
// tensor name.
std::string DynamicUnitName(const store::ManifestSlot& slot);

// InvalidArgument unless `hi` and `lo` are QMs of the same model, with the
// same slots, and hi has more bytes of weights than lo.
Status CheckDynamicPair(const store::ModelManifest& hi, const store::ModelManifest& lo);

struct DynamicCalibrationOptions {
  int64_t n_ctx = 0;          // tokens per chunk; at least 4
  int32_t bos = -1;           // first token of every chunk; -1 keeps the text's
  int64_t max_tokens = 8192;  // whole chunks up to this many tokens
  double target_bits = NAN;   // NaN: halfway between lo and hi bits
  std::function<Status(int64_t done, int64_t total)> progress;  // per chunk
};

// Measures the units' sensitivities and the entropy sample on `tokens`,
// ranks the units and places the thresholds for the target. The result has
// the model's numbers and units; ids, labels and the calibration text's hash
// are the caller's. InvalidArgument for a bad pair (CheckDynamicPair), a
// target out of range, or a text shorter than one chunk.
Result<store::DynamicModelInfo> CalibrateDynamic(
    const store::ModelManifest& hi, const store::ModelManifest& lo, store::ModuleSource* source,
    std::span<const int32_t> tokens, const DynamicCalibrationOptions& options, ThreadPool* pool);

// What a dynamic run did.
struct DynamicStats {
  int64_t tokens = 0;
  double bits_sum = 0;                   // sum over tokens of b(k)
  std::vector<int64_t> hi_units_tokens;  // [k]: tokens that ran k units hi, k = 0..units
  int64_t binds = 0;                     // slots rebound (no I/O)

  double mean_bits() const { return tokens == 0 ? 0 : bits_sum / static_cast<double>(tokens); }
  // Mean over tokens of k / units.
  double mean_hi_share() const;
};

// Chooses each token's precision and binds the units' slots to their hi or
// lo copy, which are both resident: the model runs the lo QM, and the hi
// modules of every unit that can run hi (a finite threshold) are held next
// to it. The model must not be read while BeforeToken runs.
class DynamicRunner {
 public:
  // Over `model`, loaded from `lo`; the hi modules are loaded from `source`.
  static Result<std::unique_ptr<DynamicRunner>> OverModel(
      Model* model, const store::ModelManifest& hi, const store::ModelManifest& lo,
      store::ModuleSource* source, const store::DynamicModelInfo& m, const DynamicPlan& plan);
  // Over a residency manager whose level is the lo QM: the hi copies are
  // held with ResidencyManager::HoldCopy and bound with UseCopy.
  static Result<std::unique_ptr<DynamicRunner>> OverResidency(ResidencyManager* residency,
                                                              const store::ModelManifest& hi,
                                                              const store::ModelManifest& lo,
                                                              const store::DynamicModelInfo& m,
                                                              const DynamicPlan& plan);
  ~DynamicRunner();

  // Binds every unit for the next token from the previous token's logits
  // (empty: there is none, a start) and counts the token in stats().
  Status BeforeToken(std::span<const float> previous_logits);

  const DynamicStats& stats() const { return stats_; }
  void ResetStats();
  const DynamicPlan& plan() const { return plan_; }
  int units() const { return static_cast<int>(units_.size()); }
  // Bytes of the hi modules held next to the lo QM.
  uint64_t hi_copy_bytes() const { return hi_copy_bytes_; }

 private:
  struct SlotCopies {
    int idx = 0;
    store::ModuleKey hi_key, lo_key;
    store::ModuleData hi_data, lo_data;  // OverModel only
    store::ModuleDesc hi_desc, lo_desc;
  };
  DynamicRunner() = default;
  static Result<std::unique_ptr<DynamicRunner>> Build(const store::ModelManifest& hi,
                                                      const store::ModelManifest& lo,
                                                      const store::DynamicModelInfo& m,
                                                      const DynamicPlan& plan);
  Status Bind(int unit, bool hi);

  Model* model_ = nullptr;                 // OverModel
  ResidencyManager* residency_ = nullptr;  // OverResidency
  DynamicPlan plan_;
  std::vector<std::vector<SlotCopies>> units_;  // by rank
  std::vector<bool> hi_;                        // per unit: bound to hi now
  std::vector<double> bits_;                    // b(k), k = 0..units
  uint64_t hi_copy_bytes_ = 0;
  DynamicStats stats_;
};

// llama.cpp's perplexity (runtime/perplexity.h: same chunks, same scored
// half) with a precision decision before every position: each chunk is
// evaluated a token at a time on `session` (whose model the runner drives),
// the first position of a chunk as a start. With a plan that never switches
// it equals runtime::Perplexity.
Result<PerplexityResult> DynamicPerplexity(Session* session, DynamicRunner* runner,
                                           std::span<const int32_t> tokens,
                                           const PerplexityOptions& options);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_DYNAMIC_H_
