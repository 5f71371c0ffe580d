// Line and scatter plots as SVG or PNG, drawn by fqpack itself: a plot is
// laid out once (axes with 1-2-5 ticks, labels, legend) into drawing
// primitives, which an SVG writer or a small rasterizer turns into a file.
// The PNG path has its own 5x7 bitmap font (printable ASCII), anti-aliased
// lines and discs; zlib compresses the scanlines and checksums the chunks.
//
// Several curves go in one plot (one PlotSeries each): an ensemble per
// pruning level, say, against the same static points.
//
// Thread-safety: the functions are reentrant.
#ifndef FQPACK_PLOT_PLOT_H_
#define FQPACK_PLOT_PLOT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "schema/coding.h"
#include "schema/status.h"

namespace fqpack::plot {

struct PlotPoint {
  double x = 0;
  double y = 0;
  std::string label;  // drawn next to the point when the series labels points
};

struct PlotSeries {
  enum class Style { kLine, kMarkers };
  std::string name;  // in the legend
  Style style = Style::kLine;
  std::vector<PlotPoint> points;
  uint32_t color = 0;  // 0xRRGGBB; 0 picks the next colour of the palette
  bool label_points = false;
  bool markers = true;  // kLine: also mark every point
};

struct PlotSpec {
  std::string title;
  std::string x_label;  // with its unit: "footprint (MiB)"
  std::string y_label;
  std::vector<PlotSeries> series;
  // A logarithmic y axis (points with y <= 0 are left out): ticks at 1,
  // 1.5, 2, 3, 4, 5, 7 times powers of ten, or 1, 2, 5, or only 1, whichever
  // is densest without crowding, when the range holds at least three of
  // them; else at NiceTicks' values, placed on the log scale.
  bool log_y = false;
  int width = 960;
  int height = 600;
};

std::string RenderSvg(const PlotSpec& spec);
Bytes RenderPng(const PlotSpec& spec);

// Writes `spec` to `path` as SVG or PNG by the file's extension
// (InvalidArgument for any other), crash-safely.
Status WritePlot(const PlotSpec& spec, const std::string& path);

// PNG building blocks, exposed for tests.
// An 8-bit RGB image (rows top to bottom) as a PNG file.
Bytes EncodePng(int width, int height, const std::vector<uint8_t>& rgb);
// Tick positions covering [lo, hi] at a 1, 2 or 5 times power-of-ten spacing,
// about `target` of them.
std::vector<double> NiceTicks(double lo, double hi, int target);
// Tick values for a log axis over [lo, hi] (0 < lo < hi): see PlotSpec::log_y.
std::vector<double> LogTicks(double lo, double hi, int target);

}  // namespace fqpack::plot

#endif  // FQPACK_PLOT_PLOT_H_
