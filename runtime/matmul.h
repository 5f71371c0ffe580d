// The quantized matmul core: weights stay in their stored type; activations
// are converted per type the way llama.cpp's CPU backend does it (see
// schema/quant_types.md, "Activations"), so results match llama.cpp's. The
// per-type pieces (block layouts, dequantizers, dot kernels) are in
// runtime/quant/; this driver only looks them up in the traits table.
//
// Thread-safety: the functions are reentrant; parallelism comes from the
// ThreadPool passed in. Each calling thread keeps one scratch buffer for its
// converted activations (grown as needed, never shrunk).
#ifndef FQPACK_RUNTIME_MATMUL_H_
#define FQPACK_RUNTIME_MATMUL_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "schema/status.h"
#include "schema/thread_pool.h"

namespace fqpack::runtime {

// A weight matrix in its stored type: `rows` rows of `cols` elements each,
// row r at data + r * row_bytes. (GGUF: cols = ne0, rows = ne1.) The view
// does not own the bytes.
struct WeightView {
  uint32_t type = 0;
  int64_t cols = 0;
  int64_t rows = 0;
  const uint8_t* data = nullptr;
  size_t row_bytes = 0;
};

// True when MatMul and GetRows can run this type: a row of the type table
// with a dot (runtime/quant/quant.h), GGUF or group-int.
bool CanExecute(uint32_t type);
// OK, or NotSupported naming the type (and `tensor` when given).
Status CheckExecutable(uint32_t type, const std::string& tensor);
// CheckExecutable, plus the shape: cols must be a whole number of blocks of
// the type and of its activation type, and row_bytes at least the bytes of a
// row (InvalidArgument naming `tensor` otherwise). MatMul and GetRows assume
// a view that passed this check.
Status CheckWeight(const WeightView& w, const std::string& tensor);

// y[t * rows + r] = sum_k W[r][k] * x[t * cols + k] for t < n_tokens.
// n_tokens == 1 is the decode path (matrix-vector): the rows are split over
// the pool. Larger n_tokens is the batched path of prompt processing and
// perplexity: the activations of all tokens are converted once, then each
// thread takes blocks of rows and runs them against all tokens, so every
// weight row is read from memory once per call. On the AVX-512 VNNI tier,
// from 16 tokens on, that is a GEMM (runtime/quant/gemm.h): blocks of 16
// rows packed for vpdpbusd and run against tiles of 8 tokens.
// `pool` may be null: everything then runs on the calling thread.
// REQUIRES: CheckWeight(w) is OK; x holds n_tokens * cols floats and y
// n_tokens * rows; x and y do not overlap.
void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool);

// The shares a one-token matmul on `threads` threads is cut into: 4 per
// thread, each 1 - 1/(2T) the size of the one before (guided scheduling).
// DecodeShareCount(T) of them; share s starts at DecodeShareStart(s, T) of
// the step's bytes (0 for s = 0, 1 for s = the count).
int64_t DecodeShareCount(int threads);
double DecodeShareStart(int64_t share, int threads);

// Matrices MatMulSameInput takes at once (more go through MatMul one by one).
inline constexpr size_t kMaxSameInput = 4;

// ys[i] = MatMul(ws[i], x) for every i, with the same results, for matrices
// that read the same input (Q, K and V; gate and up). For one token they
// run as one decode step: x is converted once per activation type and the
// rows of all of them are shared out in one parallel loop, so the small
// ones (K and V under grouped-query attention) add no hand-off of their
// own. For more tokens it is MatMul on each in turn.
// REQUIRES: ws.size() == ys.size(); every ws[i] passed CheckWeight and has
// the same cols; x holds n_tokens * cols floats, ys[i] n_tokens *
// ws[i].rows; no output overlaps x or another output.
void MatMulSameInput(std::span<const WeightView> ws, const float* x, int64_t n_tokens,
                     std::span<float* const> ys, ThreadPool* pool);

// dst[i * cols + k] = W[rows_idx[i]][k]: the embedding look-up (get_rows),
// by the reference dequantizer of the type.
// REQUIRES: CheckWeight(w) is OK and every rows_idx[i] is in [0, rows).
void GetRows(const WeightView& w, const int32_t* rows_idx, int64_t n, float* dst);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_MATMUL_H_
