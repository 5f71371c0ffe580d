#include "runtime/quantize/codec.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/quant/blocks.h"
#include "runtime/quant/group_int.h"
#include "runtime/quant/kernels.h"
#include "schema/coding.h"
#include "schema/half.h"
#include "schema/quant_types.h"

namespace fqpack::runtime::quantize {
namespace {

using quant::kIq4nlValues;

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
  return quant::NearestInt(v);
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
  return quant::NearestInt(v);
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

class GroupIntCodec : public BlockCodec {
 public:
  GroupIntCodec(int bits, int group) : BlockCodec(GroupIntId(bits, group), group), bits_(bits) {}

  void FitWeighted(const float* x, const float* wt, int n, BlockGrid* g) const override {
    *g = BlockGrid();
    g->n = g->sub_len = n;
    g->qmax = (1 << bits_) - 1;
    StoreAffine(x, wt, n, FitAffine(x, wt, n, g->qmax, false), g);
  }

  void Encode(const BlockGrid& g, const int* q, uint8_t* out) const override {
    uint8_t codes[kMaxBlockElems];
    for (int e = 0; e < g.n; ++e) codes[e] = static_cast<uint8_t>(q[e]);
    quant::EncodeGroup(bits_, g.d, g.m, codes, g.n, out);
  }

 private:
  int bits_;
};

// The 32 codes of a Q4_0/Q4_1 block: code j in the low nibble of byte j,
// code j + 16 in its high nibble.
template <typename Code>
void PackNibbles(const Code* q, uint8_t (&qs)[quant::kQK32 / 2]) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}

// The 32 codes of a Q5_0/Q5_1 block: low four bits as PackNibbles, the fifth
// bit of code j in bit j of the little-endian qh word.
template <typename Code>
void PackFiveBits(const Code* q, uint8_t (&qs)[quant::kQK32 / 2], uint8_t (&qh_bytes)[4]) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    qh |= static_cast<uint32_t>(q[j] >> 4) << j;
    qh |= static_cast<uint32_t>(q[j + 16] >> 4) << (j + 16);
  }
  EncodeU32(qh_bytes, qh);
}

// Q8_0, Q4_0, Q5_0: x = d * q, q in [qmin, qmax] (stored biased by -qmin
// for Q4_0/Q5_0).
class Symmetric32Codec : public BlockCodec {
 public:
  Symmetric32Codec(QType type, int qmin, int qmax)
      : BlockCodec(ToId(type), quant::kQK32), qmin_(qmin), qmax_(qmax) {}

  void FitWeighted(const float* x, const float* wt, int n, BlockGrid* g) const override {
    *g = BlockGrid();
    g->n = g->sub_len = n;
    g->qmin = qmin_;
    g->qmax = qmax_;
    StoreScale(x, wt, n, FitSymmetric(x, wt, n, qmin_, qmax_), g);
  }

  void Encode(const BlockGrid& g, const int* q, uint8_t* out) const override {
    if (type() == ToId(QType::kQ8_0)) {
      auto* b = reinterpret_cast<quant::BlockQ8_0*>(out);
      b->d = g.d;
      for (int j = 0; j < 32; ++j) b->qs[j] = static_cast<int8_t>(q[j]);
      return;
    }
    uint8_t u[32];
    for (int j = 0; j < 32; ++j) u[j] = static_cast<uint8_t>(q[j] - qmin_);
    if (type() == ToId(QType::kQ4_0)) {
      auto* b = reinterpret_cast<quant::BlockQ4_0*>(out);
      b->d = g.d;
      PackNibbles(u, b->qs);
      return;
    }
    auto* b = reinterpret_cast<quant::BlockQ5_0*>(out);
    b->d = g.d;
    PackFiveBits(u, b->qs, b->qh);
  }

 private:
  int qmin_, qmax_;
};

// Q4_1, Q5_1: x = d * q + m.
class Affine32Codec : public BlockCodec {
 public:
  Affine32Codec(QType type, int qmax) : BlockCodec(ToId(type), quant::kQK32), qmax_(qmax) {}

  void FitWeighted(const float* x, const float* wt, int n, BlockGrid* g) const override {
    *g = BlockGrid();
    g->n = g->sub_len = n;
    g->qmax = qmax_;
    StoreAffine(x, wt, n, FitAffine(x, wt, n, qmax_, false), g);
  }

  void Encode(const BlockGrid& g, const int* q, uint8_t* out) const override {
    if (type() == ToId(QType::kQ4_1)) {
      auto* b = reinterpret_cast<quant::BlockQ4_1*>(out);
      b->d = g.d;
      b->m = g.m;
      PackNibbles(q, b->qs);
      return;
    }
    auto* b = reinterpret_cast<quant::BlockQ5_1*>(out);
    b->d = g.d;
    b->m = g.m;
    PackFiveBits(q, b->qs, b->qh);
  }

