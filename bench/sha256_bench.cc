// SHA-256 throughput: fqpack's own implementation (SHA-NI and portable)
// against libcrypto (OpenSSL 3, EVP) and nettle, on the same buffers in the
// same run. Import fingerprints whole checkpoints with it, so MB/s on a large
// buffer is what matters; the small case shows per-call overhead.
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
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

void Own(benchmark::State& state, bool accelerated) {
  const std::vector<uint8_t>& buf = Buffer(static_cast<size_t>(state.range(0)));
  const bool was = Sha256::accelerated();
  if (accelerated && !was) {
    state.SkipWithError("this CPU has no SHA extensions");
    return;
  }
  Sha256::set_accelerated(accelerated);
  for (auto _ : state) {
    Sha256 h;
    h.Update(ByteSpan(buf.data(), buf.size()));
    benchmark::DoNotOptimize(h.Finish());
  }
  Sha256::set_accelerated(was);
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_Sha256_Fqpack_ShaNi(benchmark::State& state) { Own(state, true); }
void BM_Sha256_Fqpack_Portable(benchmark::State& state) { Own(state, false); }

void BM_Sha256_OpenSsl(benchmark::State& state) {
  const std::vector<uint8_t>& buf = Buffer(static_cast<size_t>(state.range(0)));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  for (auto _ : state) {
    std::array<uint8_t, 32> d;
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    EVP_DigestUpdate(ctx, buf.data(), buf.size());
    EVP_DigestFinal_ex(ctx, d.data(), nullptr);
    benchmark::DoNotOptimize(d);
  }
  EVP_MD_CTX_free(ctx);
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

// On a shared machine run with --benchmark_repetitions=5
// --benchmark_enable_random_interleaving=true, so that a neighbour's load
// hits every implementation alike.
#define FQ_SHA_BENCH(fn) BENCHMARK(fn)->Arg(64 << 20)->Arg(4096)->MinTime(0.5)
FQ_SHA_BENCH(BM_Sha256_Fqpack_ShaNi);
FQ_SHA_BENCH(BM_Sha256_OpenSsl);
#ifdef FQPACK_BENCH_NETTLE
FQ_SHA_BENCH(BM_Sha256_Nettle);
#endif
FQ_SHA_BENCH(BM_Sha256_Fqpack_Portable);

}  // namespace
}  // namespace fqpack

BENCHMARK_MAIN();
