#include "quantize/gptq.h"

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "quantize/codec.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"

namespace fqpack::quantize {

namespace {

// Rows quantized together: they share every load of U.
constexpr int64_t kTileRows = 16;
// A pivot of the damped H this small against its mean diagonal means H was
// singular and the factorisation only got through on rounding noise. With
// any damping of at least 1e-6 the pivots stay far above it.
constexpr double kMinPivotRatio = 1e-9;
constexpr double kMaxDamp = 10;
// Columns per block of the triangular inverse.
constexpr int64_t kInverseBlock = 256;

std::string Percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g%%", 100 * v);
  return buf;
}

}  // namespace

Hessian::Hessian(int64_t cols) : cols_(cols), lower_(Eigen::MatrixXd::Zero(cols, cols)) {}

void Hessian::Accumulate(const float* x, int64_t n) {
  if (n <= 0) return;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMajor> xf(x, n, cols_);
  const Eigen::MatrixXd xd = xf.cast<double>();
  lower_.selfadjointView<Eigen::Lower>().rankUpdate(xd.transpose());
  tokens_ += n;
}

Eigen::MatrixXd Hessian::Matrix() const {
  Eigen::MatrixXd h = lower_.selfadjointView<Eigen::Lower>();
  return h;
}

Result<GptqFactor> FactorHessian(const Hessian& h, const GptqOptions& options) {
  const int64_t n = h.cols();
  if (n <= 0 || h.tokens() == 0) {
    return Status::InvalidArgument("GPTQ needs a Hessian from at least one calibration token");
  }
  if (!(options.damp >= 0 && options.damp < kMaxDamp)) {
    return Status::InvalidArgument("GPTQ damping must be in [0, 10), not " +
                                   std::to_string(options.damp));
  }
  GptqFactor f;
  f.cols = n;
  Eigen::MatrixXd hm = h.Matrix();
  for (int64_t j = 0; j < n; ++j) {
    if (hm(j, j) == 0) {
      hm(j, j) = 1;
      ++f.dead_columns;
    }
  }
  f.order.resize(static_cast<size_t>(n));
  std::iota(f.order.begin(), f.order.end(), int64_t{0});
  if (options.act_order) {
    std::stable_sort(f.order.begin(), f.order.end(),
                     [&](int64_t a, int64_t b) { return hm(a, a) > hm(b, b); });
    Eigen::MatrixXd p(n, n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) p(i, j) = hm(f.order[i], f.order[j]);
    }
    hm = std::move(p);
  }
  const double mean = hm.diagonal().mean();
  // U, the upper Cholesky factor of (H + damping)^-1, without forming the
  // inverse: with J the order-reversing permutation and L the Cholesky
  // factor of J H J, H^-1 = (J L^-1 J)^T (J L^-1 J), and J L^-1 J is upper
  // triangular with a positive diagonal, so it is U. One factorisation and
  // one triangular inverse instead of three cubic steps.
  const Eigen::MatrixXd reversed = hm.reverse();
  double damp = options.damp;
  while (true) {
    Eigen::MatrixXd damped = reversed;
    damped.diagonal().array() += damp * mean;
    Eigen::LLT<Eigen::MatrixXd> llt(damped);
    bool ok = llt.info() == Eigen::Success;
    if (ok) {
      const Eigen::MatrixXd l = llt.matrixL();
      ok = l.diagonal().array().square().minCoeff() >= kMinPivotRatio * mean;
    }
    if (ok) {
      // L^-1 is lower triangular: column block [j0, j0 + b) is zero above
      // row j0, so each block solves only against L's lower-right corner
      // (a third of the work of solving against the whole identity).
      const Eigen::MatrixXd l = llt.matrixL();
      Eigen::MatrixXd l_inv = Eigen::MatrixXd::Zero(n, n);
      for (int64_t j0 = 0; j0 < n; j0 += kInverseBlock) {
        const int64_t b = std::min(kInverseBlock, n - j0), m = n - j0;
        Eigen::MatrixXd rhs = Eigen::MatrixXd::Zero(m, b);
        rhs.topRows(b).setIdentity();
        l.bottomRightCorner(m, m).triangularView<Eigen::Lower>().solveInPlace(rhs);
        l_inv.block(j0, j0, m, b) = rhs;
      }
      const Eigen::MatrixXd u = l_inv.reverse();
      f.u.assign(static_cast<size_t>(n * n), 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = i; j < n; ++j) f.u[i * n + j] = static_cast<float>(u(i, j));
      }
      f.damp = damp;
      return f;
    }
    const double next = damp > 0 ? damp * 10 : 0.01;
    if (next >= kMaxDamp) {
      return Status::InvalidArgument(
          "the calibration Hessian (" + std::to_string(n) + " columns, " +
          std::to_string(h.tokens()) + " tokens) is singular even with damping " + Percent(damp) +
          " of its mean diagonal; use a longer or more varied --calib text");
    }
    f.warnings.push_back("the calibration Hessian (" + std::to_string(n) +
                         " columns) is singular with damping " + Percent(damp) +
                         " of its mean diagonal; using " + Percent(next));
    damp = next;
  }
}

