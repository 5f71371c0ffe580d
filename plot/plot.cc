#include "plot/plot.h"

#include <zlib.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <new>
#include <string_view>

#include "schema/env.h"

namespace fqpack::plot {
namespace {

// A 5x7 bitmap font for printable ASCII (32..126): seven rows per glyph, top
// first, the five pixels of a row in bits 4 (left) .. 0 (right). The glyphs
// of kDescenders are drawn two rows lower, their last rows below the line.
constexpr uint8_t kFont[95][7] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},  // space
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04},  // !
    {0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00},  // "
    {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a},  // #
    {0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04},  // $
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03},  // %
    {0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d},  // &
    {0x04, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00},  // '
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02},  // (
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},  // )
    {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00},  // *
    {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00},  // +
    {0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08},  // ,
    {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00},  // -
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c},  // .
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00},  // /
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e},  // 0
    {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e},  // 1
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f},  // 2
    {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e},  // 3
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02},  // 4
    {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e},  // 5
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e},  // 6
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},  // 7
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e},  // 8
    {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c},  // 9
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00},  // :
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08},  // ;
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02},  // <
    {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00},  // =
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08},  // >
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04},  // ?
    {0x0e, 0x11, 0x01, 0x0d, 0x15, 0x15, 0x0e},  // @
    {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11},  // A
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e},  // B
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e},  // C
    {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c},  // D
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f},  // E
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10},  // F
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f},  // G
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11},  // H
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e},  // I
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c},  // J
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11},  // K
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f},  // L
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11},  // M
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},  // N
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e},  // O
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10},  // P
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d},  // Q
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11},  // R
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e},  // S
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},  // T
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e},  // U
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04},  // V
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a},  // W
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11},  // X
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04},  // Y
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f},  // Z
    {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e},  // [
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00},  // backslash
    {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e},  // ]
    {0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00},  // ^
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f},  // _
    {0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00},  // `
    {0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f},  // a
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e},  // b
    {0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e},  // c
    {0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f},  // d
    {0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e},  // e
    {0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08},  // f
    {0x0f, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e},  // g
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11},  // h
    {0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e},  // i
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0c},  // j
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12},  // k
    {0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e},  // l
    {0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11},  // m
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11},  // n
    {0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e},  // o
    {0x1e, 0x11, 0x11, 0x11, 0x1e, 0x10, 0x10},  // p
    {0x0f, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x01},  // q
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10},  // r
    {0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e},  // s
    {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06},  // t
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d},  // u
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04},  // v
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a},  // w
    {0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11},  // x
    {0x11, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e},  // y
    {0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f},  // z
    {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02},  // {
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},  // |
    {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08},  // }
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00},  // ~
};
constexpr char kDescenders[] = "gpqy";
constexpr int kGlyphW = 5;
constexpr int kGlyphH = 7;
constexpr int kAdvance = 6;  // glyph plus one column of space

// Text is drawn at this many device pixels per font pixel; the SVG uses a
// monospace font of the same advance (0.6 em per character).
constexpr int kTextScale = 2;
constexpr double kSvgFontSize = kAdvance * kTextScale / 0.6;

constexpr uint32_t kPalette[] = {0x1f77b4, 0xd62728, 0x2ca02c, 0x9467bd,
                                 0xff7f0e, 0x8c564b, 0xe377c2, 0x17becf};
constexpr uint32_t kBlack = 0x000000;
constexpr uint32_t kGrid = 0xdddddd;
constexpr uint32_t kWhite = 0xffffff;

enum class Anchor { kStart, kMiddle, kEnd };

// One drawing primitive, in device pixels (origin top left).
struct Prim {
  enum class Kind { kLine, kDisc, kRect, kText };
  Kind kind = Kind::kLine;
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // line ends; disc centre (x0, y0); rect corners
  double width = 1;                       // line width, disc radius
  uint32_t color = kBlack;
  uint32_t stroke = kWhite;  // disc outline
  std::string text;
  Anchor anchor = Anchor::kStart;
  bool vertical = false;  // text rotated 90 degrees counter-clockwise
};

