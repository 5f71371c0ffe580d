#include "search/evaluator.h"

#include <algorithm>
#include <chrono>
#include <mutex>

namespace fqpack::search {

const char* MetricName(Metric m) { return m == Metric::kKl ? "kl" : "ppl"; }

Result<Metric> ParseMetric(const std::string& name) {
  if (name == "kl") return Metric::kKl;
  if (name == "ppl") return Metric::kPpl;
  return Status::InvalidArgument("unknown metric '" + name + "' (kl or ppl)");
}

Result<CalibSet> MakeCalibSet(std::span<const int32_t> text_tokens, int64_t n_ctx, int64_t n_tokens,
                              int32_t bos) {
  if (n_ctx < 2) {
    return Status::InvalidArgument("calibration chunks need at least 2 tokens, got " +
                                   std::to_string(n_ctx));
  }
  if (n_tokens < n_ctx) {
    return Status::InvalidArgument("--tokens " + std::to_string(n_tokens) +
                                   " is less than one chunk of " + std::to_string(n_ctx) +
                                   " tokens (lower -c or raise --tokens)");
  }
  const int64_t chunks = n_tokens / n_ctx;
  const int64_t need = chunks * n_ctx;
  const int64_t have = static_cast<int64_t>(text_tokens.size());
  if (have < need) {
    return Status::InvalidArgument(
        "the calibration text is too short: " + std::to_string(chunks) + " chunks of " +
        std::to_string(n_ctx) + " tokens need " + std::to_string(need) + " tokens, the text has " +
        std::to_string(have) + " (give a longer text, or lower --tokens to at most " +
        std::to_string(have / n_ctx * n_ctx) + ")");
  }
  CalibSet set;
  set.n_ctx = n_ctx;
  for (int64_t c = 0; c < chunks; ++c) {
    auto piece = text_tokens.subspan(static_cast<size_t>(c * n_ctx), static_cast<size_t>(n_ctx));
    set.targets.emplace_back(piece.begin(), piece.end());
    set.inputs.emplace_back(piece.begin(), piece.end());
    if (bos >= 0) set.inputs.back()[0] = bos;
  }
  return set;
}

struct Evaluator::Worker {
  std::unique_ptr<ThreadPool> pool;  // one thread: the worker's own
  std::unique_ptr<runtime::Model> model;
  std::unique_ptr<runtime::BatchEvaluator> eval;
  EqmState state;  // what `model` holds now
  std::vector<float> logits;
};

Evaluator::~Evaluator() = default;

const runtime::Hparams& Evaluator::hparams() const { return model_->hparams(); }

namespace {

// What one worker needs to run a unit, handed out from a free list:
// ParallelFor ranges carry no thread identity.
template <typename T>
class FreeList {
 public:
  explicit FreeList(std::vector<T*> items) : items_(std::move(items)) {}
  T* Take() {
    std::lock_guard<std::mutex> lock(mu_);
    T* t = items_.back();
    items_.pop_back();
    return t;
  }
  void Give(T* t) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back(t);
  }

