// Synthetic checkpoints: random weights in a real GGUF file, for the demo (a
// model fqpack can make for itself) and for benchmarks of realistic shape.
// Llama is written here; other architectures come from the caller, which
// knows their tensors (the runtime's architecture table) and hands over the
// metadata and the tensor list (WriteSyntheticGguf). The text such a model writes is noise; its
// files, tensors and compute are those of a real model of the same shape.
#ifndef FQPACK_STORE_SYNTHETIC_H_
#define FQPACK_STORE_SYNTHETIC_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "schema/env.h"
#include "schema/gguf.h"
#include "schema/status.h"

namespace fqpack::store {

// Encodes a matrix of `rows` rows of `cols` floats as the checkpoint's
// quantized type into `out` (the type's bytes of a row, rows times): the
// caller's quantizer, for checkpoints whose matrices are not F32 or F16
// (the store does not know the kernels).
using MatrixEncoder =
    std::function<Status(const float* values, int64_t rows, int64_t cols, uint8_t* out)>;

struct SyntheticLlama {
  std::string name = "synthetic";
  uint32_t n_embd = 128;
  uint32_t n_layers = 4;
  uint32_t n_ff = 384;
  uint32_t n_heads = 8;
  uint32_t n_kv_heads = 4;
  uint32_t n_vocab = 512;
  uint32_t n_ctx = 256;
  // The matrices' type: F32 (0), F16 (1), or a quantized GGUF type, which
  // needs `encode`.
  uint32_t type = 0;
  uint64_t seed = 1;
  bool tied_output = false;  // no output.weight: the embedding serves
  MatrixEncoder encode;
};

// Writes the checkpoint crash-safely (temp file, fsync, rename); tensors are
// generated one at a time, so any size fits in little memory.
Status WriteSyntheticLlama(Env* env, const std::string& path, const SyntheticLlama& spec);

// One tensor of a synthetic checkpoint: values ~ N(0, 1/sqrt(ne[0])) for
// matrices, 1 for norms, N(0, 0.02) for biases.
struct SyntheticTensor {
  enum class Fill { kMatrix, kNorm, kBias };
  std::string name;
  std::vector<uint64_t> ne;
  Fill fill = Fill::kMatrix;
};

// Writes `md` (the architecture's keys; general.file_type for F32 and F16,
// and the same SentencePiece-style vocabulary of n_vocab tokens as
// WriteSyntheticLlama are added) and `tensors` (matrices as `type`: F32,
// F16, or a quantized type that `encode` writes; vectors F32), crash-safely
// like WriteSyntheticLlama. The values are the same for every type of one
// seed.
Status WriteSyntheticGguf(Env* env, const std::string& path, gguf::Metadata md,
                          const std::vector<SyntheticTensor>& tensors, uint32_t type,
                          uint32_t n_vocab, uint64_t seed, const MatrixEncoder& encode = {});

}  // namespace fqpack::store

#endif  // FQPACK_STORE_SYNTHETIC_H_
