#include "runtime/dynamic.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>

namespace fqpack::runtime {
namespace {

std::string Bits(double b) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4f", b);
  return buf;
}

// Sensitivities as the thresholds use them: a unit measured at exactly 0
// (its lo copy changes nothing measurable) still ranks, just last.
std::vector<double> PositiveSensitivities(const store::DynamicModelInfo& m) {
  std::vector<double> s;
  double max = 0;
  for (const auto& u : m.units) max = std::max(max, u.sensitivity);
  for (const auto& u : m.units) s.push_back(std::max(u.sensitivity, max > 0 ? max * 1e-12 : 1.0));
  return s;
}

// Thresholds for scale c (file comment of dynamic.h).
std::vector<double> ThresholdsForScale(const store::DynamicModelInfo& m,
                                       const std::vector<double>& s, double c) {
  const size_t n = m.entropies.size();
  std::vector<double> t(m.units.size(), INFINITY);
  double prev = 0;
  for (size_t u = 0; u < t.size(); ++u) {
    const double f = std::min(1.0, c * s[u] / s[0]);
    const auto count = static_cast<size_t>(std::llround(f * static_cast<double>(n)));
    if (count == 0) {
      t[u] = INFINITY;
    } else if (count >= n) {
      t[u] = 0;
    } else {
      t[u] = m.entropies[n - count];
    }
    t[u] = std::max(t[u], prev);  // rounding never breaks the order
    prev = t[u];
  }
  return t;
}

// Average b(k) over the calibration positions, starts at H = +inf.
double AverageBits(const store::DynamicModelInfo& m, const std::vector<double>& thresholds) {
  std::vector<double> b(m.units.size() + 1);
  for (size_t k = 0; k < b.size(); ++k) b[k] = BitsWithHiUnits(m, static_cast<int>(k));
  double sum = static_cast<double>(m.calib_starts) *
               b[static_cast<size_t>(HiUnitsForEntropy(thresholds, INFINITY))];
  for (double h : m.entropies) sum += b[static_cast<size_t>(HiUnitsForEntropy(thresholds, h))];
  const double n = static_cast<double>(m.calib_starts) + static_cast<double>(m.entropies.size());
  return n == 0 ? b[0] : sum / n;
}

}  // namespace

double LogitsEntropy(std::span<const float> logits) {
  if (logits.empty()) return INFINITY;
  const double max = *std::max_element(logits.begin(), logits.end());
  double z = 0, weighted = 0;
  for (float l : logits) {
    const double d = static_cast<double>(l) - max;
    const double e = std::exp(d);
    z += e;
    weighted += e * d;
  }
  // H = -sum p log p, with log p = d - log z.
  return std::max(0.0, std::log(z) - weighted / z);
}

double BitsWithHiUnits(const store::DynamicModelInfo& m, int k) {
  int64_t bytes = static_cast<int64_t>(m.lo_bytes);
  for (int u = 0; u < k && u < static_cast<int>(m.units.size()); ++u)
    bytes += m.units[static_cast<size_t>(u)].extra_bytes;
  return m.n_weights == 0 ? 0 : 8.0 * static_cast<double>(bytes) / static_cast<double>(m.n_weights);
}

int HiUnitsForEntropy(std::span<const double> thresholds, double entropy) {
  if (std::isinf(entropy) && entropy > 0) {
    return static_cast<int>(std::count_if(thresholds.begin(), thresholds.end(),
                                          [](double t) { return std::isfinite(t); }));
  }
  return static_cast<int>(std::upper_bound(thresholds.begin(), thresholds.end(), entropy) -
                          thresholds.begin());
}