Prim LinePrim(double x0, double y0, double x1, double y1, double width, uint32_t color) {
  Prim p;
  p.kind = Prim::Kind::kLine;
  p.x0 = x0, p.y0 = y0, p.x1 = x1, p.y1 = y1, p.width = width, p.color = color;
  return p;
}
Prim RectPrim(double x0, double y0, double x1, double y1, uint32_t color) {
  Prim p;
  p.kind = Prim::Kind::kRect;
  p.x0 = x0, p.y0 = y0, p.x1 = x1, p.y1 = y1, p.color = color;
  return p;
}
Prim DiscPrim(double cx, double cy, double r, uint32_t fill, uint32_t stroke) {
  Prim p;
  p.kind = Prim::Kind::kDisc;
  p.x0 = cx, p.y0 = cy, p.width = r, p.color = fill, p.stroke = stroke;
  return p;
}
Prim TextPrim(double x, double y, std::string text, Anchor anchor = Anchor::kStart) {
  Prim p;
  p.kind = Prim::Kind::kText;
  p.x0 = x, p.y0 = y, p.text = std::move(text), p.anchor = anchor;
  return p;
}

double TextWidth(const std::string& s) {
  return static_cast<double>(s.size() * kAdvance * kTextScale);
}
constexpr double kTextHeight = kGlyphH * kTextScale;

std::string FormatTick(double v, double step) {
  int decimals = 0;
  if (step < 1) decimals = static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", std::min(decimals, 6), v);
  std::string s = buf;
  if (s == "-0") s = "0";
  return s;
}