Status QuantizeGptq(uint32_t type, const float* w, int64_t rows, int64_t cols,
                    const GptqFactor& factor, const GptqOptions& options, uint8_t* out,
                    ThreadPool* pool) {
  const BlockCodec* codec = FindCodec(type);
  if (codec == nullptr) return Status::NotSupported("GPTQ cannot quantize to " + QTypeName(type));
  FQ_ASSIGN_OR_RETURN(const uint64_t row_bytes, RowBytes(type, static_cast<uint64_t>(cols)));
  if (factor.cols != cols || factor.u.size() != static_cast<size_t>(cols * cols) ||
      factor.order.size() != static_cast<size_t>(cols)) {
    return Status::InvalidArgument("GPTQ: the Hessian factor has " + std::to_string(factor.cols) +
                                   " columns; the matrix " + std::to_string(cols));
  }
  const int block = codec->block_elems();
  const int64_t n_blocks = (cols + block - 1) / block;
  bool natural = true;
  for (int64_t j = 0; j < cols; ++j) natural = natural && factor.order[j] == j;
  // Lazy blocks hold whole quantization blocks, so a block fitted at its
  // first column sees weights with every earlier column's update applied.
  int64_t lazy = std::max<int64_t>(options.block_cols, block);
  lazy = (lazy + block - 1) / block * block;
  const float* u = factor.u.data();
  // A column's share of the output error when it is rounded is its error
  // over U[j][j]^2 (the OBQ cost GPTQ applies column by column); block grids
  // are fitted with those as importances, by original column.
  std::vector<float> importance(static_cast<size_t>(cols), 1.0f);
  if (options.weighted_grids) {
    for (int64_t j = 0; j < cols; ++j) {
      const float d = u[j * cols + j];
      importance[factor.order[j]] = 1.0f / (d * d);
    }
  }

  const auto run_tile = [&](int64_t r0, int64_t r1) {
    const int64_t nt = r1 - r0;
    // The tile's weights in quantization order, updated as columns are done.
    std::vector<float> wt(static_cast<size_t>(nt * cols));
    for (int64_t t = 0; t < nt; ++t) {
      for (int64_t j = 0; j < cols; ++j) wt[t * cols + j] = w[(r0 + t) * cols + factor.order[j]];
    }
    std::vector<int> codes(static_cast<size_t>(nt * cols));
    // Every block's grid per row: fitted when its first column comes up in
    // natural order; up front from the original weights with act-order.
    std::vector<BlockGrid> grids(static_cast<size_t>(nt * n_blocks));
    const auto block_len = [&](int64_t b) {
      return static_cast<int>(std::min<int64_t>(block, cols - b * block));
    };
    if (!natural) {
      for (int64_t t = 0; t < nt; ++t) {
        for (int64_t b = 0; b < n_blocks; ++b) {
          codec->Fit(w + (r0 + t) * cols + b * block, block_len(b), importance.data() + b * block,
                     &grids[t * n_blocks + b]);
        }
      }
    }
    std::vector<float> err(static_cast<size_t>(nt * lazy));
    for (int64_t i1 = 0; i1 < cols; i1 += lazy) {
      const int64_t i2 = std::min(cols, i1 + lazy);
      for (int64_t t = 0; t < nt; ++t) {
        float* x = wt.data() + t * cols;
        for (int64_t j = i1; j < i2; ++j) {
          const int64_t col = factor.order[j];
          const int64_t b = col / block;
          const int e = static_cast<int>(col % block);
          BlockGrid& g = grids[t * n_blocks + b];
          if (natural && e == 0) codec->Fit(x + j, block_len(b), importance.data() + j, &g);
          const int q = g.Nearest(e, x[j]);
          codes[t * cols + col] = q;
          const float ej = (x[j] - g.Value(e, q)) / u[j * cols + j];
          const float* uj = u + j * cols;
          for (int64_t k = j + 1; k < i2; ++k) x[k] -= ej * uj[k];
          err[t * lazy + (j - i1)] = ej;
        }
      }
      // The rest of each row takes the block's errors, one column at a time
      // in column order (the same sum, element by element, for any tiling).
      for (int64_t k = i1; k < i2; ++k) {
        const float* uk = u + k * cols;
        for (int64_t t = 0; t < nt; ++t) {
          const float ek = err[t * lazy + (k - i1)];
          float* x = wt.data() + t * cols;
          for (int64_t c = i2; c < cols; ++c) x[c] -= ek * uk[c];
        }
      }
    }
    for (int64_t t = 0; t < nt; ++t) {
      uint8_t* dst = out + (r0 + t) * row_bytes;
      for (int64_t b = 0; b < n_blocks; ++b) {
        codec->Encode(grids[t * n_blocks + b], codes.data() + t * cols + b * block, dst);
        dst += codec->BlockBytes(block_len(b));
      }
    }
  };
  const int64_t n_tiles = (rows + kTileRows - 1) / kTileRows;
  const auto tiles = [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) run_tile(i * kTileRows, std::min(rows, (i + 1) * kTileRows));
  };
  if (pool == nullptr) {
    tiles(0, n_tiles);
  } else {
    pool->ParallelFor(n_tiles, tiles);
  }
  return Status::OK();
}

double RelativeOutputError(uint32_t type, const uint8_t* q, const float* w, int64_t rows,
                           int64_t cols, const Hessian& h) {
  const runtime::quant::TypeTraits* t = runtime::quant::FindTraits(type);
  const uint64_t row_bytes = RowBytes(type, static_cast<uint64_t>(cols)).value();
  const Eigen::MatrixXd hm = h.Matrix();
  Eigen::VectorXd wr(cols), dr(cols);
  std::vector<float> deq(static_cast<size_t>(cols));
  double num = 0, den = 0;
  for (int64_t r = 0; r < rows; ++r) {
    t->dequantize(q + r * row_bytes, deq.data(), cols);
    for (int64_t c = 0; c < cols; ++c) {
      wr(c) = w[r * cols + c];
      dr(c) = static_cast<double>(deq[c]) - w[r * cols + c];
    }
    num += dr.dot(hm * dr);
    den += wr.dot(hm * wr);
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

}  // namespace fqpack::quantize
