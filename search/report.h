// What `fqpack report` shows about ensembles: perplexity versus footprint of
// the EQMs and of the library's static QMs, granularity, storage and
// quality at the static footprints, as numbers (Report), as JSON, and as a
// plot with one curve per ensemble (ReportPlot; plot/plot.h draws it).
//
// Perplexity is llama.cpp's method (runtime/perplexity.h) on an evaluation
// text, by default with chunks of 256 tokens; EQMs can be thinned to every
// k-th step, but the first and last EQM and, for every static QM, the EQM
// at or below its footprint are always evaluated.
//
// Thread-safety: BuildReport uses the store like any reader; the pure
// functions are reentrant.
#ifndef FQPACK_SEARCH_REPORT_H_
#define FQPACK_SEARCH_REPORT_H_

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "plot/plot.h"
#include "schema/coding.h"
#include "schema/status.h"
#include "store/store.h"

namespace fqpack::search {

// A report's plot is described in plot/'s terms; plot/ draws it.
using plot::PlotPoint;
using plot::PlotSeries;
using plot::PlotSpec;

// Footprint differences between neighbours, in bytes.
struct StepStats {
  size_t steps = 0;
  double median = 0;  // the mean of the two middle steps for an even count
  uint64_t max = 0;
};
// Of `footprints` in any order (sorted descending first; equal footprints
// are neighbours with a step of 0).
StepStats FootprintSteps(std::vector<uint64_t> footprints);

struct Granularity {
  StepStats ensemble;
  StepStats library;  // the static ladder: the library's QMs
  uint64_t up_footprint = 0;
  double median_pct() const { return Pct(ensemble.median); }
  double max_pct() const { return Pct(static_cast<double>(ensemble.max)); }
  double static_median_pct() const { return Pct(library.median); }
  // How many times finer the ensemble's median step is than the ladder's.
  double ratio() const { return ensemble.median > 0 ? library.median / ensemble.median : 0; }

 private:
  double Pct(double bytes) const {
    return up_footprint == 0 ? 0 : 100.0 * bytes / static_cast<double>(up_footprint);
  }
};
Granularity ComputeGranularity(const std::vector<uint64_t>& eqm_footprints,
                               const std::vector<uint64_t>& static_footprints);

struct Storage {
  uint64_t ensemble_bytes = 0;         // distinct modules the EQMs reference (raw bytes)
  uint64_t ensemble_stored_bytes = 0;  // their blob files (zstd)
  uint64_t library_bytes = 0;          // the library's QMs stored whole
  uint64_t per_footprint_bytes = 0;    // one static model per EQM footprint
  // per_footprint_bytes / ensemble_bytes: the paper's storage comparison.
  double ratio() const {
    return ensemble_bytes == 0 ? 0 : static_cast<double>(per_footprint_bytes) / ensemble_bytes;
  }
  double library_ratio() const {
    return ensemble_bytes == 0 ? 0 : static_cast<double>(library_bytes) / ensemble_bytes;
  }
};

struct EqmPoint {
  int step = 0;
  uint64_t footprint = 0;
  double calib_metric = NAN;
  double calib_ppl = NAN;
  double calib_kl = NAN;
  bool evaluated = false;
  double eval_ppl = NAN;
  double eval_ppl_err = NAN;
};

struct StaticPoint {
  std::string label;
  uint64_t footprint = 0;
  double bits_per_weight = 0;
  bool partial = false;  // gc --prune took some of its modules: it cannot run
  bool evaluated = false;
  double eval_ppl = NAN;
  double eval_ppl_err = NAN;
};

// At a static QM's footprint: the EQM at or below it.
struct QualityRow {
  std::string label;
  uint64_t static_footprint = 0;
  double static_ppl = NAN;
  int eqm_step = -1;  // -1: no EQM is that small
  uint64_t eqm_footprint = 0;
  double eqm_ppl = NAN;
  // 100 * (eqm_ppl / static_ppl - 1): negative when the EQM is better.
  double delta_pct() const { return 100.0 * (eqm_ppl / static_ppl - 1.0); }
};

struct EnsembleReport {
  std::string name;
  std::vector<std::string> library;  // labels, up first
  store::JsonFields params;
  std::string metric;  // the search metric ("kl" or "ppl")
  std::vector<EqmPoint> eqms;
  Granularity granularity;
  Storage storage;
  std::vector<QualityRow> quality;
};

struct Report {
  std::string model;
  std::string eval_text;  // its name; "calibration text of <ensemble>" without --eval-text
  int64_t n_ctx = 0;
  int64_t eval_tokens = 0;
  int64_t chunks = 0;
  std::vector<StaticPoint> statics;  // the reported ensembles' libraries, by footprint descending
  std::vector<EnsembleReport> ensembles;
  int64_t evaluations = 0;
  double seconds = 0;
};

struct ReportOptions {
  std::vector<std::string> ensembles;  // names; empty: the newest
  bool has_eval_text = false;          // false: no text given; use the calibration text
  Bytes eval_text;
  std::string eval_name;
  bool evaluate = true;  // false: footprints, granularity and storage only
  int64_t n_ctx = 256;
  int every = 1;
  int64_t max_chunks = -1;  // -1: the whole text
  int threads = 1;
  std::function<bool()> cancelled;
  std::function<void(int64_t done, int64_t total, const std::string& what)> progress;
};

// The text with every line that is exactly "<|endoftext|>" (TinyStories'
// story separator; a trailing CR allowed) made empty, as llama.cpp's
// perplexity files have it.
Bytes BlankEndOfText(ByteSpan text);

Result<Report> BuildReport(store::Store* store, const std::string& model,
                           const ReportOptions& options);

// The report as one JSON object: the first ensemble's `eqms`, `granularity`,
// `storage` and `quality` at the top level next to `static`, and every
// ensemble under `curves` (README, "fqpack report --json").
std::string ReportJson(const Report& report);

// Perplexity versus footprint: the static QMs as labelled points, each
// ensemble as a curve through its evaluated EQMs, named in the legend with
// the method that chose its walk (a tree search's against a greedy
// baseline's). log_ppl: a logarithmic perplexity axis, so that the low
// footprints, where perplexity grows fastest, do not flatten the rest.
PlotSpec ReportPlot(const Report& report, bool log_ppl = false);

// The method of an ensemble, from its params ("tree" when none is stored).
std::string EnsembleMethod(const EnsembleReport& e);

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_REPORT_H_