// The plot laid out as primitives.
std::vector<Prim> Layout(const PlotSpec& spec) {
  std::vector<Prim> out;
  const double W = spec.width, H = spec.height;
  out.push_back(RectPrim(0, 0, W, H, kWhite));
  // Plot area.
  const double left = 100, right = W - 30, top = 50, bottom = H - 70;

  // The y axis is laid out in T(y): y itself, or log10(y) on a log axis.
  const bool log_y = spec.log_y;
  auto T = [log_y](double y) { return log_y ? std::log10(y) : y; };
  auto drawable = [log_y](const PlotPoint& p) {
    return std::isfinite(p.x) && std::isfinite(p.y) && (!log_y || p.y > 0);
  };
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const PlotSeries& s : spec.series) {
    for (const PlotPoint& p : s.points) {
      if (!drawable(p)) continue;
      xmin = std::min(xmin, p.x);
      xmax = std::max(xmax, p.x);
      ymin = std::min(ymin, T(p.y));
      ymax = std::max(ymax, T(p.y));
    }
  }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  auto pad = [](double* lo, double* hi) {
    double span = *hi - *lo;
    if (span <= 0) span = std::max(std::fabs(*hi), 1.0) * 0.1;
    *lo -= 0.06 * span;
    *hi += 0.06 * span;
  };
  pad(&xmin, &xmax);
  pad(&ymin, &ymax);
  // Room at the top for the legend.
  ymax += 0.04 * (ymax - ymin) * static_cast<double>(spec.series.size());
  auto X = [&](double x) { return left + (x - xmin) / (xmax - xmin) * (right - left); };
  auto Y = [&](double y) { return bottom - (T(y) - ymin) / (ymax - ymin) * (bottom - top); };

  const std::vector<double> xt = NiceTicks(xmin, xmax, 8);
  std::vector<double> yt;
  if (log_y) {
    yt = LogTicks(std::pow(10.0, ymin), std::pow(10.0, ymax), 6);
  } else {
    yt = NiceTicks(ymin, ymax, 6);
  }
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1;
  const double ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  for (double x : xt) {
    out.push_back(LinePrim(X(x), top, X(x), bottom, 1, kGrid));
    Prim t = TextPrim(X(x), bottom + 10 + kTextHeight, "");
    t.text = FormatTick(x, xstep);
    t.anchor = Anchor::kMiddle;
    out.push_back(t);
  }
  for (size_t i = 0; i < yt.size(); ++i) {
    const double y = yt[i];
    out.push_back(LinePrim(left, Y(y), right, Y(y), 1, kGrid));
    Prim t = TextPrim(left - 8, Y(y) + kTextHeight / 2, "");
    // A log axis's ticks are unevenly spaced: each gets the decimals its
    // distance to the next (or previous) tick needs.
    double step = ystep;
    if (log_y && yt.size() > 1) {
      step = i + 1 < yt.size() ? yt[i + 1] - y : y - yt[i - 1];
    }
    t.text = FormatTick(y, step);
    t.anchor = Anchor::kEnd;
    out.push_back(t);
  }
  // Frame.
  out.push_back(LinePrim(left, bottom, right, bottom, 1.5, kBlack));
  out.push_back(LinePrim(left, top, left, bottom, 1.5, kBlack));
  out.push_back(LinePrim(left, top, right, top, 1, kBlack));
  out.push_back(LinePrim(right, top, right, bottom, 1, kBlack));
  {
    Prim t = TextPrim((left + right) / 2, H - 18, "");
    t.text = spec.x_label;
    t.anchor = Anchor::kMiddle;
    out.push_back(t);
    Prim v = TextPrim(24 + kTextHeight, (top + bottom) / 2, "");
    v.text = spec.y_label;
    v.anchor = Anchor::kMiddle;
    v.vertical = true;
    out.push_back(v);
    Prim title = TextPrim(W / 2, 16 + kTextHeight, "");
    title.text = spec.title;
    title.anchor = Anchor::kMiddle;
    out.push_back(title);
  }

  size_t palette = 0;
  std::vector<uint32_t> colors;
  for (const PlotSeries& s : spec.series) {
    colors.push_back(s.color != 0 ? s.color
                                  : kPalette[palette++ % (sizeof(kPalette) / sizeof(kPalette[0]))]);
  }
  for (size_t k = 0; k < spec.series.size(); ++k) {
    const PlotSeries& s = spec.series[k];
    const uint32_t c = colors[k];
    std::vector<PlotPoint> pts;
    for (const PlotPoint& p : s.points) {
      if (drawable(p)) pts.push_back(p);
    }
    if (s.style == PlotSeries::Style::kLine) {
      for (size_t i = 1; i < pts.size(); ++i) {
        out.push_back(LinePrim(X(pts[i - 1].x), Y(pts[i - 1].y), X(pts[i].x), Y(pts[i].y), 2, c));
      }
    }
    const bool marks = s.style == PlotSeries::Style::kMarkers || s.markers;
    const double r = s.style == PlotSeries::Style::kMarkers ? 6 : 3;
    for (const PlotPoint& p : pts) {
      if (marks) {
        Prim d = DiscPrim(X(p.x), Y(p.y), r, c, c);
        d.stroke = s.style == PlotSeries::Style::kMarkers ? kBlack : c;
        out.push_back(d);
      }
      if (s.label_points && !p.label.empty()) {
        Prim t = TextPrim(X(p.x) + 9, Y(p.y) - 8, "");
        t.text = p.label;
        // Labels right of the point, unless that runs off the plot.
        if (t.x0 + TextWidth(p.label) > right) {
          t.x0 = X(p.x) - 9;
          t.anchor = Anchor::kEnd;
        }
        out.push_back(t);
      }
    }
  }

  // Legend, top right inside the plot area.
  double legend_w = 0;
  for (const PlotSeries& s : spec.series) legend_w = std::max(legend_w, TextWidth(s.name));
  legend_w += 60;
  const double row = kTextHeight + 10;
  const double lx = right - legend_w - 10, ly = top + 10;
  const double lh = row * static_cast<double>(spec.series.size()) + 8;
  if (!spec.series.empty()) {
    out.push_back(RectPrim(lx, ly, lx + legend_w, ly + lh, kWhite));
    out.push_back(LinePrim(lx, ly, lx + legend_w, ly, 1, kBlack));
    out.push_back(LinePrim(lx, ly + lh, lx + legend_w, ly + lh, 1, kBlack));
    out.push_back(LinePrim(lx, ly, lx, ly + lh, 1, kBlack));
    out.push_back(LinePrim(lx + legend_w, ly, lx + legend_w, ly + lh, 1, kBlack));
  }
  for (size_t k = 0; k < spec.series.size(); ++k) {
    const PlotSeries& s = spec.series[k];
    const double cy = ly + 4 + row * (static_cast<double>(k) + 0.5);
    if (s.style == PlotSeries::Style::kLine) {
      out.push_back(LinePrim(lx + 8, cy, lx + 40, cy, 2, colors[k]));
      if (s.markers) out.push_back(DiscPrim(lx + 24, cy, 3, colors[k], colors[k]));
    } else {
      out.push_back(DiscPrim(lx + 24, cy, 6, colors[k], kBlack));
    }
    Prim t = TextPrim(lx + 50, cy + kTextHeight / 2, "");
    t.text = s.name;
    out.push_back(t);
  }
  return out;
}

