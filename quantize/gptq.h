// GPTQ (Frantar et al., arXiv 2210.17323): quantizes a linear layer's weight
// matrix column by column, and after each column spreads the rounding error
// over the columns not yet quantized so that the layer's outputs on the
// calibration inputs move as little as possible. With H = X^T X over the
// calibration inputs X of the layer (tokens x cols) and U the upper Cholesky
// factor of H^-1 (H^-1 = U^T U), column j's error e = (w_j - q_j) / U[j][j]
// updates w_k -= e * U[j][k] for every k > j; updates are applied lazily, a
// block of columns at a time, which gives the same numbers.
//
// Quantization grids come from the codec of the target type (codec.h): a
// block's scales are fitted to the block's current, already-updated weights
// when its first column is reached. With act-order, columns go in order of
// decreasing H[j][j] and the grids are fitted to the original weights up
// front ("static groups"), since a block's columns are no longer adjacent.
//
// Thread-safety: Hessian is not thread-safe; FactorHessian and QuantizeGptq
// are reentrant (parallel over rows on the pool given; the result does not
// depend on the pool).
#ifndef FQPACK_QUANTIZE_GPTQ_H_
#define FQPACK_QUANTIZE_GPTQ_H_

#include <Eigen/Core>
#include <cstdint>
#include <string>
#include <vector>

#include "schema/status.h"
#include "schema/thread_pool.h"

namespace fqpack::quantize {

// H = sum over calibration tokens of x x^T, for one layer input of `cols`
// features, in double.
class Hessian {
 public:
  explicit Hessian(int64_t cols);
  int64_t cols() const { return cols_; }
  int64_t tokens() const { return tokens_; }
  // Adds the n inputs x (n x cols, row-major).
  void Accumulate(const float* x, int64_t n);
  // The symmetric matrix (both triangles filled).
  Eigen::MatrixXd Matrix() const;

 private:
  int64_t cols_;
  int64_t tokens_ = 0;
  Eigen::MatrixXd lower_;  // only the lower triangle is accumulated
};

struct GptqOptions {
  // Added to H's diagonal before factoring, as a fraction of its mean (the
  // paper's default, 1%). When H + damping is still not positive definite,
  // the damping is raised tenfold until it is (with a warning).
  double damp = 0.01;
  // Quantize columns in order of decreasing H[j][j] (the paper's act-order).
  bool act_order = false;
  // Columns per lazy update block (raised to the codec's block size).
  int block_cols = 128;
  // Fit each block's grid weighing its columns by 1 / U[j][j]^2 (the cost
  // of rounding error in that column) rather than equally.
  bool weighted_grids = true;
};

// What QuantizeGptq needs from H: the upper Cholesky factor U of
// (H + damping)^-1, in the order the columns are quantized.
struct GptqFactor {
  int64_t cols = 0;
  std::vector<float> u;        // cols x cols, row-major, upper triangle
  std::vector<int64_t> order;  // column quantized at step j (identity without act-order)
  double damp = 0;             // the damping fraction finally used
  int64_t dead_columns = 0;    // inputs that were always zero (H[j][j] = 0)
  std::vector<std::string> warnings;
};

// Factors H for GPTQ. Columns whose input was always zero get H[j][j] = 1
// (their weights are kept and rounded like the rest). InvalidArgument for an
// empty H or a damping outside [0, 10); a matrix that no damping up to 10x
// its mean diagonal makes positive definite is InvalidArgument too.
Result<GptqFactor> FactorHessian(const Hessian& h, const GptqOptions& options);

// Quantizes the row-major rows x cols matrix `w` into `type` with GPTQ;
// writes rows * RowBytes(type, cols) bytes to `out`. NotSupported for a type
// without a codec; InvalidArgument when a row is not a whole number of the
// type's blocks or the factor is for another width. `pool` may be null.
Status QuantizeGptq(uint32_t type, const float* w, int64_t rows, int64_t cols,
                    const GptqFactor& factor, const GptqOptions& options, uint8_t* out,
                    ThreadPool* pool);

// sqrt(sum_r dW_r H dW_r^T / sum_r W_r H W_r^T), dW = dequantized(q) - w:
// the error of the layer's outputs on the calibration inputs relative to
// the outputs, the quantity GPTQ minimises.
double RelativeOutputError(uint32_t type, const uint8_t* q, const float* w, int64_t rows,
                           int64_t cols, const Hessian& h);

}  // namespace fqpack::quantize

#endif  // FQPACK_QUANTIZE_GPTQ_H_
