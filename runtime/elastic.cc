#include "runtime/elastic.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "schema/units.h"

namespace fqpack::runtime {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<std::vector<BudgetChange>> ParseBudgetTrace(std::string_view text, const std::string& name) {
  std::vector<BudgetChange> out;
  bool first_content = true;
  int line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (const size_t hash = line.find('#'); hash != std::string_view::npos)
      line = line.substr(0, hash);
    line = Trim(line);
    if (line.empty()) continue;
    const std::string where = name + ":" + std::to_string(line_no) + ": ";
    const bool header = first_content && !std::isdigit(static_cast<unsigned char>(line.front()));
    first_content = false;
    if (header) continue;
    const size_t comma = line.find(',');
    if (comma == std::string_view::npos || line.find(',', comma + 1) != std::string_view::npos) {
      return Status::InvalidArgument(where + "expected 'token_index,budget', got '" +
                                     std::string(line) + "'");
    }
    const std::string_view token_text = Trim(line.substr(0, comma));
    const std::string_view budget_text = Trim(line.substr(comma + 1));
    BudgetChange c;
    c.line = line_no;
    const auto [end, ec] =
        std::from_chars(token_text.data(), token_text.data() + token_text.size(), c.token);
    if (ec != std::errc() || end != token_text.data() + token_text.size() || c.token < 0) {
      return Status::InvalidArgument(where + "token index '" + std::string(token_text) +
                                     "' is not a whole number >= 0");
    }
    Result<uint64_t> budget = ParseBytes(budget_text);
    if (!budget.ok()) {
      return Status::InvalidArgument(where + "budget '" + std::string(budget_text) +
                                     "': " + budget.status().message());
    }
    if (*budget == 0) return Status::InvalidArgument(where + "a budget must be more than 0 bytes");
    c.budget = *budget;
    if (!out.empty() && c.token < out.back().token) {
      return Status::InvalidArgument(where + "token index " + std::to_string(c.token) +
                                     " comes after " + std::to_string(out.back().token) +
                                     " (line " + std::to_string(out.back().line) +
                                     "); lines must be in token order");
    }
    out.push_back(c);
  }
  if (out.empty())
    return Status::InvalidArgument(name + ": the trace holds no 'token_index,budget' line");
  return out;
}

Result<std::vector<BudgetChange>> ReadBudgetTrace(Env* env, const std::string& path) {
  FQ_ASSIGN_OR_RETURN(Bytes bytes, ReadFileBytes(env, path));
  return ParseBudgetTrace(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
}

ElasticRuntime::~ElasticRuntime() {
  // The session reads the model, which the residency manager owns, whose
  // modules live in the pack's mapping.
  session_.reset();
  residency_.reset();
  pack_.reset();
}

Result<std::unique_ptr<ElasticRuntime>> ElasticRuntime::Open(Env* env, const std::string& path,
                                                             const ElasticOptions& options,
                                                             ThreadPool* pool) {
  std::unique_ptr<ElasticRuntime> rt(new ElasticRuntime());
  rt->options_ = options;
  rt->pool_ = pool;
  FQ_ASSIGN_OR_RETURN(rt->pack_, pack::PackReader::Open(env, path));
  FQ_ASSIGN_OR_RETURN(rt->residency_, ResidencyManager::Open(rt->pack_.get(), options.residency));
  const store::ModelManifest& manifest = rt->residency_->manifest();
  FQ_ASSIGN_OR_RETURN(gguf::Metadata md,
                      gguf::ParseMetadata(manifest.metadata, manifest.n_kv, path));
  FQ_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::FromMetadata(md));
  rt->tokenizer_ = std::make_unique<Tokenizer>(std::move(tok));
  const Hparams& hp = rt->residency_->hparams();
  if (options.n_ctx < 0) return Status::InvalidArgument("the context size must be positive");
  if (options.n_batch < 0) return Status::InvalidArgument("the batch size must be positive");
  rt->n_ctx_ = options.n_ctx > 0 ? options.n_ctx : hp.n_ctx_train;
  const bool ppl = options.workload == Workload::kPerplexity;
  rt->n_batch_ = options.n_batch > 0 ? options.n_batch : ppl ? rt->n_ctx_ : kDefaultGenerateBatch;
  rt->n_batch_ = std::min(rt->n_batch_, rt->n_ctx_);
  const int64_t logit_rows = ppl ? std::min(rt->n_batch_, rt->n_ctx_ - rt->n_ctx_ / 2) : 1;
  rt->overhead_ =
      EstimateOverhead(hp, rt->n_ctx_, rt->n_batch_, logit_rows, pool != nullptr ? pool->size() : 1,
                       rt->residency_->norm_floats());
  rt->residency_->set_overhead(rt->overhead_.total());
  return rt;
}

