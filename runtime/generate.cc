#include "runtime/generate.h"

#include <algorithm>
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

namespace {

// Appends `tokens` to `session` and leaves the logits of the last one in
// *logits: through the per-token hook a token at a time when there is one,
// else in passes of options.n_batch tokens.
Status EvalTokens(Session* session, std::span<const int32_t> tokens, const GenerateOptions& options,
                  std::vector<float>* logits) {
  if (options.before_token) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      FQ_RETURN_IF_ERROR(options.before_token(i == 0 ? std::span<const float>()
                                                     : std::span<const float>(*logits)));
      FQ_RETURN_IF_ERROR(session->Decode(tokens[i], logits));
    }
    return Status::OK();
  }
  const size_t step = options.n_batch > 0 ? static_cast<size_t>(options.n_batch) : tokens.size();
  for (size_t b = 0; b < tokens.size(); b += step) {
    const size_t m = std::min(step, tokens.size() - b);
    const bool last = b + m == tokens.size();
    FQ_RETURN_IF_ERROR(
        session->Eval(tokens.subspan(b, m), last ? m - 1 : m, last ? logits : nullptr));
  }
  return Status::OK();
}

}  // namespace

// The cache holds K after RoPE, so llama.cpp's K-shift (rotate the kept K
// entries by -n_discard positions in place) would also work here. fqpack
// evaluates the kept tokens again instead, because:
// - Only that gives the kept tokens' true state. Above the first layer, a
//   kept token's K and V were computed while it attended to the tokens now
//   dropped; a rotated cache still carries them, so logits after a K-shift
//   differ from the model's logits for the kept text by however much the
//   model depends on the lost context, which no tolerance bounds. Evaluated
//   again, the session is bit for bit a fresh Session on the kept tokens, and
//   what follows a shift depends only on the kept text.
// - Rotation is exact only in real arithmetic: the cache is F16 and ggml's
//   angles come from repeated float products, so each shift would round a
//   kept K again, and a token kept through many shifts would drift.
// - The kept tokens are evaluated with the current weights, which the
//   elastic runtime and dynamic precision change between tokens.
// - The KV cache layout stays private to the forward pass.
// The cost: a batched evaluation of the n_past - n_discard kept tokens
// (about n_ctx / 2) per n_discard generated tokens; a batched token costs
// about a third of a decoded one, so shifts add about a third to generation
// time (README, `run`).
Result<int64_t> ShiftContext(Session* session, const GenerateOptions& options,
                             std::vector<float>* logits) {
  const std::span<const int32_t> held = session->tokens();
  const int64_t n_past = static_cast<int64_t>(held.size());
  const int64_t n_keep = std::clamp<int64_t>(options.n_keep, 0, n_past);
  const int64_t n_discard = (n_past - n_keep) / 2;
  if (n_discard == 0) return int64_t{0};
  std::vector<int32_t> kept(held.begin(), held.begin() + n_keep);
  kept.insert(kept.end(), held.begin() + n_keep + n_discard, held.end());
  session->Reset();
  FQ_RETURN_IF_ERROR(EvalTokens(session, kept, options, logits));
  return n_discard;
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
  FQ_RETURN_IF_ERROR(EvalTokens(session, prompt, options, &logits));
  const Clock::time_point t1 = Clock::now();
  stats.prompt_seconds = seconds(t0, t1);

  Sampler sampler(options.sampling);
  while (true) {
    if (options.n_predict >= 0 && stats.generated >= options.n_predict) {
      stats.stop = StopReason::kLength;
      break;
    }
    const int32_t next = sampler.Sample(logits);
    if (next == options.eos || (options.eot >= 0 && next == options.eot)) {
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
      int64_t dropped = 0;
      if (options.context_shift && options.n_predict >= 0) {
        const Clock::time_point s0 = Clock::now();
        FQ_ASSIGN_OR_RETURN(dropped, ShiftContext(session, options, &logits));
        stats.shift_seconds += seconds(s0, Clock::now());
      }
      if (dropped == 0) {
        stats.stop = StopReason::kContextFull;
        break;
      }
      ++stats.context_shifts;
    }
    if (options.before_token) FQ_RETURN_IF_ERROR(options.before_token(logits));
    FQ_RETURN_IF_ERROR(session->Decode(next, &logits));
  }
  stats.generate_seconds = seconds(t1, Clock::now());
  return stats;
}

}  // namespace fqpack::runtime
