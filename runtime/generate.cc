#include "runtime/generate.h"

#include <chrono>
#include <string>

namespace fqpack::runtime {

const char* StopReasonName(StopReason r) {
  switch (r) {
    case StopReason::kLength:
      return "length";
    case StopReason::kEos:
      return "eos";
    case StopReason::kBos:
      return "bos";
    case StopReason::kContextFull:
      return "context";
  }
  return "?";
}

Result<GenerateStats> Generate(Session* session, std::span<const int32_t> prompt,
                               const GenerateOptions& options,
                               const std::function<Status(int32_t token)>& on_token) {
  if (prompt.empty()) {
    return Status::InvalidArgument("the prompt has no tokens (an empty text starts from BOS)");
  }
  FQ_RETURN_IF_ERROR(Sampler::Check(options.sampling));
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  GenerateStats stats;
  stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::vector<float> logits;
  const Clock::time_point t0 = Clock::now();
  if (options.before_token) {
    for (size_t i = 0; i < prompt.size(); ++i) {
      FQ_RETURN_IF_ERROR(
          options.before_token(i == 0 ? std::span<const float>() : std::span<const float>(logits)));
      FQ_RETURN_IF_ERROR(session->Decode(prompt[i], &logits));
    }
  } else {
    FQ_RETURN_IF_ERROR(session->Eval(prompt, prompt.size() - 1, &logits));
  }
  const Clock::time_point t1 = Clock::now();
  stats.prompt_seconds = seconds(t0, t1);

  Sampler sampler(options.sampling);
  while (true) {
    if (options.n_predict >= 0 && stats.generated >= options.n_predict) {
      stats.stop = StopReason::kLength;
      break;
    }
    const int32_t next = sampler.Sample(logits);
    if (next == options.eos) {
      stats.stop = StopReason::kEos;
      break;
    }
    if (next == options.bos) {
      stats.stop = StopReason::kBos;
      break;
    }
    ++stats.generated;
    stats.tokens.push_back(next);
    Status s = on_token(next);
    if (!s.ok()) {
      stats.generate_seconds = seconds(t1, Clock::now());
      return s;
    }
    if (options.n_predict >= 0 && stats.generated >= options.n_predict) {
      stats.stop = StopReason::kLength;  // the last token needs no logits
      break;
    }
    if (session->n_past() >= session->n_ctx()) {
      stats.stop = StopReason::kContextFull;
      break;
    }
    if (options.before_token) FQ_RETURN_IF_ERROR(options.before_token(logits));
    FQ_RETURN_IF_ERROR(session->Decode(next, &logits));
  }
  stats.generate_seconds = seconds(t1, Clock::now());
  return stats;
}

}  // namespace fqpack::runtime
