// Model: a checkpoint of one of the architectures of runtime/arch.h ready to run, built from a
// ModelManifest (the GGUF metadata and the module of each slot) and a ModuleSource (the bytes). The
// runtime never reads the store's index; a .fqpack reader hands it manifests the same way.
//
// Each slot's weights are a small record (SlotWeights): the module's bytes
// (kept alive by their ModuleData) and a WeightView over them. The forward
// pass reads weights only through these records, so SetSlot can swap one
// slot to another quantization of the same tensor between two tokens: the
// FlexQuant search evaluates EQM variants that way, the residency manager
// follows a memory budget, and dynamic precision picks a copy per layer.
//
// Ownership and thread-safety: a Model owns its SlotWeights (and through them
// shares ownership of the module bytes). Const methods may be called from any
// number of threads; SetSlot must not run while a forward pass reads the
// model (callers swap between tokens).
#ifndef FQPACK_RUNTIME_MODEL_H_
#define FQPACK_RUNTIME_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/arch.h"
#include "runtime/matmul.h"
#include "schema/gguf.h"
#include "schema/status.h"
#include "schema/thread_pool.h"
#include "store/module_source.h"

namespace fqpack::runtime {

// The weights of one slot: the module's bytes, the view the kernels read,
// and for one-dimensional slots (norms) their values as floats.
struct SlotWeights {
  std::string name;  // "blk.3.ffn_down.weight"
  int idx = 0;       // the slot's idx in the manifest
  int layer = -1;
  store::ModuleDesc desc;
  store::ModuleData data;
  WeightView view;
  std::vector<float> values;  // one-dimensional slots only
};

class Model {
 public:
  // What the forward pass uses in one block (pointers into the slot table;
  // stable for the life of the Model).
  struct Layer {
    const SlotWeights* attn_norm = nullptr;
    const SlotWeights* wq = nullptr;
    const SlotWeights* wk = nullptr;
    const SlotWeights* wv = nullptr;
    const SlotWeights* wo = nullptr;
    const SlotWeights* ffn_norm = nullptr;
    const SlotWeights* ffn_gate = nullptr;
    const SlotWeights* ffn_up = nullptr;
    const SlotWeights* ffn_down = nullptr;
    // Present only where the architecture has them (runtime/arch.h).
    const SlotWeights* wqkv = nullptr;  // fused [Q; K; V] (wq, wk, wv are null)
    const SlotWeights* bq = nullptr;
    const SlotWeights* bk = nullptr;
    const SlotWeights* bv = nullptr;
    const SlotWeights* q_norm = nullptr;
    const SlotWeights* k_norm = nullptr;
    const SlotWeights* post_attn_norm = nullptr;
    const SlotWeights* post_ffn_norm = nullptr;
  };

  // Checks everything that can be checked without module bytes: metadata
  // (ReadHparams; NotSupported naming the model and the architecture when
  // it is not in the table), that every tensor the architecture's graph
  // needs is present with its exact shape and no other tensor is
  // (Corruption naming the tensor, the expected and the actual shape;
  // NotSupported for a tensor the graph does not use), and that every type
  // is executable (NotSupported naming tensor and type).
  static Result<Hparams> Validate(const store::ModelManifest& manifest);

  // Validates, then loads every module from `source` (in parallel on `pool`
  // when given). Nothing is kept of `source` after Load returns.
  static Result<std::unique_ptr<Model>> Load(const store::ModelManifest& manifest,
                                             store::ModuleSource* source,
                                             ThreadPool* pool = nullptr);

  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // A second model over the same modules: every slot shares its ModuleData
  // with this one (no bytes are copied), so a clone costs the slot table.
  // SetSlot on either model leaves the other untouched; that is how the
  // search gives each thread a model of its own.
  std::unique_ptr<Model> Clone() const;

  const Hparams& hparams() const { return hp_; }
  const gguf::Metadata& metadata() const { return metadata_; }
  const std::string& name() const { return name_; }    // model name in the store
  const std::string& label() const { return label_; }  // QM label or "eqm:<step>"

  int n_slots() const { return static_cast<int>(slots_.size()); }
  // Slots in manifest order.
  const SlotWeights& slot_at(int position) const { return slots_[position]; }
  // The slot whose manifest idx is `idx`, or nullptr.
  const SlotWeights* slot(int idx) const;
  // The manifest idx of the slot called `name`, or -1.
  int FindSlot(std::string_view name) const;

  // Replaces the module of slot `idx` (its manifest idx). The module must
  // have the slot's shape and an executable type, and `data` exactly the
  // bytes that type and shape take; InvalidArgument (naming the slot)
  // otherwise, and the old module stays. The old bytes are released unless
  // someone else holds their ModuleData.
  Status SetSlot(int idx, store::ModuleData data, const store::ModuleDesc& desc);

  // Bytes of the modules currently in the slots.
  uint64_t weight_bytes() const;

  const Layer& layer(int l) const { return layers_[l]; }
  const SlotWeights& token_embd() const { return *token_embd_; }
  const SlotWeights& output_norm() const { return *output_norm_; }
  // output.weight, or the token embedding when the model ties them.
  const SlotWeights& output() const { return output_ != nullptr ? *output_ : *token_embd_; }
  // Llama 3's per-pair rope frequency divisors, or nullptr.
  const SlotWeights* rope_freqs() const { return rope_freqs_; }

 private:
  Model() = default;
  Status Wire();

  Hparams hp_;
  gguf::Metadata metadata_;
  std::string name_;
  std::string label_;
  std::vector<SlotWeights> slots_;
  std::vector<int> position_of_idx_;  // manifest idx -> position in slots_, -1 when absent
  std::vector<Layer> layers_;
  const SlotWeights* token_embd_ = nullptr;
  const SlotWeights* output_norm_ = nullptr;
  const SlotWeights* output_ = nullptr;
  const SlotWeights* rope_freqs_ = nullptr;
};

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_MODEL_H_
