// The residency manager's planner: the levels a pack offers (read from its
// index and checked against the model's manifest), the overhead a forward
// pass adds, and which level a budget gets. The transitions between levels
// are residency_transitions.cc; how a module's bytes are mapped or decoded
// is region_map.cc; the /proc measurements are os_memory.cc.
#include "runtime/residency.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "pack/format.h"
#include "runtime/llama.h"
#include "runtime/matmul.h"
#include "schema/units.h"

namespace fqpack::runtime {
namespace {

// The largest micro-batch a Session evaluates at once (llama.cc's kMaxUbatch).
constexpr int64_t kMaxRows = 512;

std::string BytesText(uint64_t bytes) {
  return std::to_string(bytes) + " bytes (" + FormatBytes(bytes) + ")";
}

}  // namespace

RuntimeOverhead EstimateOverhead(const Hparams& hp, int64_t n_ctx, int64_t n_batch,
                                 int64_t n_logit_rows, int threads, uint64_t norm_floats) {
  RuntimeOverhead o;
  o.kv_cache = KvCacheBytes(hp, n_ctx);
  const uint64_t rows = static_cast<uint64_t>(std::clamp<int64_t>(n_batch, 1, kMaxRows));
  // The forward pass's buffers per token (llama.cc's ForwardScratch::Reserve)
  // and the output's.
  int64_t floats = 3 * hp.n_embd + 2 * hp.n_embd_q() + 2 * hp.n_embd_kv() + 2 * hp.n_ff + hp.n_rot +
                   std::max(hp.n_embd, hp.n_ff);
  if (hp.arch != nullptr && hp.arch->fused_qkv) floats += hp.n_embd_q() + 2 * hp.n_embd_kv();
  if (hp.arch != nullptr && hp.arch->fused_gate_up) floats += hp.n_ff;
  if (hp.n_swa > 0) floats += hp.n_rot;
  const uint64_t per_row = static_cast<uint64_t>(floats);
  const uint64_t logits =
      static_cast<uint64_t>(std::max<int64_t>(n_logit_rows, 1)) * static_cast<uint64_t>(hp.n_vocab);
  const uint64_t attention = static_cast<uint64_t>(std::max(threads, 1)) *
                             static_cast<uint64_t>((n_ctx + 7) & ~int64_t{7});
  o.scratch = sizeof(float) * (rows * per_row + logits + attention + norm_floats);
  return o;
}

Result<int> ResidencyManager::ModuleIndex(const store::ModuleKey& key) {
  auto it = module_of_key_.find(key);
  if (it != module_of_key_.end()) return it->second;
  auto p = payload_of_key_.find(key);
  if (p == payload_of_key_.end()) {
    return Status::NotFound(pack_->path() + ": no module " + key.Hex());
  }
  const pack::PayloadInfo& info = pack_->payloads()[p->second];
  ResidentModuleInfo m;
  m.key = key;
  m.desc = info.desc;
  m.bytes = info.raw_bytes;
  m.payload = p->second;
  m.zstd = info.zstd;
  const int index = static_cast<int>(modules_.size());
  modules_.push_back(m);
  resident_.emplace_back();
  verified_.emplace_back(false);
  module_of_key_.emplace(key, index);
  return index;
}

Result<std::unique_ptr<ResidencyManager>> ResidencyManager::Open(pack::PackReader* pack,
                                                                 const ResidencyOptions& options) {
  std::unique_ptr<ResidencyManager> r(new ResidencyManager());
  r->pack_ = pack;
  r->options_ = options;
  const long page = ::sysconf(_SC_PAGESIZE);
  r->page_size_ = page > 0 ? static_cast<size_t>(page) : 4096;
  const std::vector<pack::PayloadInfo>& payloads = pack->payloads();
  for (size_t i = 0; i < payloads.size(); ++i) r->payload_of_key_.emplace(payloads[i].key, i);
  const std::string& where = pack->path();
  // Raw modules get mappings of their own (see Region) from this descriptor.
  // It must be the file the reader validated: same size, same footer.
  r->fd_ = ::open(where.c_str(), O_RDONLY | O_CLOEXEC);
  if (r->fd_ < 0) return Status::IOError(where + ": " + std::strerror(errno));
  struct stat st;
  uint8_t footer[pack::kFooterSize];
  if (::fstat(r->fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) != pack->file_size() ||
      ::pread(r->fd_, footer, sizeof(footer),
              static_cast<off_t>(pack->file_size() - sizeof(footer))) !=
          static_cast<ssize_t>(sizeof(footer))) {
    return Status::IOError(where + ": the file changed since it was opened");
  }
  pack::PayloadInfo tail;
  tail.offset = pack->file_size() - sizeof(footer);
  tail.stored_bytes = sizeof(footer);
  const ByteSpan mapped_footer = pack->PayloadBytes(tail);
  if (!std::equal(mapped_footer.begin(), mapped_footer.end(), footer)) {
    return Status::IOError(where + ": the file changed since it was opened");
  }

  // Each level's modules as (slot idx, key) rows, in slot order.
  std::vector<std::vector<store::ModuleRef>> rows;
  FQ_ASSIGN_OR_RETURN(std::vector<store::EnsembleInfo> ensembles, pack->Ensembles());
  if (!options.qms_only && !ensembles.empty()) {
    FQ_ASSIGN_OR_RETURN(store::EnsembleInfo e, pack->FindEnsemble(options.ensemble));
    r->ensemble_name_ = e.name;
    {
      FQ_ASSIGN_OR_RETURN(std::vector<store::EqmInfo> eqms, pack->catalog().ListEqms(e.id));
      for (const store::EqmInfo& q : eqms) {
        ResidencyLevel level;
        level.label = "eqm:" + std::to_string(q.step);
        level.step = q.step;
        level.calib_metric = q.calib_metric;
        r->levels_.push_back(level);
        FQ_ASSIGN_OR_RETURN(std::vector<store::ModuleRef> mods, pack->catalog().EqmModules(q.id));
        rows.push_back(std::move(mods));
      }
    }
    if (r->levels_.empty()) {
      return Status::InvalidArgument(where + ": ensemble '" + e.name + "' has no EQMs");
    }
    FQ_ASSIGN_OR_RETURN(r->manifest_, pack->EqmManifest(e.id, r->levels_[0].step));
  } else {
    if (!options.ensemble.empty() && !options.qms_only) {
      return Status::NotFound(where + ": the pack has no ensemble '" + options.ensemble + "'");
    }
    r->qms_only_ = true;
    FQ_ASSIGN_OR_RETURN(std::vector<store::QmInfo> qms, pack->Qms());
    for (const store::QmInfo& q : qms) {
      if (q.partial) continue;
      ResidencyLevel level;
      level.label = q.label;
      r->levels_.push_back(level);
      FQ_ASSIGN_OR_RETURN(std::vector<store::ModuleRef> mods, pack->catalog().QmModules(q.id));
      rows.push_back(std::move(mods));
    }
  }
  if (r->levels_.empty()) {
    return Status::InvalidArgument(where +
                                   ": the pack holds no ensemble and no complete QM to run");
  }
  if (r->qms_only_) {
    // A ladder of whole QMs, largest first.
    std::vector<size_t> order(r->levels_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::vector<uint64_t> sums(order.size(), 0);
    for (size_t i = 0; i < order.size(); ++i) {
      for (const store::ModuleRef& m : rows[i]) sums[i] += m.raw_bytes;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return sums[a] > sums[b]; });
    std::vector<ResidencyLevel> levels;
    std::vector<std::vector<store::ModuleRef>> sorted_rows;
    for (size_t i : order) {
      levels.push_back(r->levels_[i]);
      sorted_rows.push_back(std::move(rows[i]));
    }
    r->levels_ = std::move(levels);
    rows = std::move(sorted_rows);
    FQ_ASSIGN_OR_RETURN(r->manifest_, pack->QmManifest(r->levels_[0].label));
  }
  FQ_ASSIGN_OR_RETURN(r->hp_, Model::Validate(r->manifest_));

  const std::vector<store::ManifestSlot>& slots = r->manifest_.slots;
  std::map<int, int> position_of_idx;
  for (size_t p = 0; p < slots.size(); ++p) {
    position_of_idx[slots[p].idx] = static_cast<int>(p);
    r->slot_idx_.push_back(slots[p].idx);
    const store::ModuleDesc& d = slots[p].desc;
    if (d.ne[1] * d.ne[2] * d.ne[3] == 1) r->norm_floats_ += d.ne[0];
  }
  for (size_t l = 0; l < r->levels_.size(); ++l) {
    ResidencyLevel& level = r->levels_[l];
    const std::string what = where + ": " + level.label;
    if (rows[l].size() != slots.size()) {
      return Status::Corruption(what + " has " + std::to_string(rows[l].size()) + " modules for " +
                                std::to_string(slots.size()) + " slots");
    }
    level.modules.assign(slots.size(), -1);
    for (const store::ModuleRef& ref : rows[l]) {
      auto pos = position_of_idx.find(ref.slot_idx);
      if (pos == position_of_idx.end() || level.modules[pos->second] != -1) {
        return Status::Corruption(what + ": bad slot " + std::to_string(ref.slot_idx));
      }
      const store::ManifestSlot& slot = slots[static_cast<size_t>(pos->second)];
      Result<int> m = r->ModuleIndex(ref.key);
      if (!m.ok())
        return Status::Corruption(what + ": tensor '" + slot.name + "': " + m.status().message());
      const ResidentModuleInfo& info = r->modules_[static_cast<size_t>(*m)];
      if (!info.desc.SameShape(slot.desc)) {
        return Status::Corruption(what + ": tensor '" + slot.name + "' has shape " +
                                  info.desc.ShapeString() + ", the slot takes " +
                                  slot.desc.ShapeString());
      }
      Status exec = CheckExecutable(info.desc.qtype, slot.name);
      if (!exec.ok()) return exec.WithContext(what);
      level.modules[pos->second] = *m;
    }
    // A module two slots share (a tied embedding quantized alike) is held once.
    std::vector<int> distinct = level.modules;
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    for (int m : distinct) level.footprint += r->modules_[static_cast<size_t>(m)].bytes;
  }
  r->bound_.assign(slots.size(), -1);
  r->held_.assign(slots.size(), -1);
  r->PublishStats();
  return r;
}

Result<int> ResidencyManager::LevelOfStep(int step) const {
  if (qms_only_) {
    std::string labels;
    for (const ResidencyLevel& l : levels_) labels += (labels.empty() ? "" : ", ") + l.label;
    return Status::InvalidArgument(pack_->path() + " has no ensemble, so no EQM " +
                                   std::to_string(step) + "; its QMs: " + labels +
                                   " (choose one with --qm)");
  }
  for (size_t i = 0; i < levels_.size(); ++i) {
    if (levels_[i].step == step) return static_cast<int>(i);
  }
  return Status::InvalidArgument("EQM " + std::to_string(step) + " is out of range: ensemble '" +
                                 ensemble_name_ + "' has EQMs " +
                                 std::to_string(levels_.front().step) + ".." +
                                 std::to_string(levels_.back().step));
}

Result<int> ResidencyManager::LevelOfLabel(const std::string& label) const {
  std::string labels;
  for (size_t i = 0; i < levels_.size(); ++i) {
    if (levels_[i].label == label) return static_cast<int>(i);
    labels += (labels.empty() ? "" : ", ") + levels_[i].label;
  }
  return Status::InvalidArgument(pack_->path() + ": no level '" + label +
                                 "' (there are: " + labels + ")");
}

uint64_t ResidencyManager::ExtraCopyBytes(int level) const {
  // Called with stats_mu_ held: reads the snapshot of held copies.
  uint64_t extra = 0;
  const std::vector<int>& mods = levels_[static_cast<size_t>(level)].modules;
  std::vector<int> counted;
  for (const auto& [m, bytes] : copy_snapshot_) {
    if (std::find(mods.begin(), mods.end(), m) != mods.end()) continue;
    if (std::find(counted.begin(), counted.end(), m) != counted.end()) continue;
    counted.push_back(m);
    extra += bytes;
  }
  return extra;
}

uint64_t ResidencyManager::MinimumBudget() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  uint64_t best = UINT64_MAX;
  for (size_t i = 0; i < levels_.size(); ++i) {
    best = std::min(best, levels_[i].footprint + overhead_ + ExtraCopyBytes(static_cast<int>(i)));
  }
  return best;
}

