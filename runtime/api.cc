// include/fqpack/fqpack.h over runtime::ElasticRuntime.

#include <algorithm>
#include <mutex>

#include "fqpack/fqpack.h"
#include "runtime/elastic.h"
#include "runtime/memory_governor.h"

namespace fqpack {

struct ElasticModel::Impl {
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<runtime::ElasticRuntime> rt;
  // Held by Generate and Perplexity for their whole run, and by SetBudget
  // when it applies a budget itself: whoever holds it is the owner thread of
  // the residency manager.
  std::mutex run_mu;
  mutable std::mutex log_mu;
  std::vector<TransitionInfo> transitions;
  // Following the device's memory (declared after rt: stops first).
  mutable std::mutex governor_mu;
  std::unique_ptr<runtime::MemoryGovernor> governor;

  Status Follow(bool os, uint64_t reserve) {
    runtime::GovernorOptions o;
    o.os_sources = os;
    o.policy.reserve = reserve;
    StopFollowing();
    FQ_ASSIGN_OR_RETURN(std::unique_ptr<runtime::MemoryGovernor> g,
                        runtime::MemoryGovernor::Open(Env::Default(), rt->residency(), o));
    // An idle model applies what the governor asks for at once.
    g->set_on_request([this](uint64_t) { ApplyLeftovers(); });
    FQ_RETURN_IF_ERROR(g->Start());
    {
      std::lock_guard<std::mutex> lock(governor_mu);
      governor = std::move(g);
    }
    ApplyLeftovers();  // what its first reading asked for, before the callback was set
    return Status::OK();
  }
  void StopFollowing() {
    std::unique_ptr<runtime::MemoryGovernor> g;
    {
      std::lock_guard<std::mutex> lock(governor_mu);
      g = std::move(governor);
    }
    if (g != nullptr) g->Stop();
  }
  template <typename F>
  void WithGovernor(F f) {
    std::lock_guard<std::mutex> lock(governor_mu);
    if (governor != nullptr) f(governor.get());
  }

  // Owner thread, holding run_mu: applies a budget requested meanwhile.
  Status ApplyPending() {
    FQ_ASSIGN_OR_RETURN(std::optional<runtime::TransitionRecord> rec,
                        rt->residency()->ApplyPendingBudget());
    if (rec.has_value() && rec->modules_swapped > 0) Log(*rec);
    return Status::OK();
  }

  // After a run released run_mu: a budget requested while the run was
  // ending found the lock taken and left the work to the run, so apply it.
  void ApplyLeftovers() {
    while (rt->residency()->has_pending_budget()) {
      std::unique_lock<std::mutex> lock(run_mu, std::try_to_lock);
      if (!lock.owns_lock()) return;  // whoever holds it applies it
      (void)
          ApplyPending();  // it passed RequestBudget's check; a failure here leaves the level as is
    }
  }

