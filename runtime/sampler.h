// Picks the next token from a row of logits: greedy (temperature 0), or
// temperature plus nucleus (top-p) sampling with a seeded generator.
//
// The random stream is std::mt19937_64 turned into doubles by fqpack itself
// (53 high bits), not by a standard distribution, whose output differs
// between standard libraries: a seed gives the same tokens everywhere.
//
// Thread-safety: a Sampler is a value owned by one thread.
#ifndef FQPACK_RUNTIME_SAMPLER_H_
#define FQPACK_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "schema/status.h"

namespace fqpack::runtime {

struct SamplerOptions {
  // Logits are divided by it; 0 means greedy. llama.cpp's default.
  float temperature = 0.8f;
  // The smallest set of most likely tokens whose probabilities add up to at
  // least top_p is sampled from; 1 keeps every token. llama.cpp's default.
  float top_p = 0.95f;
  uint64_t seed = 0;
};

class Sampler {
 public:
  // InvalidArgument unless temperature >= 0 and 0 < top_p <= 1.
  static Status Check(const SamplerOptions& options);

  // `options` must pass Check.
  explicit Sampler(const SamplerOptions& options);

  int32_t Sample(std::span<const float> logits);

  // The index of the largest logit; the first one on ties.
  static int32_t Argmax(std::span<const float> logits);

  // A uniform double in [0, 1) from the seeded stream.
  double NextUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

 private:
  SamplerOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // (probability, token)
};

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_SAMPLER_H_