 private:
  int qmax_;
};

class Iq4NlCodec : public BlockCodec {
 public:
  Iq4NlCodec() : BlockCodec(ToId(QType::kIQ4_NL), quant::kQK32) {}

  void FitWeighted(const float* x, const float* wt, int n, BlockGrid* g) const override {
    *g = BlockGrid();
    g->n = g->sub_len = n;
    g->qmax = 15;
    g->levels = kIq4nlValues;
    StoreScale(x, wt, n, FitLevels(x, wt, n, kIq4nlValues, 16), g);
  }

  void Encode(const BlockGrid& g, const int* q, uint8_t* out) const override {
    auto* b = reinterpret_cast<quant::BlockIQ4_NL*>(out);
    b->d = g.d;
    for (int j = 0; j < 16; ++j) b->qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
};

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

// Q2_K (16 x 16, q 0..3, 4-bit scales and mins), Q4_K and Q5_K (8 x 32,
// q 0..15 / 0..31, 6-bit scales and mins).
class KAffineCodec : public BlockCodec {
 public:
  KAffineCodec(QType type, int sub_len, int qmax, int smax)
      : BlockCodec(ToId(type), quant::kQKK), sub_len_(sub_len), qmax_(qmax), smax_(smax) {}

  void FitWeighted(const float* x, const float* wt, int n, BlockGrid* g) const override {
    assert(n == quant::kQKK);
    *g = BlockGrid();
    g->n = n;
    g->sub_len = sub_len_;
    g->qmax = qmax_;
    const int subs = n / sub_len_;
    Affine fits[kMaxSubBlocks];
    for (int s = 0; s < subs; ++s) {
      fits[s] = FitAffine(x + s * sub_len_, wt + s * sub_len_, sub_len_, qmax_, true);
    }
    QuantizeAffineScales(x, wt, fits, subs, smax_, g);
  }

  void Encode(const BlockGrid& g, const int* q, uint8_t* out) const override {
    if (type() == ToId(QType::kQ2_K)) {
      auto* b = reinterpret_cast<quant::BlockQ2_K*>(out);
      std::memset(b, 0, sizeof(*b));
      b->d = g.d;
      b->dmin = g.m;
      for (int s = 0; s < 16; ++s) b->scales[s] = static_cast<uint8_t>(g.sc[s] | (g.mn[s] << 4));
      for (int e = 0; e < 256; ++e) {
        const int h = e / 128, r = e % 128;
        b->qs[32 * h + r % 32] |= static_cast<uint8_t>(q[e] << (2 * (r / 32)));
      }
      return;
    }
    uint8_t scales[quant::kKScaleBytes];
    for (int j = 0; j < 4; ++j) {
      scales[j] = static_cast<uint8_t>(g.sc[j] | ((g.sc[j + 4] >> 4) << 6));
      scales[j + 4] = static_cast<uint8_t>(g.mn[j] | ((g.mn[j + 4] >> 4) << 6));
      scales[j + 8] = static_cast<uint8_t>((g.sc[j + 4] & 0xF) | ((g.mn[j + 4] & 0xF) << 4));
    }
    if (type() == ToId(QType::kQ4_K)) {
      auto* b = reinterpret_cast<quant::BlockQ4_K*>(out);
      b->d = g.d;
      b->dmin = g.m;
      std::memcpy(b->scales, scales, sizeof(scales));
      for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
          b->qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
        }
      }
      return;
    }
    auto* b = reinterpret_cast<quant::BlockQ5_K*>(out);
    b->d = g.d;
    b->dmin = g.m;
    std::memcpy(b->scales, scales, sizeof(scales));
    std::memset(b->qh, 0, sizeof(b->qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        b->qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        b->qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }

 private:
  int sub_len_, qmax_, smax_;
};

// Q3_K (q -4..3, signed 6-bit scales) and Q6_K (q -32..31, int8 scales):
// 16 sub-blocks of 16.
class KSymmetricCodec : public BlockCodec {
 public:
  KSymmetricCodec(QType type, int qmin, int qmax, int smin, int smax)
      : BlockCodec(ToId(type), quant::kQKK), qmin_(qmin), qmax_(qmax), smin_(smin), smax_(smax) {}

