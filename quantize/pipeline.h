// `fqpack quantize`: a ladder of QMs from a float QM of a model in the store.
//
// For each target type (a group-int type or a GGUF type) one QM: every
// weight matrix quantized by RTN or GPTQ, the token embedding and output
// matrix by RTN at the embedding type, one-dimensional tensors (norms) as
// F32. A GGUF type that cannot hold a tensor's rows falls back the way
// llama.cpp's quantizer does (Q4_K -> Q5_0 -> F16 ...) and the tensor's
// result says so. The new QMs go into the store through QmWriter with origin
// "quantize" and params saying method, type, group, embedding type and the
// calibration text's hash.
//
// Deterministic: the same request gives the same module bytes whatever the
// thread count, so running it again stores nothing new; a target whose label
// already names a QM with the same params and modules is "nothing to do".
//
// Thread-safety: QuantizeModel holds the store's writer lock while it runs
// and uses `threads` threads.
#ifndef FQPACK_QUANTIZE_PIPELINE_H_
#define FQPACK_QUANTIZE_PIPELINE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "quantize/gptq.h"
#include "schema/status.h"
#include "store/store.h"

namespace fqpack::quantize {

enum class Method { kRtn, kGptq };

struct QuantizeTarget {
  uint32_t type = 0;  // group-int or GGUF type for the weight matrices
  std::string label;  // empty: DefaultLabel(type, method)
};

// "int3-g64" / "int3-g64-gptq" / "Q4_K" / "Q4_K-gptq".
std::string DefaultLabel(uint32_t type, Method method);

// The group-int type int<bits>-g<group>; InvalidArgument, saying what is
// available, for a width other than 2, 3, 4, 5, 6, 8 or a group other than
// 32, 64, 128.
Result<uint32_t> GroupIntTarget(int bits, int group);

// The type for the token embedding and output matrix of a `target` QM at
// `embed_bits`: 0 keeps the target type, 16 is F16, 32 F32; other widths
// take the group-int type of that width and the target's group, or for a
// GGUF target the type table's row with that embed_bits: Q8_0 (8), Q6_K (6),
// Q5_K (5), Q4_K (4), Q3_K (3), Q2_K (2).
// InvalidArgument for any other width.
Result<uint32_t> EmbeddingType(uint32_t target, int embed_bits);

// The type a matrix with rows of `cols` weights gets when `wanted` is asked
// for: `wanted` when its blocks divide the rows (always for group-int and
// float types), else its row's fallback in the type table, llama.cpp's
// (Q2_K, Q3_K -> IQ4_NL; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0), then F16
// when that does not fit either.
// *note explains a fallback ("" when there is none).
uint32_t TypeForRow(uint32_t wanted, int64_t cols, std::string* note);

struct QuantizeProgress {
  std::string phase;  // "calibrate" or "quantize"
  int64_t done = 0;   // chunks or tensors done
  int64_t total = 0;
  std::string label;   // QM being made (quantize)
  std::string tensor;  // tensor just done (quantize)
};

struct QuantizeRequest {
  std::string model;  // may be empty when the store holds one model
  std::string from;   // label of an F32/F16/BF16 QM of the model
  std::vector<QuantizeTarget> targets;
  Method method = Method::kRtn;
  int embed_bits = 8;
  // GPTQ calibration: the text (never the evaluation text), its name for
  // messages, and how it is cut into chunks.
  std::string calib_text;
  std::string calib_name;
  int64_t calib_ctx = 256;
  int64_t calib_chunks = 128;
  GptqOptions gptq;
  int threads = 0;  // 0: one per core
  // Called as calibration chunks and tensors complete; a non-OK Status (say
  // Aborted on Ctrl-C) stops the run and is returned, storing nothing.
  std::function<Status(const QuantizeProgress&)> progress;
};

struct TensorResult {
  std::string tensor;
  uint32_t type = 0;
  std::string method;        // "rtn", "gptq", or "copy" (float tensors)
  double rmse = 0;           // of the weights, against the source
  double output_error = -1;  // GPTQ: RelativeOutputError on the calibration inputs; -1 otherwise
  double seconds = 0;
  std::string note;  // a fallback or a GPTQ note
};

struct QmResult {
  std::string label;
  uint32_t type = 0;
  int64_t qm_id = 0;
  bool nothing_to_do = false;  // the label already names this very QM
  uint64_t weight_bytes = 0;
  double bits_per_weight = 0;
  size_t new_modules = 0;
  size_t reused_modules = 0;
  uint64_t new_stored_bytes = 0;
  std::string params_json;
  std::vector<TensorResult> tensors;
};

struct QuantizeResult {
  std::string model;
  std::string from;
  std::vector<QmResult> qms;
  std::vector<std::string> warnings;
  int64_t calib_tokens = 0;  // GPTQ
  int64_t calib_chunks = 0;
  double calib_seconds = 0;
  std::string calib_sha256;
};

// Runs the request. InvalidArgument for a bad request (no targets, a type
// fqpack cannot quantize to, a bad --embed-bits, duplicate labels), a source
// QM that is not float (naming a tensor and its type), a label taken by a
// different QM, calibration text that is too short (saying how many tokens
// are needed) or missing for GPTQ; NotFound for an unknown model or QM.
Result<QuantizeResult> QuantizeModel(store::Store* store, const QuantizeRequest& request);

}  // namespace fqpack::quantize

#endif  // FQPACK_QUANTIZE_PIPELINE_H_
