// Speed of the matmul core per weight type.
//
//   MatVec/<type>/threads:<n>    decode: 4096 x 4096 weights times one token.
//                                 "weights" is the rate of weight bytes read.
//   Batched/<type>/threads:<n>   64 tokens through the same matrix: the
//                                 prompt / perplexity path, compute-bound;
//                                 "macs" is multiply-adds per second.
//   GemmVsAvx2/<type>/tokens:<n>/threads:2
//                                 n tokens (128; also 16 and 32 for Q8_0
//                                 and Q4_K) through a 4096 x 4096 matrix
//                                 on the kAvx512 GEMM and, in the same
//                                 iteration, on the AVX2 per-row dots
//                                 (SetSimdCap): "gemm_gflops" and
//                                 "avx2_gflops" are 2 x multiply-adds per
//                                 second of each, "ratio" their quotient.
//                                 Every type with a GEMM entry; the matrix
//                                 is one copy.
//   AttendGroup/heads:<h>/len:<n>  decode attention of h query heads that
//                                 share one KV head (head size 64) over n
//                                 cached F16 positions: the kAvx512 group
//                                 kernel and, in the same iteration, the
//                                 AVX2 kernel run head by head; "ratio" is
//                                 the AVX2 time over the group kernel's.
//   Memcpy/<type>_size/threads:<n>  copying buffers as large as a Q4_K and
//                                 a Q8_0 matrix: the bandwidth baseline.
//                                 "weights" = buffer bytes per second; the
//                                 copy itself moves each byte twice (read
//                                 and write).
//
// Each benchmark cycles through copies of its matrix (256 MB in all), so
// every call reads weights from memory rather than from the caches, as a
// decode step of a real model does.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_matrix.h"
#include "runtime/llama_kernels.h"
#include "runtime/matmul.h"
#include "runtime/quant/quant.h"
#include "schema/half.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"

