// Provisional scalar core (F32 and F16 only); the quantized kernels replace it.
#include "runtime/matmul.h"

#include <vector>

#include "schema/coding.h"
#include "schema/half.h"
#include <cstring>
#include "schema/quant_types.h"

namespace fqpack::runtime {
namespace {

void RowToF32(uint32_t type, const uint8_t* src, float* dst, int64_t n) {
  if (type == ToId(QType::kF32)) {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToF32(DecodeU16(src + 2 * i));
  }
}

}  // namespace

bool CanExecute(uint32_t type) { return type == ToId(QType::kF32) || type == ToId(QType::kF16); }

Status CheckExecutable(uint32_t type, const std::string& tensor) {
  if (CanExecute(type)) return Status::OK();
  return Status::NotSupported((tensor.empty() ? "" : "tensor '" + tensor + "': ") + "type " +
                              QTypeName(type) + " cannot be executed");
}

void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool) {
  pool->ParallelFor(w.rows, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = r0; r < r1; ++r) {
      RowToF32(w.type, w.data + r * w.row_bytes, row.data(), w.cols);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * w.cols;
        float acc = 0;
        for (int64_t k = 0; k < w.cols; ++k) acc += row[k] * xt[k];
        y[t * w.rows + r] = acc;
      }
    }
  });
}

void GetRows(const WeightView& w, const int32_t* rows_idx, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    RowToF32(w.type, w.data + static_cast<int64_t>(rows_idx[i]) * w.row_bytes, dst + i * w.cols, w.cols);
  }
}

}  // namespace fqpack::runtime