std::string SvgColor(uint32_t c) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "#%06x", c & 0xffffff);
  return buf;
}

std::string SvgEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// An RGB canvas with coverage-based anti-aliasing.
class Raster {
 public:
  Raster(int w, int h) : w_(w), h_(h), rgb_(static_cast<size_t>(w) * h * 3, 255) {}

  void Blend(int x, int y, uint32_t c, double a) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_ || a <= 0) return;
    a = std::min(a, 1.0);
    uint8_t* p = &rgb_[(static_cast<size_t>(y) * w_ + x) * 3];
    const int ch[3] = {static_cast<int>((c >> 16) & 0xff), static_cast<int>((c >> 8) & 0xff),
                       static_cast<int>(c & 0xff)};
    for (int i = 0; i < 3; ++i) {
      p[i] = static_cast<uint8_t>(std::lround(p[i] * (1 - a) + ch[i] * a));
    }
  }

  void Rect(double x0, double y0, double x1, double y1, uint32_t c) {
    for (int y = static_cast<int>(std::floor(y0)); y < static_cast<int>(std::ceil(y1)); ++y) {
      for (int x = static_cast<int>(std::floor(x0)); x < static_cast<int>(std::ceil(x1)); ++x) {
        Blend(x, y, c, 1);
      }
    }
  }

  // Coverage of a pixel centre by a segment of the given width: 1 inside,
  // falling off linearly over one pixel at the edge.
  void Line(double x0, double y0, double x1, double y1, double width, uint32_t c) {
    const double h = width / 2 + 1;
    const int xa = static_cast<int>(std::floor(std::min(x0, x1) - h));
    const int xb = static_cast<int>(std::ceil(std::max(x0, x1) + h));
    const int ya = static_cast<int>(std::floor(std::min(y0, y1) - h));
    const int yb = static_cast<int>(std::ceil(std::max(y0, y1) + h));
    const double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int y = ya; y <= yb; ++y) {
      for (int x = xa; x <= xb; ++x) {
        const double px = x + 0.5, py = y + 0.5;
        double t = len2 > 0 ? ((px - x0) * dx + (py - y0) * dy) / len2 : 0;
        t = std::clamp(t, 0.0, 1.0);
        const double ex = px - (x0 + t * dx), ey = py - (y0 + t * dy);
        const double d = std::sqrt(ex * ex + ey * ey);
        Blend(x, y, c, width / 2 + 0.5 - d);
      }
    }
  }

  void Disc(double cx, double cy, double r, uint32_t fill, uint32_t stroke) {
    const int xa = static_cast<int>(std::floor(cx - r - 2)),
              xb = static_cast<int>(std::ceil(cx + r + 2));
    const int ya = static_cast<int>(std::floor(cy - r - 2)),
              yb = static_cast<int>(std::ceil(cy + r + 2));
    for (int y = ya; y <= yb; ++y) {
      for (int x = xa; x <= xb; ++x) {
        const double d = std::hypot(x + 0.5 - cx, y + 0.5 - cy);
        Blend(x, y, stroke, r + 0.5 - d);
        Blend(x, y, fill, r - 1 + 0.5 - d);
      }
    }
  }

  // (x, y) is the left end of the baseline (the bottom of the glyph box);
  // vertical text runs upwards from it.
  void Text(double x, double y, const std::string& s, bool vertical, uint32_t c) {
    const int s_ = kTextScale;
    int pen = 0;
    for (unsigned char ch : s) {
      const int g = (ch >= 32 && ch <= 126) ? ch - 32 : '?' - 32;
      const int drop =
          std::string_view(kDescenders).find(static_cast<char>(ch)) != std::string_view::npos ? 2
                                                                                              : 0;
      for (int row = 0; row < kGlyphH; ++row) {
        for (int col = 0; col < kGlyphW; ++col) {
          if (((kFont[g][row] >> (kGlyphW - 1 - col)) & 1) == 0) continue;
          for (int a = 0; a < s_; ++a) {
            for (int b = 0; b < s_; ++b) {
              // Unrotated: column -> +x, row -> +y from the top of the box.
              const int u = (pen + col) * s_ + a;
              const int v = (row + drop - kGlyphH) * s_ + b;
              if (vertical) {
                Blend(static_cast<int>(std::lround(x)) + v, static_cast<int>(std::lround(y)) - u, c,
                      1);
              } else {
                Blend(static_cast<int>(std::lround(x)) + u, static_cast<int>(std::lround(y)) + v, c,
                      1);
              }
            }
          }
        }
      }
      pen += kAdvance;
    }
  }

  const std::vector<uint8_t>& rgb() const { return rgb_; }

 private:
  int w_, h_;
  std::vector<uint8_t> rgb_;
};