Status ElasticRuntime::Start(const LevelChoice& choice) {
  int level = 0;
  if (choice.eqm >= 0) {
    FQ_ASSIGN_OR_RETURN(level, residency_->LevelOfStep(choice.eqm));
  } else if (!choice.qm.empty()) {
    FQ_ASSIGN_OR_RETURN(level, residency_->LevelOfLabel(choice.qm));
  } else if (choice.budget > 0) {
    FQ_ASSIGN_OR_RETURN(level, residency_->LevelForBudget(choice.budget));
  }
  FQ_RETURN_IF_ERROR(residency_->Start(level, pool_));
  // Records the budget; the level already fits it, so nothing moves.
  if (choice.budget > 0 && choice.eqm < 0 && choice.qm.empty()) {
    FQ_RETURN_IF_ERROR(residency_->SetBudget(choice.budget).status());
  }
  session_ = std::make_unique<Session>(residency_->model(), n_ctx_, pool_);
  return Status::OK();
}

Status ElasticRuntime::CheckTrace(const std::vector<BudgetChange>& trace,
                                  const std::string& name) const {
  for (const BudgetChange& c : trace) {
    Result<int> level = residency_->LevelForBudget(c.budget);
    if (!level.ok()) return level.status().WithContext(name + ":" + std::to_string(c.line));
  }
  return Status::OK();
}

Status ElasticRuntime::ApplyBudgets(const std::vector<BudgetChange>& trace, size_t* next,
                                    int64_t token, std::vector<TransitionRecord>* log,
                                    const TransitionCallback& on_transition) {
  auto record = [&](TransitionRecord rec) {
    rec.token = token;
    if (rec.modules_swapped == 0 && rec.from == rec.to) return;
    if (on_transition) on_transition(rec);
    log->push_back(std::move(rec));
  };
  uint64_t budget = 0;
  while (*next < trace.size() && trace[*next].token <= token) budget = trace[(*next)++].budget;
  if (budget > 0) {
    FQ_ASSIGN_OR_RETURN(TransitionRecord rec, residency_->SetBudget(budget));
    record(std::move(rec));
  }
  FQ_ASSIGN_OR_RETURN(std::optional<TransitionRecord> pending, residency_->ApplyPendingBudget());
  if (pending.has_value()) record(std::move(*pending));
  return Status::OK();
}

Result<ElasticGenerateResult> ElasticRuntime::Generate(
    std::span<const int32_t> prompt, const GenerateOptions& options,
    const std::vector<BudgetChange>& trace, const std::function<Status(int32_t token)>& on_token,
    const TransitionCallback& on_transition) {
  if (session_ == nullptr) return Status::InvalidArgument("the elastic runtime has not started");
  ElasticGenerateResult result;
  size_t next = 0;
  session_->Reset();
  FQ_RETURN_IF_ERROR(ApplyBudgets(trace, &next, 0, &result.transitions, on_transition));
  // All but the last prompt token go in passes of n_batch tokens; Generate
  // runs the last one and takes its logits.
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t0 = Clock::now();
  if (prompt.empty())
    return Status::InvalidArgument("the prompt has no tokens (an empty text starts from BOS)");
  // A per-token hook (dynamic precision) must see every prompt position:
  // then Generate evaluates the whole prompt itself, a token at a time.
  const size_t head = options.before_token ? 0 : prompt.size() - 1;
  for (size_t b = 0; b < head; b += static_cast<size_t>(n_batch_)) {
    const size_t m = std::min(static_cast<size_t>(n_batch_), head - b);
    FQ_RETURN_IF_ERROR(session_->Eval(prompt.subspan(b, m), m, nullptr));
  }
  const double head_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  int64_t generated = 0;
  // A context shift evaluates the kept tokens in passes of n_batch too: the
  // budget holds scratch for that many.
  GenerateOptions gen = options;
  gen.n_batch = n_batch_;
  FQ_ASSIGN_OR_RETURN(
      result.generate,
      runtime::Generate(
          session_.get(), prompt.last(prompt.size() - head), gen, [&](int32_t token) -> Status {
            FQ_RETURN_IF_ERROR(on_token(token));
            ++generated;
            // The last token is never fed back: no transition for it.
            if (options.n_predict >= 0 && generated >= options.n_predict) return Status::OK();
            return ApplyBudgets(trace, &next, generated, &result.transitions, on_transition);
          }));
  result.generate.prompt_tokens = static_cast<int64_t>(prompt.size());
  result.generate.prompt_seconds += head_seconds;
  return result;
}

