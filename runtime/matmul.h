// The quantized matmul core: weights stay in their stored type; activations
// are converted per type the way llama.cpp's CPU backend does it (see
// schema/quant_types.md, "Activations"), so results match llama.cpp's.
//
// Thread-safety: the functions are reentrant; parallelism comes from the
// ThreadPool passed in.
#ifndef FQPACK_RUNTIME_MATMUL_H_
#define FQPACK_RUNTIME_MATMUL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/thread_pool.h"
#include "schema/status.h"

namespace fqpack::runtime {

// A weight matrix in its stored type: `rows` rows of `cols` elements each,
// row r at data + r * row_bytes. (GGUF: cols = ne0, rows = ne1.)
struct WeightView {
  uint32_t type = 0;
  int64_t cols = 0;
  int64_t rows = 0;
  const uint8_t* data = nullptr;
  size_t row_bytes = 0;
};

// True when MatMul and DequantizeRows can run this type.
bool CanExecute(uint32_t type);
// OK, or NotSupported naming the type (and `tensor` when given).
Status CheckExecutable(uint32_t type, const std::string& tensor);

// y[t * rows + r] = sum_k W[r][k] * x[t * cols + k] for t < n_tokens.
// n_tokens == 1 is the decode path (matrix-vector), larger n_tokens the
// batched path of prompt processing and perplexity.
void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool);

// dst[i * cols + k] = W[rows_idx[i]][k]: the embedding look-up (get_rows).
void GetRows(const WeightView& w, const int32_t* rows_idx, int64_t n, float* dst);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_MATMUL_H_