void PutU32Be(Bytes* out, uint32_t v) {
  out->push_back(static_cast<uint8_t>(v >> 24));
  out->push_back(static_cast<uint8_t>(v >> 16));
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

// Length, type, data, then the CRC-32 of type and data (zlib's crc32 is
// the one PNG specifies).
void PngChunk(Bytes* out, const char type[4], const Bytes& data) {
  PutU32Be(out, static_cast<uint32_t>(data.size()));
  const size_t typed_at = out->size();
  out->insert(out->end(), type, type + 4);
  out->insert(out->end(), data.begin(), data.end());
  uLong crc = ::crc32(0L, Z_NULL, 0);
  crc = ::crc32_z(crc, out->data() + typed_at, out->size() - typed_at);
  PutU32Be(out, static_cast<uint32_t>(crc));
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(hi > lo) || target < 1) return ticks;
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; k += 1) {
    ticks.push_back(k * step);
  }
  return ticks;
}

std::vector<double> LogTicks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(lo > 0) || !(hi > lo) || target < 1) return ticks;
  // The densest of these that gives at most 2 * target ticks: seven per
  // decade for a range of about two decades or less, then 1, 2 and 5, then
  // the powers of ten.
  for (const std::vector<double>& mantissas :
       {std::vector<double>{1, 1.5, 2, 3, 4, 5, 7}, std::vector<double>{1, 2, 5},
        std::vector<double>{1}}) {
    ticks.clear();
    for (int e = static_cast<int>(std::floor(std::log10(lo))) - 1;
         e <= static_cast<int>(std::ceil(std::log10(hi))); ++e) {
      for (double m : mantissas) {
        const double v = m * std::pow(10.0, e);
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push_back(v);
      }
    }
    if (static_cast<int>(ticks.size()) <= 2 * target) break;
  }
  // A narrow range (under a factor of about 5) holds too few of them to
  // read values off: linear ticks instead, on the log scale.
  if (ticks.size() < 3) ticks = NiceTicks(lo, hi, target);
  return ticks;
}

std::string RenderSvg(const PlotSpec& spec) {
  std::string svg;
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, "
                "monospace\" font-size=\"%.1f\">\n",
                spec.width, spec.height, spec.width, spec.height, kSvgFontSize);
  svg += buf;
  for (const Prim& p : Layout(spec)) {
    switch (p.kind) {
      case Prim::Kind::kRect:
        std::snprintf(buf, sizeof(buf),
                      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
                      p.x0, p.y0, p.x1 - p.x0, p.y1 - p.y0, SvgColor(p.color).c_str());
        svg += buf;
        break;
      case Prim::Kind::kLine:
        std::snprintf(buf, sizeof(buf),
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-width=\"%.1f\" stroke-linecap=\"round\"/>\n",
                      p.x0, p.y0, p.x1, p.y1, SvgColor(p.color).c_str(), p.width);
        svg += buf;
        break;
      case Prim::Kind::kDisc:
        std::snprintf(buf, sizeof(buf),
                      "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" stroke=\"%s\"/>\n",
                      p.x0, p.y0, p.width, SvgColor(p.color).c_str(), SvgColor(p.stroke).c_str());
        svg += buf;
        break;
      case Prim::Kind::kText: {
        const char* anchor = p.anchor == Anchor::kStart    ? "start"
                             : p.anchor == Anchor::kMiddle ? "middle"
                                                           : "end";
        std::string transform;
        if (p.vertical) {
          std::snprintf(buf, sizeof(buf), " transform=\"rotate(-90 %.1f %.1f)\"", p.x0, p.y0);
          transform = buf;
        }
        std::snprintf(buf, sizeof(buf),
                      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" fill=\"%s\"%s>", p.x0, p.y0,
                      anchor, SvgColor(p.color).c_str(), transform.c_str());
        svg += buf + SvgEscape(p.text) + "</text>\n";
        break;
      }
    }
  }
  svg += "</svg>\n";
  return svg;
}

