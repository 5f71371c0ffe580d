// GPTQ: the factor of H against its definition, the blocked and tiled
// implementation against a plain one-column-at-a-time GPTQ written here,
// the output error it minimises against RTN's on correlated inputs, the
// fallback to more damping for a singular H, and determinism.
#include "quantize/gptq.h"

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <random>
#include <vector>

#include "quantize/codec.h"
#include "quantize/rtn.h"
#include "runtime/quant/quant.h"
#include "schema/coding.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"

namespace fqpack::quantize {
namespace {

// Inputs with correlated features (what makes GPTQ's error feedback pay):
// x = z * A with A a random mixing matrix and per-feature scales.
std::vector<float> CorrelatedInputs(int64_t n, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Eigen::MatrixXf a(cols, cols);
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) a(i, j) = normal(rng) * (i == j ? 2.0f : 0.3f);
  }
  std::vector<float> x(static_cast<size_t>(n * cols));
  Eigen::VectorXf z(cols);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < cols; ++i) z(i) = normal(rng);
    const Eigen::VectorXf v = a.transpose() * z;
    for (int64_t i = 0; i < cols; ++i)
      x[t * cols + i] = v(i) * (1.0f + 0.02f * static_cast<float>(i % 50));
  }
  return x;
}

std::vector<float> Weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = normal(rng);
  return w;
}

Bytes Gptq(uint32_t type, const std::vector<float>& w, int64_t rows, int64_t cols, const Hessian& h,
           const GptqOptions& opts = {}, ThreadPool* pool = nullptr) {
  Result<GptqFactor> f = FactorHessian(h, opts);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  Bytes out(RowBytes(type, cols).value() * rows);
  EXPECT_TRUE(QuantizeGptq(type, w.data(), rows, cols, *f, opts, out.data(), pool).ok());
  return out;
}

// ||X dW^T|| / ||X W^T|| computed from the inputs themselves.
double OutputErrorFromInputs(uint32_t type, const Bytes& q, const std::vector<float>& w,
                             int64_t rows, int64_t cols, const std::vector<float>& x, int64_t n) {
  std::vector<float> deq(static_cast<size_t>(rows * cols));
  const uint64_t row_bytes = RowBytes(type, cols).value();
  for (int64_t r = 0; r < rows; ++r) {
    runtime::quant::FindTraits(type)->dequantize(q.data() + r * row_bytes, deq.data() + r * cols,
                                                 cols);
  }
  double num = 0, den = 0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double y = 0, dy = 0;
      for (int64_t c = 0; c < cols; ++c) {
        y += double(w[r * cols + c]) * x[t * cols + c];
        dy += (double(deq[r * cols + c]) - w[r * cols + c]) * x[t * cols + c];
      }
      num += dy * dy;
      den += y * y;
    }
  }
  return std::sqrt(num / den);
}

TEST(Gptq, FactorIsTheCholeskyFactorOfTheDampedInverse) {
  const int64_t cols = 48, n = 200;
  const std::vector<float> x = CorrelatedInputs(n, cols, 1);
  Hessian h(cols);
  h.Accumulate(x.data(), 120);
  h.Accumulate(x.data() + 120 * cols, n - 120);
  EXPECT_EQ(h.tokens(), n);
  // H against X^T X summed directly.
  const Eigen::MatrixXd hm = h.Matrix();
  for (int64_t i = 0; i < cols; i += 7) {
    for (int64_t j = 0; j < cols; j += 5) {
      double s = 0;
      for (int64_t t = 0; t < n; ++t) s += double(x[t * cols + i]) * x[t * cols + j];
      EXPECT_NEAR(hm(i, j), s, 1e-9 * std::fabs(s) + 1e-9);
    }
  }
  GptqOptions opts;
  Result<GptqFactor> f = FactorHessian(h, opts);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->damp, 0.01);
  EXPECT_TRUE(f->warnings.empty());
  Eigen::MatrixXd u = Eigen::MatrixXd::Zero(cols, cols);
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      u(i, j) = f->u[i * cols + j];
      if (j < i) {
        EXPECT_EQ(f->u[i * cols + j], 0.0f);
      }
    }
  }
  Eigen::MatrixXd damped = hm;
  damped.diagonal().array() += 0.01 * hm.diagonal().mean();
  const Eigen::MatrixXd identity = (u.transpose() * u) * damped;
  EXPECT_LT((identity - Eigen::MatrixXd::Identity(cols, cols)).cwiseAbs().maxCoeff(), 1e-4);
}

