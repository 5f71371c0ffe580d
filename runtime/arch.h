// The architecture table: what differs between the model families the
// runtime runs, written once per family, and the hyper-parameters of one
// model read from its GGUF metadata the way llama.cpp reads them
// (src/llama-arch.cpp key and tensor names, src/llama-model.cpp defaults).
//
// The forward pass (runtime/llama.cc) and the tensor checks (Model::Validate)
// both take their options from here: a family is a row of kArchitectures,
// not a copy of the graph.
//
// Thread-safety: everything here is immutable or a plain value.
#ifndef FQPACK_RUNTIME_ARCH_H_
#define FQPACK_RUNTIME_ARCH_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schema/gguf.h"
#include "schema/status.h"

namespace fqpack::runtime {

// ggml's rope modes: NORM rotates adjacent pairs (x[2i], x[2i+1]); NEOX
// rotates (x[i], x[i + n_rot/2]). Both use the angle pos * base^(-2i/n_rot).
enum class RopeType { kNorm, kNeox };

// The feed-forward gate: SiLU (SwiGLU) or GELU with ggml's tanh
// approximation read through its F16 table (GEGLU).
enum class Activation { kSilu, kGelu };

// What one architecture's graph does. Field comments name the tensors
// (GGUF names, per block "blk.N." + name) a true field brings in.
struct ArchInfo {
  std::string_view name;  // general.architecture
  RopeType rope = RopeType::kNorm;
  Activation act = Activation::kSilu;
  bool qkv_bias = false;       // attn_q.bias, attn_k.bias, attn_v.bias (required)
  bool qk_norm = false;        // attn_q_norm.weight, attn_k_norm.weight: RMSNorm per head
  bool post_norms = false;     // post_attention_norm.weight, post_ffw_norm.weight
  bool fused_qkv = false;      // attn_qkv.weight = [Q; K; V] rows instead of attn_q/k/v
  bool fused_gate_up = false;  // ffn_up.weight = [gate; up] rows (gate first), no ffn_gate
  bool rope_freqs = false;     // optional rope_freqs.weight: per-pair divisors of the angle
  bool embd_scale = false;     // the embedding is multiplied by sqrt(n_embd)
  // Q is multiplied by the attention scale before attention (then the
  // scores are not scaled) instead of scaling the scores.
  bool q_prescale = false;
  // Sliding-window attention: every swa_pattern-th layer is global, the
  // others see only the last n_swa positions (0: no sliding window).
  int swa_pattern = 0;
  bool swa_ignored = false;        // the window key is read but not applied (llama.cpp's phi3)
  float swa_rope_base = 10000.0f;  // rope base of the windowed layers unless rope.freq_base_swa
  bool softcaps = false;           // attn_logit_softcapping / final_logit_softcapping are read
};

// The supported architectures, in the order `fqpack synth --arch` lists them.
std::span<const ArchInfo> Architectures();
// The row of `name`, or nullptr.
const ArchInfo* FindArch(std::string_view name);

// Hyper-parameters of a model, from the `<arch>.*` GGUF keys. Widths that
// llama assumes equal are kept apart: a head is head_dim wide
// (attention.key_length, default n_embd / n_head), so Q is n_head * head_dim
// wide, which need not be n_embd (gemma3, qwen3).
struct Hparams {
  const ArchInfo* arch = nullptr;       // never null after ReadHparams
  int64_t n_vocab = 0;                  // length of tokenizer.ggml.tokens
  int64_t n_embd = 0;                   // embedding_length
  int64_t n_layer = 0;                  // block_count
  int64_t n_ff = 0;                     // feed_forward_length
  int64_t n_head = 0;                   // attention.head_count
  int64_t n_head_kv = 0;                // attention.head_count_kv (default: n_head)
  int64_t n_embd_head = 0;              // attention.key_length (= value_length)
  int64_t n_rot = 0;                    // rope.dimension_count (default: head dim)
  int64_t n_ctx_train = 0;              // context_length
  float rope_freq_base = 10000.0f;      // rope.freq_base
  float rope_freq_scale = 1.0f;         // 1 / rope.scaling.factor (linear scaling)
  float rope_freq_base_swa = 10000.0f;  // windowed layers (rope.freq_base_swa)
  float rms_eps = 0;                    // attention.layer_norm_rms_epsilon
  int64_t n_swa = 0;                    // attention.sliding_window (0: none)
  float attn_softcap = 0;               // attn_logit_softcapping (0: none)
  float final_softcap = 0;              // final_logit_softcapping (0: none)
  float attn_scale = 0;                 // the factor of q.k (1/sqrt(head_dim) unless gemma says)
  float embd_scale = 1.0f;              // factor of the token embedding

  std::string_view arch_name() const { return arch != nullptr ? arch->name : "llama"; }
  // key_length, or n_embd / n_head when unset (hand-made hparams).
  int64_t head_dim() const { return n_embd_head > 0 ? n_embd_head : n_embd / n_head; }
  // Width of Q and of the attention output.
  int64_t n_embd_q() const { return head_dim() * n_head; }
  // Width of the K and V projections (grouped-query attention).
  int64_t n_embd_kv() const { return head_dim() * n_head_kv; }
  // True when layer `l` attends through the sliding window.
  bool is_swa(int64_t l) const {
    return n_swa > 0 && arch != nullptr && arch->swa_pattern > 0 &&
           (l % arch->swa_pattern) < arch->swa_pattern - 1;
  }
};

// Reads and checks the hyper-parameters. NotSupported when the architecture
// is not in the table (naming `what` and the architecture); InvalidArgument
// naming the key when one is missing, of the wrong type, or inconsistent
// (heads not dividing the embedding, an odd or too large rope dimension).
// `what` prefixes messages.
Result<Hparams> ReadHparams(const gguf::Metadata& md, std::string_view what);

// One tensor the graph reads, with its shape in GGUF order (ne0 = row
// length = input width of a projection).
struct ExpectedTensor {
  std::string name;
  std::array<uint64_t, 4> ne;
  bool required = true;
};

// Every tensor the architecture's graph reads.
std::vector<ExpectedTensor> ExpectedTensors(const Hparams& hp);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_ARCH_H_
