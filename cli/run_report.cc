#include "cli/run_report.h"

#include <cmath>

#include "cli/output.h"
#include "schema/env.h"
#include "schema/units.h"

namespace fqpack::cli {
namespace {

// "k=0 31.2%, k=1 12.0%, ..." over the hi units per token.
std::string HiUnitsHistogram(const runtime::DynamicStats& s) {
  std::string out;
  for (size_t k = 0; k < s.hi_units_tokens.size(); ++k) {
    const double share =
        s.tokens == 0 ? 0 : 100.0 * static_cast<double>(s.hi_units_tokens[k]) / s.tokens;
    out += (k ? ", " : "") + std::to_string(k) + ": " + FormatDouble(share, 1) + "%";
  }
  return out;
}

}  // namespace

runtime::TransitionCallback LogTransitions(Context& ctx) {
  return [&ctx](const runtime::TransitionRecord& t) {
    ctx.Note("transition " + runtime::DescribeTransition(t));
  };
}

Status WriteTransitionsFile(Context& ctx, const std::string& path,
                            const std::vector<runtime::TransitionRecord>& transitions) {
  if (path.empty()) return Status::OK();
  JsonWriter w(true);
  w.BeginArray();
  for (const auto& t : transitions) runtime::WriteTransitionJson(&w, t);
  w.EndArray();
  std::string text = w.str() + "\n";
  return PublishFile(ctx.env, path,
                     ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

void WriteResidencyJson(JsonWriter* w, runtime::ElasticRuntime* rt,
                        const std::vector<runtime::TransitionRecord>& transitions) {
  const runtime::ResidencyStats s = rt->residency()->stats();
  // clang-format off
  w->Key("pack").String(rt->pack()->path())
      .Key("ensemble").String(rt->residency()->ensemble_name())
      .Key("level").String(s.label)
      .Key("eqm").Int(s.step)
      .Key("footprint").Uint(s.footprint)
      .Key("resident_bytes").Uint(s.resident_bytes)
      .Key("kv_cache_bytes").Uint(rt->overhead().kv_cache)
      .Key("scratch_bytes").Uint(rt->overhead().scratch)
      .Key("budget").Uint(s.budget)
      .Key("minimum_budget").Uint(rt->residency()->MinimumBudget())
      .Key("transition_count").Int(s.transitions)
      .Key("modules_swapped").Int(s.modules_swapped)
      .Key("transition_bytes_read").Uint(s.bytes_read)
      .Key("transition_ms").Double(s.transition_seconds * 1e3)
      .Key("transitions").BeginArray();
  // clang-format on
  for (const auto& t : transitions) runtime::WriteTransitionJson(w, t);
  w->EndArray();
}

std::string ResidencySummary(runtime::ElasticRuntime* rt) {
  const runtime::ResidencyStats s = rt->residency()->stats();
  std::string out = "ran " + s.label + " at the end (" + FormatBytes(s.resident_bytes) +
                    " of weights + " + FormatBytes(rt->overhead().total()) +
                    " KV cache and scratch" +
                    (s.budget > 0 ? ", budget " + FormatBytes(s.budget) : "") + ")";
  if (s.transitions > 0) {
    out += "; " + std::to_string(s.transitions) +
           " transitions: " + std::to_string(s.modules_swapped) + " modules swapped, " +
           FormatBytes(s.bytes_read) + " read, " + FormatDouble(s.transition_seconds * 1e3, 1) +
           " ms";
  }
  return out;
}

void WriteDynamicJson(JsonWriter* w, const DynamicRun& d, double tokens_per_second) {
  const runtime::DynamicStats& s = d.runner->stats();
  // clang-format off
  w->Key("dynamic").BeginObject()
      .Key("hi").String(d.hi)
      .Key("lo").String(d.lo)
      .Key("hi_bits").Double(d.info.hi_bits())
      .Key("lo_bits").Double(d.info.lo_bits())
      .Key("target_bits").Double(d.plan.target_bits)
      .Key("calib_bits").Double(d.plan.calib_bits)
      .Key("mean_bits").Double(s.mean_bits())
      .Key("mean_hi_share").Double(s.mean_hi_share())
      .Key("tokens").Int(s.tokens)
      .Key("tokens_per_second").Double(tokens_per_second)
      .Key("units").Int(d.runner->units())
      .Key("switchable_units").Int(d.plan.max_hi)
      .Key("lo_bytes").Uint(d.lo_bytes)
      .Key("hi_copy_bytes").Uint(d.runner->hi_copy_bytes())
      .Key("resident_bytes").Uint(d.resident_bytes)
      .Key("budget").Uint(d.budget)
      .Key("binds").Int(s.binds)
      .Key("hi_units_histogram").BeginArray();
  // clang-format on
  for (int64_t n : s.hi_units_tokens) w->Int(n);
  w->EndArray().Key("thresholds").BeginArray();
  for (size_t u = 0; u < d.plan.thresholds.size(); ++u) {
    w->BeginObject()
        .Key("unit")
        .String(d.info.units[u].name)
        .Key("sensitivity")
        .Double(d.info.units[u].sensitivity);
    if (std::isfinite(d.plan.thresholds[u])) {
      w->Key("threshold").Double(d.plan.thresholds[u]);
    } else {
      w->Key("threshold").Null();
    }
    w->EndObject();
  }
  w->EndArray().EndObject();
}

void NoteDynamic(Context& ctx, const DynamicRun& d, double tokens_per_second) {
  const runtime::DynamicStats& s = d.runner->stats();
  ctx.Note("dynamic hi=" + d.hi + " (" + FormatDouble(d.info.hi_bits(), 3) +
           " bits/w), lo=" + d.lo + " (" + FormatDouble(d.info.lo_bits(), 3) + "): target " +
           FormatDouble(d.plan.target_bits, 3) + " bits/w (calibration text: " +
           FormatDouble(d.plan.calib_bits, 3) + "); read " + FormatDouble(s.mean_bits(), 3) +
           " bits per weight per token over " + std::to_string(s.tokens) + " tokens, " +
           FormatDouble(tokens_per_second, 1) + " tokens/s");
  ctx.Note("hi units per token (of " + std::to_string(d.runner->units()) + ", " +
           std::to_string(d.plan.max_hi) + " switchable; mean share " +
           FormatDouble(100 * s.mean_hi_share(), 1) + "%): " + HiUnitsHistogram(s));
  ctx.Note("resident weights " + FormatBytes(d.resident_bytes) + ": lo " + FormatBytes(d.lo_bytes) +
           " + hi copies " + FormatBytes(d.runner->hi_copy_bytes()) +
           (d.budget == 0
                ? std::string()
                : " (budget " + FormatBytes(d.budget) + ": " + std::to_string(d.plan.max_hi) +
                      " of " + std::to_string(d.runner->units()) + " units may run hi)"));
}

}  // namespace fqpack::cli
