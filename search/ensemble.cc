#include "search/ensemble.h"

#include <algorithm>
#include <chrono>

#include "runtime/tokenizer.h"
#include "schema/json.h"
#include "schema/quant_types.h"
#include "schema/sha256.h"
#include "search/greedy.h"

namespace fqpack::search {
namespace {

// Chain positions in slot idx order: the order Store::AddEnsemble takes
// modules in.
std::vector<size_t> ByIdx(const Library& lib) {
  std::vector<size_t> order(lib.chains().size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return lib.chains()[a].idx < lib.chains()[b].idx; });
  return order;
}

}  // namespace

const char* SearchMethodName(SearchMethod m) {
  return m == SearchMethod::kGreedy ? "greedy" : "tree";
}

Result<SearchMethod> ParseSearchMethod(const std::string& name) {
  if (name == "tree" || name.empty()) return SearchMethod::kTree;
  if (name == "greedy") return SearchMethod::kGreedy;
  return Status::InvalidArgument("search method must be tree or greedy, not '" + name + "'");
}

std::string DefaultEnsembleName(const std::vector<std::string>& labels) {
  std::string name;
  for (const std::string& l : labels) name += (name.empty() ? "" : "-") + l;
  return name;
}

std::vector<store::NewEqm> EqmRows(const Library& lib, const SearchResult& result) {
  const std::vector<size_t> order = ByIdx(lib);
  std::vector<store::NewEqm> rows;
  for (size_t i = 0; i < result.steps.size(); ++i) {
    const EnsembleStep& s = result.steps[i];
    store::NewEqm row;
    row.step = static_cast<int>(i);
    row.footprint = s.footprint;
    row.calib_metric = s.metric;
    row.calib_ppl = s.score.ppl();
    row.calib_kl = s.score.kl;
    const std::vector<store::ModuleKey> keys = lib.Keys(s.state);
    const std::vector<int64_t> qms = lib.SourceQmIds(s.state);
    for (size_t p : order) {
      row.modules.push_back(keys[p]);
      row.source_qm_ids.push_back(qms[p]);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

store::JsonFields SearchParams(const Library& lib, const SearchRequest& request,
                               const SearchOutcome& outcome) {
  std::vector<std::string> slots, held_back;
  for (const SlotChain& c : lib.chains()) {
    if (c.moves() > 0) (c.searched ? slots : held_back).push_back(c.name);
  }
  store::JsonFields p;
  p.Set("method", std::string(SearchMethodName(request.method)))
      .Set("metric", std::string(MetricName(request.search.metric)));
  // The greedy walk has no beam; its objective is the predicted rate.
  if (request.method == SearchMethod::kTree) {
    p.Set("stem", static_cast<int64_t>(request.search.stem))
        .Set("branch", static_cast<int64_t>(request.search.branch));
  }
  p.Set("tokens", static_cast<int64_t>(outcome.chunks * outcome.n_ctx))
      .Set("n_ctx", static_cast<int64_t>(outcome.n_ctx))
      .Set("chunks", static_cast<int64_t>(outcome.chunks))
      .Set("scored_per_chunk", static_cast<int64_t>(outcome.n_ctx - 1))
      .Set("include_embed", static_cast<bool>(lib.options().include_embed))
      .Set("objective", std::string(request.method == SearchMethod::kTree ? "area" : "hull-rate"))
      .Set("steps", static_cast<int64_t>(outcome.result.steps.size()) - 1)
      .Set("evaluations", static_cast<int64_t>(outcome.eval_stats.evaluations))
      .Set("slots", std::move(slots))
      .Set("held_back", std::move(held_back));
  return p;
}

Result<SearchOutcome> SearchEnsemble(store::Store* store, const SearchRequest& request) {
  const auto t0 = std::chrono::steady_clock::now();
  FQ_ASSIGN_OR_RETURN(auto lock, store->WriterLock());
  LibraryOptions lib_options;
  lib_options.include_embed = request.include_embed;
  lib_options.exclude = request.exclude;
  lib_options.allow_partial_mids = request.allow_partial_mids;
  FQ_ASSIGN_OR_RETURN(Library lib, LoadLibrary(store, request.model, request.up, request.mids,
                                               request.low, lib_options));
  SearchOutcome out;
  out.library = lib.Labels();
  out.name = request.name.empty() ? DefaultEnsembleName(out.library) : request.name;
  FQ_ASSIGN_OR_RETURN(store::ModelInfo model, store->ResolveModel(request.model));
  // A repair (request.write false) searches an existing ensemble again.
  if (request.write) {
    Result<store::EnsembleInfo> existing = store->FindEnsemble(model.id, out.name);
    if (existing.ok()) {
      return Status::InvalidArgument(
          "model '" + model.name + "' already has an ensemble named '" + out.name +
          "' (choose another --name, or `fqpack rm --ensemble " + out.name + "` first)");
    }
    if (!existing.status().IsNotFound()) return existing.status();
  }
  if (request.method == SearchMethod::kTree &&
      (request.search.stem < 1 || request.search.branch < 1)) {
    return Status::InvalidArgument("--stem and --branch must be at least 1");
  }

  // The calibration tokens, checked before any module is loaded.
  FQ_ASSIGN_OR_RETURN(runtime::Hparams hp, runtime::Model::Validate(lib.up().manifest));
  FQ_ASSIGN_OR_RETURN(gguf::Metadata md,
                      gguf::ParseMetadata(lib.up().manifest.metadata, lib.up().manifest.n_kv,
                                          lib.up().manifest.model));
  FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, runtime::Tokenizer::FromMetadata(md));
  const std::string_view text(reinterpret_cast<const char*>(request.calib_text.data()),
                              request.calib_text.size());
  const std::vector<int32_t> tokens = tok.Encode(text, true);
  out.n_ctx = request.n_ctx > 0 ? request.n_ctx : hp.n_ctx_train;
  FQ_ASSIGN_OR_RETURN(CalibSet calib, MakeCalibSet(tokens, out.n_ctx, request.tokens,
                                                   tok.add_bos() ? tok.bos() : -1));
  out.chunks = calib.chunks();
  out.calib_tokens = static_cast<int64_t>(tokens.size());
  out.calib_sha256 = Sha256::HexOf(request.calib_text);
  out.searched_slots = lib.searched_slots();
  out.held_back_slots = lib.held_back_slots();

  Evaluator::Options eval_options;
  eval_options.threads = request.threads;
  eval_options.reuse = request.reuse;
  FQ_ASSIGN_OR_RETURN(std::unique_ptr<Evaluator> evaluator,
                      Evaluator::Create(&lib, store, std::move(calib), eval_options));
  out.setup_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (request.sensitivity_only) {
    FQ_ASSIGN_OR_RETURN(
        out.result.sensitivity,
        AnalyzeSensitivity(lib, evaluator.get(), request.search.metric, request.search.cancelled));
    out.chains = lib.chains();
    out.eval_stats = evaluator->stats();
    return out;
  }
  if (request.method == SearchMethod::kGreedy) {
    FQ_ASSIGN_OR_RETURN(out.result, GreedySearch(lib, evaluator.get(), request.search));
  } else {
    FQ_ASSIGN_OR_RETURN(out.result, TreeSearch(lib, evaluator.get(), request.search));
  }
  out.eval_stats = evaluator->stats();
  for (const EnsembleStep& st : out.result.steps) {
    if (st.chain < 0) {
      out.moved_slot.emplace_back();
      out.moved_to.emplace_back();
      continue;
    }
    const SlotChain& c = lib.chains()[static_cast<size_t>(st.chain)];
    out.moved_slot.push_back(c.name);
    out.moved_to.push_back(QTypeName(c.rungs[st.state[static_cast<size_t>(st.chain)]].desc.qtype));
  }
  if (request.search.cancelled && request.search.cancelled()) return Status::Aborted("interrupted");
  out.rows = EqmRows(lib, out.result);
  out.params = SearchParams(lib, request, out);
  if (!request.write) return out;

  store::NewEnsemble e;
  e.model_id = model.id;
  e.name = out.name;
  e.up_qm_id = lib.up().qm_id;
  e.low_qm_id = lib.low().qm_id;
  e.library = out.library;
  e.params = out.params;
  e.calib_sha256 = out.calib_sha256;
  e.calib_text = request.calib_text;
  FQ_ASSIGN_OR_RETURN(out.ensemble_id, store->AddEnsemble(e, out.rows));
  return out;
}

}  // namespace fqpack::search