Bytes RenderPng(const PlotSpec& spec) {
  Raster r(spec.width, spec.height);
  for (const Prim& p : Layout(spec)) {
    switch (p.kind) {
      case Prim::Kind::kRect:
        r.Rect(p.x0, p.y0, p.x1, p.y1, p.color);
        break;
      case Prim::Kind::kLine:
        r.Line(p.x0, p.y0, p.x1, p.y1, p.width, p.color);
        break;
      case Prim::Kind::kDisc:
        r.Disc(p.x0, p.y0, p.width, p.color, p.stroke);
        break;
      case Prim::Kind::kText: {
        const double w = TextWidth(p.text) - kTextScale;  // no space after the last glyph
        const double shift = p.anchor == Anchor::kStart    ? 0
                             : p.anchor == Anchor::kMiddle ? w / 2
                                                           : w;
        if (p.vertical) {
          r.Text(p.x0, p.y0 + shift, p.text, true, p.color);
        } else {
          r.Text(p.x0 - shift, p.y0, p.text, false, p.color);
        }
        break;
      }
    }
  }
  return EncodePng(spec.width, spec.height, r.rgb());
}

Bytes EncodePng(int width, int height, const std::vector<uint8_t>& rgb) {
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes ihdr;
  PutU32Be(&ihdr, static_cast<uint32_t>(width));
  PutU32Be(&ihdr, static_cast<uint32_t>(height));
  // 8 bits per channel, colour type 2 (RGB), deflate, filter method 0, no interlace.
  for (uint8_t b : {8, 2, 0, 0, 0}) ihdr.push_back(b);
  PngChunk(&png, "IHDR", ihdr);

  // Scanlines, each behind filter type 0 (None).
  Bytes raw;
  const size_t stride = static_cast<size_t>(width) * 3;
  raw.reserve((stride + 1) * static_cast<size_t>(height));
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), rgb.begin() + static_cast<ptrdiff_t>(y * stride),
               rgb.begin() + static_cast<ptrdiff_t>((y + 1) * stride));
  }
  // The IDAT data is one zlib stream (RFC 1950: header, deflate, Adler-32),
  // which is what compress2 writes. Plots are mostly flat colour, so even the
  // default level shrinks them more than 10-fold (tests/plot/plot_test.cc).
  uLongf z_len = ::compressBound(raw.size());
  Bytes z(z_len);
  const int rc = ::compress2(z.data(), &z_len, raw.data(), raw.size(), Z_DEFAULT_COMPRESSION);
  // compress2 fails only without memory (or with a buffer under compressBound).
  if (rc == Z_MEM_ERROR) throw std::bad_alloc();
  assert(rc == Z_OK);
  z.resize(z_len);
  PngChunk(&png, "IDAT", z);
  PngChunk(&png, "IEND", Bytes());
  return png;
}

Status WritePlot(const PlotSpec& spec, const std::string& path) {
  auto ends_with = [&](const std::string& suffix) {
    if (path.size() < suffix.size()) return false;
    std::string tail = path.substr(path.size() - suffix.size());
    std::transform(tail.begin(), tail.end(), tail.begin(), ::tolower);
    return tail == suffix;
  };
  if (ends_with(".svg")) {
    const std::string svg = RenderSvg(spec);
    return PublishFile(Env::Default(), path,
                       ByteSpan(reinterpret_cast<const uint8_t*>(svg.data()), svg.size()));
  }
  if (ends_with(".png")) {
    const Bytes png = RenderPng(spec);
    return PublishFile(Env::Default(), path, png);
  }
  return Status::InvalidArgument("--plot " + path + ": give a .svg or .png file name");
}

}  // namespace fqpack::plot
