// fqpack search | report: FlexQuant ensembles.

#include <cstdio>

#include "cli/app.h"
#include "cli/output.h"
#include "plot/plot.h"
#include "schema/json.h"
#include "schema/units.h"
#include "search/ensemble.h"
#include "search/report.h"

namespace fqpack::cli {
namespace {

std::string Pct(double v) { return FormatDouble(v, 2) + "%"; }

struct SearchArgs {
  search::SearchRequest request;
  std::string calib_file;
  std::string metric = "kl";
  std::string method = "tree";
  bool no_reuse = false;
  bool no_speedups = false;
};

Status RunSearch(Context& ctx, SearchArgs args) {
  search::SearchRequest& req = args.request;
  FQ_ASSIGN_OR_RETURN(req.search.metric, search::ParseMetric(args.metric));
  FQ_ASSIGN_OR_RETURN(req.method, search::ParseSearchMethod(args.method));
  FQ_ASSIGN_OR_RETURN(req.calib_text, ReadFileBytes(ctx.env, args.calib_file));
  req.threads = ctx.Threads();
  req.reuse = !args.no_reuse;
  req.search.speedups = !args.no_speedups;
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());

  SearchBars bars(ctx, "");
  req.search.cancelled = [] { return InterruptFlag().load(); };
  req.search.progress = [&bars](const search::SearchProgress& p) { bars.Update(p); };
  Result<search::SearchOutcome> r = search::SearchEnsemble(store.get(), req);
  bars.Finish();
  if (!r.ok()) {
    if (r.status().IsAborted()) {
      return Status::Aborted("search interrupted; nothing was written to the store");
    }
    return r.status();
  }
  const search::SearchOutcome& o = *r;
  const search::SearchResult& res = o.result;
  std::vector<uint64_t> fps;
  for (const auto& s : res.steps) fps.push_back(s.footprint);
  std::vector<uint64_t> static_fps;
  for (const std::string& label : o.library) {
    FQ_ASSIGN_OR_RETURN(store::ModelInfo m, store->ResolveModel(req.model));
    FQ_ASSIGN_OR_RETURN(store::QmInfo q, store->FindQm(m.id, label));
    static_fps.push_back(q.weight_bytes);
  }
  const search::Granularity g = search::ComputeGranularity(fps, static_fps);
  const search::EvalStats& es = o.eval_stats;
  const double eval_seconds = es.seconds;
  const double rate = eval_seconds > 0 ? static_cast<double>(es.evaluations) / eval_seconds : 0;
  const double block_share =
      es.blocks_full > 0 ? static_cast<double>(es.blocks_run) / static_cast<double>(es.blocks_full)
                         : 1;
  const search::EnsembleStep& first = res.steps.front();
  const search::EnsembleStep& last = res.steps.back();
  const std::string metric = search::MetricName(req.search.metric);

