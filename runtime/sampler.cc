#include "runtime/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <string>

namespace fqpack::runtime {

Status Sampler::Check(const SamplerOptions& options) {
  if (!(options.temperature >= 0) || !std::isfinite(options.temperature)) {
    return Status::InvalidArgument("temperature must be >= 0, got " +
                                   std::to_string(options.temperature));
  }
  if (!(options.top_p > 0 && options.top_p <= 1)) {
    return Status::InvalidArgument("top-p must be in (0, 1], got " + std::to_string(options.top_p));
  }
  return Status::OK();
}

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {
  assert(Check(options).ok());
}

int32_t Sampler::Argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best;
}

int32_t Sampler::Sample(std::span<const float> logits) {
  if (options_.temperature == 0 || logits.size() == 1) return Argmax(logits);
  const size_t n = logits.size();
  const float max = *std::max_element(logits.begin(), logits.end());
  candidates_.resize(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const float p = std::exp((logits[i] - max) / options_.temperature);
    candidates_[i] = {p, static_cast<int32_t>(i)};
    sum += p;
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (auto& c : candidates_) c.first *= inv;

  size_t keep = n;
  double mass = 1.0;
  if (options_.top_p < 1.0f) {
    // A token below (1 - top_p) / (n - 1) can never be needed to reach top_p:
    // even all tokens above it but one sum to more. Dropping them first keeps
    // the sort short (llama2.c's trick).
    // The most likely token (probability `inv`) always stays.
    const float cutoff = std::min((1.0f - options_.top_p) / static_cast<float>(n - 1), inv);
    auto end = std::partition(candidates_.begin(), candidates_.end(),
                              [cutoff](const auto& c) { return c.first >= cutoff; });
    // Most likely first; equal probabilities by token id, so the order (and
    // with it the sample) does not depend on the partition above.
    std::sort(candidates_.begin(), end, [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    const size_t m = static_cast<size_t>(end - candidates_.begin());
    double cum = 0;
    keep = m;
    for (size_t i = 0; i < m; ++i) {
      cum += candidates_[i].first;
      if (cum >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
    mass = 0;
    for (size_t i = 0; i < keep; ++i) mass += candidates_[i].first;
  }
  const double r = NextUniform() * mass;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += candidates_[i].first;
    if (r < cum) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;  // rounding left r at the very top
}

}  // namespace fqpack::runtime
