// Storage and perplexity-versus-footprint of an ensemble pruned at several
// fractions P (the paper's pruning experiment), on a store the caller has
// built (bench/prune_sweep.sh builds both real models' stores).
//
//   prune_sweep_bench STORE EVAL_TEXT OUT_PREFIX [P,P,...] [MAX_CHUNKS] [EVERY] [RANK]
//
// RANK: area (default) or uses, the ranking gc --prune --rank uses.
// For each P (default 0,0.25,0.5,0.75) the store is copied, `gc --prune P`
// runs on the copy (plan, repair by a new search, sweep) and the ensemble is
// reported on EVAL_TEXT. Prints one table (storage; perplexity at each static
// QM's footprint) and writes OUT_PREFIX.svg with one curve per P and the
// static QMs as points, and OUT_PREFIX.json with every number.
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "plot/plot.h"
#include "schema/env.h"
#include "schema/json.h"
#include "schema/units.h"
#include "search/prune.h"
#include "search/report.h"
#include "store/gc.h"

namespace fs = std::filesystem;
using namespace fqpack;

namespace {

struct Run {
  double p = 0;
  search::PruneOutcome prune;
  uint64_t store_bytes = 0;  // blob bytes after the sweep
  search::Report report;
};

Status Sweep1(const std::string& base, double p, const Bytes& eval, int64_t chunks, int every,
              search::PruneRanking ranking, Run* run) {
  const std::string dir = base + ".p" + std::to_string(static_cast<int>(p * 100 + 0.5));
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::copy(base, dir, fs::copy_options::recursive, ec);
  if (ec) return Status::IOError("copying " + base + " to " + dir + ": " + ec.message());
  FQ_ASSIGN_OR_RETURN(auto store, store::Store::Open(Env::Default(), dir));
  search::PruneRequest req;
  req.fraction = p;
  req.ranking = ranking;
  req.threads = static_cast<int>(std::thread::hardware_concurrency());
  FQ_ASSIGN_OR_RETURN(run->prune, search::PruneEnsemble(store.get(), req));
  FQ_ASSIGN_OR_RETURN(store::SweepResult swept, store::Sweep(store.get()));
  (void)swept;
  FQ_ASSIGN_OR_RETURN(store::StoreStats stats, store->Stats());
  run->store_bytes = stats.stored_bytes;
  search::ReportOptions opts;
  opts.has_eval_text = true;
  opts.eval_text = eval;
  opts.eval_name = "eval";
  opts.max_chunks = chunks;
  opts.every = every;
  opts.threads = req.threads;
  FQ_ASSIGN_OR_RETURN(run->report, search::BuildReport(store.get(), "", opts));
  fs::remove_all(dir, ec);
  return Status::OK();
}

std::string Num(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(
        stderr, "usage: %s STORE EVAL_TEXT OUT_PREFIX [P,P,...] [MAX_CHUNKS] [EVERY] [area|uses]\n",
        argv[0]);
    return 2;
  }
  const std::string base = argv[1];
  const std::string prefix = argv[3];
  std::vector<double> ps = {0, 0.25, 0.5, 0.75};
  if (argc > 4) {
    ps.clear();
    std::string list = argv[4];
    for (size_t at = 0; at <= list.size();) {
      size_t end = list.find(',', at);
      if (end == std::string::npos) end = list.size();
      ps.push_back(std::stod(list.substr(at, end - at)));
      at = end + 1;
    }
  }
  const int64_t chunks = argc > 5 ? std::stoll(argv[5]) : 64;
  const int every = argc > 6 ? std::stoi(argv[6]) : 4;
  Result<search::PruneRanking> ranking =
      search::ParsePruneRanking(argc > 7 ? argv[7] : std::string("area"));
  if (!ranking.ok()) {
    std::fprintf(stderr, "error: %s\n", ranking.status().ToString().c_str());
    return 2;
  }
  Result<Bytes> eval = ReadFileBytes(Env::Default(), argv[2]);
  if (!eval.ok()) {
    std::fprintf(stderr, "error: %s\n", eval.status().ToString().c_str());
    return 1;
  }
  const Bytes text = search::BlankEndOfText(*eval);

  std::vector<Run> runs(ps.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    runs[i].p = ps[i];
    Status s = Sweep1(base, ps[i], text, chunks, every, *ranking, &runs[i]);
    if (!s.ok()) {
      std::fprintf(stderr, "error at P=%.2f: %s\n", ps[i], s.ToString().c_str());
      return 1;
    }
    std::fprintf(stderr, "P=%.2f done (repair %.1f s)\n", ps[i], runs[i].prune.search_seconds);
  }