// GPTQ as the paper states it, one column at a time, every later column
// updated at once; grids fitted when a block's first column comes up,
// weighing column j by 1 / U[j][j]^2.
Bytes PlainGptq(uint32_t type, std::vector<float> w, int64_t rows, int64_t cols,
                const GptqFactor& f) {
  const BlockCodec* codec = FindCodec(type);
  const int block = codec->block_elems();
  Bytes out(RowBytes(type, cols).value() * rows);
  uint8_t* dst = out.data();
  for (int64_t r = 0; r < rows; ++r) {
    float* x = w.data() + r * cols;
    std::vector<int> q(static_cast<size_t>(cols));
    std::vector<BlockGrid> grids(static_cast<size_t>((cols + block - 1) / block));
    for (int64_t j = 0; j < cols; ++j) {
      BlockGrid& g = grids[j / block];
      if (j % block == 0) {
        std::vector<float> importance(static_cast<size_t>(block));
        for (int e = 0; e < block && j + e < cols; ++e) {
          importance[e] = 1.0f / (f.u[(j + e) * cols + j + e] * f.u[(j + e) * cols + j + e]);
        }
        codec->Fit(x + j, static_cast<int>(std::min<int64_t>(block, cols - j)), importance.data(),
                   &g);
      }
      q[j] = g.Nearest(static_cast<int>(j % block), x[j]);
      const float e = (x[j] - g.Value(static_cast<int>(j % block), q[j])) / f.u[j * cols + j];
      for (int64_t k = j + 1; k < cols; ++k) x[k] -= e * f.u[j * cols + k];
    }
    for (size_t b = 0; b < grids.size(); ++b) {
      codec->Encode(grids[b], q.data() + b * block, dst);
      dst += codec->BlockBytes(grids[b].n);
    }
  }
  return out;
}

TEST(Gptq, BlockedTiledGptqIsThePlainAlgorithm) {
  const int64_t rows = 40, n = 600;
  for (auto [type, cols] :
       {std::pair{GroupIntId(3, 32), int64_t{300}}, std::pair{GroupIntId(4, 128), int64_t{172}},
        std::pair{ToId(QType::kQ4_K), int64_t{512}}, std::pair{ToId(QType::kQ8_0), int64_t{160}}}) {
    const std::vector<float> x = CorrelatedInputs(n, cols, 2);
    const std::vector<float> w = Weights(rows, cols, 3);
    Hessian h(cols);
    h.Accumulate(x.data(), n);
    GptqOptions opts;
    opts.block_cols = 64;  // lazy blocks smaller than the rows: several per row
    Result<GptqFactor> f = FactorHessian(h, opts);
    ASSERT_TRUE(f.ok());
    Bytes blocked(RowBytes(type, cols).value() * rows);
    ThreadPool pool(2);
    ASSERT_TRUE(QuantizeGptq(type, w.data(), rows, cols, *f, opts, blocked.data(), &pool).ok());
    EXPECT_EQ(blocked, PlainGptq(type, w, rows, cols, *f)) << QTypeName(type);
  }
}

