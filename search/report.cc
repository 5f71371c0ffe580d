#include "search/report.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/thread_pool.h"
#include "runtime/tokenizer.h"
#include "schema/json.h"
#include "schema/units.h"

namespace fqpack::search {
namespace {

// Modules read from the store once, whatever number of models use them.
class CachingSource : public store::ModuleSource {
 public:
  explicit CachingSource(store::ModuleSource* base) : base_(base) {}
  Result<store::ModuleData> Load(const store::ModuleKey& key) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    FQ_ASSIGN_OR_RETURN(store::ModuleData d, base_->Load(key));
    std::lock_guard<std::mutex> lock(mu_);
    cache_.emplace(key, d);
    return d;
  }

 private:
  store::ModuleSource* base_;
  std::mutex mu_;
  std::unordered_map<store::ModuleKey, store::ModuleData, store::ModuleKeyHash> cache_;
};

// The modules of a manifest, slot by slot: two manifests with the same
// signature are the same model and have the same perplexity.
std::string Signature(const store::ModelManifest& m) {
  std::string s;
  for (const store::ManifestSlot& slot : m.slots) s += slot.key.Hex();
  return s;
}

Result<Storage> ComputeStorage(store::Store* store, const store::EnsembleInfo& e,
                               const std::vector<store::EqmInfo>& eqms,
                               const std::vector<std::string>& library) {
  Storage st;
  {
    auto lock = store->LockIndex();
    FQ_ASSIGN_OR_RETURN(store::Stmt q,
                        store->db()->Prepare(
                            "SELECT coalesce(sum(raw_bytes),0), coalesce(sum(stored_bytes),0) "
                            "FROM blob WHERE hash IN (SELECT m.hash FROM eqm_module m JOIN eqm x "
                            "ON x.id = m.eqm_id WHERE x.ensemble_id = ?)"));
    q.BindAll(e.id);
    FQ_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) {
      st.ensemble_bytes = static_cast<uint64_t>(q.ColumnInt(0));
      st.ensemble_stored_bytes = static_cast<uint64_t>(q.ColumnInt(1));
    }
  }
  for (const std::string& label : library) {
    Result<store::QmInfo> qm = store->FindQm(e.model_id, label);
    if (qm.ok()) st.library_bytes += qm->weight_bytes;
  }
  for (const store::EqmInfo& q : eqms) st.per_footprint_bytes += q.footprint;
  return st;
}

void WriteOptionalDouble(JsonWriter* w, const char* key, double v) {
  if (std::isfinite(v)) w->Key(key).Double(v);
}

