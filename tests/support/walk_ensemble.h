// A stand-in ensemble for tests and benchmarks of the elastic runtime: a
// one-way walk from the first QM of `labels` to the last, lowering one slot
// at a time to the next QM of the list in a fixed slot order (slots whose
// module does not change are skipped). No search: the order is arbitrary,
// so the EQMs' quality is whatever it is; their footprints step down one
// module at a time, as a FlexQuant ensemble's do.
#ifndef FQPACK_TESTS_SUPPORT_WALK_ENSEMBLE_H_
#define FQPACK_TESTS_SUPPORT_WALK_ENSEMBLE_H_

#include <string>
#include <vector>

#include "store/store.h"

namespace fqpack::testing {

// Adds the ensemble `name` to `model` and returns the number of EQMs.
// `order` lists slot positions in the order they are lowered; empty means
// slot order.
inline Result<int> AddWalkEnsemble(store::Store* store, const std::string& model,
                                   const std::vector<std::string>& labels, const std::string& name,
                                   std::vector<int> order = {}) {
  if (labels.size() < 2) return Status::InvalidArgument("a walk needs at least two QMs");
  FQ_ASSIGN_OR_RETURN(store::ModelInfo m, store->FindModel(model));
  std::vector<int64_t> qm_ids;
  std::vector<std::vector<store::ModuleRef>> qm_modules;
  for (const std::string& label : labels) {
    FQ_ASSIGN_OR_RETURN(store::QmInfo q, store->FindQm(m.id, label));
    FQ_ASSIGN_OR_RETURN(std::vector<store::ModuleRef> mods, store->QmModules(q.id));
    qm_ids.push_back(q.id);
    qm_modules.push_back(std::move(mods));
  }
  const size_t n_slots = qm_modules[0].size();
  if (order.empty()) {
    for (size_t i = 0; i < n_slots; ++i) order.push_back(static_cast<int>(i));
  }
  std::vector<size_t> source(n_slots, 0);  // index into labels, per slot
  std::vector<store::NewEqm> eqms;
  auto push = [&] {
    store::NewEqm q;
    q.step = static_cast<int>(eqms.size());
    for (size_t i = 0; i < n_slots; ++i) {
      const store::ModuleRef& ref = qm_modules[source[i]][i];
      q.modules.push_back(ref.key);
      q.source_qm_ids.push_back(qm_ids[source[i]]);
      q.footprint += ref.raw_bytes;
    }
    eqms.push_back(std::move(q));
  };
  push();
  for (size_t k = 1; k < labels.size(); ++k) {
    for (int pos : order) {
      const size_t i = static_cast<size_t>(pos);
      if (qm_modules[k][i].key == qm_modules[source[i]][i].key) {
        source[i] = k;  // same module: nothing to swap, no EQM
        continue;
      }
      source[i] = k;
      push();
    }
  }
  store::NewEnsemble e;
  e.model_id = m.id;
  e.name = name;
  e.up_qm_id = qm_ids.front();
  e.low_qm_id = qm_ids.back();
  e.library = labels;
  e.params.Set("method", std::string("walk in a fixed slot order"));
  FQ_RETURN_IF_ERROR(store->AddEnsemble(e, eqms).status());
  return static_cast<int>(eqms.size());
}

}  // namespace fqpack::testing

#endif  // FQPACK_TESTS_SUPPORT_WALK_ENSEMBLE_H_
