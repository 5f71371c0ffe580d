// SHA-256 throughput: fqpack::Sha256 (libcrypto, OpenSSL 3) against nettle,
// on the same buffers in the same run. Import fingerprints whole checkpoints
// with it, so MB/s on a large buffer is what matters; the 4 KiB case shows
// per-call overhead.
//
// Until issue 13 fqpack had its own SHA-256 (portable C and SHA-NI
// intrinsics); this benchmark measured it against libcrypto before it went
// (README, "SHA-256": equal speed with SHA-NI, libcrypto faster without).
//
// On a shared machine run with --benchmark_repetitions=5
// --benchmark_enable_random_interleaving=true, so that a neighbour's load
// hits every implementation alike.
#include <benchmark/benchmark.h>
#ifdef FQPACK_BENCH_NETTLE
#include <nettle/sha2.h>
#endif

#include <array>
#include <cstdint>
#include <vector>

#include "schema/sha256.h"

namespace fqpack {
namespace {

const std::vector<uint8_t>& Buffer(size_t n) {
  static std::vector<uint8_t> buf;
  if (buf.size() != n) {
    buf.resize(n);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint8_t& b : buf) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      b = static_cast<uint8_t>(x);
    }
  }
  return buf;
}

void BM_Sha256_Fqpack(benchmark::State& state) {
  const std::vector<uint8_t>& buf = Buffer(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    Sha256 h;
    h.Update(ByteSpan(buf.data(), buf.size()));
    benchmark::DoNotOptimize(h.Finish());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

#ifdef FQPACK_BENCH_NETTLE
void BM_Sha256_Nettle(benchmark::State& state) {
  const std::vector<uint8_t>& buf = Buffer(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    sha256_ctx ctx;
    std::array<uint8_t, 32> d;
    sha256_init(&ctx);
    sha256_update(&ctx, buf.size(), buf.data());
    sha256_digest(&ctx, d.size(), d.data());
    benchmark::DoNotOptimize(d);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
#endif

#define FQ_SHA_BENCH(fn) BENCHMARK(fn)->Arg(64 << 20)->Arg(4096)->MinTime(0.5)
FQ_SHA_BENCH(BM_Sha256_Fqpack);
#ifdef FQPACK_BENCH_NETTLE
FQ_SHA_BENCH(BM_Sha256_Nettle);
#endif

}  // namespace
}  // namespace fqpack

BENCHMARK_MAIN();
