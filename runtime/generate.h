// Text generation: run a prompt through a Session, then sample one token at
// a time and feed it back, handing every token to a callback as soon as it
// is chosen (the caller prints it).
//
// Stopping follows llama2.c and llama.cpp: at EOS, at BOS (a model that
// starts a new text has finished this one, as llama2.c's run.c decides),
// after n_predict tokens, or when the context is full. Stop tokens are not
// passed to the callback.
//
// A full context stops generation only when n_predict is -1 (or shifting is
// off): with a token limit, Generate shifts the context as llama.cpp's main
// example does ("infinite text generation"): it keeps the first n_keep
// tokens, drops the oldest half of the rest and goes on (ShiftContext).
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
  int32_t eot = -1;  // end of turn (chat vocabularies): stops as EOS does
  // Called before each token is evaluated, with the logits of the token
  // before it (empty when they are not known: the session's first position).
  // When set, the prompt too is evaluated a token at a time, so the hook
  // sees every position; dynamic precision (runtime/dynamic.h) picks each
  // token's precision there. A non-OK Status stops generation.
  std::function<Status(std::span<const float> previous_logits)> before_token;
  // Context shift when the context is full and n_predict >= 0 (see above).
  bool context_shift = true;
  // Tokens at the start of the context that a shift keeps (llama.cpp's
  // n_keep: the BOS, plus `--keep` prompt tokens); at most what the session
  // holds.
  int64_t n_keep = 1;
  // Tokens per Eval when the prompt or the kept tokens of a shift are
  // evaluated (the elastic runtime's budget counts scratch for that many);
  // 0: all in one Eval.
  int64_t n_batch = 0;
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
  int64_t context_shifts = 0;
  double shift_seconds = 0;  // re-evaluating kept tokens, part of generate_seconds
};

// Continues `session` (usually empty) with `prompt`, which must hold at least
// one token (BOS for an empty text), then generates. `on_token` gets each
// generated token; a non-OK Status from it stops generation and is returned
// (Aborted for Ctrl-C, say). InvalidArgument when the prompt is empty or does
// not fit in the context, or the sampling options are bad.
Result<GenerateStats> Generate(Session* session, std::span<const int32_t> prompt,
                               const GenerateOptions& options,
                               const std::function<Status(int32_t token)>& on_token);

// Makes room in `session` the way llama.cpp's context shift does: of the
// n_past tokens it holds, keeps the first n_keep = min(options.n_keep,
// n_past), drops the oldest n_discard = (n_past - n_keep) / 2 of the rest and
// moves the others down to positions n_keep.. . Afterwards the session holds
// bit for bit what a fresh Session holds after evaluating the kept tokens in
// the same passes (it evaluates them again; generate.cc says why), and
// *logits are the logits of the last kept token. Evaluation follows
// `options` (n_batch, before_token). Returns n_discard; 0 when there is
// nothing to drop, and then the session and *logits are unchanged. After an
// error the session holds only part of the kept tokens.
Result<int64_t> ShiftContext(Session* session, const GenerateOptions& options,
                             std::vector<float>* logits);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_GENERATE_H_