 private:
  std::mutex mu_;
  std::vector<T*> items_;
};

// log-sum-exp of a row: exponentials in float, their sum in double (as
// llama.cpp's log_softmax).
double LogSumExp(const float* row, int64_t n, float* max_out) {
  float max = row[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, row[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(row[i] - max);
  *max_out = max;
  return std::log(sum);
}

}  // namespace

Result<std::unique_ptr<Evaluator>> Evaluator::Create(const Library* library,
                                                     store::ModuleSource* source, CalibSet calib,
                                                     const Options& options) {
  std::unique_ptr<Evaluator> ev(new Evaluator());
  ev->library_ = library;
  ev->calib_ = std::move(calib);
  ev->reuse_ = options.reuse;
  ev->pool_ = std::make_unique<ThreadPool>(std::max(1, options.threads));
  if (ev->calib_.chunks() == 0) return Status::InvalidArgument("no calibration chunks");
  FQ_ASSIGN_OR_RETURN(ev->model_,
                      runtime::Model::Load(library->up().manifest, source, ev->pool_.get()));
  const runtime::Hparams& hp = ev->model_->hparams();
  ev->n_vocab_ = hp.n_vocab;
  const int n_layer = static_cast<int>(hp.n_layer);

  // Every rung's bytes, loaded once: rung 0 is what the model holds.
  const std::vector<SlotChain>& chains = library->chains();
  ev->data_.resize(chains.size());
  std::vector<std::pair<size_t, size_t>> to_load;
  for (size_t i = 0; i < chains.size(); ++i) {
    ev->data_[i].resize(chains[i].rungs.size());
    const runtime::SlotWeights* w = ev->model_->slot(chains[i].idx);
    if (w == nullptr) return Status::Corruption("slot '" + chains[i].name + "' vanished");
    ev->data_[i][0] = w->data;
    for (size_t r = 1; r < chains[i].rungs.size(); ++r) to_load.emplace_back(i, r);
  }
  std::mutex mu;
  Status load_error;
  ev->pool_->ParallelFor(static_cast<int64_t>(to_load.size()), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const auto [i, r] = to_load[static_cast<size_t>(k)];
      const Rung& rung = chains[i].rungs[r];
      Result<store::ModuleData> d = source->Load(rung.key);
      std::lock_guard<std::mutex> lock(mu);
      if (!d.ok()) {
        if (load_error.ok()) load_error = d.status().WithContext("slot '" + chains[i].name + "'");
      } else {
        ev->data_[i][r] = std::move(d).value();
      }
    }
  });
  FQ_RETURN_IF_ERROR(load_error);

  ev->affects_.resize(chains.size());
  for (size_t i = 0; i < chains.size(); ++i) {
    const SlotChain& c = chains[i];
    if (c.kind == "output" || c.name == "output_norm.weight") {
      ev->affects_[i] = n_layer;
    } else if (c.layer >= 0) {
      ev->affects_[i] = c.layer;
    } else {
      ev->affects_[i] = -1;  // the embedding (tied or not), or anything unknown
    }
  }

  for (int t = 0; t < ev->pool_->size(); ++t) {
    auto w = std::make_unique<Worker>();
    w->pool = std::make_unique<ThreadPool>(1);
    w->model = ev->model_->Clone();
    if (w->model == nullptr) return Status::Corruption("cannot clone the up model");
    w->eval = std::make_unique<runtime::BatchEvaluator>(w->model.get(), w->pool.get());
    w->state = library->UpState();
    ev->workers_.push_back(std::move(w));
  }

  // QM(n_up) on every chunk: the reference distributions and the root states.
  const int64_t chunks = ev->calib_.chunks();
  const int64_t n_ctx = ev->calib_.n_ctx;
  const size_t v = static_cast<size_t>(hp.n_vocab);
  ev->up_prob_.resize(static_cast<size_t>(chunks));
  ev->up_logprob_.resize(static_cast<size_t>(chunks));
  ev->up_states_.resize(static_cast<size_t>(chunks));
  std::vector<double> nll(static_cast<size_t>(chunks), 0.0);
  std::vector<Worker*> all;
  for (auto& w : ev->workers_) all.push_back(w.get());
  FreeList<Worker> free_workers(all);
  Status run_error;
  ev->pool_->ParallelFor(chunks, [&](int64_t b, int64_t e) {
    Worker* w = free_workers.Take();
    for (int64_t c = b; c < e; ++c) {
      const size_t cs = static_cast<size_t>(c);
      Result<runtime::LayerStates> st = w->eval->Run(ev->calib_.inputs[cs]);
      Status s = st.ok() ? w->eval->Logits(*st, 0, &w->logits) : st.status();
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (run_error.ok()) run_error = s;
        continue;
      }
      std::vector<float>& prob = ev->up_prob_[cs];
      std::vector<float>& logprob = ev->up_logprob_[cs];
      prob.resize(static_cast<size_t>(n_ctx - 1) * v);
      logprob.resize(prob.size());
      for (int64_t j = 0; j + 1 < n_ctx; ++j) {
        const float* row = w->logits.data() + static_cast<size_t>(j) * v;
        float max;
        const double lse = LogSumExp(row, hp.n_vocab, &max);
        for (size_t k = 0; k < v; ++k) {
          const double lp = static_cast<double>(row[k] - max) - lse;
          logprob[static_cast<size_t>(j) * v + k] = static_cast<float>(lp);
          prob[static_cast<size_t>(j) * v + k] = static_cast<float>(std::exp(lp));
        }
        const int32_t target = ev->calib_.targets[cs][static_cast<size_t>(j + 1)];
        nll[cs] -= static_cast<double>(row[target] - max) - lse;
      }
      ev->up_states_[cs] = std::move(st).value();
    }
    free_workers.Give(w);
  });
  FQ_RETURN_IF_ERROR(run_error.WithContext("calibration text"));
  double nll_sum = 0;
  for (double x : nll) nll_sum += x;
  ev->up_score_.kl = 0;
  ev->up_score_.nll = nll_sum / static_cast<double>(ev->calib_.scored());
  return ev;
}