Result<ElasticPerplexityResult> ElasticRuntime::Perplexity(
    std::span<const int32_t> tokens, int64_t max_chunks, const std::vector<BudgetChange>& trace,
    const std::function<Status(int64_t, int64_t)>& progress,
    const TransitionCallback& on_transition) {
  if (session_ == nullptr) return Status::InvalidArgument("the elastic runtime has not started");
  const int64_t n_ctx = n_ctx_;
  if (n_ctx < 4) {
    return Status::InvalidArgument("perplexity needs a context of at least 4 tokens, got " +
                                   std::to_string(n_ctx));
  }
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  if (n_tokens < 2 * n_ctx) {
    return Status::InvalidArgument("perplexity with a context of " + std::to_string(n_ctx) +
                                   " tokens needs a text of at least " + std::to_string(2 * n_ctx) +
                                   " tokens; this text has only " + std::to_string(n_tokens));
  }
  const int32_t bos = tokenizer_->add_bos() ? tokenizer_->bos() : -1;
  const auto chunks = PerplexityChunks(tokens, n_ctx, bos, max_chunks);
  const size_t v = static_cast<size_t>(residency_->hparams().n_vocab);
  const int64_t first = n_ctx / 2;
  ElasticPerplexityResult result;
  MeanAccumulator nll;
  std::vector<float> logits;
  size_t next = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t start = static_cast<int64_t>(c) * n_ctx;
    FQ_RETURN_IF_ERROR(ApplyBudgets(trace, &next, start, &result.transitions, on_transition));
    session_->Reset();
    MeanAccumulator chunk_nll;
    const std::span<const int32_t> chunk(chunks[c]);
    for (int64_t b = 0; b < n_ctx; b += n_batch_) {
      const int64_t m = std::min(n_batch_, n_ctx - b);
      // Logits only for the scored half: positions first .. n_ctx - 2.
      const int64_t from = std::max(first - b, int64_t{0});
      FQ_RETURN_IF_ERROR(
          session_->Eval(chunk.subspan(static_cast<size_t>(b), static_cast<size_t>(m)),
                         static_cast<size_t>(std::min(from, m)), from < m ? &logits : nullptr));
      for (int64_t j = b + from; j < b + m && j < n_ctx - 1; ++j) {
        const std::span<const float> row(logits.data() + static_cast<size_t>(j - b - from) * v, v);
        const double value = TokenNll(row, tokens[static_cast<size_t>(start + j + 1)]);
        nll.Add(value);
        chunk_nll.Add(value);
      }
    }
    const ResidencyStats s = residency_->stats();
    ChunkResult cr;
    cr.index = static_cast<int64_t>(c);
    cr.level = s.level;
    cr.label = s.label;
    cr.footprint = s.footprint;
    cr.budget = s.budget;
    cr.nll = chunk_nll.mean();
    cr.scored = chunk_nll.count();
    result.chunks.push_back(cr);
    if (progress)
      FQ_RETURN_IF_ERROR(
          progress(static_cast<int64_t>(c) + 1, static_cast<int64_t>(chunks.size())));
  }
  PerplexityResult& r = result.total;
  r.tokens = n_tokens;
  r.n_ctx = n_ctx;
  r.chunks = static_cast<int64_t>(chunks.size());
  r.scored = nll.count();
  r.nll = nll.mean();
  r.ppl = std::exp(r.nll);
  r.ppl_err = r.ppl * nll.StandardError();
  return result;
}

std::string DescribeTransition(const TransitionRecord& t) {
  char ms[32];
  std::snprintf(ms, sizeof(ms), "%.2f ms", t.seconds * 1e3);
  std::string s = t.token >= 0 ? "token " + std::to_string(t.token) + ": " : "";
  s += t.from_label + " -> " + t.to_label;
  if (t.budget > 0) s += " (budget " + FormatBytes(t.budget) + ")";
  s += ": " + std::to_string(t.modules_swapped) + " modules swapped, " + FormatBytes(t.bytes_in) +
       " in, " + FormatBytes(t.bytes_out) + " out, " + FormatBytes(t.bytes_read) + " read, " + ms +
       "; resident " + FormatBytes(t.resident_before) + " -> " + FormatBytes(t.resident_after) +
       " (peak " + FormatBytes(t.peak_bytes) + ")";
  return s;
}

void WriteTransitionJson(JsonWriter* w, const TransitionRecord& t) {
  w->BeginObject()
      .Key("token")
      .Int(t.token)
      .Key("finished_at")
      .Double(t.finished_at)
      .Key("from")
      .String(t.from_label)
      .Key("to")
      .String(t.to_label)
      .Key("budget")
      .Uint(t.budget)
      .Key("modules_swapped")
      .Int(t.modules_swapped)
      .Key("bytes_in")
      .Uint(t.bytes_in)
      .Key("bytes_out")
      .Uint(t.bytes_out)
      .Key("bytes_read")
      .Uint(t.bytes_read)
      .Key("resident_before")
      .Uint(t.resident_before)
      .Key("resident_after")
      .Uint(t.resident_after)
      .Key("peak_bytes")
      .Uint(t.peak_bytes)
      .Key("ms")
      .Double(t.seconds * 1e3)
      .EndObject();
}

}  // namespace fqpack::runtime
