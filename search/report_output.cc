// search/report.h, the output half: the report as JSON and as a plot.
#include <cmath>

#include "schema/json.h"
#include "search/report.h"

namespace fqpack::search {
namespace {

void WriteOptionalDouble(JsonWriter* w, const char* key, double v) {
  if (std::isfinite(v)) w->Key(key).Double(v);
}

void WriteEnsemble(JsonWriter* w, const EnsembleReport& e, bool with_name) {
  if (with_name) w->Key("name").String(e.name);
  w->Key("library").BeginArray();
  for (const std::string& l : e.library) w->String(l);
  w->EndArray();
  w->Key("metric").String(e.metric);
  w->Key("method").String(EnsembleMethod(e));
  w->Key("params").Raw(store::ToJson(e.params));
  w->Key("eqms").BeginArray();
  for (const EqmPoint& p : e.eqms) {
    w->BeginObject().Key("step").Int(p.step).Key("footprint").Uint(p.footprint);
    w->Key("calib_metric").Double(p.calib_metric);
    w->Key("calib_kl").Double(p.calib_kl);
    w->Key("calib_ppl").Double(p.calib_ppl);
    if (p.evaluated) {
      w->Key("eval_ppl").Double(p.eval_ppl);
      w->Key("eval_ppl_err").Double(p.eval_ppl_err);
    }
    w->EndObject();
  }
  w->EndArray();
  const Granularity& g = e.granularity;
  w->Key("granularity")
      .BeginObject()
      .Key("steps")
      .Uint(g.ensemble.steps)
      .Key("median_step")
      .Double(g.ensemble.median)
      .Key("max_step")
      .Uint(g.ensemble.max)
      .Key("median_step_pct")
      .Double(g.median_pct())
      .Key("max_step_pct")
      .Double(g.max_pct())
      .Key("static_steps")
      .Uint(g.library.steps)
      .Key("static_median_step")
      .Double(g.library.median)
      .Key("static_max_step")
      .Uint(g.library.max)
      .Key("static_median_step_pct")
      .Double(g.static_median_pct())
      .Key("up_footprint")
      .Uint(g.up_footprint)
      .Key("ratio")
      .Double(g.ratio())
      .EndObject();
  const Storage& s = e.storage;
  w->Key("storage")
      .BeginObject()
      .Key("ensemble_bytes")
      .Uint(s.ensemble_bytes)
      .Key("ensemble_stored_bytes")
      .Uint(s.ensemble_stored_bytes)
      .Key("library_bytes")
      .Uint(s.library_bytes)
      .Key("per_footprint_bytes")
      .Uint(s.per_footprint_bytes)
      .Key("ratio")
      .Double(s.ratio())
      .Key("library_ratio")
      .Double(s.library_ratio())
      .EndObject();
  w->Key("quality").BeginArray();
  for (const QualityRow& q : e.quality) {
    w->BeginObject().Key("label").String(q.label).Key("static_footprint").Uint(q.static_footprint);
    WriteOptionalDouble(w, "static_ppl", q.static_ppl);
    w->Key("eqm_step").Int(q.eqm_step).Key("eqm_footprint").Uint(q.eqm_footprint);
    WriteOptionalDouble(w, "eqm_ppl", q.eqm_ppl);
    WriteOptionalDouble(w, "delta_pct", q.delta_pct());
    w->EndObject();
  }
  w->EndArray();
}

}  // namespace

std::string ReportJson(const Report& report) {
  JsonWriter w(true);
  w.BeginObject().Key("model").String(report.model);
  w.Key("eval_text").String(report.eval_text);
  w.Key("n_ctx").Int(report.n_ctx).Key("eval_tokens").Int(report.eval_tokens);
  w.Key("chunks").Int(report.chunks);
  w.Key("static").BeginArray();
  for (const StaticPoint& s : report.statics) {
    w.BeginObject().Key("label").String(s.label).Key("footprint").Uint(s.footprint);
    w.Key("bits_per_weight").Double(s.bits_per_weight);
    if (s.partial) w.Key("partial").Bool(true);
    if (s.evaluated)
      w.Key("eval_ppl").Double(s.eval_ppl).Key("eval_ppl_err").Double(s.eval_ppl_err);
    w.EndObject();
  }
  w.EndArray();
  if (!report.ensembles.empty()) {
    w.Key("ensemble").String(report.ensembles.front().name);
    WriteEnsemble(&w, report.ensembles.front(), false);
  }
  w.Key("curves").BeginArray();
  for (const EnsembleReport& e : report.ensembles) {
    w.BeginObject();
    WriteEnsemble(&w, e, true);
    w.EndObject();
  }
  w.EndArray();
  w.Key("evaluations").Int(report.evaluations).Key("seconds").Double(report.seconds);
  w.EndObject();
  return w.str();
}

std::string EnsembleMethod(const EnsembleReport& e) {
  const std::string m = e.params.String("method");
  return m.empty() ? "tree" : m;
}

PlotSpec ReportPlot(const Report& report, bool log_ppl) {
  PlotSpec spec;
  spec.log_y = log_ppl;
  uint64_t max_fp = 0;
  for (const StaticPoint& s : report.statics) max_fp = std::max(max_fp, s.footprint);
  for (const EnsembleReport& e : report.ensembles) {
    for (const EqmPoint& p : e.eqms) max_fp = std::max(max_fp, p.footprint);
  }
  const bool kib = max_fp < (uint64_t{1} << 20);
  const double unit = kib ? 1024.0 : 1024.0 * 1024.0;
  bool evaluated = false;
  for (const StaticPoint& s : report.statics) evaluated |= s.evaluated;
  for (const EnsembleReport& e : report.ensembles) {
    for (const EqmPoint& p : e.eqms) evaluated |= p.evaluated;
  }
  spec.x_label = std::string("footprint: bytes of weights (") + (kib ? "KiB" : "MiB") + ")";
  if (evaluated) {
    spec.y_label =
        "perplexity (-c " + std::to_string(report.n_ctx) + ")" + (log_ppl ? ", log scale" : "");
    spec.title = report.model + ": perplexity vs footprint on " + report.eval_text;
  } else {
    spec.y_label = std::string("calibration perplexity") + (log_ppl ? ", log scale" : "");
    spec.title = report.model + ": calibration perplexity vs footprint";
  }
  for (const EnsembleReport& e : report.ensembles) {
    PlotSeries s;
    const std::string method = EnsembleMethod(e);
    s.name = "ensemble " + e.name + " (" + (method == "tree" ? "tree search" : method) + ", " +
             std::to_string(e.eqms.size()) + " EQMs)";
    s.style = PlotSeries::Style::kLine;
    for (const EqmPoint& p : e.eqms) {
      const double y = evaluated ? p.eval_ppl : p.calib_ppl;
      if (evaluated && !p.evaluated) continue;
      if (!std::isfinite(y)) continue;
      s.points.push_back({static_cast<double>(p.footprint) / unit, y, ""});
    }
    std::sort(s.points.begin(), s.points.end(),
              [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
    spec.series.push_back(std::move(s));
  }
  PlotSeries st;
  st.name = "static QMs";
  st.style = PlotSeries::Style::kMarkers;
  st.color = 0xff7f0e;
  st.label_points = true;
  for (const StaticPoint& p : report.statics) {
    if (!p.evaluated) continue;
    st.points.push_back({static_cast<double>(p.footprint) / unit, p.eval_ppl, p.label});
  }
  if (!st.points.empty()) spec.series.push_back(std::move(st));
  return spec;
}

}  // namespace fqpack::search
