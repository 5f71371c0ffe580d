#include "runtime/model.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include "schema/quant_types.h"

namespace fqpack::runtime {
namespace {

std::string ShapeString(const std::array<uint64_t, 4>& ne) {
  int dims = 4;
  while (dims > 1 && ne[dims - 1] == 1) --dims;
  std::string s;
  for (int d = 0; d < dims; ++d) s += (d ? "x" : "") + std::to_string(ne[d]);
  return s;
}

std::string ManifestName(const store::ModelManifest& m) {
  if (m.model.empty()) return "model";
  return m.label.empty() ? m.model : m.model + "/" + m.label;
}

// Fills the view (and for vectors the float values) of a slot from its
// module. The caller has checked type, shape and size; the kernels' own
// check on the view comes last, before anything reads through it.
Status BindWeights(SlotWeights* s) {
  const store::ModuleDesc& d = s->desc;
  WeightView view;
  view.type = d.qtype;
  view.cols = static_cast<int64_t>(d.ne[0]);
  view.rows = static_cast<int64_t>(d.ne[1] * d.ne[2] * d.ne[3]);
  view.data = s->data.data();
  view.row_bytes = view.rows == 0 ? 0 : s->data.size() / static_cast<size_t>(view.rows);
  FQ_RETURN_IF_ERROR(CheckWeight(view, s->name));
  s->view = view;
  s->values.clear();
  if (view.rows == 1) {
    s->values.resize(static_cast<size_t>(view.cols));
    const int32_t row = 0;
    GetRows(view, &row, 1, s->values.data());
  }
  return Status::OK();
}

// Checks a module against what a slot takes: same shape, executable type,
// exactly the bytes type and shape need.
Status CheckModule(const std::string& slot, const store::ModuleDesc& expected_shape,
                   const store::ModuleDesc& desc, size_t data_size) {
  if (desc.ne != expected_shape.ne) {
    return Status::InvalidArgument("slot '" + slot + "': module has shape " + ShapeString(desc.ne) +
                                   ", the slot takes " + ShapeString(expected_shape.ne));
  }
  FQ_RETURN_IF_ERROR(CheckExecutable(desc.qtype, slot));
  Result<uint64_t> nbytes = desc.nbytes();
  if (!nbytes.ok()) return nbytes.status().WithContext("slot '" + slot + "'");
  if (*nbytes != data_size) {
    return Status::InvalidArgument("slot '" + slot + "': module of type " + QTypeName(desc.qtype) +
                                   " and shape " + ShapeString(desc.ne) + " takes " +
                                   std::to_string(*nbytes) + " bytes, got " +
                                   std::to_string(data_size));
  }
  return Status::OK();
}

}  // namespace

Result<Hparams> Model::Validate(const store::ModelManifest& manifest) {
  const std::string what = ManifestName(manifest);
  Result<gguf::Metadata> md = gguf::ParseMetadata(manifest.metadata, manifest.n_kv, what);
  if (!md.ok()) return md.status();
  FQ_ASSIGN_OR_RETURN(Hparams hp, ReadHparams(*md, what));
  std::vector<ExpectedTensor> expected = ExpectedTensors(hp);
  std::vector<bool> used(manifest.slots.size(), false);
  for (const ExpectedTensor& e : expected) {
    const store::ManifestSlot* s = manifest.Find(e.name);
    if (s == nullptr) {
      if (!e.required) continue;
      return Status::Corruption(what + ": tensor '" + e.name + "' is missing (expected shape " +
                                ShapeString(e.ne) + ")");
    }
    used[static_cast<size_t>(s - manifest.slots.data())] = true;
    if (s->desc.ne != e.ne) {
      return Status::Corruption(what + ": tensor '" + e.name + "' has shape " +
                                ShapeString(s->desc.ne) + ", expected " + ShapeString(e.ne));
    }
    Status ok = CheckExecutable(s->desc.qtype, e.name);
    if (!ok.ok()) return ok.WithContext(what);
  }
  for (size_t i = 0; i < manifest.slots.size(); ++i) {
    if (!used[i]) {
      // Phi-3.5 and the 128k Phi-3 models: LongRoPE's per-pair factors.
      if (manifest.slots[i].name.rfind("rope_factors_", 0) == 0) {
        return Status::NotSupported(what + ": tensor '" + manifest.slots[i].name +
                                    "': LongRoPE rope scaling is not supported");
      }
      return Status::NotSupported(what + ": tensor '" + manifest.slots[i].name +
                                  "' is not part of the " + std::string(hp.arch_name()) +
                                  " graph fqpack runs");
    }
  }
  return hp;
}

Result<std::unique_ptr<Model>> Model::Load(const store::ModelManifest& manifest,
                                           store::ModuleSource* source, ThreadPool* pool) {
  FQ_ASSIGN_OR_RETURN(Hparams hp, Validate(manifest));
  std::unique_ptr<Model> m(new Model());
  m->hp_ = hp;
  m->name_ = manifest.model;
  m->label_ = manifest.label;
  FQ_ASSIGN_OR_RETURN(
      m->metadata_, gguf::ParseMetadata(manifest.metadata, manifest.n_kv, ManifestName(manifest)));
  m->slots_.resize(manifest.slots.size());
  int max_idx = -1;
  for (size_t i = 0; i < manifest.slots.size(); ++i) {
    const store::ManifestSlot& ms = manifest.slots[i];
    if (ms.idx < 0) return Status::Corruption(ManifestName(manifest) + ": negative slot idx");
    max_idx = std::max(max_idx, ms.idx);
    SlotWeights& s = m->slots_[i];
    s.name = ms.name;
    s.idx = ms.idx;
    s.layer = ms.layer;
    s.desc = ms.desc;
  }
  if (static_cast<size_t>(max_idx) > 4 * manifest.slots.size() + 16) {
    return Status::Corruption(ManifestName(manifest) + ": slot idx " + std::to_string(max_idx) +
                              " out of range for " + std::to_string(manifest.slots.size()) +
                              " slots");
  }
  m->position_of_idx_.assign(static_cast<size_t>(max_idx) + 1, -1);
  for (size_t i = 0; i < m->slots_.size(); ++i) {
    int& pos = m->position_of_idx_[static_cast<size_t>(m->slots_[i].idx)];
    if (pos != -1) {
      return Status::Corruption(ManifestName(manifest) + ": slot idx " +
                                std::to_string(m->slots_[i].idx) + " appears twice");
    }
    pos = static_cast<int>(i);
  }

  // Modules come in parallel: a store decompresses and re-hashes each one.
  std::mutex mu;
  Status first_error;
  auto load_range = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const store::ManifestSlot& ms = manifest.slots[static_cast<size_t>(i)];
      SlotWeights& s = m->slots_[static_cast<size_t>(i)];
      Result<store::ModuleData> data = source->Load(ms.key);
      Status st = data.ok() ? CheckModule(ms.name, ms.desc, ms.desc, data->size())
                            : data.status().WithContext("tensor '" + ms.name + "'");
      if (st.ok()) {
        s.data = std::move(data).value();
        st = BindWeights(&s);
      }
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = st;
      }
    }
  };
  const int64_t n = static_cast<int64_t>(manifest.slots.size());
  if (pool != nullptr) {
    pool->ParallelFor(n, load_range);
  } else {
    load_range(0, n);
  }
  if (!first_error.ok()) return first_error.WithContext(ManifestName(manifest));
  FQ_RETURN_IF_ERROR(m->Wire());
  return m;
}