  void Log(const runtime::TransitionRecord& t) {
    TransitionInfo info;
    info.token = t.token;
    info.from = t.from_label;
    info.to = t.to_label;
    info.modules_swapped = t.modules_swapped;
    info.bytes_read = t.bytes_read;
    info.milliseconds = t.seconds * 1e3;
    std::lock_guard<std::mutex> lock(log_mu);
    transitions.push_back(std::move(info));
  }
};

ElasticModel::ElasticModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ElasticModel::~ElasticModel() {
  if (impl_ != nullptr) impl_->StopFollowing();
}

Result<std::unique_ptr<ElasticModel>> ElasticModel::Open(const std::string& path,
                                                         const OpenOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->pool = std::make_unique<ThreadPool>(options.threads);
  runtime::ElasticOptions eo;
  eo.residency.ensemble = options.ensemble;
  eo.n_ctx = options.context;
  eo.workload = options.evaluation ? runtime::Workload::kPerplexity : runtime::Workload::kGenerate;
  FQ_ASSIGN_OR_RETURN(impl->rt,
                      runtime::ElasticRuntime::Open(Env::Default(), path, eo, impl->pool.get()));
  runtime::LevelChoice choice;
  choice.eqm = options.eqm;
  choice.budget = options.eqm >= 0 ? 0 : options.budget;
  FQ_RETURN_IF_ERROR(impl->rt->Start(choice));
  return std::unique_ptr<ElasticModel>(new ElasticModel(std::move(impl)));
}

Status ElasticModel::SetBudget(uint64_t bytes) {
  impl_->StopFollowing();
  FQ_RETURN_IF_ERROR(impl_->rt->residency()->RequestBudget(bytes));
  std::unique_lock<std::mutex> lock(impl_->run_mu, std::try_to_lock);
  if (!lock.owns_lock()) return Status::OK();  // the running call applies it before its next token
  return impl_->ApplyPending();
}

uint64_t ElasticModel::MinimumBudget() const { return impl_->rt->residency()->MinimumBudget(); }

Status ElasticModel::FollowSystemMemory(uint64_t reserve) { return impl_->Follow(true, reserve); }
Status ElasticModel::FollowHostReports(uint64_t reserve) { return impl_->Follow(false, reserve); }
void ElasticModel::StopFollowing() { impl_->StopFollowing(); }

void ElasticModel::ReportAvailableBytes(uint64_t bytes) {
  impl_->WithGovernor([&](runtime::MemoryGovernor* g) { g->ReportAvailableBytes(bytes); });
}

void ElasticModel::ReportPressure(MemoryPressure level) {
  const auto p = level == MemoryPressure::kCritical   ? runtime::PressureLevel::kCritical
                 : level == MemoryPressure::kModerate ? runtime::PressureLevel::kModerate
                                                      : runtime::PressureLevel::kNormal;
  impl_->WithGovernor([&](runtime::MemoryGovernor* g) { g->ReportPressure(p); });
}

void ElasticModel::ReportAndroidTrimLevel(int level) {
  impl_->WithGovernor([&](runtime::MemoryGovernor* g) { g->ReportAndroidTrimLevel(level); });
}

MemoryStatus ElasticModel::Memory() const {
  MemoryStatus m;
  impl_->WithGovernor([&](runtime::MemoryGovernor* g) {
    const runtime::GovernorState st = g->state();
    m.following = true;
    m.source = st.source;
    m.available = st.available;
    m.reserve = st.reserve;
    m.budget = st.effective;
    m.pressure = st.pressure == runtime::PressureLevel::kCritical   ? MemoryPressure::kCritical
                 : st.pressure == runtime::PressureLevel::kModerate ? MemoryPressure::kModerate
                                                                    : MemoryPressure::kNormal;
  });
  return m;
}

Result<std::string> ElasticModel::Generate(
    const GenerateRequest& request, const std::function<bool(std::string_view piece)>& on_piece) {
  Result<std::string> r = GenerateLocked(request, on_piece);
  impl_->ApplyLeftovers();
  return r;
}

Result<std::string> ElasticModel::GenerateLocked(
    const GenerateRequest& request, const std::function<bool(std::string_view piece)>& on_piece) {
  std::lock_guard<std::mutex> lock(impl_->run_mu);
  runtime::ElasticRuntime* rt = impl_->rt.get();
  const runtime::Tokenizer& tok = rt->tokenizer();
  std::vector<int32_t> prompt = tok.Encode(request.prompt, true);
  if (prompt.empty()) {
    if (tok.bos() == runtime::Tokenizer::kNoToken) {
      return Status::InvalidArgument(
          "the prompt is empty and the vocabulary has no BOS to start from");
    }
    prompt.push_back(tok.bos());
  }
  runtime::GenerateOptions opts;
  opts.n_predict = request.max_tokens;
  opts.sampling.temperature = request.temperature;
  opts.sampling.top_p = request.top_p;
  opts.sampling.seed = request.seed;
  opts.bos = tok.bos();
  opts.eos = tok.eos();
  opts.eot = tok.eot();
  runtime::DecodeStream stream(&tok, prompt.back());
  std::string text;
  bool stopped = false;
  Result<runtime::ElasticGenerateResult> r = rt->Generate(
      prompt, opts, {},
      [&](int32_t token) -> Status {
        const std::string piece = stream.Next(token);
        text += piece;
        if (on_piece && !on_piece(piece)) {
          stopped = true;
          return Status::Aborted("stopped by the caller");
        }
        return Status::OK();
      },
      [this](const runtime::TransitionRecord& t) { impl_->Log(t); });
  if (!r.ok() && !(stopped && r.status().IsAborted())) return r.status();
  FQ_RETURN_IF_ERROR(impl_->ApplyPending());
  return text;
}

Result<double> ElasticModel::Perplexity(std::string_view text) {
  Result<double> ppl = [&]() -> Result<double> {
    std::lock_guard<std::mutex> lock(impl_->run_mu);
    runtime::ElasticRuntime* rt = impl_->rt.get();
    const std::vector<int32_t> tokens = rt->tokenizer().Encode(text, true);
    FQ_ASSIGN_OR_RETURN(
        runtime::ElasticPerplexityResult r,
        rt->Perplexity(tokens, -1, {}, {},
                       [this](const runtime::TransitionRecord& t) { impl_->Log(t); }));
    FQ_RETURN_IF_ERROR(impl_->ApplyPending());
    return r.total.ppl;
  }();
  impl_->ApplyLeftovers();
  return ppl;
}

ElasticStats ElasticModel::Stats() const {
  runtime::ResidencyManager* m = impl_->rt->residency();
  const runtime::ResidencyStats s = m->stats();
  ElasticStats out;
  out.eqm = s.label;
  out.step = s.step;
  out.levels = static_cast<int>(m->levels().size());
  out.budget = s.budget;
  out.weight_bytes = s.resident_bytes;
  out.overhead_bytes = s.overhead_bytes;
  out.minimum_budget = m->MinimumBudget();
  for (const runtime::ResidencyLevel& l : m->levels()) {
    out.largest_budget = std::max(out.largest_budget, l.footprint + s.overhead_bytes);
  }
  out.transitions = s.transitions;
  out.modules_swapped = s.modules_swapped;
  out.bytes_read = s.bytes_read;
  out.transition_milliseconds = s.transition_seconds * 1e3;
  return out;
}

std::vector<TransitionInfo> ElasticModel::Transitions() const {
  std::lock_guard<std::mutex> lock(impl_->log_mu);
  return impl_->transitions;
}

}  // namespace fqpack