Result<int> ResidencyManager::LevelForBudget(uint64_t budget) const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  int best = -1;
  int smallest = 0;
  uint64_t smallest_need = UINT64_MAX;
  for (size_t i = 0; i < levels_.size(); ++i) {
    const uint64_t extra = ExtraCopyBytes(static_cast<int>(i));
    const uint64_t need = levels_[i].footprint + overhead_ + extra;
    if (need < smallest_need) {
      smallest_need = need;
      smallest = static_cast<int>(i);
    }
    if (need <= budget &&
        (best < 0 || levels_[i].footprint > levels_[static_cast<size_t>(best)].footprint)) {
      best = static_cast<int>(i);
    }
  }
  if (best >= 0) return best;
  const ResidencyLevel& s = levels_[static_cast<size_t>(smallest)];
  return Status::InvalidArgument(
      "budget " + BytesText(budget) + " is below the smallest " + (qms_only_ ? "QM" : "EQM") +
      ": " + s.label + " needs at least " + BytesText(smallest_need) + ": weights " +
      FormatBytes(s.footprint) + " + KV cache and scratch " + FormatBytes(overhead_) +
      (smallest_need > s.footprint + overhead_
           ? " + held copies " + FormatBytes(smallest_need - s.footprint - overhead_)
           : ""));
}

}  // namespace fqpack::runtime
