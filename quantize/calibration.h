// GPTQ calibration: runs a float model over calibration text and collects,
// for the input of every linear layer, H = X^T X over all tokens (gptq.h).
// Layers that read the same input (Q, K and V; gate and up) share one H:
// the forward pass hands them the same buffer in consecutive matmuls, and
// the collector sees that through the MatMul observer (matmul_hook.h)
// without the forward pass knowing it is watched.
//
// Thread-safety: CollectHessians runs the model on the calling thread (and
// the pool); the model is only read.
#ifndef FQPACK_QUANTIZE_CALIBRATION_H_
#define FQPACK_QUANTIZE_CALIBRATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "quantize/gptq.h"
#include "runtime/model.h"
#include "schema/status.h"
#include "schema/thread_pool.h"

namespace fqpack::quantize {

struct CalibrationOptions {
  int64_t n_ctx = 256;       // tokens per chunk, each evaluated from an empty cache
  int64_t max_chunks = 128;  // at most this many chunks of the text
  int32_t bos = -1;          // put first in every chunk; -1 keeps the text's token
  // Called after each chunk; a non-OK Status stops the run and is returned.
  std::function<Status(int64_t done, int64_t total)> progress;
};

struct LayerInputs {
  // One H per distinct layer input, and the slots (tensor names) reading it.
  std::vector<std::unique_ptr<Hessian>> hessians;
  std::vector<std::vector<std::string>> readers;
  std::map<std::string, int> hessian_of;  // tensor name -> index in hessians
  int64_t tokens = 0;                     // calibration tokens evaluated
  int64_t chunks = 0;

  const Hessian* Find(const std::string& tensor) const {
    auto it = hessian_of.find(tensor);
    return it == hessian_of.end() ? nullptr : hessians[it->second].get();
  }
};

// The fewest calibration tokens that can give every layer a full-rank H:
// the widest layer input (a matrix's row length) of the model.
int64_t MinCalibrationTokens(const runtime::Model& model);

// Evaluates `tokens` (already tokenized, BOS included) in chunks of
// options.n_ctx and collects the layer inputs. A text shorter than one chunk
// is one chunk. InvalidArgument when it has fewer than
// MinCalibrationTokens(model) tokens (the message says how many are needed)
// or n_ctx is outside [16, 512].
Result<LayerInputs> CollectHessians(const runtime::Model& model, std::span<const int32_t> tokens,
                                    const CalibrationOptions& options, ThreadPool* pool);

}  // namespace fqpack::quantize

#endif  // FQPACK_QUANTIZE_CALIBRATION_H_