Status Model::Wire() {
  auto find = [this](const std::string& name) -> const SlotWeights* {
    for (const SlotWeights& s : slots_) {
      if (s.name == name) return &s;
    }
    return nullptr;
  };
  token_embd_ = find("token_embd.weight");
  output_norm_ = find("output_norm.weight");
  output_ = find("output.weight");
  rope_freqs_ = find("rope_freqs.weight");
  layers_.assign(static_cast<size_t>(hp_.n_layer), Layer{});
  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Layer& L = layers_[static_cast<size_t>(l)];
    L.attn_norm = find(p + "attn_norm.weight");
    L.wq = find(p + "attn_q.weight");
    L.wk = find(p + "attn_k.weight");
    L.wv = find(p + "attn_v.weight");
    L.wo = find(p + "attn_output.weight");
    L.ffn_norm = find(p + "ffn_norm.weight");
    L.ffn_gate = find(p + "ffn_gate.weight");
    L.ffn_up = find(p + "ffn_up.weight");
    L.ffn_down = find(p + "ffn_down.weight");
    L.wqkv = find(p + "attn_qkv.weight");
    L.bq = find(p + "attn_q.bias");
    L.bk = find(p + "attn_k.bias");
    L.bv = find(p + "attn_v.bias");
    L.q_norm = find(p + "attn_q_norm.weight");
    L.k_norm = find(p + "attn_k_norm.weight");
    L.post_attn_norm = find(p + "post_attention_norm.weight");
    L.post_ffn_norm = find(p + "post_ffw_norm.weight");
  }
  // Validate() guaranteed presence; this guards the invariant cheaply.
  if (token_embd_ == nullptr || output_norm_ == nullptr) {
    return Status::Corruption(name_ + ": tensors vanished after validation");
  }
  return Status::OK();
}

const SlotWeights* Model::slot(int idx) const {
  if (idx < 0 || static_cast<size_t>(idx) >= position_of_idx_.size()) return nullptr;
  const int pos = position_of_idx_[static_cast<size_t>(idx)];
  return pos < 0 ? nullptr : &slots_[static_cast<size_t>(pos)];
}

int Model::FindSlot(std::string_view name) const {
  for (const SlotWeights& s : slots_) {
    if (s.name == name) return s.idx;
  }
  return -1;
}

Status Model::SetSlot(int idx, store::ModuleData data, const store::ModuleDesc& desc) {
  const SlotWeights* cs = slot(idx);
  if (cs == nullptr) {
    return Status::InvalidArgument(name_ + ": no slot with idx " + std::to_string(idx));
  }
  SlotWeights& s = slots_[static_cast<size_t>(position_of_idx_[static_cast<size_t>(idx)])];
  FQ_RETURN_IF_ERROR(CheckModule(s.name, s.desc, desc, data.size()));
  SlotWeights next;
  next.name = s.name;
  next.idx = s.idx;
  next.layer = s.layer;
  next.desc = desc;
  next.data = std::move(data);
  FQ_RETURN_IF_ERROR(BindWeights(&next));
  // Moved in whole, so the record's address (which Layer points to) stays.
  s = std::move(next);
  return Status::OK();
}

std::unique_ptr<Model> Model::Clone() const {
  std::unique_ptr<Model> m(new Model());
  m->hp_ = hp_;
  m->metadata_ = metadata_;
  m->name_ = name_;
  m->label_ = label_;
  m->slots_ = slots_;
  m->position_of_idx_ = position_of_idx_;
  // The views point into the shared module bytes, which the copied
  // ModuleData keep alive; only the Layer pointers must be re-made.
  if (!m->Wire().ok()) return nullptr;
  return m;
}

uint64_t Model::weight_bytes() const {
  uint64_t n = 0;
  for (const SlotWeights& s : slots_) n += s.data.size();
  return n;
}

}  // namespace fqpack::runtime