Status CheckTargetBits(const store::DynamicModelInfo& m, double target) {
  const double lo = m.lo_bits(), hi = m.hi_bits();
  const double eps = 1e-9 * std::max(1.0, hi);
  const std::string range = "; choose a target between lo's " + Bits(lo) + " and hi's " + Bits(hi) +
                            " bits per weight (hi=" + m.hi_label + ", lo=" + m.lo_label + ")";
  if (!std::isfinite(target))
    return Status::InvalidArgument("the target bits per weight must be a number" + range);
  if (target < lo - eps)
    return Status::InvalidArgument("target " + Bits(target) + " bits per weight is below lo's" +
                                   range);
  if (target > hi + eps)
    return Status::InvalidArgument("target " + Bits(target) + " bits per weight is above hi's" +
                                   range);
  return Status::OK();
}

Result<DynamicPlan> PlanForTarget(const store::DynamicModelInfo& m, double target) {
  FQ_RETURN_IF_ERROR(CheckTargetBits(m, target));
  DynamicPlan plan;
  plan.target_bits = target;
  if (m.units.empty()) {
    plan.calib_bits = BitsWithHiUnits(m, 0);
    return plan;
  }
  const std::vector<double> s = PositiveSensitivities(m);
  // Every f_u reaches 1 at c = s_0 / s_min.
  const double c_max = s[0] / *std::min_element(s.begin(), s.end());
  const double eps = 1e-9 * std::max(1.0, m.hi_bits());
  double c = 0;
  if (AverageBits(m, ThresholdsForScale(m, s, c_max)) <= target + eps) {
    c = c_max;
  } else if (AverageBits(m, ThresholdsForScale(m, s, 0)) < target) {
    double lo = 0, hi = c_max;  // AverageBits(lo) <= target < AverageBits(hi)
    for (int i = 0; i < 100 && hi - lo > 1e-15 * c_max; ++i) {
      const double mid = 0.5 * (lo + hi);
      (AverageBits(m, ThresholdsForScale(m, s, mid)) <= target + eps ? lo : hi) = mid;
    }
    c = lo;
  }
  plan.scale = c;
  plan.thresholds = ThresholdsForScale(m, s, c);
  plan.calib_bits = AverageBits(m, plan.thresholds);
  plan.max_hi = HiUnitsForEntropy(plan.thresholds, INFINITY);
  return plan;
}

DynamicPlan StoredPlan(const store::DynamicModelInfo& m) {
  DynamicPlan plan;
  plan.target_bits = m.target_bits;
  for (const auto& u : m.units) plan.thresholds.push_back(u.threshold);
  plan.calib_bits = m.calib_bits;
  plan.max_hi = HiUnitsForEntropy(plan.thresholds, INFINITY);
  return plan;
}

uint64_t UnitHiBytes(const store::ModelManifest& hi, const store::ModelManifest& lo,
                     const std::string& name) {
  uint64_t bytes = 0;
  for (size_t p = 0; p < hi.slots.size() && p < lo.slots.size(); ++p) {
    if (hi.slots[p].key != lo.slots[p].key && DynamicUnitName(hi.slots[p]) == name)
      bytes += hi.slots[p].bytes;
  }
  return bytes;
}

void CapPlanHiBytes(const store::DynamicModelInfo& m, const store::ModelManifest& hi,
                    const store::ModelManifest& lo, uint64_t hi_bytes, DynamicPlan* plan) {
  uint64_t held = 0;
  int kept = 0;
  for (size_t u = 0; u < plan->thresholds.size() && u < m.units.size(); ++u) {
    if (!std::isfinite(plan->thresholds[u])) break;
    const uint64_t need = UnitHiBytes(hi, lo, m.units[u].name);
    if (held + need > hi_bytes) {
      for (size_t v = u; v < plan->thresholds.size(); ++v) plan->thresholds[v] = INFINITY;
      break;
    }
    held += need;
    ++kept;
  }
  plan->max_hi = kept;
  plan->calib_bits = AverageBits(m, plan->thresholds);
}

std::string DynamicUnitName(const store::ManifestSlot& slot) {
  return slot.layer >= 0 ? "blk." + std::to_string(slot.layer) : slot.name;
}