  void FitWeighted(const float* x, const float* wt, int n, BlockGrid* g) const override {
    assert(n == quant::kQKK);
    *g = BlockGrid();
    g->n = n;
    g->sub_len = 16;
    g->qmin = qmin_;
    g->qmax = qmax_;
    float fits[kMaxSubBlocks];
    for (int s = 0; s < 16; ++s) fits[s] = FitSymmetric(x + 16 * s, wt + 16 * s, 16, qmin_, qmax_);
    QuantizeSignedScales(x, wt, fits, 16, smin_, smax_, g);
  }

  void Encode(const BlockGrid& g, const int* q, uint8_t* out) const override {
    if (type() == ToId(QType::kQ3_K)) {
      auto* b = reinterpret_cast<quant::BlockQ3_K*>(out);
      std::memset(b, 0, sizeof(*b));
      b->d = g.d;
      for (int s = 0; s < 16; ++s) {
        const int v = g.sc[s] + 32;
        if (s < 8) {
          b->scales[s] |= static_cast<uint8_t>(v & 0xF);
        } else {
          b->scales[s - 8] |= static_cast<uint8_t>((v & 0xF) << 4);
        }
        b->scales[8 + s % 4] |= static_cast<uint8_t>((v >> 4) << (2 * (s / 4)));
      }
      for (int e = 0; e < 256; ++e) {
        const int h = e / 128, r = e % 128, l = r % 32, j = r / 32;
        const int stored = q[e] + 4;
        b->qs[32 * h + l] |= static_cast<uint8_t>((stored & 3) << (2 * j));
        if (stored >= 4) b->hmask[l] |= static_cast<uint8_t>(1 << (4 * h + j));
      }
      return;
    }
    auto* b = reinterpret_cast<quant::BlockQ6_K*>(out);
    std::memset(b, 0, sizeof(*b));
    b->d = g.d;
    for (int s = 0; s < 16; ++s) b->scales[s] = static_cast<int8_t>(g.sc[s]);
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, r = e % 128, u = r / 32, l = r % 32;
      const int v = q[e] + 32;
      b->ql[64 * h + 32 * (u & 1) + l] |= static_cast<uint8_t>((v & 0xF) << (4 * (u >> 1)));
      b->qh[32 * h + l] |= static_cast<uint8_t>((v >> 4) << (2 * u));
    }
  }

 private:
  int qmin_, qmax_, smin_, smax_;
};

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
  assert(n >= 1 && n <= block_elems_);
  FitWeighted(x, wt != nullptr ? wt : Unweighted(), n, grid);
}

bool BlockCodec::FitsRow(int64_t cols) const {
  return IsGroupIntType(type_) || cols % block_elems_ == 0;
}

size_t BlockCodec::BlockBytes(int n) const {
  if (IsGroupIntType(type_)) return quant::GroupBytes(static_cast<int>(GroupIntBits(type_)), n);
  return GgmlBlockBytes(type_);
}

const BlockCodec* FindCodec(uint32_t type) {
  if (IsGroupIntType(type)) {
    static const GroupIntCodec kCodecs[] = {
#define FQ_CODEC(B, G) GroupIntCodec(B, G),
        FQ_GROUP_INT_FOR_EACH(FQ_CODEC)
#undef FQ_CODEC
    };
    for (const GroupIntCodec& c : kCodecs) {
      if (c.type() == type) return &c;
    }
    return nullptr;
  }
  static const Symmetric32Codec kQ8_0(QType::kQ8_0, -127, 127);
  static const Symmetric32Codec kQ4_0(QType::kQ4_0, -8, 7);
  static const Symmetric32Codec kQ5_0(QType::kQ5_0, -16, 15);
  static const Affine32Codec kQ4_1(QType::kQ4_1, 15);
  static const Affine32Codec kQ5_1(QType::kQ5_1, 31);
  static const Iq4NlCodec kIq4Nl;
  static const KAffineCodec kQ2_K(QType::kQ2_K, 16, 3, 15);
  static const KAffineCodec kQ4_K(QType::kQ4_K, 32, 15, 63);
  static const KAffineCodec kQ5_K(QType::kQ5_K, 32, 31, 63);
  static const KSymmetricCodec kQ3_K(QType::kQ3_K, -4, 3, -32, 31);
  static const KSymmetricCodec kQ6_K(QType::kQ6_K, -32, 31, -128, 127);
  static const BlockCodec* const kAll[] = {&kQ8_0, &kQ4_0, &kQ5_0, &kQ4_1, &kQ5_1, &kIq4Nl,
                                           &kQ2_K, &kQ4_K, &kQ5_K, &kQ3_K, &kQ6_K};
  for (const BlockCodec* c : kAll) {
    if (c->type() == type) return c;
  }
  return nullptr;
}

}  // namespace fqpack::runtime::quantize
