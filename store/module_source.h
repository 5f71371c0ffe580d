// ModuleSource: where the runtime gets module bytes from. The store
// implements it (decompressing blobs), and so does the .fqpack reader
// (mapping payloads in place). The runtime sees only this interface and a
// ModelManifest: which module each slot of a model uses.
//
// Thread-safety: Load may be called from several threads at once.
#ifndef FQPACK_STORE_MODULE_SOURCE_H_
#define FQPACK_STORE_MODULE_SOURCE_H_

#include <memory>
#include <string>
#include <vector>

#include "schema/coding.h"
#include "schema/status.h"
#include "store/module_key.h"

namespace fqpack::store {

// A module's bytes and whatever keeps them alive (an owned buffer, or a
// reference on a mapping). Cheap to copy; the bytes are immutable.
class ModuleData {
 public:
  ModuleData() = default;
  static ModuleData Owned(Bytes bytes) {
    auto holder = std::make_shared<Bytes>(std::move(bytes));
    ModuleData d;
    d.bytes_ = ByteSpan(holder->data(), holder->size());
    d.keepalive_ = std::move(holder);
    return d;
  }
  // A view whose memory `keepalive` keeps valid.
  static ModuleData View(ByteSpan bytes, std::shared_ptr<const void> keepalive) {
    ModuleData d;
    d.bytes_ = bytes;
    d.keepalive_ = std::move(keepalive);
    return d;
  }

  ByteSpan bytes() const { return bytes_; }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  // True when the bytes live in memory of their own (not a file mapping).
  bool owned() const { return owned_flag_; }
  void set_owned(bool v) { owned_flag_ = v; }

 private:
  ByteSpan bytes_;
  std::shared_ptr<const void> keepalive_;
  bool owned_flag_ = true;
};

class ModuleSource {
 public:
  virtual ~ModuleSource() = default;
  // The verified bytes of the module `key`, which must be one the source
  // holds. NotFound for an unknown key; Corruption when its bytes are wrong.
  virtual Result<ModuleData> Load(const ModuleKey& key) = 0;
};

struct ManifestSlot {
  int idx = 0;
  std::string name;  // "blk.0.attn_q.weight"
  std::string kind;  // see SlotKindOf()
  int layer = -1;    // block index, -1 outside the blocks
  ModuleDesc desc;   // type and shape of the module in this slot
  ModuleKey key;
  uint64_t bytes = 0;
};

// One runnable model: its metadata and the module in each slot.
struct ModelManifest {
  std::string model;  // model name in the store
  std::string label;  // QM label, or "eqm:<step>"
  std::string arch;
  uint32_t gguf_version = 3;
  uint64_t n_kv = 0;
  Bytes metadata;  // a GGUF key/value section
  std::vector<ManifestSlot> slots;

  uint64_t weight_bytes() const {
    uint64_t n = 0;
    for (const ManifestSlot& s : slots) n += s.bytes;
    return n;
  }
  const ManifestSlot* Find(const std::string& name) const {
    for (const ManifestSlot& s : slots) {
      if (s.name == name) return &s;
    }
    return nullptr;
  }
};

// "embed", "output", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
// "ffn_up", "ffn_down", "norm" or "other", from a llama.cpp tensor name; the
// block index goes to *layer (-1 outside the blocks).
std::string SlotKindOf(const std::string& tensor_name, int* layer);

}  // namespace fqpack::store

#endif  // FQPACK_STORE_MODULE_SOURCE_H_