void WriteEnsemble(JsonWriter* w, const EnsembleReport& e, bool with_name) {
  if (with_name) w->Key("name").String(e.name);
  w->Key("library").BeginArray();
  for (const std::string& l : e.library) w->String(l);
  w->EndArray();
  w->Key("metric").String(e.metric);
  w->Key("params").Raw(e.params_json.empty() ? "{}" : e.params_json);
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
  w->Key("granularity").BeginObject()
      .Key("steps").Uint(g.ensemble.steps)
      .Key("median_step").Double(g.ensemble.median)
      .Key("max_step").Uint(g.ensemble.max)
      .Key("median_step_pct").Double(g.median_pct())
      .Key("max_step_pct").Double(g.max_pct())
      .Key("static_steps").Uint(g.library.steps)
      .Key("static_median_step").Double(g.library.median)
      .Key("static_max_step").Uint(g.library.max)
      .Key("static_median_step_pct").Double(g.static_median_pct())
      .Key("up_footprint").Uint(g.up_footprint)
      .Key("ratio").Double(g.ratio())
      .EndObject();
  const Storage& s = e.storage;
  w->Key("storage").BeginObject()
      .Key("ensemble_bytes").Uint(s.ensemble_bytes)
      .Key("ensemble_stored_bytes").Uint(s.ensemble_stored_bytes)
      .Key("library_bytes").Uint(s.library_bytes)
      .Key("per_footprint_bytes").Uint(s.per_footprint_bytes)
      .Key("ratio").Double(s.ratio())
      .Key("library_ratio").Double(s.library_ratio())
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

StepStats FootprintSteps(std::vector<uint64_t> footprints) {
  StepStats s;
  if (footprints.size() < 2) return s;
  std::sort(footprints.rbegin(), footprints.rend());
  std::vector<uint64_t> steps;
  for (size_t i = 1; i < footprints.size(); ++i) steps.push_back(footprints[i - 1] - footprints[i]);
  std::sort(steps.begin(), steps.end());
  s.steps = steps.size();
  s.max = steps.back();
  const size_t m = steps.size() / 2;
  s.median = steps.size() % 2 == 1
                 ? static_cast<double>(steps[m])
                 : (static_cast<double>(steps[m - 1]) + static_cast<double>(steps[m])) / 2;
  return s;
}

Granularity ComputeGranularity(const std::vector<uint64_t>& eqm_footprints,
                               const std::vector<uint64_t>& static_footprints) {
  Granularity g;
  g.ensemble = FootprintSteps(eqm_footprints);
  g.library = FootprintSteps(static_footprints);
  for (uint64_t f : eqm_footprints) g.up_footprint = std::max(g.up_footprint, f);
  for (uint64_t f : static_footprints) g.up_footprint = std::max(g.up_footprint, f);
  return g;
}

Bytes BlankEndOfText(ByteSpan text) {
  static constexpr std::string_view kMark = "<|endoftext|>";
  Bytes out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = pos;
    while (end < text.size() && text[end] != '\n') ++end;
    std::string_view line(reinterpret_cast<const char*>(text.data()) + pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line != kMark) {
      out.insert(out.end(), text.begin() + static_cast<ptrdiff_t>(pos),
                 text.begin() + static_cast<ptrdiff_t>(end));
    }
    if (end < text.size()) out.push_back('\n');
    pos = end + 1;
  }
  return out;
}