  if (ctx.json) {
    JsonWriter w(true);
    w.BeginObject()
        .Key("ensemble")
        .String(o.name)
        .Key("ensemble_id")
        .Int(o.ensemble_id)
        .Key("library")
        .BeginArray();
    for (const std::string& l : o.library) w.String(l);
    w.EndArray()
        .Key("metric")
        .String(metric)
        .Key("method")
        .String(search::SearchMethodName(req.method))
        .Key("stem")
        .Int(req.search.stem)
        .Key("branch")
        .Int(req.search.branch)
        .Key("n_ctx")
        .Int(o.n_ctx)
        .Key("chunks")
        .Int(o.chunks)
        .Key("calib_tokens")
        .Int(o.calib_tokens)
        .Key("calib_sha256")
        .String(o.calib_sha256)
        .Key("searched_slots")
        .Int(o.searched_slots)
        .Key("held_back_slots")
        .Int(o.held_back_slots)
        .Key("eqms")
        .Uint(res.steps.size())
        .Key("area")
        .Double(res.area)
        .Key("median_step")
        .Double(g.ensemble.median)
        .Key("max_step")
        .Uint(g.ensemble.max)
        .Key("static_median_step")
        .Double(g.library.median)
        .Key("granularity_ratio")
        .Double(g.ratio())
        .Key("sensitivity_evaluations")
        .Int(res.sensitivity.evaluations)
        .Key("search_evaluations")
        .Int(res.search_evaluations)
        .Key("evaluations")
        .Int(es.evaluations)
        .Key("evaluations_per_second")
        .Double(rate)
        .Key("blocks_run")
        .Int(es.blocks_run)
        .Key("blocks_full")
        .Int(es.blocks_full)
        .Key("reuse")
        .Bool(req.reuse)
        .Key("threads")
        .Int(req.threads)
        .Key("speedups")
        .Bool(req.search.speedups)
        .Key("search_units")
        .Int(res.search_units)
        .Key("rejected_early")
        .Int(res.rejected_early)
        .Key("setup_seconds")
        .Double(o.setup_seconds)
        .Key("sensitivity_seconds")
        .Double(res.sensitivity_seconds)
        .Key("search_seconds")
        .Double(res.search_seconds)
        .Key("steps")
        .BeginArray();
    for (size_t i = 0; i < res.steps.size(); ++i) {
      const search::EnsembleStep& s = res.steps[i];
      w.BeginObject().Key("step").Uint(i).Key("footprint").Uint(s.footprint);
      w.Key("slot").String(o.moved_slot[i]).Key("type").String(o.moved_to[i]);
      w.Key("calib_metric").Double(s.metric).Key("calib_kl").Double(s.score.kl);
      w.Key("calib_ppl").Double(s.score.ppl()).EndObject();
    }
    w.EndArray().EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  std::string lib;
  for (const std::string& l : o.library) lib += (lib.empty() ? "" : " > ") + l;
  std::string out;
  out += "ensemble " + o.name + ": " + std::to_string(res.steps.size()) + " EQMs from " +
         FormatBytes(first.footprint) + " (" + o.library.front() + ") to " +
         FormatBytes(last.footprint) + " (" + o.library.back() + "), one module per step" +
         (req.method == search::SearchMethod::kGreedy
              ? ", by greedy demotion on predicted " + metric + " per byte"
              : "") +
         "\n";
  out += "  library      " + lib + "; " + std::to_string(o.searched_slots) + " slots searched" +
         (o.held_back_slots > 0
              ? ", " + std::to_string(o.held_back_slots) + " held back to the last steps"
              : "") +
         "\n";
  out += "  steps        median " + FormatBytes(static_cast<uint64_t>(g.ensemble.median)) + " (" +
         Pct(g.median_pct()) + " of " + o.library.front() + "), max " +
         FormatBytes(g.ensemble.max) + "; static ladder median " +
         FormatBytes(static_cast<uint64_t>(g.library.median)) + " (" + FormatRatio(g.ratio()) +
         " coarser)\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%.6f -> %.6f nats/token; calibration ppl %.4f -> %.4f",
                first.score.kl, last.score.kl, first.score.ppl(), last.score.ppl());
  out += "  quality      KL from " + o.library.front() + " " + line + " (metric " + metric + ")\n";
  out += "  calibration  " + std::to_string(o.chunks) + " chunks of " + std::to_string(o.n_ctx) +
         " tokens from " + args.calib_file + " (" + std::to_string(o.calib_tokens) +
         " tokens, sha256 " + o.calib_sha256.substr(0, 16) + "...)\n";
  out += "  cost         " + std::to_string(res.sensitivity.evaluations) + " sensitivity + " +
         std::to_string(res.search_evaluations) + " search evaluations in " +
         FormatSeconds(res.sensitivity_seconds + res.search_seconds) + " (" +
         FormatDouble(rate, 2) + " EQMs/s on " + std::to_string(req.threads) + " threads); " +
         (req.reuse ? "reusing activations ran " + Pct(100 * block_share) +
                          " of the layer blocks of full evaluations"
                    : "no activation reuse") +
         "\n";
  out += "see it with: fqpack report --model " + store->ResolveModel(req.model).value().name +
         " --ensemble " + o.name + " --eval-text EVAL.txt --plot " + o.name + ".svg";
  ctx.Print(out);
  return Status::OK();
}

struct ReportArgs {
  std::string model;
  std::vector<std::string> ensembles;
  std::string eval_text;
  bool no_eval = false;
  int64_t n_ctx = 256;
  int every = 1;
  int64_t chunks = -1;
  std::string csv;
  std::string plot;
  bool log_ppl = false;
};

std::string PplCell(bool evaluated, double v) {
  return evaluated && std::isfinite(v) ? FormatDouble(v, 4) : "-";
}

std::string ReportCsv(const search::Report& r) {
  std::string csv =
      "curve,kind,label,step,footprint,calib_metric,calib_kl,calib_ppl,eval_ppl,eval_ppl_err\n";
  auto num = [](double v) { return std::isfinite(v) ? FormatDouble(v, 6) : std::string(); };
  for (const search::StaticPoint& s : r.statics) {
    csv += ",static," + s.label + ",," + std::to_string(s.footprint) + ",,,," +
           (s.evaluated ? num(s.eval_ppl) : "") + "," + (s.evaluated ? num(s.eval_ppl_err) : "") +
           "\n";
  }
  for (const search::EnsembleReport& e : r.ensembles) {
    for (const search::EqmPoint& p : e.eqms) {
      csv += e.name + ",eqm,," + std::to_string(p.step) + "," + std::to_string(p.footprint) + "," +
             num(p.calib_metric) + "," + num(p.calib_kl) + "," + num(p.calib_ppl) + "," +
             (p.evaluated ? num(p.eval_ppl) : "") + "," + (p.evaluated ? num(p.eval_ppl_err) : "") +
             "\n";
    }
  }
  return csv;
}

Status RunReport(Context& ctx, const ReportArgs& args) {
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  search::ReportOptions opts;
  opts.ensembles = args.ensembles;
  opts.evaluate = !args.no_eval;
  if (!args.eval_text.empty()) {
    opts.has_eval_text = true;
    FQ_ASSIGN_OR_RETURN(opts.eval_text, ReadFileBytes(ctx.env, args.eval_text));
    opts.eval_name = BaseName(args.eval_text);
  } else if (opts.evaluate) {
    ctx.Note(
        "note: no --eval-text; perplexities are on the ensemble's calibration text, which "
        "flatters the ensemble");
  }
  opts.n_ctx = args.n_ctx;
  opts.every = args.every;
  opts.max_chunks = args.chunks;
  opts.threads = ctx.Threads();
  opts.cancelled = [] { return InterruptFlag().load(); };
  std::unique_ptr<Progress> bar;
  opts.progress = [&](int64_t done, int64_t total, const std::string& what) {
    if (bar == nullptr) {
      bar = std::make_unique<Progress>("perplexity", static_cast<uint64_t>(total),
                                       ctx.ShowProgress());
    }
    bar->Update(static_cast<uint64_t>(done), what);
  };
  FQ_ASSIGN_OR_RETURN(search::Report r, search::BuildReport(store.get(), args.model, opts));
  if (bar) bar->Finish(std::to_string(r.evaluations) + " models evaluated");

  if (!args.csv.empty()) {
    const std::string csv = ReportCsv(r);
    FQ_RETURN_IF_ERROR(PublishFile(
        ctx.env, args.csv, ByteSpan(reinterpret_cast<const uint8_t*>(csv.data()), csv.size())));
  }
  if (!args.plot.empty())
    FQ_RETURN_IF_ERROR(plot::WritePlot(search::ReportPlot(r, args.log_ppl), args.plot));
  if (ctx.json) {
    ctx.Print(search::ReportJson(r));
    return Status::OK();
  }

  std::string out = "model " + r.model;
  if (r.chunks > 0) {
    out += ": perplexity on " + r.eval_text + " (" + std::to_string(r.chunks) + " chunks of " +
           std::to_string(r.n_ctx) + " tokens, llama.cpp's method)";
  }
  out += "\n\nstatic QMs\n";
  Table st({"QM", "bits/w", "footprint", "ppl"}, "lrrr");
  for (const search::StaticPoint& s : r.statics) {
    st.AddRow({s.label + (s.partial ? " (partial)" : ""), FormatDouble(s.bits_per_weight, 2),
               FormatBytes(s.footprint), s.partial ? "pruned" : PplCell(s.evaluated, s.eval_ppl)});
  }
  out += st.Render("  ");
  for (const search::EnsembleReport& e : r.ensembles) {
    out += "\nensemble " + e.name + " (" + std::to_string(e.eqms.size()) + " EQMs, metric " +
           e.metric + ")\n";
    Table t({"step", "footprint", "calib " + e.metric, "calib ppl", "ppl"}, "rrrrr");
    for (const search::EqmPoint& p : e.eqms) {
      if (!p.evaluated && r.chunks > 0) continue;
      t.AddRow({std::to_string(p.step), FormatBytes(p.footprint), FormatDouble(p.calib_metric, 6),
                FormatDouble(p.calib_ppl, 4), PplCell(p.evaluated, p.eval_ppl)});
    }
    out += t.Render("  ");
    const search::Granularity& g = e.granularity;
    out += "  granularity  median step " + FormatBytes(static_cast<uint64_t>(g.ensemble.median)) +
           " (" + Pct(g.median_pct()) + "), max " + FormatBytes(g.ensemble.max) + " (" +
           Pct(g.max_pct()) + "); static ladder: median " +
           FormatBytes(static_cast<uint64_t>(g.library.median)) + " (" +
           Pct(g.static_median_pct()) + "), max " + FormatBytes(g.library.max) + "; " +
           FormatRatio(g.ratio()) + " finer\n";
    const search::Storage& s = e.storage;
    out += "  storage      the ensemble references " + FormatBytes(s.ensemble_bytes) + " (" +
           FormatBytes(s.ensemble_stored_bytes) + " stored); its library stored whole " +
           FormatBytes(s.library_bytes) + " (" + FormatRatio(s.library_ratio()) +
           "); one static model per footprint " + FormatBytes(s.per_footprint_bytes) + " (" +
           FormatRatio(s.ratio()) + ")\n";
    if (r.chunks > 0) {
      out += "  quality at the static footprints\n";
      Table q({"QM", "footprint", "ppl", "EQM", "footprint", "ppl", "change"}, "lrrrrrr");
      for (const search::QualityRow& row : e.quality) {
        q.AddRow({row.label, FormatBytes(row.static_footprint), PplCell(true, row.static_ppl),
                  row.eqm_step < 0 ? "-" : std::to_string(row.eqm_step),
                  row.eqm_step < 0 ? "-" : FormatBytes(row.eqm_footprint),
                  PplCell(row.eqm_step >= 0, row.eqm_ppl),
                  std::isfinite(row.delta_pct())
                      ? (row.delta_pct() >= 0 ? "+" : "") + FormatDouble(row.delta_pct(), 2) + "%"
                      : "-"});
      }
      out += q.Render("    ");
    }
  }
  if (!args.plot.empty()) out += "\nplot: " + args.plot;
  if (!args.csv.empty()) out += "\ncsv: " + args.csv;
  ctx.Print(out);
  return Status::OK();
}

}  // namespace