Status CheckDynamicPair(const store::ModelManifest& hi, const store::ModelManifest& lo) {
  if (hi.model != lo.model) {
    return Status::InvalidArgument("hi QM '" + hi.label + "' is of model '" + hi.model +
                                   "' and lo QM '" + lo.label + "' of model '" + lo.model +
                                   "': dynamic precision switches between two QMs of one model");
  }
  if (hi.label == lo.label)
    return Status::InvalidArgument("hi and lo are the same QM '" + hi.label + "'");
  if (hi.slots.size() != lo.slots.size()) {
    return Status::InvalidArgument("QMs '" + hi.label + "' and '" + lo.label +
                                   "' have different slots");
  }
  for (size_t i = 0; i < hi.slots.size(); ++i) {
    if (hi.slots[i].name != lo.slots[i].name || !hi.slots[i].desc.SameShape(lo.slots[i].desc)) {
      return Status::InvalidArgument("QMs '" + hi.label + "' and '" + lo.label +
                                     "' differ at slot '" + hi.slots[i].name + "'");
    }
  }
  if (hi.weight_bytes() <= lo.weight_bytes()) {
    return Status::InvalidArgument(
        "hi QM '" + hi.label + "' (" + std::to_string(hi.weight_bytes()) +
        " bytes of weights) is not of higher precision than lo QM '" + lo.label + "' (" +
        std::to_string(lo.weight_bytes()) + " bytes); swap --hi and --lo");
  }
  return Status::OK();
}

