#include "quantize/calibration.h"

#include <algorithm>
#include <unordered_map>

#include "runtime/llama.h"
#include "runtime/matmul_hook.h"
#include "runtime/perplexity.h"

namespace fqpack::quantize {
using runtime::MatMulObserver;
using runtime::Model;
using runtime::PerplexityChunks;
using runtime::ScopedMatMulObserver;
using runtime::Session;
using runtime::SlotWeights;
using runtime::WeightView;

namespace {

// The forward pass cuts longer inputs into micro-batches; keeping a chunk
// within one keeps each matmul's input one whole chunk.
constexpr int64_t kMaxCalibrationCtx = 512;
constexpr int64_t kMinCalibrationCtx = 16;

class Collector : public MatMulObserver {
 public:
  Collector(const Model& model, LayerInputs* out) : out_(out) {
    for (int i = 0; i < model.n_slots(); ++i) {
      const SlotWeights& s = model.slot_at(i);
      if (s.view.data != nullptr && s.values.empty()) slot_of_data_[s.view.data] = s.name;
    }
  }

  // A new forward pass: the buffer seen last no longer holds the same input.
  void NewPass() { last_x_ = nullptr; }

  void OnMatMul(const WeightView& w, const float* x, int64_t n_tokens) override {
    auto it = slot_of_data_.find(w.data);
    if (it == slot_of_data_.end()) return;
    const std::string& name = it->second;
    if (x == last_x_ && n_tokens == last_n_ && w.cols == last_cols_) {
      // The same input as the matmul before (Q/K/V, gate/up): share its H.
      Attach(name, last_h_);
      return;
    }
    int h;
    auto found = out_->hessian_of.find(name);
    if (found != out_->hessian_of.end()) {
      h = found->second;
    } else {
      h = static_cast<int>(out_->hessians.size());
      out_->hessians.push_back(std::make_unique<Hessian>(w.cols));
      out_->readers.emplace_back();
      Attach(name, h);
    }
    out_->hessians[h]->Accumulate(x, n_tokens);
    last_x_ = x;
    last_n_ = n_tokens;
    last_cols_ = w.cols;
    last_h_ = h;
  }

 private:
  void Attach(const std::string& name, int h) {
    if (out_->hessian_of.emplace(name, h).second) out_->readers[h].push_back(name);
  }

  LayerInputs* out_;
  std::unordered_map<const uint8_t*, std::string> slot_of_data_;
  const float* last_x_ = nullptr;
  int64_t last_n_ = 0;
  int64_t last_cols_ = 0;
  int last_h_ = -1;
};

}  // namespace

int64_t MinCalibrationTokens(const Model& model) {
  int64_t widest = 0;
  for (int i = 0; i < model.n_slots(); ++i) {
    const SlotWeights& s = model.slot_at(i);
    if (s.values.empty()) widest = std::max(widest, s.view.cols);
  }
  return widest;
}

Result<LayerInputs> CollectHessians(const Model& model, std::span<const int32_t> tokens,
                                    const CalibrationOptions& options, ThreadPool* pool) {
  if (options.n_ctx < kMinCalibrationCtx || options.n_ctx > kMaxCalibrationCtx) {
    return Status::InvalidArgument(
        "calibration chunks must be " + std::to_string(kMinCalibrationCtx) + " to " +
        std::to_string(kMaxCalibrationCtx) + " tokens, not " + std::to_string(options.n_ctx));
  }
  const int64_t needed = MinCalibrationTokens(model);
  if (static_cast<int64_t>(tokens.size()) < needed) {
    return Status::InvalidArgument(
        "the calibration text gives " + std::to_string(tokens.size()) +
        " tokens; GPTQ needs at least " + std::to_string(needed) +
        " (as many as the widest layer input has columns, so that every layer's H can be "
        "full rank), and a few times that for a good one");
  }
  std::vector<std::vector<int32_t>> chunks;
  if (static_cast<int64_t>(tokens.size()) < options.n_ctx) {
    chunks.emplace_back(tokens.begin(), tokens.end());
    if (options.bos >= 0) chunks.back()[0] = options.bos;
  } else {
    chunks = PerplexityChunks(tokens, options.n_ctx, options.bos, options.max_chunks);
  }
  LayerInputs out;
  Collector collector(model, &out);
  ScopedMatMulObserver scope(&collector);
  const int64_t chunk_len = static_cast<int64_t>(chunks.front().size());
  Session session(&model, chunk_len, pool);
  std::vector<float> logits;
  for (size_t i = 0; i < chunks.size(); ++i) {
    session.Reset();
    collector.NewPass();
    FQ_RETURN_IF_ERROR(session.Eval(chunks[i], 0, &logits));
    out.tokens += static_cast<int64_t>(chunks[i].size());
    ++out.chunks;
    if (options.progress) {
      FQ_RETURN_IF_ERROR(
          options.progress(static_cast<int64_t>(i + 1), static_cast<int64_t>(chunks.size())));
    }
  }
  return out;
}

}  // namespace fqpack::quantize