Result<Report> BuildReport(store::Store* store, const std::string& model_name,
                           const ReportOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (options.every < 1) return Status::InvalidArgument("--every must be at least 1");
  FQ_ASSIGN_OR_RETURN(store::ModelInfo model, store->ResolveModel(model_name));
  Report report;
  report.model = model.name;

  std::vector<store::EnsembleInfo> infos;
  if (options.ensembles.empty()) {
    FQ_ASSIGN_OR_RETURN(store::EnsembleInfo e, store->FindEnsemble(model.id, ""));
    infos.push_back(e);
  } else {
    for (const std::string& name : options.ensembles) {
      FQ_ASSIGN_OR_RETURN(store::EnsembleInfo e, store->FindEnsemble(model.id, name));
      infos.push_back(e);
    }
  }

  // The static QMs: every library QM of the reported ensembles.
  std::map<std::string, store::QmInfo> static_qms;
  std::vector<std::vector<store::EqmInfo>> eqm_rows;
  for (const store::EnsembleInfo& e : infos) {
    EnsembleReport er;
    er.name = e.name;
    er.params_json = e.params_json;
    er.metric = JsonMember(e.params_json, "metric");
    FQ_ASSIGN_OR_RETURN(er.library, ParseJsonStringArray(e.library_json, "ensemble '" + e.name + "': library"));
    FQ_ASSIGN_OR_RETURN(std::vector<store::EqmInfo> eqms, store->ListEqms(e.id));
    if (eqms.empty()) return Status::Corruption("ensemble '" + e.name + "' has no EQMs");
    std::vector<uint64_t> eqm_fp, static_fp;
    for (const store::EqmInfo& q : eqms) {
      EqmPoint p;
      p.step = q.step;
      p.footprint = q.footprint;
      p.calib_metric = q.calib_metric;
      p.calib_ppl = q.calib_ppl;
      p.calib_kl = q.calib_kl;
      er.eqms.push_back(p);
      eqm_fp.push_back(q.footprint);
    }
    for (const std::string& label : er.library) {
      Result<store::QmInfo> qm = store->FindQm(model.id, label);
      if (!qm.ok()) continue;  // removed since the search; the ensemble still stands
      static_qms.emplace(label, *qm);
      static_fp.push_back(qm->weight_bytes);
    }
    er.granularity = ComputeGranularity(eqm_fp, static_fp);
    FQ_ASSIGN_OR_RETURN(er.storage, ComputeStorage(store, e, eqms, er.library));
    report.ensembles.push_back(std::move(er));
    eqm_rows.push_back(std::move(eqms));
  }
  for (const auto& [label, qm] : static_qms) {
    StaticPoint sp;
    sp.label = label;
    sp.footprint = qm.weight_bytes;
    sp.bits_per_weight = qm.bits_per_weight;
    sp.partial = qm.partial;
    report.statics.push_back(sp);
  }
  std::sort(report.statics.begin(), report.statics.end(),
            [](const StaticPoint& a, const StaticPoint& b) { return a.footprint > b.footprint; });

  // For each ensemble and static QM: the EQM at or below its footprint.
  auto at_or_below = [](const EnsembleReport& er, uint64_t footprint) {
    int best = -1;
    for (size_t i = 0; i < er.eqms.size(); ++i) {
      if (er.eqms[i].footprint <= footprint &&
          (best < 0 || er.eqms[i].footprint > er.eqms[static_cast<size_t>(best)].footprint)) {
        best = static_cast<int>(i);
      }
    }
    return best;
  };

  if (options.evaluate) {
    Bytes text;
    if (options.has_eval_text) {
      text = BlankEndOfText(options.eval_text);
      report.eval_text = options.eval_name;
    } else {
      auto lock = store->LockIndex();
      FQ_ASSIGN_OR_RETURN(store::Stmt q, store->db()->Prepare(
                                             "SELECT calib_text FROM ensemble WHERE id = ?"));
      q.BindAll(infos.front().id);
      FQ_ASSIGN_OR_RETURN(bool row, q.Step());
      if (row) {
        ByteSpan b = q.ColumnBlob(0);
        text = BlankEndOfText(b);
      }
      if (text.empty()) {
        return Status::InvalidArgument("ensemble '" + infos.front().name +
                                       "' keeps no calibration text; give --eval-text");
      }
      report.eval_text = "calibration text of " + infos.front().name;
    }
    FQ_ASSIGN_OR_RETURN(gguf::Metadata md, gguf::ParseMetadata(model.metadata, model.n_kv, model.name));
    FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, runtime::Tokenizer::FromMetadata(md));
    const std::vector<int32_t> tokens = tok.Encode(
        std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), true);
    report.n_ctx = options.n_ctx;
    report.eval_tokens = static_cast<int64_t>(tokens.size());
    if (report.eval_tokens < 2 * options.n_ctx) {
      return Status::InvalidArgument(
          report.eval_text + ": perplexity with a context of " + std::to_string(options.n_ctx) +
          " tokens needs at least " + std::to_string(2 * options.n_ctx) + " tokens; the text has " +
          std::to_string(report.eval_tokens));
    }
    report.chunks = report.eval_tokens / options.n_ctx;
    if (options.max_chunks >= 0) report.chunks = std::min(report.chunks, options.max_chunks);

    // What to evaluate: manifests by signature, each once.
    struct Work {
      store::ModelManifest manifest;
      runtime::PerplexityResult result;
    };
    std::vector<Work> work;
    std::map<std::string, size_t> by_sig;
    auto add = [&](store::ModelManifest m) -> size_t {
      const std::string sig = Signature(m);
      auto [it, fresh] = by_sig.emplace(sig, work.size());
      if (fresh) work.push_back({std::move(m), {}});
      return it->second;
    };
    std::vector<int> static_work(report.statics.size(), -1);
    for (size_t i = 0; i < report.statics.size(); ++i) {
      Result<store::ModelManifest> m = store->QmManifest(model.name, report.statics[i].label);
      if (!m.ok()) continue;  // a partial QM: its pruned modules are gone
      static_work[i] = static_cast<int>(add(std::move(m).value()));
    }
    std::vector<std::vector<int>> eqm_work(report.ensembles.size());
    for (size_t e = 0; e < report.ensembles.size(); ++e) {
      EnsembleReport& er = report.ensembles[e];
      std::set<size_t> chosen;
      for (size_t i = 0; i < er.eqms.size(); ++i) {
        if (er.eqms[i].step % options.every == 0 || i + 1 == er.eqms.size()) chosen.insert(i);
      }
      for (const StaticPoint& sp : report.statics) {
        if (std::find(er.library.begin(), er.library.end(), sp.label) == er.library.end()) continue;
        const int k = at_or_below(er, sp.footprint);
        if (k >= 0) chosen.insert(static_cast<size_t>(k));
      }
      eqm_work[e].assign(er.eqms.size(), -1);
      for (size_t i : chosen) {
        FQ_ASSIGN_OR_RETURN(store::ModelManifest m,
                            store->EqmManifest(infos[e].id, er.eqms[i].step));
        eqm_work[e][i] = static_cast<int>(add(std::move(m)));
      }
    }

    runtime::ThreadPool pool(std::max(1, options.threads));
    CachingSource cache(store);
    runtime::PerplexityOptions popts;
    popts.n_ctx = options.n_ctx;
    popts.bos = tok.add_bos() ? tok.bos() : -1;
    popts.max_chunks = options.max_chunks;
    popts.progress = [&](int64_t, int64_t) -> Status {
      if (options.cancelled && options.cancelled()) return Status::Aborted("interrupted");
      return Status::OK();
    };
    for (size_t k = 0; k < work.size(); ++k) {
      if (options.progress) {
        options.progress(static_cast<int64_t>(k), static_cast<int64_t>(work.size()),
                         work[k].manifest.label);
      }
      FQ_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> m,
                          runtime::Model::Load(work[k].manifest, &cache, &pool));
      Result<runtime::PerplexityResult> r = runtime::Perplexity(*m, tokens, popts, &pool);
      if (!r.ok()) return r.status().WithContext(report.eval_text);
      work[k].result = *r;
    }
    if (options.progress) {
      options.progress(static_cast<int64_t>(work.size()), static_cast<int64_t>(work.size()), "");
    }
    report.evaluations = static_cast<int64_t>(work.size());
    for (size_t i = 0; i < report.statics.size(); ++i) {
      if (static_work[i] < 0) continue;
      const runtime::PerplexityResult& r = work[static_cast<size_t>(static_work[i])].result;
      report.statics[i].evaluated = true;
      report.statics[i].eval_ppl = r.ppl;
      report.statics[i].eval_ppl_err = r.ppl_err;
    }
    for (size_t e = 0; e < report.ensembles.size(); ++e) {
      for (size_t i = 0; i < eqm_work[e].size(); ++i) {
        if (eqm_work[e][i] < 0) continue;
        const runtime::PerplexityResult& r = work[static_cast<size_t>(eqm_work[e][i])].result;
        EqmPoint& p = report.ensembles[e].eqms[i];
        p.evaluated = true;
        p.eval_ppl = r.ppl;
        p.eval_ppl_err = r.ppl_err;
      }
    }
  }

  for (EnsembleReport& er : report.ensembles) {
    for (const StaticPoint& sp : report.statics) {
      if (std::find(er.library.begin(), er.library.end(), sp.label) == er.library.end()) continue;
      QualityRow q;
      q.label = sp.label;
      q.static_footprint = sp.footprint;
      q.static_ppl = sp.eval_ppl;
      q.eqm_step = -1;
      const int k = at_or_below(er, sp.footprint);
      if (k >= 0) {
        const EqmPoint& p = er.eqms[static_cast<size_t>(k)];
        q.eqm_step = p.step;
        q.eqm_footprint = p.footprint;
        q.eqm_ppl = p.eval_ppl;
      }
      er.quality.push_back(q);
    }
  }
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

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
    if (s.evaluated) w.Key("eval_ppl").Double(s.eval_ppl).Key("eval_ppl_err").Double(s.eval_ppl_err);
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

PlotSpec ReportPlot(const Report& report) {
  PlotSpec spec;
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
    spec.y_label = "perplexity (-c " + std::to_string(report.n_ctx) + ")";
    spec.title = report.model + ": perplexity vs footprint on " + report.eval_text;
  } else {
    spec.y_label = "calibration perplexity";
    spec.title = report.model + ": calibration perplexity vs footprint";
  }
  for (const EnsembleReport& e : report.ensembles) {
    PlotSeries s;
    s.name = "ensemble " + e.name + " (" + std::to_string(e.eqms.size()) + " EQMs)";
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
