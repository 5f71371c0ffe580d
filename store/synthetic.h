// Synthetic llama checkpoints: random weights in a real GGUF file, for the
// demo (a model fqpack can make for itself) and for benchmarks of realistic
// shape. The text such a model writes is noise; its files, tensors and
// compute are those of a real model of the same shape.
#ifndef FQPACK_STORE_SYNTHETIC_H_
#define FQPACK_STORE_SYNTHETIC_H_

#include <cstdint>
#include <string>

#include "schema/env.h"
#include "schema/status.h"

namespace fqpack::store {

struct SyntheticLlama {
  std::string name = "synthetic";
  uint32_t n_embd = 128;
  uint32_t n_layers = 4;
  uint32_t n_ff = 384;
  uint32_t n_heads = 8;
  uint32_t n_kv_heads = 4;
  uint32_t n_vocab = 512;
  uint32_t n_ctx = 256;
  uint32_t type = 0;  // F32 (0) or F16 (1)
  uint64_t seed = 1;
  bool tied_output = false;  // no output.weight: the embedding serves
};

// Writes the checkpoint crash-safely (temp file, fsync, rename); tensors are
// generated one at a time, so any size fits in little memory.
Status WriteSyntheticLlama(Env* env, const std::string& path, const SyntheticLlama& spec);

}  // namespace fqpack::store

#endif  // FQPACK_STORE_SYNTHETIC_H_