TEST(Gptq, LowersTheOutputErrorBelowRtn) {
  const int64_t rows = 64, cols = 256, n = 1024;
  const std::vector<float> x = CorrelatedInputs(n, cols, 4);
  const std::vector<float> w = Weights(rows, cols, 5);
  Hessian h(cols);
  h.Accumulate(x.data(), n);
  for (uint32_t type : {GroupIntId(2, 64), GroupIntId(3, 64), GroupIntId(4, 32), GroupIntId(8, 128),
                        ToId(QType::kQ4_K), ToId(QType::kQ2_K), ToId(QType::kQ6_K)}) {
    Bytes rtn(RowBytes(type, cols).value() * rows);
    ASSERT_TRUE(QuantizeRtn(type, w.data(), rows, cols, rtn.data(), nullptr).ok());
    const Bytes gptq = Gptq(type, w, rows, cols, h);
    GptqOptions act;
    act.act_order = true;
    const Bytes gptq_act = Gptq(type, w, rows, cols, h, act);
    const double e_rtn = RelativeOutputError(type, rtn.data(), w.data(), rows, cols, h);
    const double e_gptq = RelativeOutputError(type, gptq.data(), w.data(), rows, cols, h);
    const double e_act = RelativeOutputError(type, gptq_act.data(), w.data(), rows, cols, h);
    // The helper is the same quantity as the outputs' error on the inputs.
    EXPECT_NEAR(e_gptq, OutputErrorFromInputs(type, gptq, w, rows, cols, x, n), 1e-3 * e_gptq);
    EXPECT_LT(e_gptq, 0.9 * e_rtn) << QTypeName(type);
    EXPECT_LT(e_act, 0.9 * e_rtn) << QTypeName(type) << " act-order";
    std::printf("  %-9s output error RTN %.4f GPTQ %.4f act-order %.4f\n", QTypeName(type).c_str(),
                e_rtn, e_gptq, e_act);
  }
}

TEST(Gptq, SingularHessianFallsBackToMoreDamping) {
  // 20 tokens for 64 columns: H has rank 20; without damping it cannot be
  // factored, and a column whose input is always zero is dead.
  const int64_t cols = 64, n = 20, rows = 8;
  std::vector<float> x = CorrelatedInputs(n, cols, 6);
  for (int64_t t = 0; t < n; ++t) x[t * cols + 5] = 0;
  Hessian h(cols);
  h.Accumulate(x.data(), n);
  GptqOptions opts;
  opts.damp = 0;
  Result<GptqFactor> f = FactorHessian(h, opts);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_GT(f->damp, 0);
  EXPECT_EQ(f->dead_columns, 1);
  ASSERT_FALSE(f->warnings.empty());
  EXPECT_NE(f->warnings[0].find("singular"), std::string::npos) << f->warnings[0];
  // It still quantizes, and to something close.
  const std::vector<float> w = Weights(rows, cols, 7);
  Bytes out(RowBytes(GroupIntId(4, 32), cols).value() * rows);
  ASSERT_TRUE(
      QuantizeGptq(GroupIntId(4, 32), w.data(), rows, cols, *f, opts, out.data(), nullptr).ok());
  EXPECT_LT(QuantizationRmse(GroupIntId(4, 32), out.data(), w.data(), rows, cols), 0.05);
}

TEST(Gptq, RejectsBadInput) {
  Hessian empty(16);
  EXPECT_TRUE(FactorHessian(empty, {}).status().IsInvalidArgument());
  const std::vector<float> x = CorrelatedInputs(32, 16, 8);
  Hessian h(16);
  h.Accumulate(x.data(), 32);
  GptqOptions bad;
  bad.damp = -1;
  EXPECT_TRUE(FactorHessian(h, bad).status().IsInvalidArgument());
  Result<GptqFactor> f = FactorHessian(h, {});
  ASSERT_TRUE(f.ok());
  std::vector<float> w(4 * 32, 0.1f);
  Bytes out(4096);
  // A factor of another width.
  EXPECT_TRUE(QuantizeGptq(GroupIntId(4, 32), w.data(), 4, 32, *f, {}, out.data(), nullptr)
                  .IsInvalidArgument());
  // A type without a codec.
  EXPECT_TRUE(QuantizeGptq(ToId(QType::kF16), w.data(), 8, 16, *f, {}, out.data(), nullptr)
                  .IsNotSupported());
}

TEST(Gptq, BytesDoNotDependOnThreads) {
  const int64_t rows = 70, cols = 192, n = 400;
  const std::vector<float> x = CorrelatedInputs(n, cols, 9);
  const std::vector<float> w = Weights(rows, cols, 10);
  Hessian h(cols);
  h.Accumulate(x.data(), n);
  ThreadPool pool(2);
  for (bool act_order : {false, true}) {
    GptqOptions opts;
    opts.act_order = act_order;
    EXPECT_EQ(Gptq(GroupIntId(3, 64), w, rows, cols, h, opts, nullptr),
              Gptq(GroupIntId(3, 64), w, rows, cols, h, opts, &pool));
  }
}

}  // namespace
}  // namespace fqpack::quantize