int Evaluator::FirstChangedLayer(const EqmState& parent, const EqmState& state) const {
  int first = static_cast<int>(model_->hparams().n_layer);
  for (size_t i = 0; i < state.size(); ++i) {
    if (state[i] != parent[i]) first = std::min(first, affects_[i]);
  }
  return first;
}

Status Evaluator::ScoreUnit(Worker* w, const EvalJob& job, int64_t chunk, double* kl_sum,
                            double* nll_sum, runtime::LayerStates* keep) {
  const std::vector<SlotChain>& chains = library_->chains();
  const EqmState& state = *job.state;
  for (size_t i = 0; i < state.size(); ++i) {
    if (w->state[i] == state[i]) continue;
    const Rung& r = chains[i].rungs[state[i]];
    FQ_RETURN_IF_ERROR(w->model->SetSlot(chains[i].idx, data_[i][state[i]], r.desc));
    w->state[i] = state[i];
  }
  const int n_layer = static_cast<int>(model_->hparams().n_layer);
  const size_t cs = static_cast<size_t>(chunk);
  int first = -1;
  if (reuse_ && job.parent_states != nullptr) first = FirstChangedLayer(*job.parent_state, state);
  runtime::LayerStates st;
  if (first < 0) {
    FQ_ASSIGN_OR_RETURN(st, w->eval->Run(calib_.inputs[cs]));
    blocks_run_ += n_layer;
  } else if (first < n_layer) {
    FQ_ASSIGN_OR_RETURN(st, w->eval->RunFrom((*job.parent_states)[cs], first));
    blocks_run_ += n_layer - first;
  } else {
    st = (*job.parent_states)[cs];
  }
  blocks_full_ += n_layer;
  FQ_RETURN_IF_ERROR(w->eval->Logits(st, 0, &w->logits));

  const size_t v = static_cast<size_t>(n_vocab_);
  const std::vector<int32_t>& targets = calib_.targets[cs];
  const float* prob = up_prob_[cs].data();
  const float* logprob = up_logprob_[cs].data();
  double kl = 0, nll = 0;
  for (int64_t j = 0; j + 1 < calib_.n_ctx; ++j) {
    const size_t off = static_cast<size_t>(j) * v;
    const float* row = w->logits.data() + off;
    float max;
    const double lse = LogSumExp(row, n_vocab_, &max);
    double row_kl = 0;
    for (size_t k = 0; k < v; ++k) {
      const double lp = static_cast<double>(row[k] - max) - lse;
      row_kl += static_cast<double>(prob[off + k]) * (static_cast<double>(logprob[off + k]) - lp);
    }
    // Rounding can leave -1e-17 for identical rows.
    kl += std::max(row_kl, 0.0);
    nll -= static_cast<double>(row[targets[static_cast<size_t>(j + 1)]] - max) - lse;
  }
  *kl_sum = kl;
  *nll_sum = nll;
  if (keep != nullptr) *keep = std::move(st);
  return Status::OK();
}

