// The plot writers: PNG bytes decoded here (chunks and CRCs checked
// independently, the deflate stream inflated by zlib, its Adler-32 checked
// independently), SVG structure, tick choice.
#include "plot/plot.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

#include "tests/support/test_util.h"

namespace fqpack::plot {
namespace {

uint32_t Be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// Bit-at-a-time CRC-32 (reflected, polynomial 0xEDB88320): no table, unlike
// the code under test.
uint32_t SlowCrc(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return ~c;
}

// Adler-32 straight from RFC 1950: 65521 is the largest prime below 2^16.
uint32_t SlowAdler(const uint8_t* p, size_t n) {
  uint32_t a = 1, b = 0;
  for (size_t i = 0; i < n; ++i) {
    a = (a + p[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

struct DecodedPng {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
  std::vector<std::string> chunks;
};

// Decodes what EncodePng writes (RGB8, one zlib stream, filter 0); fails
// the test on anything else.
DecodedPng Decode(const Bytes& png) {
  DecodedPng d;
  const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  EXPECT_TRUE(png.size() > 8 && std::equal(sig, sig + 8, png.begin()));
  Bytes idat;
  size_t pos = 8;
  while (pos + 12 <= png.size()) {
    const uint32_t len = Be32(&png[pos]);
    const std::string type(reinterpret_cast<const char*>(&png[pos + 4]), 4);
    EXPECT_LE(pos + 12 + len, png.size());
    EXPECT_EQ(Be32(&png[pos + 8 + len]), SlowCrc(&png[pos + 4], len + 4)) << type;
    d.chunks.push_back(type);
    const uint8_t* data = &png[pos + 8];
    if (type == "IHDR") {
      d.width = Be32(data);
      d.height = Be32(data + 4);
      EXPECT_EQ(data[8], 8);  // bit depth
      EXPECT_EQ(data[9], 2);  // RGB
    } else if (type == "IDAT") {
      idat.insert(idat.end(), data, data + len);
    }
    pos += 12 + len;
  }
  EXPECT_EQ(pos, png.size());
  // zlib: header (deflate), the compressed scanlines, Adler-32 of them.
  EXPECT_GE(idat.size(), 6u);
  if (idat.size() < 6) return d;
  EXPECT_EQ((idat[0] * 256 + idat[1]) % 31, 0);
  EXPECT_EQ(idat[0] & 0x0f, 8);
  const size_t stride = d.width * 3;
  Bytes raw((stride + 1) * d.height + 1);  // one spare byte: more data than the image takes fails
  uLongf raw_len = raw.size();
  EXPECT_EQ(::uncompress(raw.data(), &raw_len, idat.data(), idat.size()), Z_OK);
  raw.resize(raw_len);
  EXPECT_EQ(Be32(&idat[idat.size() - 4]), SlowAdler(raw.data(), raw.size()));
  EXPECT_EQ(raw.size(), (stride + 1) * d.height);
  if (raw.size() != (stride + 1) * d.height) return d;
  for (uint32_t y = 0; y < d.height; ++y) {
    EXPECT_EQ(raw[y * (stride + 1)], 0);
    d.rgb.insert(d.rgb.end(), raw.begin() + y * (stride + 1) + 1,
                 raw.begin() + (y + 1) * (stride + 1));
  }
  return d;
}

// The decoder's own checksums, which check every chunk and the stream.
TEST(Png, ChecksumsMatchKnownValues) {
  const std::string s = "123456789";
  EXPECT_EQ(SlowCrc(reinterpret_cast<const uint8_t*>(s.data()), s.size()), 0xcbf43926u);
  const std::string w = "Wikipedia";
  EXPECT_EQ(SlowAdler(reinterpret_cast<const uint8_t*>(w.data()), w.size()), 0x11e60398u);
}

TEST(Png, EncodesPixelsExactly) {
  // Big enough for several deflate blocks, and too noisy to compress much.
  const int w = 200, h = 150;
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i * 7 + i / 13);
  const DecodedPng d = Decode(EncodePng(w, h, rgb));
  EXPECT_EQ(d.width, 200u);
  EXPECT_EQ(d.height, 150u);
  EXPECT_EQ(d.rgb, rgb);
  EXPECT_EQ(d.chunks, (std::vector<std::string>{"IHDR", "IDAT", "IEND"}));
}

PlotSpec TwoCurves() {
  PlotSpec spec;
  spec.title = "a & b";
  spec.x_label = "footprint (MiB)";
  spec.y_label = "perplexity";
  PlotSeries a;
  a.name = "ensemble A";
  a.color = 0x1f77b4;
  for (int i = 0; i <= 10; ++i) a.points.push_back({1.0 + i * 0.25, 5.0 - 0.1 * i, ""});
  PlotSeries b;
  b.name = "static QMs";
  b.style = PlotSeries::Style::kMarkers;
  b.color = 0xd62728;
  b.label_points = true;
  b.points = {{1.0, 5.0, "Q2_K"}, {3.5, 4.0, "Q8_0"}};
  spec.series = {a, b};
  return spec;
}

TEST(Plot, PngShowsCurvesMarkersAndText) {
  const PlotSpec spec = TwoCurves();
  const DecodedPng d = Decode(RenderPng(spec));
  ASSERT_EQ(d.width, 960u);
  ASSERT_EQ(d.height, 600u);
  auto count = [&](uint32_t c) {
    size_t n = 0;
    for (size_t i = 0; i < d.rgb.size(); i += 3) {
      n += d.rgb[i] == (c >> 16) && d.rgb[i + 1] == ((c >> 8) & 0xff) && d.rgb[i + 2] == (c & 0xff);
    }
    return n;
  };
  EXPECT_GT(count(0x1f77b4), 500u);  // a 2-pixel curve across the plot
  EXPECT_GT(count(0xd62728), 150u);  // two markers of radius 6, and the legend's
  EXPECT_GT(count(0xffffff), d.rgb.size() / 3 / 2);
  // Text in the title band and left of the plot (tick labels, y label).
  size_t dark_top = 0, dark_left = 0;
  for (uint32_t y = 0; y < d.height; ++y) {
    for (uint32_t x = 0; x < d.width; ++x) {
      const uint8_t* p = &d.rgb[(y * d.width + x) * 3];
      if (p[0] > 60 || p[1] > 60 || p[2] > 60) continue;
      dark_top += y < 40;
      dark_left += x < 90;
    }
  }
  EXPECT_GT(dark_top, 100u);
  EXPECT_GT(dark_left, 300u);
}

// FNV-1a of the decoded pixels of RenderPng, recorded from the encoder that
// wrote stored (uncompressed) deflate blocks before zlib replaced it: the
// bytes of the file changed, the image must not have.
uint64_t PixelHash(const std::vector<uint8_t>& rgb) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : rgb) {
    h ^= b;
    h *= 1099511628211ull;
  }
  return h;
}

TEST(Plot, PngPixelsAreThoseOfTheStoredBlockEncoder) {
  const PlotSpec spec = TwoCurves();
  const Bytes png = RenderPng(spec);
  const DecodedPng d = Decode(png);
  EXPECT_EQ(PixelHash(d.rgb), 0x22e2420848a6ddaaull);
  // The stored-block file was 1728798 bytes; a plot is mostly flat colour.
  EXPECT_LT(png.size(), 1728798u / 10);

  PlotSpec small = TwoCurves();
  small.width = 333;
  small.height = 211;
  small.series[0].style = PlotSeries::Style::kMarkers;
  small.series[0].label_points = true;
  for (PlotPoint& p : small.series[0].points) p.label = "x";
  const DecodedPng s = Decode(RenderPng(small));
  ASSERT_EQ(s.width, 333u);
  EXPECT_EQ(PixelHash(s.rgb), 0xec378973343fc8d9ull);
}

TEST(Plot, SvgHasEveryElement) {
  const std::string svg = RenderSvg(TwoCurves());
  EXPECT_EQ(svg.rfind("<svg ", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t at = svg.find(needle); at != std::string::npos; at = svg.find(needle, at + 1)) ++n;
    return n;
  };
  // 11 curve points and 2 markers, plus one disc per legend entry.
  EXPECT_EQ(count("<circle"), 11u + 2u + 2u);
  EXPECT_NE(svg.find(">a &amp; b</text>"), std::string::npos);
  EXPECT_NE(svg.find(">Q8_0</text>"), std::string::npos);
  EXPECT_NE(svg.find(">ensemble A</text>"), std::string::npos);
  EXPECT_NE(svg.find("rotate(-90"), std::string::npos);                   // the y label
  EXPECT_EQ(count("stroke=\"#1f77b4\" stroke-width=\"2.0\""), 10u + 1u);  // segments + legend
}

TEST(Plot, NiceTicks) {
  const std::vector<double> u = NiceTicks(0, 1, 5);
  ASSERT_EQ(u.size(), 6u);
  for (size_t i = 0; i < u.size(); ++i) EXPECT_NEAR(u[i], 0.2 * static_cast<double>(i), 1e-12);
  const std::vector<double> t = NiceTicks(4.13, 4.91, 6);
  ASSERT_FALSE(t.empty());
  EXPECT_NEAR(t[1] - t[0], 0.1, 1e-12);
  EXPECT_GE(t.front(), 4.13);
  EXPECT_LE(t.back(), 4.91);
  EXPECT_TRUE(NiceTicks(1, 1, 5).empty());
}

TEST(Plot, LogTicks) {
  // Seven per decade while they are at most twice the target.
  EXPECT_EQ(LogTicks(3, 80, 6), (std::vector<double>{3, 4, 5, 7, 10, 15, 20, 30, 40, 50, 70}));
  // 1, 2, 5 over a wider range.
  EXPECT_EQ(LogTicks(3, 800, 6), (std::vector<double>{5, 10, 20, 50, 100, 200, 500}));
  EXPECT_EQ(LogTicks(0.15, 30, 6), (std::vector<double>{0.2, 0.5, 1, 2, 5, 10, 20}));
  // Too many: only the powers of ten.
  EXPECT_EQ(LogTicks(1, 1e6, 3), (std::vector<double>{1, 10, 100, 1000, 1e4, 1e5, 1e6}));
  // Too few in a narrow range: NiceTicks' values.
  EXPECT_EQ(LogTicks(4.13, 4.91, 6), NiceTicks(4.13, 4.91, 6));
  EXPECT_TRUE(LogTicks(0, 10, 6).empty());
  EXPECT_TRUE(LogTicks(2, 2, 6).empty());
}

// The y tick labels of an SVG (right-anchored text left of the plot area),
// bottom to top.
std::vector<std::string> YTickLabels(const std::string& svg) {
  std::vector<std::string> labels;
  const std::string open = "<text x=\"92.0\"";
  for (size_t at = svg.find(open); at != std::string::npos; at = svg.find(open, at + 1)) {
    const size_t b = svg.find('>', at) + 1;
    labels.push_back(svg.substr(b, svg.find('<', b) - b));
  }
  return labels;
}

TEST(Plot, LogAxisTicksAndPlacement) {
  PlotSpec spec;
  spec.series.push_back({"curve", PlotSeries::Style::kLine, {{1, 3.5}, {2, 6}, {3, 61}, {4, -1}}});
  const std::vector<std::string> linear = YTickLabels(RenderSvg(spec));
  EXPECT_EQ(linear, (std::vector<std::string>{"0", "10", "20", "30", "40", "50", "60"}));
  spec.log_y = true;
  const std::string svg = RenderSvg(spec);
  // The padded range is 2.95 to 82.3 (padding and the legend's room are
  // taken in log space).
  EXPECT_EQ(YTickLabels(svg), (std::vector<std::string>{"3", "4", "5", "7", "10", "15", "20", "30",
                                                        "40", "50", "70"}));
  // The point at y = -1 cannot be drawn on a log axis: three curve discs
  // and the legend's.
  size_t discs = 0;
  for (size_t at = svg.find("<circle"); at != std::string::npos; at = svg.find("<circle", at + 1))
    ++discs;
  EXPECT_EQ(discs, 3u + 1u);
  // 10 sits halfway (in log) between 5 and 20: equal pixel gaps.
  auto tick_y = [&](const std::string& label) {
    const size_t at = svg.find(">" + label + "</text>");
    const size_t y = svg.rfind("y=\"", at) + 3;
    return std::stod(svg.substr(y));
  };
  EXPECT_NEAR(tick_y("5") - tick_y("10"), tick_y("10") - tick_y("20"), 0.15);
}

TEST(Plot, WritePlotPicksTheFormatByExtension) {
  testing::TempDir tmp;
  ASSERT_TRUE(WritePlot(TwoCurves(), tmp.Join("p.svg")).ok());
  ASSERT_TRUE(WritePlot(TwoCurves(), tmp.Join("p.PNG")).ok());
  auto png = ReadFileBytes(Env::Default(), tmp.Join("p.PNG"));
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(Decode(*png).width, 960u);
  EXPECT_TRUE(WritePlot(TwoCurves(), tmp.Join("p.jpg")).IsInvalidArgument());
}

}  // namespace
}  // namespace fqpack::plot
