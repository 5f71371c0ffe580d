#include "quantize/rtn.h"

#include <cassert>
#include <cmath>
#include <vector>

#include "quantize/codec.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"

namespace fqpack::quantize {

namespace {

// A float type the runtime converts to (F32, F16, BF16): RTN is its
// reference quantizer, a rounding.
bool IsFloatType(uint32_t type) {
  const QTypeInfo* info = FindGgmlType(type);
  return info != nullptr && info->is_float && runtime::quant::FindTraits(type) != nullptr;
}

void ForRows(ThreadPool* pool, int64_t rows, const std::function<void(int64_t, int64_t)>& fn) {
  if (pool == nullptr) {
    if (rows > 0) fn(0, rows);
    return;
  }
  pool->ParallelFor(rows, fn, 4);
}

}  // namespace

bool CanQuantizeTo(uint32_t type) { return IsFloatType(type) || FindCodec(type) != nullptr; }

Status QuantizeRtn(uint32_t type, const float* w, int64_t rows, int64_t cols, uint8_t* out,
                   ThreadPool* pool) {
  FQ_ASSIGN_OR_RETURN(const uint64_t row_bytes, RowBytes(type, static_cast<uint64_t>(cols)));
  if (IsFloatType(type)) {
    const runtime::quant::TypeTraits* t = runtime::quant::FindTraits(type);
    ForRows(pool, rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) t->quantize(w + r * cols, out + r * row_bytes, cols);
    });
    return Status::OK();
  }
  const BlockCodec* codec = FindCodec(type);
  if (codec == nullptr) {
    return Status::NotSupported("fqpack cannot quantize to " + QTypeName(type));
  }
  const int block = codec->block_elems();
  ForRows(pool, rows, [&](int64_t r0, int64_t r1) {
    BlockGrid grid;
    int q[kMaxBlockElems];
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = w + r * cols;
      uint8_t* dst = out + r * row_bytes;
      for (int64_t start = 0; start < cols; start += block) {
        const int n = static_cast<int>(std::min<int64_t>(block, cols - start));
        codec->Fit(x + start, n, nullptr, &grid);
        for (int e = 0; e < n; ++e) q[e] = grid.Nearest(e, x[start + e]);
        codec->Encode(grid, q, dst);
        dst += codec->BlockBytes(n);
      }
      assert(dst == out + (r + 1) * row_bytes);
    }
  });
  return Status::OK();
}

double QuantizationRmse(uint32_t type, const uint8_t* q, const float* w, int64_t rows,
                        int64_t cols) {
  const runtime::quant::TypeTraits* t = runtime::quant::FindTraits(type);
  assert(t != nullptr);
  const uint64_t row_bytes = RowBytes(type, static_cast<uint64_t>(cols)).value();
  std::vector<float> row(static_cast<size_t>(cols));
  double sum = 0;
  for (int64_t r = 0; r < rows; ++r) {
    t->dequantize(q + r * row_bytes, row.data(), cols);
    for (int64_t c = 0; c < cols; ++c) {
      const double d = static_cast<double>(row[c]) - w[r * cols + c];
      sum += d * d;
    }
  }
  const double n = static_cast<double>(rows) * static_cast<double>(cols);
  return n > 0 ? std::sqrt(sum / n) : 0.0;
}

}  // namespace fqpack::quantize
