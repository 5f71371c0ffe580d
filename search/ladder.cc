#include "search/ladder.h"

#include <algorithm>
#include <set>

#include "runtime/model.h"
#include "schema/quant_types.h"

namespace fqpack::search {
namespace {

std::string DescribeModule(const store::ManifestSlot& s) {
  return QTypeName(s.desc.qtype) + ", " + std::to_string(s.bytes) + " bytes";
}

// Splits "model/label"; a bare label keeps `model` empty.
void SplitLabel(const std::string& text, std::string* model, std::string* label) {
  const size_t slash = text.rfind('/');
  if (slash == std::string::npos) {
    model->clear();
    *label = text;
  } else {
    *model = text.substr(0, slash);
    *label = text.substr(slash + 1);
  }
}

}  // namespace

bool IsSearchedKind(const std::string& kind, bool include_embed) {
  // attn_qkv: phi3's fused Q/K/V projection, a matrix like the others.
  static const std::set<std::string> kMatrices = {"attn_q",      "attn_k",   "attn_v", "attn_qkv",
                                                  "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  if (kMatrices.count(kind) != 0) return true;
  return include_embed && (kind == "embed" || kind == "output");
}

Result<Library> Library::Build(std::vector<LibraryQm> qms, const LibraryOptions& options) {
  if (qms.size() < 2) {
    return Status::InvalidArgument("a library needs at least two QMs (an up and a low), got " +
                                   std::to_string(qms.size()));
  }
  std::stable_sort(qms.begin(), qms.end(), [](const LibraryQm& a, const LibraryQm& b) {
    return a.bits_per_weight > b.bits_per_weight;
  });
  for (size_t i = 1; i < qms.size(); ++i) {
    if (qms[i].bits_per_weight == qms[i - 1].bits_per_weight) {
      return Status::InvalidArgument("QMs " + qms[i - 1].label + " and " + qms[i].label +
                                     " have the same bits per weight; the library needs a strict "
                                     "order from up to low");
    }
  }
  const LibraryQm& up = qms.front();
  for (const LibraryQm& q : qms) {
    if (q.manifest.model != up.manifest.model) {
      return Status::InvalidArgument("QMs of different models: " + up.label + " is of model '" +
                                     up.manifest.model + "', " + q.label + " of model '" +
                                     q.manifest.model + "'");
    }
    if (q.manifest.slots.size() != up.manifest.slots.size()) {
      return Status::InvalidArgument("QMs " + up.label + " and " + q.label +
                                     " do not cover the same slots (" +
                                     std::to_string(up.manifest.slots.size()) + " and " +
                                     std::to_string(q.manifest.slots.size()) + " tensors)");
    }
    for (size_t p = 0; p < q.manifest.slots.size(); ++p) {
      const store::ManifestSlot& a = up.manifest.slots[p];
      const store::ManifestSlot& b = q.manifest.slots[p];
      if (a.idx != b.idx || a.name != b.name) {
        return Status::InvalidArgument(
            "QMs " + up.label + " and " + q.label + " do not cover the same slots: position " +
            std::to_string(p) + " is '" + a.name + "' in one and '" + b.name + "' in the other");
      }
      if (!a.desc.SameShape(b.desc)) {
        return Status::InvalidArgument("QMs " + up.label + " and " + q.label + " differ in slot '" +
                                       a.name + "': shapes " + a.desc.ShapeString() + " and " +
                                       b.desc.ShapeString());
      }
    }
    // Every QM must be runnable: an unsupported type is reported now, not
    // after minutes of search.
    Result<runtime::Hparams> hp = runtime::Model::Validate(q.manifest);
    if (!hp.ok()) return hp.status();
  }

  Library lib;
  lib.options_ = options;
  const size_t n_slots = up.manifest.slots.size();
  for (size_t p = 0; p < n_slots; ++p) {
    const store::ManifestSlot& s0 = up.manifest.slots[p];
    SlotChain c;
    c.position = static_cast<int>(p);
    c.idx = s0.idx;
    c.name = s0.name;
    c.kind = store::SlotKindOf(s0.name, &c.layer);
    auto rung_of = [&](size_t q) {
      const store::ManifestSlot& s = qms[q].manifest.slots[p];
      Rung r;
      r.key = s.key;
      r.desc = s.desc;
      r.bytes = s.bytes;
      r.qm = static_cast<int>(q);
      // The first QM that holds these bytes is where the module comes from.
      for (size_t e = 0; e < q; ++e) {
        if (qms[e].manifest.slots[p].key == s.key) {
          r.qm = static_cast<int>(e);
          break;
        }
      }
      return r;
    };
    c.rungs.push_back(rung_of(0));
    for (size_t q = 1; q + 1 < qms.size(); ++q) {
      const Rung r = rung_of(q);
      if (options.exclude.count(r.key) != 0) continue;
      if (r.key != c.rungs.back().key && r.bytes < c.rungs.back().bytes) c.rungs.push_back(r);
    }
    const Rung low = rung_of(qms.size() - 1);
    // A mid module not bigger than low's would make the last move go up (or
    // stand still): drop it.
    while (c.rungs.size() > 1 && c.rungs.back().bytes <= low.bytes) c.rungs.pop_back();
    if (low.key != c.rungs.back().key) {
      if (low.bytes >= c.rungs.back().bytes) {
        return Status::InvalidArgument(
            "slot '" + c.name + "': " + qms.back().label + "'s module (" +
            DescribeModule(qms.back().manifest.slots[p]) + ") is not smaller than " + up.label +
            "'s (" + DescribeModule(s0) +
            "), so no walk from up to low can step down there; choose another --up or --low");
      }
      c.rungs.push_back(low);
    }
    c.searched = IsSearchedKind(c.kind, options.include_embed);
    lib.total_moves_ += c.moves();
    if (c.searched) lib.searched_moves_ += c.moves();
    lib.chains_.push_back(std::move(c));
  }
  if (lib.total_moves_ > 0 && lib.searched_moves_ == 0) {
    return Status::InvalidArgument("QMs " + up.label + " and " + qms.back().label +
                                   " differ in no slot the search may lower (weight matrices" +
                                   std::string(options.include_embed ? ""
                                                                     : "; add --include-embed "
                                                                       "to lower the embedding "
                                                                       "and output matrix") +
                                   ")");
  }
  if (lib.total_moves_ == 0) {
    return Status::InvalidArgument("QMs " + up.label + " and " + qms.back().label +
                                   " hold the same modules in every slot: there is nothing to "
                                   "search");
  }
  lib.qms_ = std::move(qms);
  return lib;
}

int Library::searched_slots() const {
  int n = 0;
  for (const SlotChain& c : chains_) n += c.searched && c.moves() > 0;
  return n;
}

int Library::held_back_slots() const {
  int n = 0;
  for (const SlotChain& c : chains_) n += !c.searched && c.moves() > 0;
  return n;
}

EqmState Library::LowState() const {
  EqmState s(chains_.size());
  for (size_t i = 0; i < chains_.size(); ++i) s[i] = static_cast<uint8_t>(chains_[i].moves());
  return s;
}

bool Library::IsLow(const EqmState& s) const { return s == LowState(); }

uint64_t Library::Footprint(const EqmState& state) const {
  uint64_t n = 0;
  for (size_t i = 0; i < chains_.size(); ++i) n += chains_[i].rungs[state[i]].bytes;
  return n;
}

store::ModelManifest Library::Manifest(const EqmState& state, const std::string& label) const {
  store::ModelManifest m = up().manifest;
  m.label = label;
  for (size_t i = 0; i < chains_.size(); ++i) {
    const Rung& r = chains_[i].rungs[state[i]];
    store::ManifestSlot& s = m.slots[static_cast<size_t>(chains_[i].position)];
    s.key = r.key;
    s.desc = r.desc;
    s.bytes = r.bytes;
  }
  return m;
}

std::vector<store::ModuleKey> Library::Keys(const EqmState& state) const {
  std::vector<store::ModuleKey> keys;
  for (size_t i = 0; i < chains_.size(); ++i) keys.push_back(chains_[i].rungs[state[i]].key);
  return keys;
}

std::vector<int64_t> Library::SourceQmIds(const EqmState& state) const {
  std::vector<int64_t> ids;
  for (size_t i = 0; i < chains_.size(); ++i) {
    ids.push_back(qms_[static_cast<size_t>(chains_[i].rungs[state[i]].qm)].qm_id);
  }
  return ids;
}

std::vector<int> Library::MovableChains(const EqmState& state) const {
  std::vector<int> searched, held;
  for (size_t i = 0; i < chains_.size(); ++i) {
    if (state[i] >= chains_[i].moves()) continue;
    (chains_[i].searched ? searched : held).push_back(static_cast<int>(i));
  }
  return searched.empty() ? held : searched;
}

std::vector<std::string> Library::Labels() const {
  std::vector<std::string> labels;
  for (const LibraryQm& q : qms_) labels.push_back(q.label);
  return labels;
}

Result<Library> LoadLibrary(store::Store* store, const std::string& model, const std::string& up,
                            const std::vector<std::string>& mids, const std::string& low,
                            const LibraryOptions& options) {
  FQ_ASSIGN_OR_RETURN(store::ModelInfo m, store->ResolveModel(model));
  FQ_ASSIGN_OR_RETURN(std::vector<store::QmInfo> all, store->ListQms(m.id));
  std::string known;
  for (const store::QmInfo& q : all) known += (known.empty() ? "" : ", ") + q.label;

  std::vector<std::string> names = {up};
  names.insert(names.end(), mids.begin(), mids.end());
  names.push_back(low);
  std::vector<store::QmInfo> infos;
  std::set<std::string> seen;
  for (const std::string& name : names) {
    std::string qm_model, label;
    SplitLabel(name, &qm_model, &label);
    if (!qm_model.empty() && qm_model != m.name) {
      return Status::InvalidArgument("QMs of different models: the library is of model '" + m.name +
                                     "', but '" + name + "' names model '" + qm_model + "'");
    }
    if (label.empty()) return Status::InvalidArgument("an empty QM label in the library");
    if (!seen.insert(label).second) {
      return Status::InvalidArgument("QM " + label + " is named twice in the library");
    }
    const store::QmInfo* found = nullptr;
    for (const store::QmInfo& q : all) {
      if (q.label == label) found = &q;
    }
    if (found == nullptr) {
      return Status::NotFound("model '" + m.name + "' has no QM '" + label +
                              "' (QMs: " + (known.empty() ? "none" : known) + ")");
    }
    const bool is_mid = !infos.empty() && infos.size() + 1 < names.size();
    if (found->partial && !(options.allow_partial_mids && is_mid)) {
      return Status::InvalidArgument("QM " + label +
                                     " is partial (gc --prune took some of its modules); a "
                                     "library needs whole QMs");
    }
    infos.push_back(*found);
  }
  const store::QmInfo& qup = infos.front();
  const store::QmInfo& qlow = infos.back();
  if (!(qup.bits_per_weight > qlow.bits_per_weight)) {
    return Status::InvalidArgument(
        "--up " + qup.label + " (" + std::to_string(qup.bits_per_weight) +
        " bits/weight) must be of higher precision than --low " + qlow.label + " (" +
        std::to_string(qlow.bits_per_weight) + " bits/weight)");
  }
  for (size_t i = 1; i + 1 < infos.size(); ++i) {
    const store::QmInfo& q = infos[i];
    if (!(q.bits_per_weight < qup.bits_per_weight && q.bits_per_weight > qlow.bits_per_weight)) {
      return Status::InvalidArgument("--mid " + q.label + " (" + std::to_string(q.bits_per_weight) +
                                     " bits/weight) is not between --up " + qup.label + " (" +
                                     std::to_string(qup.bits_per_weight) + ") and --low " +
                                     qlow.label + " (" + std::to_string(qlow.bits_per_weight) +
                                     ")");
    }
  }
  std::vector<LibraryQm> qms;
  for (const store::QmInfo& q : infos) {
    LibraryQm l;
    l.label = q.label;
    l.qm_id = q.id;
    l.bits_per_weight = q.bits_per_weight;
    if (!q.partial) {
      FQ_ASSIGN_OR_RETURN(l.manifest, store->QmManifest(m.name, q.label));
    } else {
      // What the partial mid still holds, over up's manifest: a slot it lost
      // keeps up's module, which its chain skips as no step down.
      l.manifest = qms.front().manifest;
      l.manifest.label = q.label;
      FQ_ASSIGN_OR_RETURN(std::vector<store::ModuleRef> mods, store->QmModules(q.id));
      for (const store::ModuleRef& r : mods) {
        for (store::ManifestSlot& s : l.manifest.slots) {
          if (s.idx != r.slot_idx) continue;
          s.key = r.key;
          s.desc = r.desc;
          s.bytes = r.raw_bytes;
        }
      }
    }
    qms.push_back(std::move(l));
  }
  return Library::Build(std::move(qms), options);
}

}  // namespace fqpack::search