Result<store::DynamicModelInfo> CalibrateDynamic(
    const store::ModelManifest& hi, const store::ModelManifest& lo, store::ModuleSource* source,
    std::span<const int32_t> tokens, const DynamicCalibrationOptions& options, ThreadPool* pool) {
  FQ_RETURN_IF_ERROR(CheckDynamicPair(hi, lo));
  store::DynamicModelInfo m;
  m.hi_label = hi.label;
  m.lo_label = lo.label;
  m.hi_bytes = hi.weight_bytes();
  m.lo_bytes = lo.weight_bytes();
  for (const store::ManifestSlot& s : hi.slots) m.n_weights += s.desc.n_elements();
  const double target =
      std::isnan(options.target_bits) ? 0.5 * (m.hi_bits() + m.lo_bits()) : options.target_bits;
  FQ_RETURN_IF_ERROR(CheckTargetBits(m, target));
  if (options.n_ctx < 4) {
    return Status::InvalidArgument("calibration needs chunks of at least 4 tokens, got " +
                                   std::to_string(options.n_ctx));
  }
  const int64_t max_chunks = std::max<int64_t>(1, options.max_tokens / options.n_ctx);
  const auto chunks = PerplexityChunks(tokens, options.n_ctx, options.bos, max_chunks);
  if (chunks.empty()) {
    return Status::InvalidArgument("the calibration text has " + std::to_string(tokens.size()) +
                                   " tokens, fewer than one chunk of " +
                                   std::to_string(options.n_ctx));
  }

  // The units, in slot order, with their slots' lo modules.
  struct Unit {
    std::string name;
    int layer = -1;
    bool embed = false;  // changes the input of block 0 (and a tied output)
    std::vector<size_t> slots;
    int64_t extra = 0;
  };
  std::vector<Unit> units;
  std::map<std::string, size_t> unit_of_name;
  for (size_t i = 0; i < hi.slots.size(); ++i) {
    const store::ManifestSlot& h = hi.slots[i];
    if (h.key == lo.slots[i].key) continue;
    const std::string name = DynamicUnitName(h);
    auto [it, added] = unit_of_name.emplace(name, units.size());
    if (added) {
      Unit unit;
      unit.name = name;
      unit.layer = h.layer;
      units.push_back(std::move(unit));
    }
    Unit& u = units[it->second];
    u.slots.push_back(i);
    u.embed = u.embed || h.kind == "embed";
    u.extra += static_cast<int64_t>(h.bytes) - static_cast<int64_t>(lo.slots[i].bytes);
  }
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> hi_model, Model::Load(hi, source, pool));
  std::unique_ptr<Model> work = hi_model->Clone();
  if (work == nullptr) return Status::InvalidArgument("could not clone model '" + hi.model + "'");
  std::vector<store::ModuleData> lo_data(hi.slots.size());
  for (const Unit& u : units) {
    for (size_t i : u.slots) {
      FQ_ASSIGN_OR_RETURN(lo_data[i], source->Load(lo.slots[i].key));
    }
  }
  auto set_unit = [&](const Unit& u, bool to_lo) -> Status {
    for (size_t i : u.slots) {
      const int idx = hi.slots[i].idx;
      if (to_lo) {
        FQ_RETURN_IF_ERROR(work->SetSlot(idx, lo_data[i], lo.slots[i].desc));
      } else {
        FQ_RETURN_IF_ERROR(work->SetSlot(idx, hi_model->slot(idx)->data, hi.slots[i].desc));
      }
    }
    return Status::OK();
  };

  const size_t v = static_cast<size_t>(work->hparams().n_vocab);
  BatchEvaluator ev(work.get(), pool);
  std::vector<double> kl_sum(units.size(), 0);
  int64_t positions = 0;
  std::vector<float> hi_logits, logits;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const std::vector<int32_t>& chunk = chunks[c];
    const size_t n = chunk.size();
    FQ_ASSIGN_OR_RETURN(LayerStates states, ev.Run(chunk));
    FQ_RETURN_IF_ERROR(ev.Logits(states, 0, &hi_logits));
    ++m.calib_starts;
    for (size_t j = 0; j + 1 < n; ++j)
      m.entropies.push_back(LogitsEntropy({hi_logits.data() + j * v, v}));
    positions += static_cast<int64_t>(n);
    for (size_t u = 0; u < units.size(); ++u) {
      FQ_RETURN_IF_ERROR(set_unit(units[u], true));
      if (units[u].embed) {
        FQ_ASSIGN_OR_RETURN(LayerStates lowered, ev.Run(chunk));
        FQ_RETURN_IF_ERROR(ev.Logits(lowered, 0, &logits));
      } else if (units[u].layer >= 0) {
        FQ_ASSIGN_OR_RETURN(LayerStates lowered, ev.RunFrom(states, units[u].layer));
        FQ_RETURN_IF_ERROR(ev.Logits(lowered, 0, &logits));
      } else {
        FQ_RETURN_IF_ERROR(ev.Logits(states, 0, &logits));
      }
      FQ_RETURN_IF_ERROR(set_unit(units[u], false));
      for (size_t j = 0; j < n; ++j) {
        kl_sum[u] += TokenKl({hi_logits.data() + j * v, v}, {logits.data() + j * v, v});
      }
    }
    if (options.progress) {
      FQ_RETURN_IF_ERROR(
          options.progress(static_cast<int64_t>(c) + 1, static_cast<int64_t>(chunks.size())));
    }
  }
  m.calib_tokens = positions;
  std::sort(m.entropies.begin(), m.entropies.end());

  std::vector<size_t> order(units.size());
  std::iota(order.begin(), order.end(), size_t{0});
  // Most sensitive first; ties keep slot order, so the ranking is stable.
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return kl_sum[a] > kl_sum[b]; });
  for (size_t r = 0; r < order.size(); ++r) {
    const Unit& u = units[order[r]];
    store::DynamicUnitInfo info;
    info.rank = static_cast<int>(r);
    info.name = u.name;
    info.layer = u.layer;
    info.sensitivity = kl_sum[order[r]] / static_cast<double>(positions);
    info.extra_bytes = u.extra;
    m.units.push_back(std::move(info));
  }
  FQ_ASSIGN_OR_RETURN(DynamicPlan plan, PlanForTarget(m, target));
  m.target_bits = target;
  m.calib_bits = plan.calib_bits;
  for (size_t r = 0; r < m.units.size(); ++r) m.units[r].threshold = plan.thresholds[r];
  return m;
}

double DynamicStats::mean_hi_share() const {
  if (tokens == 0 || hi_units_tokens.size() < 2) return 0;
  const double units = static_cast<double>(hi_units_tokens.size() - 1);
  double sum = 0;
  for (size_t k = 0; k < hi_units_tokens.size(); ++k)
    sum += static_cast<double>(k) * static_cast<double>(hi_units_tokens[k]);
  return sum / units / static_cast<double>(tokens);
}

