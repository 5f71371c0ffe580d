// A 4096x4096 quantized matrix for the matmul and quantizer benchmarks, in
// enough copies (256 MiB in all) that a pass over them streams from memory
// rather than cache; the matvec and batched matmul over it, and the memcpy
// they are measured against.
#ifndef FQPACK_BENCH_BENCH_MATRIX_H_
#define FQPACK_BENCH_BENCH_MATRIX_H_

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "runtime/matmul.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"

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

// The baseline: a multi-threaded memcpy of `bytes` from the same kind of
// ring, reported like the matvecs ("weights" = bytes per second).
inline void Memcpy(benchmark::State& state, size_t bytes, int threads) {
  ThreadPool pool(threads);
  const size_t n_copies = std::max<size_t>(2, (kRingBytes + bytes - 1) / bytes);
  std::vector<std::unique_ptr<uint8_t[]>> src;
  for (size_t i = 0; i < n_copies; ++i) {
    src.push_back(std::make_unique<uint8_t[]>(bytes));
    std::memset(src.back().get(), static_cast<int>(i), bytes);
  }
  auto dst = std::make_unique<uint8_t[]>(bytes);
  std::memset(dst.get(), 0, bytes);
  size_t next = 0;
  // Whole pages per chunk, so threads never share a cache line.
  const int64_t pages = static_cast<int64_t>((bytes + 4095) / 4096);
  for (auto _ : state) {
    const uint8_t* from = src[next++ % n_copies].get();
    pool.ParallelFor(pages, [&](int64_t p0, int64_t p1) {
      const size_t begin = static_cast<size_t>(p0) * 4096;
      const size_t end = std::min(bytes, static_cast<size_t>(p1) * 4096);
      std::memcpy(dst.get() + begin, from + begin, end - begin);
    });
    benchmark::ClobberMemory();
  }
  state.counters["weights"] = benchmark::Counter(static_cast<double>(bytes) * state.iterations(),
                                                 benchmark::Counter::kIsRate);
}

// Gaussian activations (or weights), reproducible from `seed`.
inline std::vector<float> Normal(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = normal(rng);
  return x;
}

// One activation row through the ring: decode speed.
inline void MatVec(benchmark::State& state, uint32_t type, int threads) {
  ThreadPool pool(threads);
  Ring& ring = RingFor(type);
  const std::vector<float> x = Normal(kCols, 2);
  std::vector<float> y(kRows);
  for (auto _ : state) {
    const WeightView w{type, kCols, kRows, ring.Next(), ring.row_bytes};
    MatMul(w, x.data(), 1, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["weights"] = benchmark::Counter(
      static_cast<double>(MatrixBytes(type)) * state.iterations(), benchmark::Counter::kIsRate);
}

// kBatchTokens rows at once: prompt-processing speed.
inline void Batched(benchmark::State& state, uint32_t type, int threads) {
  ThreadPool pool(threads);
  Ring& ring = RingFor(type);
  const std::vector<float> x = Normal(kCols * kBatchTokens, 2);
  std::vector<float> y(kRows * kBatchTokens);
  for (auto _ : state) {
    const WeightView w{type, kCols, kRows, ring.Next(), ring.row_bytes};
    MatMul(w, x.data(), kBatchTokens, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["macs"] =
      benchmark::Counter(static_cast<double>(kRows * kCols * kBatchTokens) * state.iterations(),
                         benchmark::Counter::kIsRate);
}

}  // namespace fqpack::runtime::bench

#endif  // FQPACK_BENCH_BENCH_MATRIX_H_
