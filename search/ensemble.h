// `fqpack search` as a library call: resolve and check the library, cut the
// calibration text into tokens, run the sensitivity analysis and the tree
// search (or the greedy baseline, search/greedy.h), and write the ensemble
// into the store in one transaction.
//
// Everything that can be checked is checked before the first evaluation
// (labels, precision order, slots, the ensemble name, the calibration text's
// length). Nothing is written before the search has finished: a failure or
// an interruption (SearchOptions::cancelled, which ends the call with
// Aborted) leaves the store as it was. The call holds the store's shared
// writer lock throughout, so gc cannot sweep modules from under it.
//
// Thread-safety: one call per Store at a time is the expected use; the Store
// itself serialises its index.
#ifndef FQPACK_SEARCH_ENSEMBLE_H_
#define FQPACK_SEARCH_ENSEMBLE_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "search/evaluator.h"
#include "search/ladder.h"
#include "search/tree_search.h"
#include "store/store.h"

namespace fqpack::search {

// How the walk from QM(n_up) to QM(n_low) is chosen. Stored in the
// ensemble's params as "method"; an ensemble without it is a tree search's.
enum class SearchMethod { kTree, kGreedy };
const char* SearchMethodName(SearchMethod m);  // "tree", "greedy"
Result<SearchMethod> ParseSearchMethod(const std::string& name);

struct SearchRequest {
  std::string model;  // "" when the store holds one model
  std::string up;
  std::string low;
  std::vector<std::string> mids;
  std::string name;  // "" : "<up>-<low>" (with the mids: "<up>-<mid>-...-<low>")
  bool include_embed = false;
  Bytes calib_text;
  int64_t tokens = 4096;  // calibration tokens: floor(tokens / n_ctx) chunks
  int64_t n_ctx = 0;      // tokens per chunk; 0: the model's context length
  int threads = 1;
  bool reuse = true;  // false: every EQM from the embedding (benchmarks)
  SearchMethod method = SearchMethod::kTree;
  SearchOptions search;  // stem and branch: the tree search's only
  // gc --prune's repair (store/prune.h): search the existing ensemble's
  // library again without these modules, accepting mids already partial,
  // and hand back the rows instead of writing a new ensemble.
  std::set<store::ModuleKey> exclude;
  bool allow_partial_mids = false;
  bool write = true;
  // gc --prune's area ranking: stop after the sensitivity analysis (the
  // outcome's result holds only `sensitivity`, and `chains` the slots'
  // chains); nothing is written.
  bool sensitivity_only = false;
};

struct SearchOutcome {
  int64_t ensemble_id = 0;
  std::string name;
  std::vector<std::string> library;  // labels, up first
  int searched_slots = 0;
  int held_back_slots = 0;
  int64_t n_ctx = 0;
  int64_t chunks = 0;
  int64_t calib_tokens = 0;  // tokens of the whole calibration text
  std::string calib_sha256;
  SearchResult result;
  // Per step: the slot lowered and its module's type after the move ("" and
  // up's types for step 0).
  std::vector<std::string> moved_slot;
  std::vector<std::string> moved_to;
  EvalStats eval_stats;
  double setup_seconds = 0;         // loading modules and running QM(n_up)
  std::vector<store::NewEqm> rows;  // the EQMs as index rows
  store::JsonFields params;         // the ensemble row's parameters (keys: schema/store.md)
  std::vector<SlotChain> chains;    // the library's chains (with sensitivity_only)
};

// The default ensemble name for a library.
std::string DefaultEnsembleName(const std::vector<std::string>& labels);

// Runs the search and, with request.write, writes the ensemble (see the
// file comment).
Result<SearchOutcome> SearchEnsemble(store::Store* store, const SearchRequest& request);

// The index rows of an ensemble found over `lib` (one per step, modules in
// slot order, each with the library QM it comes from).
std::vector<store::NewEqm> EqmRows(const Library& lib, const SearchResult& result);

// The search parameters as stored in the ensemble row (a JSON object).
std::string SearchParamsJson(const Library& lib, const SearchRequest& request,
                             const SearchOutcome& outcome);

}  // namespace fqpack::search

#endif  // FQPACK_SEARCH_ENSEMBLE_H_
