// A 4096x4096 quantized matrix for the matmul and quantizer benchmarks, in
// enough copies (256 MiB in all) that a pass over them streams from memory
// rather than cache.
#ifndef FQPACK_BENCH_BENCH_MATRIX_H_
#define FQPACK_BENCH_BENCH_MATRIX_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "runtime/quant/quant.h"
#include "schema/quant_types.h"

namespace fqpack::runtime::bench {

constexpr int64_t kRows = 4096;
constexpr int64_t kCols = 4096;
constexpr int64_t kBatchTokens = 64;
constexpr size_t kRingBytes = size_t{256} << 20;

inline size_t MatrixBytes(uint32_t type) { return RowBytes(type, kCols).value() * kRows; }

// Copies of one quantized matrix; only the most recently used type is kept,
// so the process never holds more than one ring.
struct Ring {
  uint32_t type = UINT32_MAX;
  size_t row_bytes = 0;
  std::vector<std::unique_ptr<uint8_t[]>> copies;
  size_t next = 0;

  const uint8_t* Next() { return copies[next++ % copies.size()].get(); }
};

inline Ring& RingFor(uint32_t type) {
  static Ring ring;
  if (ring.type == type) return ring;
  ring = Ring();
  ring.type = type;
  ring.row_bytes = RowBytes(type, kCols).value();
  const size_t bytes = MatrixBytes(type);
  auto first = std::make_unique<uint8_t[]>(bytes);
  const quant::TypeTraits* t = quant::FindTraits(type);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> row(kCols);
  for (int64_t r = 0; r < kRows; ++r) {
    for (float& v : row) v = normal(rng);
    t->quantize(row.data(), first.get() + r * ring.row_bytes, kCols);
  }
  const size_t n_copies = std::max<size_t>(2, (kRingBytes + bytes - 1) / bytes);
  for (size_t i = 1; i < n_copies; ++i) {
    auto copy = std::make_unique<uint8_t[]>(bytes);
    std::memcpy(copy.get(), first.get(), bytes);
    ring.copies.push_back(std::move(copy));
  }
  ring.copies.push_back(std::move(first));
  return ring;
}

}  // namespace fqpack::runtime::bench

#endif  // FQPACK_BENCH_BENCH_MATRIX_H_