namespace fqpack::runtime {
namespace {

using namespace bench;  // the matrix ring, MatVec, Batched, Memcpy

// The kAvx512 GEMM against the AVX2 batched path, alternating within each
// iteration so that both see the same machine load.
void GemmVsAvx2(benchmark::State& state, uint32_t type, int64_t kTokens, int threads) {
  if (quant::CpuSimdLevel() < quant::SimdLevel::kAvx512) {
    state.SkipWithError("the CPU lacks the kAvx512 tier");
    return;
  }
  ThreadPool pool(threads);
  const size_t row_bytes = RowBytes(type, kCols).value();
  std::vector<uint8_t> w(row_bytes * kRows);
  const quant::TypeTraits* t = quant::FindTraits(type);
  const std::vector<float> values = Normal(kCols, 3, 0.02f);
  for (int64_t r = 0; r < kRows; ++r) {
    // Rotated rows: distinct codes per row without quantizing 16M values.
    std::vector<float> row(values.begin() + r % kCols, values.end());
    row.insert(row.end(), values.begin(), values.begin() + r % kCols);
    t->quantize(row.data(), w.data() + r * row_bytes, kCols);
  }
  const WeightView view{type, kCols, kRows, w.data(), row_bytes};
  const std::vector<float> x = Normal(kCols * kTokens, 2);
  std::vector<float> y(kRows * kTokens);
  double gemm_s = 0, avx2_s = 0;
  using Clock = std::chrono::steady_clock;
  for (auto _ : state) {
    for (quant::SimdLevel level : {quant::SimdLevel::kAvx2, quant::SimdLevel::kAvx512}) {
      quant::SetSimdCap(level);
      const auto start = Clock::now();
      MatMul(view, x.data(), kTokens, y.data(), &pool);
      benchmark::DoNotOptimize(y.data());
      benchmark::ClobberMemory();
      const double s = std::chrono::duration<double>(Clock::now() - start).count();
      (level == quant::SimdLevel::kAvx2 ? avx2_s : gemm_s) += s;
    }
  }
  quant::SetSimdCap(quant::kWidestSimd);
  const double flops = 2.0 * kRows * kCols * kTokens * static_cast<double>(state.iterations());
  state.counters["gemm_gflops"] = flops / gemm_s * 1e-9;
  state.counters["avx2_gflops"] = flops / avx2_s * 1e-9;
  state.counters["ratio"] = avx2_s / gemm_s;
}

// One KV head's attention for a decoded token, group kernel against the
// AVX2 per-head kernel, alternating within each iteration.
void AttendGroup(benchmark::State& state, int64_t heads, int64_t len) {
  if (quant::CpuSimdLevel() < quant::SimdLevel::kAvx512) {
    state.SkipWithError("the CPU lacks the kAvx512 tier");
    return;
  }
  constexpr int64_t kHd = 64;
  const int64_t len8 = (len + 7) / 8 * 8;
  const std::vector<float> q = Normal(heads * kHd, 4);
  const std::vector<float> kv = Normal(2 * kHd * len8, 5);
  std::vector<uint16_t> kt(kHd * len8), v(len8 * kHd);
  for (size_t i = 0; i < kt.size(); ++i) kt[i] = F32ToFp16(kv[i]);
  for (size_t i = 0; i < v.size(); ++i) v[i] = F32ToFp16(kv[kt.size() + i]);
  std::vector<float> s(heads * len8), out(heads * kHd);
  const llama_kernels::Kernels* sets[2] = {&llama_kernels::Avx2(), &llama_kernels::Avx512()};
  double seconds[2] = {0, 0};
  using Clock = std::chrono::steady_clock;
  for (auto _ : state) {
    for (int k = 0; k < 2; ++k) {
      const auto start = Clock::now();
      sets[k]->attend_group(q.data(), heads, kt.data(), len8, v.data(), kHd, kHd, 0, len, 0.125f,
                            0.0f, s.data(), out.data());
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
      seconds[k] += std::chrono::duration<double>(Clock::now() - start).count();
    }
  }
  state.counters["group_us"] = seconds[1] / static_cast<double>(state.iterations()) * 1e6;
  state.counters["avx2_us"] = seconds[0] / static_cast<double>(state.iterations()) * 1e6;
  state.counters["ratio"] = seconds[0] / seconds[1];
}

void RegisterAll() {
  // Every GGUF weight type of the type table, most bits per weight first.
  std::vector<const quant::TypeTraits*> types;
  for (const quant::TypeTraits& t : quant::AllTraits()) {
    if (t.gguf && t.dot != nullptr) types.push_back(&t);
  }
  std::stable_sort(types.begin(), types.end(), [](const auto* a, const auto* b) {
    return a->bits_per_weight > b->bits_per_weight;
  });
  for (QType q : {QType::kQ4_K, QType::kQ8_0}) {
    for (int threads : {1, 2}) {
      const std::string name =
          "Memcpy/" + QTypeName(ToId(q)) + "_size/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), Memcpy, MatrixBytes(ToId(q)), threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (const quant::TypeTraits& t : quant::AllTraits()) {
    if (t.gemm == nullptr) continue;
    // Smaller batches too, around MatMul's threshold (kGemmMinTokens).
    const bool small = t.type == ToId(QType::kQ8_0) || t.type == ToId(QType::kQ4_K);
    for (int64_t tokens : small ? std::vector<int64_t>{16, 32, 128} : std::vector<int64_t>{128}) {
      const std::string name =
          "GemmVsAvx2/" + QTypeName(t.type) + "/tokens:" + std::to_string(tokens) + "/threads:2";
      benchmark::RegisterBenchmark(name.c_str(), GemmVsAvx2, t.type, tokens, 2)
          ->UseRealTime()
          ->MinTime(0.3)
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (int64_t heads : {4, 8}) {
    for (int64_t len : {256, 1024, 4096}) {
      const std::string name =
          "AttendGroup/heads:" + std::to_string(heads) + "/len:" + std::to_string(len);
      benchmark::RegisterBenchmark(name.c_str(), AttendGroup, heads, len)->MinTime(0.2);
    }
  }
  // One type at a time, so its ring of copies is built once.
  for (const quant::TypeTraits* t : types) {
    const uint32_t type = t->type;
    for (int threads : {1, 2}) {
      const std::string name = "MatVec/" + QTypeName(type) + "/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), MatVec, type, threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    for (int threads : {1, 2}) {
      const std::string name = "Batched/" + QTypeName(type) + "/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), Batched, type, threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace
}  // namespace fqpack::runtime

int main(int argc, char** argv) {
  fqpack::runtime::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
