// Round-to-nearest quantization of a weight matrix: every block's scales are
// fitted to its weights (codec.h), then every weight takes its nearest code.
// Also the float conversions (F32, F16, BF16) and the error measure the
// quantize summary reports.
//
// Thread-safety: reentrant; parallel over rows on the pool given.
#ifndef FQPACK_QUANTIZE_RTN_H_
#define FQPACK_QUANTIZE_RTN_H_

#include <cstdint>

#include "schema/status.h"
#include "schema/thread_pool.h"

namespace fqpack::quantize {

// True when `type` can be produced from floats: a float type or a type with
// a codec (FindCodec).
bool CanQuantizeTo(uint32_t type);

// Quantizes the row-major `rows` x `cols` matrix `w` into `type`, writing
// rows * RowBytes(type, cols) bytes to `out`. Rows are independent, so the
// bytes do not depend on the pool. NotSupported for a type fqpack cannot
// quantize to; InvalidArgument when a row is not a whole number of the
// type's blocks. `pool` may be null.
Status QuantizeRtn(uint32_t type, const float* w, int64_t rows, int64_t cols, uint8_t* out,
                   ThreadPool* pool);

// Root-mean-square of (dequantized `q` - `w`) over all rows x cols weights.
// REQUIRES: `q` holds rows rows of `type` (one the runtime can dequantize).
double QuantizationRmse(uint32_t type, const uint8_t* q, const float* w, int64_t rows,
                        int64_t cols);

}  // namespace fqpack::quantize

#endif  // FQPACK_QUANTIZE_RTN_H_
