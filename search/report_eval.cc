// search/report.h, the evaluation half: reads the ensembles and their
// static QMs from the store's catalog, and measures perplexity on the
// evaluation text. The output half (JSON, plot) is report_output.cc.
#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/tokenizer.h"
#include "schema/thread_pool.h"
#include "schema/units.h"
#include "search/report.h"

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
  FQ_ASSIGN_OR_RETURN(auto bytes, store->catalog().EnsembleModuleBytes(e.id));
  st.ensemble_bytes = bytes.first;
  st.ensemble_stored_bytes = bytes.second;
  for (const std::string& label : library) {
    Result<store::QmInfo> qm = store->FindQm(e.model_id, label);
    if (qm.ok()) st.library_bytes += qm->weight_bytes;
  }
  for (const store::EqmInfo& q : eqms) st.per_footprint_bytes += q.footprint;
  return st;
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
    er.params = e.params;
    er.metric = e.params.String("metric");
    er.library = e.library;
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
      Result<Bytes> calib = store->catalog().CalibText(infos.front().id);
      if (calib.ok()) {
        text = BlankEndOfText(*calib);
      } else if (!calib.status().IsNotFound()) {
        return calib.status();
      }
      if (text.empty()) {
        return Status::InvalidArgument("ensemble '" + infos.front().name +
                                       "' keeps no calibration text; give --eval-text");
      }
      report.eval_text = "calibration text of " + infos.front().name;
    }
    FQ_ASSIGN_OR_RETURN(gguf::Metadata md,
                        gguf::ParseMetadata(model.metadata, model.n_kv, model.name));
    FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, runtime::Tokenizer::FromMetadata(md));
    const std::vector<int32_t> tokens =
        tok.Encode(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), true);
    report.n_ctx = options.n_ctx;
    report.eval_tokens = static_cast<int64_t>(tokens.size());
    if (report.eval_tokens < 2 * options.n_ctx) {
      return Status::InvalidArgument(report.eval_text + ": perplexity with a context of " +
                                     std::to_string(options.n_ctx) + " tokens needs at least " +
                                     std::to_string(2 * options.n_ctx) + " tokens; the text has " +
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

    ThreadPool pool(std::max(1, options.threads));
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
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace fqpack::search