  // The static QMs, measured whole on the unpruned store (P = 0 first).
  const search::Report& r0 = runs.front().report;
  std::printf("model %s, ranking %s, %lld chunks of %lld tokens\n", r0.model.c_str(),
              search::PruneRankingName(*ranking), static_cast<long long>(r0.chunks),
              static_cast<long long>(r0.n_ctx));
  std::printf("%-5s %8s %10s %10s %10s %8s", "P", "pruned", "ensemble", "store", "saved", "EQMs");
  for (const search::StaticPoint& s : r0.statics) std::printf(" %15s", ("ppl@" + s.label).c_str());
  std::printf("\n%-5s %8s %10s %10s %10s %8s", "static", "", "", "", "", "");
  for (const search::StaticPoint& s : r0.statics) std::printf(" %15s", Num(s.eval_ppl, 4).c_str());
  std::printf("\n");
  const uint64_t ensemble0 = r0.ensembles[0].storage.ensemble_stored_bytes;
  plot::PlotSpec plot;
  plot.title = r0.model + ": perplexity vs footprint, ensemble pruned at P (" +
               search::PruneRankingName(*ranking) + " ranking)";
  plot.x_label = "footprint (KiB)";
  plot.y_label = "perplexity";
  plot::PlotSeries statics;
  statics.name = "static QMs";
  statics.style = plot::PlotSeries::Style::kMarkers;
  statics.label_points = true;
  for (const search::StaticPoint& s : r0.statics) {
    if (s.evaluated) statics.points.push_back({s.footprint / 1024.0, s.eval_ppl, s.label});
  }
  JsonWriter w;
  w.BeginObject().Key("model").String(r0.model).Key("runs").BeginArray();
  for (const Run& run : runs) {
    const search::EnsembleReport& e = run.report.ensembles[0];
    const uint64_t stored = e.storage.ensemble_stored_bytes;
    std::printf("%-5.2f %8zu %10s %10s %9.1f%% %8zu", run.p, run.prune.plan.n_pruned,
                FormatBytes(stored).c_str(), FormatBytes(run.store_bytes).c_str(),
                100.0 * (1.0 - static_cast<double>(stored) / static_cast<double>(ensemble0)),
                e.eqms.size());
    plot::PlotSeries curve;
    curve.name = "P = " + Num(run.p, 2);
    for (const search::EqmPoint& q : e.eqms) {
      if (q.evaluated) curve.points.push_back({q.footprint / 1024.0, q.eval_ppl, ""});
    }
    plot.series.push_back(curve);
    w.BeginObject()
        .Key("p")
        .Double(run.p)
        .Key("pruned")
        .Uint(run.prune.plan.n_pruned)
        .Key("ensemble_stored_bytes")
        .Uint(stored)
        .Key("ensemble_bytes")
        .Uint(e.storage.ensemble_bytes)
        .Key("store_bytes")
        .Uint(run.store_bytes)
        .Key("eqms")
        .Uint(e.eqms.size())
        .Key("repair_seconds")
        .Double(run.prune.search_seconds)
        .Key("quality")
        .BeginArray();
    for (const search::QualityRow& q : e.quality) {
      double change = 0;
      for (const search::StaticPoint& st : r0.statics) {
        if (st.label == q.label) change = 100.0 * (q.eqm_ppl / st.eval_ppl - 1.0);
      }
      std::printf(" %7s %+5.1f%%", Num(q.eqm_ppl, 3).c_str(), change);
      w.BeginObject()
          .Key("label")
          .String(q.label)
          .Key("static_footprint")
          .Uint(q.static_footprint)
          .Key("eqm_step")
          .Int(q.eqm_step)
          .Key("eqm_footprint")
          .Uint(q.eqm_footprint)
          .Key("eqm_ppl")
          .Double(q.eqm_ppl)
          .EndObject();
    }
    w.EndArray().EndObject();
    std::printf("\n");
  }
  w.EndArray().EndObject();
  plot.series.push_back(statics);
  Status s = plot::WritePlot(plot, prefix + ".svg");
  if (s.ok())
    s = PublishFile(Env::Default(), prefix + ".json",
                    ByteSpan(reinterpret_cast<const uint8_t*>(w.str().data()), w.str().size()));
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf(
      "(ppl columns: the EQM at or below each static QM's footprint, and its change against that "
      "static QM)\nplot: %s.svg, numbers: %s.json\n",
      prefix.c_str(), prefix.c_str());
  return 0;
}
