// Small llama models made in memory for runtime tests: a manifest, a
// ModuleSource holding their modules, the float values of every weight, and
// a naive forward pass in double precision to check the runtime against.
#ifndef FQPACK_TESTS_SUPPORT_TINY_LLAMA_H_
#define FQPACK_TESTS_SUPPORT_TINY_LLAMA_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "store/module_source.h"

namespace fqpack::testing {

// Modules held in memory, keyed as the store keys them.
class MemorySource : public store::ModuleSource {
 public:
  store::ModuleKey Add(const store::ModuleDesc& desc, Bytes bytes);
  Result<store::ModuleData> Load(const store::ModuleKey& key) override;
  int loads() const { return loads_; }

 private:
  std::mutex mu_;
  std::map<store::ModuleKey, Bytes> modules_;
  int loads_ = 0;
};

struct TinyLlamaSpec {
  int64_t n_vocab = 40;
  int64_t n_embd = 32;
  int64_t n_layer = 2;
  int64_t n_ff = 48;
  int64_t n_head = 4;
  int64_t n_head_kv = 2;
  int64_t n_rot = 0;  // 0: the whole head
  int64_t n_ctx_train = 64;
  float rope_freq_base = 10000.0f;  // written only when != 10000
  float rms_eps = 1e-5f;
  bool tied_output = false;                  // no output.weight: the embedding is reused
  uint32_t weight_type = ToId(QType::kF32);  // matrices; norms stay F32
  uint32_t seed = 1;
};

struct TinyLlama {
  TinyLlamaSpec spec;
  store::ModelManifest manifest;
  MemorySource source;
  // Each tensor's values as the runtime sees them (after rounding to the
  // stored type), row-major: [ne1][ne0].
  std::map<std::string, std::vector<float>> weights;
};

// Random weights of sensible scale (activations stay O(1) through the
// blocks), stored as spec.weight_type: F32, F16, or any type the runtime has
// a reference quantizer for (its block size must divide the row lengths).
std::unique_ptr<TinyLlama> MakeTinyLlama(const TinyLlamaSpec& spec);

// Metadata of a tiny llama (arch, hyper-parameters, a token list).
gguf::Metadata TinyLlamaMetadata(const TinyLlamaSpec& spec);

// Fills manifest.metadata / n_kv from `md`.
void SetManifestMetadata(store::ModelManifest* manifest, const gguf::Metadata& md);

// The textbook llama forward pass in double precision, from `weights`: logits
// of every position for `tokens` at positions 0..n-1, n x n_vocab.
std::vector<double> ReferenceLogits(const TinyLlama& model, std::span<const int32_t> tokens);

}  // namespace fqpack::testing

#endif  // FQPACK_TESTS_SUPPORT_TINY_LLAMA_H_
