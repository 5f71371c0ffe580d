// Speed of fqpack's group-int types and of `fqpack quantize`'s quantizers.
//
//   MatVec/<type>/threads:<n>   decode: 4096 x 4096 weights times one token;
//                               "weights" is the rate of weight bytes read.
//   Batched/<type>/threads:<n>  64 tokens through the same matrix; "macs"
//                               is multiply-adds per second.
//   Memcpy/<bytes>/threads:<n>  copying a buffer as large as an int4-g64
//                               matrix: the bandwidth baseline ("weights" =
//                               buffer bytes per second, as in
//                               kernels_bench). Decode goal: MatVec at >= 70%
//                               of Memcpy on 2 threads.
//   Rtn/<type>                  quantizing a 1024 x 4096 matrix with the
//                               scale/offset search, one thread ("weights"
//                               = weights per second).
//   FactorHessian/<cols>        the Cholesky factor GPTQ needs, once per
//                               distinct layer input.
//   Gptq/<type>/<cols>          GPTQ of a 1024-row matrix with a random
//                               Hessian of `cols` columns, one thread
//                               ("weights" = weights per second).
//
// Decode benchmarks cycle through copies of their matrix (256 MB in all), so
// every call reads weights from memory rather than from the caches.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_matrix.h"
#include "quantize/gptq.h"
#include "quantize/rtn.h"
#include "runtime/matmul.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"

namespace fqpack::runtime {
namespace {

using namespace bench;  // the matrix ring, MatVec, Batched, Memcpy

void Rtn(benchmark::State& state, uint32_t type) {
  const int64_t rows = 1024;
  const std::vector<float> w = Normal(rows * kCols, 3, 0.02f);
  std::vector<uint8_t> out(RowBytes(type, kCols).value() * rows);
  for (auto _ : state) {
    Status s = quantize::QuantizeRtn(type, w.data(), rows, kCols, out.data(), nullptr);
    benchmark::DoNotOptimize(out.data());
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
  }
  state.counters["weights"] = benchmark::Counter(
      static_cast<double>(rows * kCols) * state.iterations(), benchmark::Counter::kIsRate);
}

quantize::Hessian RandomHessian(int64_t cols) {
  // H = X^T X from 2 * cols random tokens.
  const int64_t n = 2 * cols;
  const std::vector<float> x = Normal(n * cols, 5);
  quantize::Hessian h(cols);
  h.Accumulate(x.data(), n);
  return h;
}

void Factor(benchmark::State& state, int64_t cols) {
  const quantize::Hessian h = RandomHessian(cols);
  for (auto _ : state) {
    Result<quantize::GptqFactor> f = quantize::FactorHessian(h, {});
    if (!f.ok()) state.SkipWithError(f.status().ToString().c_str());
    benchmark::DoNotOptimize(f);
  }
}

void Gptq(benchmark::State& state, uint32_t type, int64_t cols) {
  const int64_t rows = 1024;
  const std::vector<float> w = Normal(rows * cols, 4, 0.02f);
  const quantize::Hessian h = RandomHessian(cols);
  const quantize::GptqOptions opts;
  Result<quantize::GptqFactor> f = quantize::FactorHessian(h, opts);
  if (!f.ok()) {
    state.SkipWithError(f.status().ToString().c_str());
    return;
  }
  std::vector<uint8_t> out(RowBytes(type, cols).value() * rows);
  for (auto _ : state) {
    Status s = quantize::QuantizeGptq(type, w.data(), rows, cols, *f, opts, out.data(), nullptr);
    benchmark::DoNotOptimize(out.data());
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
  }
  state.counters["weights"] = benchmark::Counter(
      static_cast<double>(rows * cols) * state.iterations(), benchmark::Counter::kIsRate);
}

void RegisterAll() {
  for (int threads : {1, 2}) {
    const std::string name = "Memcpy/int4-g64_size/threads:" + std::to_string(threads);
    benchmark::RegisterBenchmark(name.c_str(), Memcpy, MatrixBytes(GroupIntId(4, 64)), threads)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  std::vector<uint32_t> types;
  for (int bits : {8, 6, 5, 4, 3, 2}) types.push_back(GroupIntId(bits, 64));
  types.push_back(GroupIntId(4, 32));
  types.push_back(GroupIntId(4, 128));
  types.push_back(ToId(QType::kQ4_K));
  for (uint32_t type : types) {
    for (int threads : {1, 2}) {
      const std::string name = "MatVec/" + QTypeName(type) + "/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), MatVec, type, threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    const std::string name = "Batched/" + QTypeName(type) + "/threads:2";
    benchmark::RegisterBenchmark(name.c_str(), Batched, type, 2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (uint32_t type :
       {GroupIntId(4, 64), GroupIntId(2, 64), ToId(QType::kQ4_K), ToId(QType::kQ6_K)}) {
    const std::string name = "Rtn/" + QTypeName(type);
    benchmark::RegisterBenchmark(name.c_str(), Rtn, type)->Unit(benchmark::kMillisecond);
  }
  for (int64_t cols : {int64_t{1024}, int64_t{4096}}) {
    const std::string name = "FactorHessian/" + std::to_string(cols);
    benchmark::RegisterBenchmark(name.c_str(), Factor, cols)->Unit(benchmark::kMillisecond);
  }
  for (uint32_t type : {GroupIntId(4, 64), ToId(QType::kQ4_K)}) {
    for (int64_t cols : {int64_t{1024}, int64_t{4096}}) {
      const std::string name = "Gptq/" + QTypeName(type) + "/" + std::to_string(cols);
      benchmark::RegisterBenchmark(name.c_str(), Gptq, type, cols)->Unit(benchmark::kMillisecond);
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
