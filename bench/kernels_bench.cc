// Speed of the matmul core per weight type.
//
//   MatVec/<type>/threads:<n>    decode: 4096 x 4096 weights times one token.
//                                 "weights" is the rate of weight bytes read.
//   Batched/<type>/threads:<n>   64 tokens through the same matrix: the
//                                 prompt / perplexity path, compute-bound;
//                                 "macs" is multiply-adds per second.
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
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_matrix.h"
#include "runtime/matmul.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"

namespace fqpack::runtime {
namespace {

using namespace bench;  // the matrix ring, MatVec, Batched, Memcpy

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
