#include "quantize/codec.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "runtime/quant/group_int.h"
#include "runtime/quant/kernels.h"
#include "schema/half.h"
#include "schema/quant_types.h"

namespace fqpack::quantize {
namespace {

// Candidate scales per fit: the search steps the grid's end across +-1 code
// in tenths (as a range is stretched or shrunk), refitting each candidate by
// least squares; then a few rounds of "nearest codes, refit" polish the best.
constexpr int kSearchSteps = 10;
constexpr int kPolishRounds = 4;

// The fp16 values next to v's rounding (one ulp down and up), for trying
// which of them a block's scale should be stored as.
void Fp16Neighbours(float v, uint16_t out[3]) {
  const uint16_t h = F32ToFp16(v);
  out[0] = h;
  // Moving the magnitude bits by one is one ulp in either direction for
  // finite values of either sign.
  out[1] = (h & 0x7FFF) == 0 ? h : static_cast<uint16_t>(h - 1);
  out[2] = (h & 0x7FFF) >= 0x7BFF ? h : static_cast<uint16_t>(h + 1);
}

// round(v) (ties to even) clamped to [qmin, qmax]; clamping first keeps the
// rounding in NearestInt's exact range.
int ClampCode(float v, int qmin, int qmax) {
  if (!(v > static_cast<float>(qmin))) return qmin;  // also catches NaN
  if (v >= static_cast<float>(qmax)) return qmax;
  return runtime::quant::NearestInt(v);
}

// Nearest uniform code of x under value = s * q + o.
int NearestUniform(float x, float s, float o, int qmin, int qmax) {
  if (s == 0) return std::clamp(0, qmin, qmax);
  return ClampCode((x - o) / s, qmin, qmax);
}

// The same with the reciprocal of s (0 for s = 0): what the searches use,
// a multiply instead of a divide per element. It can differ from
// NearestUniform only on a hair's-breadth tie, which costs a search nothing;
// the codes finally stored come from BlockGrid::Nearest.
inline int NearestUniformInv(float x, float inv_s, float o, int qmin, int qmax) {
  // Branch-free (min/max, then the rounding trick) so the loops vectorize.
  const float v =
      std::min(std::max((x - o) * inv_s, static_cast<float>(qmin)), static_cast<float>(qmax));
  return runtime::quant::NearestInt(v);
}

// Nearest level index of x under value = s * levels[k] (levels ascending).
int NearestLevel(float x, float s, const int8_t* levels, int count) {
  int best = 0;
  float best_err = std::numeric_limits<float>::infinity();
  for (int k = 0; k < count; ++k) {
    const float err = std::fabs(x - s * static_cast<float>(levels[k]));
    if (err < best_err) {
      best_err = err;
      best = k;
    }
  }
  return best;
}

// Weighted squared errors: `wt` gives each element's importance (all ones
// for RTN; GPTQ weighs a column by how much its error costs, 1 / U[j][j]^2).
double UniformError(const float* x, const float* wt, int n, float s, float o, int qmin, int qmax) {
  if (s == 0) {
    const float v = static_cast<float>(std::clamp(0, qmin, qmax)) * s + o;
    double err = 0;
    for (int e = 0; e < n; ++e) err += wt[e] * (x[e] - v) * (x[e] - v);
    return err;
  }
  const float inv = 1.0f / s;
  // Eight partial sums: a reduction the compiler may keep in one vector.
  float part[8] = {};
  for (int e = 0; e < n; ++e) {
    const int q = NearestUniformInv(x[e], inv, o, qmin, qmax);
    const float r = x[e] - (s * static_cast<float>(q) + o);
    part[e & 7] += wt[e] * r * r;
  }
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// The scale s and offset o minimising sum wt (x - (s q + o))^2 over q in
// [0, qmax] with nearest codes. `offset_nonpositive`: o <= 0, as the
// k-quants store offsets as unsigned mins that are subtracted.
struct Affine {
  float s = 0;
  float o = 0;
};

Affine FitAffine(const float* x, const float* wt, int n, int qmax, bool offset_nonpositive) {
  float lo = *std::min_element(x, x + n);
  const float hi = *std::max_element(x, x + n);
  if (offset_nonpositive) lo = std::min(lo, 0.0f);
  if (!(hi > lo)) return {0, offset_nonpositive ? std::min(lo, 0.0f) : lo};

  // Weighted least squares for (s, o) given codes q; false when degenerate.
  int q[kMaxBlockElems];
  const auto refit = [&](Affine* a) {
    double sw = 0, sq = 0, sq2 = 0, sx = 0, sqx = 0;
    for (int e = 0; e < n; ++e) {
      const double w = wt[e];
      sw += w;
      sq += w * q[e];
      sq2 += w * q[e] * q[e];
      sx += w * x[e];
      sqx += w * q[e] * x[e];
    }
    const double det = sw * sq2 - sq * sq;
    if (!(det > 0)) return false;
    double s = (sw * sqx - sq * sx) / det;
    double o = (sq2 * sx - sq * sqx) / det;
    if (offset_nonpositive && o > 0) {
      o = 0;
      s = sqx / sq2;
    }
    if (!(s > 0)) return false;
    a->s = static_cast<float>(s);
    a->o = static_cast<float>(o);
    return true;
  };
  const auto codes = [&](const Affine& a) {
    const float inv = 1.0f / a.s;  // a.s > 0 here
    for (int e = 0; e < n; ++e) q[e] = NearestUniformInv(x[e], inv, a.o, 0, qmax);
  };

  Affine best{(hi - lo) / static_cast<float>(qmax), lo};
  double best_err = UniformError(x, wt, n, best.s, best.o, 0, qmax);
  for (int k = -kSearchSteps; k <= kSearchSteps; ++k) {
    const float steps = static_cast<float>(qmax) + 0.1f * static_cast<float>(k);
    if (steps < 0.5f) continue;
    Affine a{(hi - lo) / steps, lo};
    codes(a);
    if (!refit(&a)) continue;
    const double err = UniformError(x, wt, n, a.s, a.o, 0, qmax);
    if (err < best_err) {
      best_err = err;
      best = a;
    }
  }
  for (int round = 0; round < kPolishRounds; ++round) {
    Affine a = best;
    codes(a);
    if (!refit(&a)) break;
    const double err = UniformError(x, wt, n, a.s, a.o, 0, qmax);
    if (!(err < best_err)) break;
    best_err = err;
    best = a;
  }
  return best;
}

// The scale s minimising sum wt (x - s q)^2 over q in [qmin, qmax] (qmin <
// 0 < qmax). s may be negative: the element of largest magnitude can land
// on either end of the code range.
float FitSymmetric(const float* x, const float* wt, int n, int qmin, int qmax) {
  float v = 0;
  for (int e = 0; e < n; ++e) {
    if (std::fabs(x[e]) > std::fabs(v)) v = x[e];
  }
  if (v == 0) return 0;
  const auto refit = [&](float s, float* out) {
    const float inv = 1.0f / s;  // s != 0 here
    double sq2 = 0, sqx = 0;
    for (int e = 0; e < n; ++e) {
      const double q = NearestUniformInv(x[e], inv, 0, qmin, qmax);
      sq2 += wt[e] * q * q;
      sqx += wt[e] * q * x[e];
    }
    if (!(sq2 > 0)) return false;
    *out = static_cast<float>(sqx / sq2);
    return *out != 0;
  };
  float best = v / static_cast<float>(qmax);
  double best_err = UniformError(x, wt, n, best, 0, qmin, qmax);
  for (int end : {qmin, qmax}) {
    for (int k = -kSearchSteps; k <= kSearchSteps; ++k) {
      const float t = static_cast<float>(end) + 0.1f * static_cast<float>(k);
      if (t * static_cast<float>(end) <= 0 || std::fabs(t) < 0.5f) continue;
      float s;
      if (!refit(v / t, &s)) continue;
      const double err = UniformError(x, wt, n, s, 0, qmin, qmax);
      if (err < best_err) {
        best_err = err;
        best = s;
      }
    }
  }
  for (int round = 0; round < kPolishRounds; ++round) {
    float s;
    if (!refit(best, &s)) break;
    const double err = UniformError(x, wt, n, s, 0, qmin, qmax);
    if (!(err < best_err)) break;
    best_err = err;
    best = s;
  }
  return best;
}

double LevelError(const float* x, const float* wt, int n, float s, const int8_t* levels,
                  int count) {
  double err = 0;
  for (int e = 0; e < n; ++e) {
    const int k = NearestLevel(x[e], s, levels, count);
    const double r = static_cast<double>(x[e]) - static_cast<double>(s) * levels[k];
    err += wt[e] * r * r;
  }
  return err;
}

// The scale of a non-uniform grid (value = s * levels[k]).
float FitLevels(const float* x, const float* wt, int n, const int8_t* levels, int count) {
  float v = 0;
  for (int e = 0; e < n; ++e) {
    if (std::fabs(x[e]) > std::fabs(v)) v = x[e];
  }
  if (v == 0) return 0;
  const auto refit = [&](float s, float* out) {
    double sl2 = 0, slx = 0;
    for (int e = 0; e < n; ++e) {
      const double l = levels[NearestLevel(x[e], s, levels, count)];
      sl2 += wt[e] * l * l;
      slx += wt[e] * l * x[e];
    }
    if (!(sl2 > 0)) return false;
    *out = static_cast<float>(slx / sl2);
    return *out != 0;
  };
  float best = v / static_cast<float>(levels[0]);
  double best_err = LevelError(x, wt, n, best, levels, count);
  for (int end : {static_cast<int>(levels[0]), static_cast<int>(levels[count - 1])}) {
    for (int k = -kSearchSteps; k <= kSearchSteps; ++k) {
      const float t = static_cast<float>(end) * (1.0f + 0.02f * static_cast<float>(k));
      float s;
      if (!refit(v / t, &s)) continue;
      const double err = LevelError(x, wt, n, s, levels, count);
      if (err < best_err) {
        best_err = err;
        best = s;
      }
    }
  }
  for (int round = 0; round < kPolishRounds; ++round) {
    float s;
    if (!refit(best, &s)) break;
    const double err = LevelError(x, wt, n, s, levels, count);
    if (!(err < best_err)) break;
    best_err = err;
    best = s;
  }
  return best;
}

double GridError(const BlockGrid& g, const float* x, const float* wt, int from, int to) {
  double err = 0;
  for (int e = from; e < to; ++e) {
    const double r = static_cast<double>(x[e]) - g.Value(e, g.Nearest(e, x[e]));
    err += wt[e] * r * r;
  }
  return err;
}

// Ones, for fits without importances.
const float* Unweighted() {
  static const std::array<float, kMaxBlockElems> kOnes = [] {
    std::array<float, kMaxBlockElems> ones;
    ones.fill(1.0f);
    return ones;
  }();
  return kOnes.data();
}

// ---- One-scale blocks (group-int, Q4_0 ... IQ4_NL).

// Stores an affine fit as fp16 d and m, trying the neighbouring fp16 values
// of both (the rounding can cost more than the search gained).
void StoreAffine(const float* x, const float* wt, int n, const Affine& a, BlockGrid* g) {
  uint16_t ds[3], ms[3];
  Fp16Neighbours(a.s, ds);
  Fp16Neighbours(a.o, ms);
  double best = std::numeric_limits<double>::infinity();
  for (uint16_t d : ds) {
    if (Fp16ToF32(d) < 0) continue;
    for (uint16_t m : ms) {
      g->scale[0] = Fp16ToF32(d);
      g->offset[0] = Fp16ToF32(m);
      const double err = GridError(*g, x, wt, 0, n);
      if (err < best) {
        best = err;
        g->d = d;
        g->m = m;
      }
    }
  }
  g->scale[0] = Fp16ToF32(g->d);
  g->offset[0] = Fp16ToF32(g->m);
}

// Stores a one-scale symmetric (or level) fit as fp16 d.
void StoreScale(const float* x, const float* wt, int n, float s, BlockGrid* g) {
  uint16_t ds[3];
  Fp16Neighbours(s, ds);
  double best = std::numeric_limits<double>::infinity();
  for (uint16_t d : ds) {
    g->scale[0] = Fp16ToF32(d);
    const double err = GridError(*g, x, wt, 0, n);
    if (err < best) {
      best = err;
      g->d = d;
    }
  }
  g->scale[0] = Fp16ToF32(g->d);
}

// ---- k-quants: sub-block scales, themselves quantized against fp16 d.

// Sub-block scales and (non-negative) mins as integers in [0, smax] against
// fp16 d and dmin: x = (d sc) q - (dmin mn). Each sub-block's pair is then
// moved by up to one step where that lowers its error with nearest codes.
void QuantizeAffineScales(const float* x, const float* wt, const Affine* fits, int subs, int smax,
                          BlockGrid* g) {
  float max_s = 0, max_m = 0;
  for (int s = 0; s < subs; ++s) {
    max_s = std::max(max_s, fits[s].s);
    max_m = std::max(max_m, -fits[s].o);
  }
  g->d = F32ToFp16(max_s / static_cast<float>(smax));
  g->m = F32ToFp16(max_m / static_cast<float>(smax));
  const float d = Fp16ToF32(g->d), dmin = Fp16ToF32(g->m);
  for (int s = 0; s < subs; ++s) {
    const int sc0 = d > 0 ? ClampCode(fits[s].s / d, 0, smax) : 0;
    const int mn0 = dmin > 0 ? ClampCode(-fits[s].o / dmin, 0, smax) : 0;
    double best = std::numeric_limits<double>::infinity();
    int best_sc = sc0, best_mn = mn0;
    for (int sc = std::max(0, sc0 - 1); sc <= std::min(smax, sc0 + 1); ++sc) {
      for (int mn = std::max(0, mn0 - 1); mn <= std::min(smax, mn0 + 1); ++mn) {
        g->scale[s] = d * static_cast<float>(sc);
        g->offset[s] = -(dmin * static_cast<float>(mn));
        const double err = GridError(*g, x, wt, s * g->sub_len, (s + 1) * g->sub_len);
        if (err < best) {
          best = err;
          best_sc = sc;
          best_mn = mn;
        }
      }
    }
    g->sc[s] = best_sc;
    g->mn[s] = best_mn;
    g->scale[s] = d * static_cast<float>(best_sc);
    g->offset[s] = -(dmin * static_cast<float>(best_mn));
  }
}

// Signed sub-block scales in [smin, smax] against fp16 d: x = (d sc) q. The
// largest scale maps to smin, the end with no twin.
void QuantizeSignedScales(const float* x, const float* wt, const float* fits, int subs, int smin,
                          int smax, BlockGrid* g) {
  float v = 0;
  for (int s = 0; s < subs; ++s) {
    if (std::fabs(fits[s]) > std::fabs(v)) v = fits[s];
  }
  g->d = F32ToFp16(v / static_cast<float>(smin));
  const float d = Fp16ToF32(g->d);
  for (int s = 0; s < subs; ++s) {
    const int sc0 = d != 0 ? ClampCode(fits[s] / d, smin, smax) : 0;
    double best = std::numeric_limits<double>::infinity();
    int best_sc = sc0;
    for (int sc = std::max(smin, sc0 - 1); sc <= std::min(smax, sc0 + 1); ++sc) {
      g->scale[s] = d * static_cast<float>(sc);
      const double err = GridError(*g, x, wt, s * g->sub_len, (s + 1) * g->sub_len);
      if (err < best) {
        best = err;
        best_sc = sc;
      }
    }
    g->sc[s] = best_sc;
    g->scale[s] = d * static_cast<float>(best_sc);
  }
}

}  // namespace

int BlockGrid::Nearest(int e, float x) const {
  const int s = e / sub_len;
  if (levels != nullptr) return qmin + NearestLevel(x, scale[s], levels, qmax - qmin + 1);
  return NearestUniform(x, scale[s], offset[s], qmin, qmax);
}

float BlockGrid::Value(int e, int q) const {
  const int s = e / sub_len;
  if (levels != nullptr) return scale[s] * static_cast<float>(levels[q - qmin]);
  return scale[s] * static_cast<float>(q) + offset[s];
}

void BlockCodec::Fit(const float* x, int n, const float* wt, BlockGrid* grid) const {
  assert(n >= 1 && n <= block_elems());
  FitWeighted(x, wt != nullptr ? wt : Unweighted(), n, grid);
}

void BlockCodec::FitWeighted(const float* x, const float* wt, int n, BlockGrid* g) const {
  using Kind = runtime::quant::CodecShape::Kind;
  const runtime::quant::CodecShape& shape = traits_->codec;
  *g = BlockGrid();
  g->n = n;
  g->qmin = shape.qmin;
  g->qmax = shape.qmax;
  switch (shape.kind) {
    case Kind::kAffine:
      g->sub_len = n;
      StoreAffine(x, wt, n, FitAffine(x, wt, n, shape.qmax, false), g);
      return;
    case Kind::kSymmetric:
      g->sub_len = n;
      StoreScale(x, wt, n, FitSymmetric(x, wt, n, shape.qmin, shape.qmax), g);
      return;
    case Kind::kLevels:
      g->sub_len = n;
      g->levels = shape.levels;
      StoreScale(x, wt, n, FitLevels(x, wt, n, shape.levels, shape.qmax - shape.qmin + 1), g);
      return;
    case Kind::kSubAffine: {
      assert(n == block_elems());
      g->sub_len = shape.sub_len;
      const int subs = n / shape.sub_len;
      Affine fits[kMaxSubBlocks];
      for (int s = 0; s < subs; ++s) {
        const ptrdiff_t at = ptrdiff_t{s} * shape.sub_len;
        fits[s] = FitAffine(x + at, wt + at, shape.sub_len, shape.qmax, true);
      }
      QuantizeAffineScales(x, wt, fits, subs, shape.smax, g);
      return;
    }
    case Kind::kSubSymmetric: {
      assert(n == block_elems());
      g->sub_len = shape.sub_len;
      const int subs = n / shape.sub_len;
      float fits[kMaxSubBlocks];
      for (int s = 0; s < subs; ++s) {
        const ptrdiff_t at = ptrdiff_t{s} * shape.sub_len;
        fits[s] = FitSymmetric(x + at, wt + at, shape.sub_len, shape.qmin, shape.qmax);
      }
      QuantizeSignedScales(x, wt, fits, subs, shape.smin, shape.smax, g);
      return;
    }
    case Kind::kNone:
      break;
  }
  assert(false && "FindCodec gives no codec for a type without a CodecShape");
}

bool BlockCodec::FitsRow(int64_t cols) const {
  return IsGroupIntType(type()) || cols % block_elems() == 0;
}

size_t BlockCodec::BlockBytes(int n) const {
  if (IsGroupIntType(type())) {
    return runtime::quant::GroupBytes(static_cast<int>(GroupIntBits(type())), n);
  }
  return traits_->block_bytes;
}

const BlockCodec* FindCodec(uint32_t type) {
  // One codec per row that has a codec shape, made on first use.
  static const std::vector<BlockCodec> kCodecs = [] {
    std::vector<BlockCodec> codecs;
    for (const runtime::quant::TypeTraits& t : runtime::quant::AllTraits()) {
      if (t.codec.kind != runtime::quant::CodecShape::Kind::kNone) codecs.emplace_back(&t);
    }
    return codecs;
  }();
  for (const BlockCodec& c : kCodecs) {
    if (c.type() == type) return &c;
  }
  return nullptr;
}

std::string CodecTypeNames() {
  std::vector<const runtime::quant::TypeTraits*> rows;
  for (const runtime::quant::TypeTraits& t : runtime::quant::AllTraits()) {
    if (t.gguf && t.codec.kind != runtime::quant::CodecShape::Kind::kNone) rows.push_back(&t);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto* a, const auto* b) {
    return a->bits_per_weight > b->bits_per_weight;
  });
  std::string names;
  for (const runtime::quant::TypeTraits* t : rows) {
    names += (names.empty() ? "" : ", ") + std::string(t->name);
  }
  return names;
}

}  // namespace fqpack::quantize
