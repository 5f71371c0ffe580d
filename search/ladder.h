// The library of a FlexQuant search and the moves it allows.
//
// A library is a few QMs of one model ordered by bits per weight: QM(n_up)
// first, then the mids, QM(n_low) last. Each slot that takes part walks a
// chain of that slot's modules in those QMs: up's module, then each mid's,
// then low's, keeping a module only when it differs from the previous one
// and takes strictly fewer bytes (llama.cpp ladders mix types per file, so a
// mid's module may be bigger than up's, or the very same bytes). The chain
// always ends at low's module: a mid module that is not bigger than low's is
// dropped again. A move lowers one slot by one step of its chain; moves are
// one-way.
//
// Which slots take part: the 2-D weight matrices of the blocks (attention
// q/k/v/output, ffn gate/up/down), and the token embedding and output matrix
// only with include_embed. Every other slot whose up and low modules differ
// (the embedding and output matrix without include_embed; norms never differ
// in practice) is "held back": its moves are made only after every searched
// slot has reached low's module, so that the walk still ends exactly at
// QM(n_low) and still changes one module per step.
//
// Thread-safety: a Library is immutable after Build; share it freely.
#ifndef FQPACK_SEARCH_LADDER_H_
#define FQPACK_SEARCH_LADDER_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "schema/status.h"
#include "store/module_source.h"
#include "store/store.h"

namespace fqpack::search {

// One QM of the library.
struct LibraryQm {
  std::string label;
  int64_t qm_id = 0;  // its row in the store; 0 for QMs that are not in one (tests)
  double bits_per_weight = 0;
  store::ModelManifest manifest;
};

// One module a slot can hold.
struct Rung {
  store::ModuleKey key;
  store::ModuleDesc desc;
  uint64_t bytes = 0;
  int qm = 0;  // index in Library::qms() of the first (highest-precision) QM holding it
};

struct SlotChain {
  int position = 0;  // index in the manifests' slot lists
  int idx = 0;       // the slot's idx
  std::string name;
  std::string kind;
  int layer = -1;
  // true: its moves are searched; false: held back until every searched
  // slot is done (see the file comment). A slot with one rung never moves.
  bool searched = false;
  std::vector<Rung> rungs;  // [0] up's module, back() low's; bytes strictly decrease
  int moves() const { return static_cast<int>(rungs.size()) - 1; }
};

// An EQM as the search holds it: for each slot (by position), how many steps
// down its chain it is.
using EqmState = std::vector<uint8_t>;

struct LibraryOptions {
  bool include_embed = false;
  // Modules a mid QM may not contribute (gc --prune's repair: the modules
  // about to be pruned). A slot whose mid module is excluded skips that rung.
  std::set<store::ModuleKey> exclude;
  // Accept mid QMs that gc --prune has made partial: a slot whose module
  // a partial mid no longer holds skips that rung. Up and low stay whole.
  bool allow_partial_mids = false;
};

class Library {
 public:
  // `qms` in any order; they are sorted by bits per weight, highest first
  // (the first is QM(n_up), the last QM(n_low)). InvalidArgument when there
  // are fewer than two, when two tie on bits per weight, when they belong to
  // different models, or when their slots differ (names, order or shapes);
  // each message names the QMs and the slot.
  static Result<Library> Build(std::vector<LibraryQm> qms, const LibraryOptions& options);

  const std::vector<LibraryQm>& qms() const { return qms_; }
  const LibraryQm& up() const { return qms_.front(); }
  const LibraryQm& low() const { return qms_.back(); }
  const std::vector<SlotChain>& chains() const { return chains_; }
  const LibraryOptions& options() const { return options_; }
  int n_slots() const { return static_cast<int>(chains_.size()); }

  // Moves from QM(n_up) to QM(n_low): the number of steps of every walk.
  int total_moves() const { return total_moves_; }
  int searched_moves() const { return searched_moves_; }
  // Searched slots with at least one move, and held-back slots that move.
  int searched_slots() const;
  int held_back_slots() const;

  EqmState UpState() const { return EqmState(chains_.size(), 0); }
  EqmState LowState() const;
  bool IsLow(const EqmState& s) const;

  // Bytes of the modules of `state` in every slot (the EQM's footprint).
  uint64_t Footprint(const EqmState& state) const;
  // The runnable manifest of `state` (metadata of QM(n_up)), labelled `label`.
  store::ModelManifest Manifest(const EqmState& state, const std::string& label) const;
  // Per slot: the module key and the store id of the QM it comes from.
  std::vector<store::ModuleKey> Keys(const EqmState& state) const;
  std::vector<int64_t> SourceQmIds(const EqmState& state) const;

  // The slots that may move now: the searched ones that are not at their
  // chain's end, or, once there are none, the held-back ones.
  std::vector<int> MovableChains(const EqmState& state) const;

  // Labels, highest precision first (an ensemble's library).
  std::vector<std::string> Labels() const;

 private:
  std::vector<LibraryQm> qms_;
  std::vector<SlotChain> chains_;
  LibraryOptions options_;
  int total_moves_ = 0;
  int searched_moves_ = 0;
};

// The QMs named `up`, `mids` and `low` of `model` in `store`, checked and
// built into a Library. A label may be written "model/label"; naming another
// model is an error (all QMs of a library are of one model). Errors, before
// any work: NotFound for an unknown model or label (listing the model's QMs);
// InvalidArgument for a label given twice, up not of more bits per weight
// than low, a mid outside (low, up), a partial QM, or QMs whose slots differ.
Result<Library> LoadLibrary(store::Store* store, const std::string& model, const std::string& up,
                            const std::vector<std::string>& mids, const std::string& low,
                            const LibraryOptions& options);

// Whether a slot of this kind takes part in the search.
bool IsSearchedKind(const std::string& kind, bool include_embed);

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_LADDER_H_