Result<std::vector<EvalResult>> Evaluator::Evaluate(
    const std::vector<EvalJob>& jobs, const std::function<bool()>& cancelled,
    const std::function<void(int64_t, int64_t)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t chunks = calib_.chunks();
  // Units are laid out job by job, each job's chunk range in order.
  std::vector<int64_t> first_unit(jobs.size() + 1, 0);
  std::vector<EvalResult> results(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    const int64_t end = jobs[j].chunk_end < 0 ? chunks : jobs[j].chunk_end;
    if (jobs[j].chunk_begin < 0 || jobs[j].chunk_begin > end || end > chunks) {
      return Status::InvalidArgument(
          "an evaluation job's chunk range is outside the calibration set");
    }
    first_unit[j + 1] = first_unit[j] + (end - jobs[j].chunk_begin);
    if (jobs[j].keep_states) results[j].states.resize(static_cast<size_t>(chunks));
    if ((jobs[j].parent_state == nullptr) != (jobs[j].parent_states == nullptr)) {
      return Status::InvalidArgument("an evaluation job has a parent state without activations");
    }
  }
  const int64_t n_units = first_unit.back();
  std::vector<double> kl(static_cast<size_t>(n_units)), nll(static_cast<size_t>(n_units));
  std::vector<Worker*> all;
  for (auto& w : workers_) all.push_back(w.get());
  FreeList<Worker> free_workers(all);
  std::mutex mu;
  Status error;
  int64_t done = 0;
  pool_->ParallelFor(n_units, [&](int64_t b, int64_t e) {
    Worker* w = free_workers.Take();
    size_t j = static_cast<size_t>(std::upper_bound(first_unit.begin(), first_unit.end(), b) -
                                   first_unit.begin()) -
               1;
    for (int64_t u = b; u < e; ++u) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!error.ok()) break;
      }
      if (cancelled && cancelled()) {
        std::lock_guard<std::mutex> lock(mu);
        if (error.ok()) error = Status::Aborted("interrupted");
        break;
      }
      while (u >= first_unit[j + 1]) ++j;
      const int64_t c = jobs[j].chunk_begin + (u - first_unit[j]);
      runtime::LayerStates* keep =
          jobs[j].keep_states ? &results[j].states[static_cast<size_t>(c)] : nullptr;
      Status s =
          ScoreUnit(w, jobs[j], c, &kl[static_cast<size_t>(u)], &nll[static_cast<size_t>(u)], keep);
      std::lock_guard<std::mutex> lock(mu);
      if (!s.ok()) {
        if (error.ok()) error = s;
        break;
      }
      ++done;
      if (progress) progress(done, n_units);
    }
    free_workers.Give(w);
  });
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  FQ_RETURN_IF_ERROR(error);
  // Summed in chunk order: the score does not depend on which thread did what.
  const double scored = static_cast<double>(calib_.scored());
  for (size_t j = 0; j < jobs.size(); ++j) {
    double kl_sum = 0, nll_sum = 0;
    for (int64_t u = first_unit[j]; u < first_unit[j + 1]; ++u) {
      kl_sum += kl[static_cast<size_t>(u)];
      nll_sum += nll[static_cast<size_t>(u)];
    }
    results[j].chunk_kl.assign(kl.begin() + first_unit[j], kl.begin() + first_unit[j + 1]);
    results[j].chunk_nll.assign(nll.begin() + first_unit[j], nll.begin() + first_unit[j + 1]);
    results[j].score.kl = kl_sum / scored;
    results[j].score.nll = nll_sum / scored;
  }
  // An EQM scored a few chunks at a time counts once, at its first chunk.
  for (const EvalJob& job : jobs) evaluations_ += job.chunk_begin == 0 ? 1 : 0;
  units_ += n_units;
  return results;
}

EvalStats Evaluator::stats() const {
  EvalStats s;
  s.evaluations = evaluations_.load();
  s.blocks_run = blocks_run_.load();
  s.blocks_full = blocks_full_.load();
  s.units = units_.load();
  s.seconds = seconds_;
  return s;
}

}  // namespace fqpack::search