void SearchBars::Update(const search::SearchProgress& p) {
  if (static_cast<int>(p.phase) != phase_) {
    Finish();
    phase_ = static_cast<int>(p.phase);
    const char* what =
        p.phase == search::SearchProgress::Phase::kSensitivity ? "sensitivity" : "search";
    bar_ = std::make_unique<Progress>(prefix_ + what, static_cast<uint64_t>(p.total),
                                      ctx_.ShowProgress());
  }
  bar_->Update(static_cast<uint64_t>(p.done));
}

void SearchBars::Finish() {
  if (bar_ != nullptr) bar_->Finish();
  bar_.reset();
}

void RegisterSearchCommands(CLI::App& app, Context& ctx) {
  auto sa = std::make_shared<SearchArgs>();
  CLI::App* s = app.add_subcommand(
      "search",
      "Build a FlexQuant ensemble: EQMs from --up down to --low, one module per step, chosen by "
      "sensitivity analysis and tree search on calibration text (or, with --method greedy, by "
      "the greedy allocator the tree search is measured against)");
  s->add_option("-m,--model", sa->request.model, "Model (needed when the store holds several)");
  s->add_option("--up", sa->request.up, "Highest-precision QM (QM(n_up))")->required();
  s->add_option("--low", sa->request.low, "Lowest-precision QM (QM(n_low))")->required();
  s->add_option("--mid", sa->request.mids, "QMs in between, comma-separated")->delimiter(',');
  s->add_option("--calib", sa->calib_file, "Calibration text (never the evaluation text)")
      ->required()
      ->check(CLI::ExistingFile);
  s->add_option("--stem", sa->request.search.stem, "Paths kept alive per step")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  s->add_option("--branch", sa->request.search.branch, "Moves each path tries per step")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  s->add_option("--metric", sa->metric, "kl (against QM(n_up)'s output) or ppl")
      ->capture_default_str()
      ->check(CLI::IsMember({"kl", "ppl"}));
  s->add_option("--tokens", sa->request.tokens, "Calibration tokens (whole chunks)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 30));
  s->add_option("-c,--ctx-size", sa->request.n_ctx,
                "Tokens per calibration chunk (default: the model's context length)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  s->add_option("--name", sa->request.name, "Ensemble name (default: the library's labels)");
  s->add_option("--method", sa->method,
                "tree: the tree search; greedy: demote the slot whose next module costs the least "
                "predicted metric per byte saved (from the sensitivity analysis alone, along each "
                "slot's lower convex hull; --stem and --branch do not apply)")
      ->capture_default_str()
      ->check(CLI::IsMember({"tree", "greedy"}));
  s->add_flag("--include-embed", sa->request.include_embed,
              "Also search the token embedding and output matrix (otherwise they move last)");
  s->add_flag("--no-reuse", sa->no_reuse,
              "Evaluate every EQM from the embedding (to measure what activation reuse saves)");
  s->add_flag("--no-speedups", sa->no_speedups,
              "Score every child in full from its parent, without reuse across siblings or "
              "early rejection (the same ensemble, slower: to measure what they save)");
  s->callback([&ctx, sa] { ctx.action = [&ctx, sa] { return RunSearch(ctx, *sa); }; });

  auto ra = std::make_shared<ReportArgs>();
  CLI::App* r = app.add_subcommand(
      "report", "Perplexity versus footprint of an ensemble and its static QMs: table, plot, JSON");
  r->add_option("-m,--model", ra->model, "Model (needed when the store holds several)");
  r->add_option("-e,--ensemble", ra->ensembles,
                "Ensemble(s) to report, one curve each (default: the newest)");
  r->add_option("-f,--eval-text", ra->eval_text,
                "Evaluation text (lines that are exactly <|endoftext|> are blanked)")
      ->check(CLI::ExistingFile);
  r->add_flag("--no-eval", ra->no_eval, "Footprints, granularity and storage only");
  r->add_option("-c,--ctx-size", ra->n_ctx, "Tokens per perplexity chunk")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{4}, int64_t{1} << 20));
  r->add_option("--every", ra->every,
                "Evaluate every k-th EQM (plus the first, the last and those at the static "
                "footprints)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  r->add_option("--chunks", ra->chunks, "Evaluate only the first N chunks of the text")
      ->check(CLI::PositiveNumber);
  r->add_option("--csv", ra->csv, "Also write the points as CSV");
  r->add_option("--plot", ra->plot,
                "Write the plot: F.svg or F.png (one curve per --ensemble, named with its method, "
                "and the static QMs as points)");
  r->add_flag("--log-ppl", ra->log_ppl, "Plot perplexity on a log scale");
  r->callback([&ctx, ra] { ctx.action = [&ctx, ra] { return RunReport(ctx, *ra); }; });
}

}  // namespace fqpack::cli
