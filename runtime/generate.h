// Text generation: run a prompt through a Session, then sample one token at
// a time and feed it back, handing every token to a callback as soon as it
// is chosen (the caller prints it).
//
// Stopping follows llama2.c and llama.cpp: at EOS, at BOS (a model that
// starts a new text has finished this one, as llama2.c's run.c decides),
// after n_predict tokens, or when the context is full. Stop tokens are not
// passed to the callback.
//
// Thread-safety: Generate drives one Session from the calling thread.
#ifndef FQPACK_RUNTIME_GENERATE_H_
#define FQPACK_RUNTIME_GENERATE_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/llama.h"
#include "runtime/sampler.h"
#include "schema/status.h"

namespace fqpack::runtime {

struct GenerateOptions {
  // Tokens to generate at most; -1: until a stop token or a full context.
  int64_t n_predict = -1;
  SamplerOptions sampling;
  int32_t bos = -1;  // stop tokens; -1 for none
  int32_t eos = -1;
  // Called before each token is evaluated, with the logits of the token
  // before it (empty when they are not known: the session's first position).
  // When set, the prompt too is evaluated a token at a time, so the hook
  // sees every position; dynamic precision (runtime/dynamic.h) picks each
  // token's precision there. A non-OK Status stops generation.
  std::function<Status(std::span<const float> previous_logits)> before_token;
};

enum class StopReason { kLength, kEos, kBos, kContextFull };
const char* StopReasonName(StopReason r);  // "length", "eos", "bos", "context"

struct GenerateStats {
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0;    // evaluating the prompt
  int64_t generated = 0;        // tokens handed to the callback
  double generate_seconds = 0;  // from the end of the prompt to the last token
  StopReason stop = StopReason::kLength;
  std::vector<int32_t> tokens;  // the generated tokens
};

// Continues `session` (usually empty) with `prompt`, which must hold at least
// one token (BOS for an empty text), then generates. `on_token` gets each
// generated token; a non-OK Status from it stops generation and is returned
// (Aborted for Ctrl-C, say). InvalidArgument when the prompt is empty or does
// not fit in the context, or the sampling options are bad.
Result<GenerateStats> Generate(Session* session, std::span<const int32_t> prompt,
                               const GenerateOptions& options,
                               const std::function<Status(int32_t token)>& on_token);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_GENERATE_H_