DynamicRunner::~DynamicRunner() = default;

Result<std::unique_ptr<DynamicRunner>> DynamicRunner::Build(const store::ModelManifest& hi,
                                                            const store::ModelManifest& lo,
                                                            const store::DynamicModelInfo& m,
                                                            const DynamicPlan& plan) {
  FQ_RETURN_IF_ERROR(CheckDynamicPair(hi, lo));
  if (plan.thresholds.size() != m.units.size()) {
    return Status::InvalidArgument("the plan has " + std::to_string(plan.thresholds.size()) +
                                   " thresholds for " + std::to_string(m.units.size()) + " units");
  }
  std::unique_ptr<DynamicRunner> r(new DynamicRunner());
  r->plan_ = plan;
  r->units_.resize(m.units.size());
  r->hi_.assign(m.units.size(), false);
  std::map<std::string, size_t> rank_of;
  for (size_t u = 0; u < m.units.size(); ++u) rank_of[m.units[u].name] = u;
  for (size_t i = 0; i < hi.slots.size(); ++i) {
    const store::ManifestSlot& h = hi.slots[i];
    const store::ManifestSlot& l = lo.slots[i];
    if (h.key == l.key) continue;
    auto it = rank_of.find(DynamicUnitName(h));
    if (it == rank_of.end()) {
      return Status::InvalidArgument(
          "slot '" + h.name + "' differs between hi=" + hi.label + " and lo=" + lo.label +
          " but belongs to no unit of the dynamic model (calibrate it again)");
    }
    SlotCopies sc;
    sc.idx = h.idx;
    sc.hi_key = h.key;
    sc.lo_key = l.key;
    sc.hi_desc = h.desc;
    sc.lo_desc = l.desc;
    r->units_[it->second].push_back(sc);
  }
  for (size_t k = 0; k <= m.units.size(); ++k)
    r->bits_.push_back(BitsWithHiUnits(m, static_cast<int>(k)));
  r->stats_.hi_units_tokens.assign(m.units.size() + 1, 0);
  return r;
}

Result<std::unique_ptr<DynamicRunner>> DynamicRunner::OverModel(
    Model* model, const store::ModelManifest& hi, const store::ModelManifest& lo,
    store::ModuleSource* source, const store::DynamicModelInfo& m, const DynamicPlan& plan) {
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<DynamicRunner> r, Build(hi, lo, m, plan));
  r->model_ = model;
  for (size_t u = 0; u < r->units_.size(); ++u) {
    const bool can_run_hi = std::isfinite(plan.thresholds[u]);
    for (SlotCopies& sc : r->units_[u]) {
      const SlotWeights* w = model->slot(sc.idx);
      if (w == nullptr || !(w->desc == sc.lo_desc)) {
        return Status::InvalidArgument("the model does not run lo QM '" + lo.label + "' at slot " +
                                       std::to_string(sc.idx));
      }
      sc.lo_data = w->data;
      if (can_run_hi) {
        FQ_ASSIGN_OR_RETURN(sc.hi_data, source->Load(sc.hi_key));
        r->hi_copy_bytes_ += sc.hi_data.size();
      }
    }
  }
  return r;
}

Result<std::unique_ptr<DynamicRunner>> DynamicRunner::OverResidency(
    ResidencyManager* residency, const store::ModelManifest& hi, const store::ModelManifest& lo,
    const store::DynamicModelInfo& m, const DynamicPlan& plan) {
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<DynamicRunner> r, Build(hi, lo, m, plan));
  r->residency_ = residency;
  const uint64_t before = residency->resident_bytes();
  for (size_t u = 0; u < r->units_.size(); ++u) {
    if (!std::isfinite(plan.thresholds[u])) continue;
    for (const SlotCopies& sc : r->units_[u])
      FQ_RETURN_IF_ERROR(residency->HoldCopy(sc.idx, sc.hi_key));
  }
  r->hi_copy_bytes_ = residency->resident_bytes() - before;
  return r;
}

Status DynamicRunner::Bind(int unit, bool hi) {
  for (const SlotCopies& sc : units_[static_cast<size_t>(unit)]) {
    if (residency_ != nullptr) {
      FQ_RETURN_IF_ERROR(residency_->UseCopy(sc.idx, hi ? sc.hi_key : sc.lo_key));
    } else {
      FQ_RETURN_IF_ERROR(
          model_->SetSlot(sc.idx, hi ? sc.hi_data : sc.lo_data, hi ? sc.hi_desc : sc.lo_desc));
    }
    ++stats_.binds;
  }
  hi_[static_cast<size_t>(unit)] = hi;
  return Status::OK();
}

Status DynamicRunner::BeforeToken(std::span<const float> previous_logits) {
  const double h = LogitsEntropy(previous_logits);
  const int k = HiUnitsForEntropy(plan_.thresholds, h);
  for (int u = 0; u < units(); ++u) {
    const bool want = u < k;
    if (hi_[static_cast<size_t>(u)] != want) FQ_RETURN_IF_ERROR(Bind(u, want));
  }
  ++stats_.tokens;
  stats_.bits_sum += bits_[static_cast<size_t>(k)];
  ++stats_.hi_units_tokens[static_cast<size_t>(k)];
  return Status::OK();
}

void DynamicRunner::ResetStats() {
  const size_t n = stats_.hi_units_tokens.size();
  stats_ = DynamicStats();
  stats_.hi_units_tokens.assign(n, 0);
}

Result<PerplexityResult> DynamicPerplexity(Session* session, DynamicRunner* runner,
                                           std::span<const int32_t> tokens,
                                           const PerplexityOptions& options) {
  const int64_t n_ctx = options.n_ctx;
  if (n_ctx < 4) {
    return Status::InvalidArgument("perplexity needs a context of at least 4 tokens, got " +
                                   std::to_string(n_ctx));
  }
  if (n_ctx > session->n_ctx()) {
    return Status::InvalidArgument("chunks of " + std::to_string(n_ctx) +
                                   " tokens do not fit the session's " +
                                   std::to_string(session->n_ctx()));
  }
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  if (n_tokens < 2 * n_ctx) {
    return Status::InvalidArgument("perplexity with a context of " + std::to_string(n_ctx) +
                                   " tokens needs a text of at least " + std::to_string(2 * n_ctx) +
                                   " tokens; this text has only " + std::to_string(n_tokens));
  }
  const auto chunks = PerplexityChunks(tokens, n_ctx, options.bos, options.max_chunks);
  const int64_t first = n_ctx / 2;
  MeanAccumulator nll;
  std::vector<float> logits;
  for (size_t c = 0; c < chunks.size(); ++c) {
    session->Reset();
    const int32_t* text = tokens.data() + static_cast<int64_t>(c) * n_ctx;
    for (int64_t j = 0; j < n_ctx; ++j) {
      FQ_RETURN_IF_ERROR(
          runner->BeforeToken(j == 0 ? std::span<const float>() : std::span<const float>(logits)));
      FQ_RETURN_IF_ERROR(session->Decode(chunks[c][static_cast<size_t>(j)], &logits));
      if (j >= first && j < n_ctx - 1) nll.Add(TokenNll(logits, text[j + 1]));
    }
    if (options.progress) {
      FQ_RETURN_IF_ERROR(
          options.progress(static_cast<int64_t>(c) + 1, static_cast<int64_t>(chunks.size())));
    }
  }
  PerplexityResult r;
  r.tokens = n_tokens;
  r.n_ctx = n_ctx;
  r.chunks = static_cast<int64_t>(chunks.size());
  r.scored = nll.count();
  r.nll = nll.mean();
  r.ppl = std::exp(r.nll);
  r.ppl_err = r.ppl * nll.StandardError();
  return r;
}

}  // namespace fqpack::runtime
