#include "runtime/residency.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>

#include "pack/format.h"
#include "runtime/llama.h"
#include "runtime/matmul.h"
#include "schema/log.h"
#include "schema/quant_types.h"
#include "schema/units.h"

namespace fqpack::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// The largest micro-batch a Session evaluates at once (llama.cc's kMaxUbatch).
constexpr int64_t kMaxRows = 512;

// Linux maps up to this many bytes of page-cache pages around a read fault
// in a file mapping (fault_around_bytes, 64 KiB by default), aligned to it.
constexpr uint64_t kFaultAroundBytes = 64 * 1024;

std::string BytesText(uint64_t bytes) {
  return std::to_string(bytes) + " bytes (" + FormatBytes(bytes) + ")";
}

}  // namespace

RuntimeOverhead EstimateOverhead(const LlamaHparams& hp, int64_t n_ctx, int64_t n_batch,
                                 int64_t n_logit_rows, int threads, uint64_t norm_floats) {
  RuntimeOverhead o;
  o.kv_cache = KvCacheBytes(hp, n_ctx);
  const uint64_t rows = static_cast<uint64_t>(std::clamp<int64_t>(n_batch, 1, kMaxRows));
  const uint64_t per_row = static_cast<uint64_t>(5 * hp.n_embd + 2 * hp.n_embd_kv() + 2 * hp.n_ff +
                                                 hp.n_rot + std::max(hp.n_embd, hp.n_ff));
  const uint64_t logits = static_cast<uint64_t>(std::max<int64_t>(n_logit_rows, 1)) *
                          static_cast<uint64_t>(hp.n_vocab);
  const uint64_t attention = static_cast<uint64_t>(std::max(threads, 1)) *
                             static_cast<uint64_t>((n_ctx + 7) & ~int64_t{7});
  o.scratch = sizeof(float) * (rows * per_row + logits + attention + norm_floats);
  return o;
}

// One raw payload mapped on its own. A VMA of just its pages means a fault
// on it never maps a neighbour's pages (the kernel maps up to 64 KiB around
// a read fault, within the VMA), and munmap or madvise(DONTNEED) gives back
// exactly its pages. On a 7B model fault-around adds a percent or two; on
// small models with 10-100 KiB modules it added 45% of mapped pages no EQM
// uses.
class ResidencyManager::Region {
 public:
  Region(uint8_t* base, size_t len) : base_(base), len_(len) {}
  ~Region() { ::munmap(base_, len_); }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  // Maps every page now (Linux 5.14+; older kernels refuse with EINVAL and
  // the pages are touched one by one instead).
  void Populate(size_t page) const {
#ifdef MADV_POPULATE_READ
    if (::madvise(base_, len_, MADV_POPULATE_READ) == 0) return;
#endif
    volatile const uint8_t* p = base_;
    uint8_t sink = 0;
    for (size_t off = 0; off < len_; off += page) sink ^= p[off];
    (void)sink;
  }
  void DontNeed() const {
    if (::madvise(base_, len_, MADV_DONTNEED) != 0) Warn(std::string("madvise(dontneed): ") + std::strerror(errno));
  }
  const uint8_t* base() const { return base_; }
  size_t len() const { return len_; }

 private:
  uint8_t* base_;
  size_t len_;
};

// Hands modules to Model::Load at Start: each key loaded once (two slots may
// hold the same module).
class ResidencyManager::StartSource : public store::ModuleSource {
 public:
  explicit StartSource(ResidencyManager* owner) : owner_(owner) {}
  Result<store::ModuleData> Load(const store::ModuleKey& key) override {
    auto it = owner_->module_of_key_.find(key);
    if (it == owner_->module_of_key_.end()) return Status::NotFound("no module " + key.Hex());
    const int m = it->second;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto have = loaded_.find(m);
      if (have != loaded_.end()) return have->second.first;
    }
    std::shared_ptr<Region> region;
    FQ_ASSIGN_OR_RETURN(store::ModuleData data, owner_->LoadModule(m, &region));
    std::lock_guard<std::mutex> lock(mu_);
    return loaded_.emplace(m, std::make_pair(std::move(data), std::move(region))).first->second.first;
  }
  std::shared_ptr<Region> region(int m) {
    auto it = loaded_.find(m);
    return it == loaded_.end() ? nullptr : it->second.second;
  }

 private:
  ResidencyManager* owner_;
  std::mutex mu_;
  std::unordered_map<int, std::pair<store::ModuleData, std::shared_ptr<Region>>> loaded_;
};

Result<store::ModuleData> ResidencyManager::LoadModule(int m, std::shared_ptr<Region>* region) const {
  const ResidentModuleInfo& info = modules_[static_cast<size_t>(m)];
  const pack::PayloadInfo& p = pack_->payloads()[info.payload];
  if (info.zstd) {
    FQ_ASSIGN_OR_RETURN(store::ModuleData data, pack_->Load(info.key));
    // The compressed bytes were read to decode; their pages go back at once,
    // with the neighbours the kernel mapped around the faults. Nothing else
    // needs the reader's mapping of the payloads to stay mapped: raw modules
    // have mappings of their own.
    pack::PayloadInfo pages;
    pages.offset = p.offset / kFaultAroundBytes * kFaultAroundBytes;
    pages.stored_bytes =
        (p.offset + p.stored_bytes + kFaultAroundBytes - 1) / kFaultAroundBytes * kFaultAroundBytes - pages.offset;
    pack_->Release(pages);
    return data;
  }
  const uint64_t base = p.offset / page_size_ * page_size_;
  const size_t len = static_cast<size_t>(p.offset + p.stored_bytes - base);
  void* addr = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd_, static_cast<off_t>(base));
  if (addr == MAP_FAILED) {
    return Status::IOError(pack_->path() + ": mapping module " + info.key.Hex() + ": " + std::strerror(errno));
  }
  auto r = std::make_shared<Region>(static_cast<uint8_t*>(addr), len);
  if (options_.prefault) r->Populate(page_size_);
  const ByteSpan bytes(r->base() + (p.offset - base), static_cast<size_t>(p.stored_bytes));
  if (!verified_[static_cast<size_t>(m)].load(std::memory_order_acquire)) {
    if (store::ComputeModuleKey(info.desc, bytes) != info.key) {
      return Status::Corruption(pack_->path() + ": module " + info.key.Hex() +
                                ": payload does not hash to its key (damaged)");
    }
    verified_[static_cast<size_t>(m)].store(true, std::memory_order_release);
  }
  store::ModuleData data = store::ModuleData::View(bytes, r);
  data.set_owned(false);
  *region = std::move(r);
  return data;
}

Result<uint64_t> ResidencyManager::MappedPresentBytes() const {
  uint64_t n = 0;
  for (const Resident& r : resident_) {
    if (r.region == nullptr) continue;
    FQ_ASSIGN_OR_RETURN(uint64_t present, PresentBytes(r.region->base(), r.region->len()));
    n += present;
  }
  return n;
}

ResidencyManager::~ResidencyManager() {
  model_.reset();
  resident_.clear();
  if (fd_ >= 0) ::close(fd_);
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
      ::pread(r->fd_, footer, sizeof(footer), static_cast<off_t>(pack->file_size() - sizeof(footer))) !=
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
    return Status::InvalidArgument(where + ": the pack holds no ensemble and no complete QM to run");
  }
  if (r->qms_only_) {
    // A ladder of whole QMs, largest first.
    std::vector<size_t> order(r->levels_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::vector<uint64_t> sums(order.size(), 0);
    for (size_t i = 0; i < order.size(); ++i) {
      for (const store::ModuleRef& m : rows[i]) sums[i] += m.raw_bytes;
    }
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sums[a] > sums[b]; });
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
      if (!m.ok()) return Status::Corruption(what + ": tensor '" + slot.name + "': " + m.status().message());
      const ResidentModuleInfo& info = r->modules_[static_cast<size_t>(*m)];
      if (!info.desc.SameShape(slot.desc)) {
        return Status::Corruption(what + ": tensor '" + slot.name + "' has shape " + info.desc.ShapeString() +
                                  ", the slot takes " + slot.desc.ShapeString());
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
    return Status::InvalidArgument(pack_->path() + " has no ensemble, so no EQM " + std::to_string(step) +
                                   "; its QMs: " + labels + " (choose one with --qm)");
  }
  for (size_t i = 0; i < levels_.size(); ++i) {
    if (levels_[i].step == step) return static_cast<int>(i);
  }
  return Status::InvalidArgument("EQM " + std::to_string(step) + " is out of range: ensemble '" +
                                 ensemble_name_ + "' has EQMs " + std::to_string(levels_.front().step) + ".." +
                                 std::to_string(levels_.back().step));
}

Result<int> ResidencyManager::LevelOfLabel(const std::string& label) const {
  std::string labels;
  for (size_t i = 0; i < levels_.size(); ++i) {
    if (levels_[i].label == label) return static_cast<int>(i);
    labels += (labels.empty() ? "" : ", ") + levels_[i].label;
  }
  return Status::InvalidArgument(pack_->path() + ": no level '" + label + "' (there are: " + labels + ")");
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
    if (need <= budget && (best < 0 || levels_[i].footprint > levels_[static_cast<size_t>(best)].footprint)) {
      best = static_cast<int>(i);
    }
  }
  if (best >= 0) return best;
  const ResidencyLevel& s = levels_[static_cast<size_t>(smallest)];
  return Status::InvalidArgument(
      "budget " + BytesText(budget) + " is below the smallest " + (qms_only_ ? "QM" : "EQM") + ": " + s.label +
      " needs at least " + BytesText(smallest_need) + ": weights " + FormatBytes(s.footprint) +
      " + KV cache and scratch " + FormatBytes(overhead_) +
      (smallest_need > s.footprint + overhead_ ? " + held copies " +
                                                     FormatBytes(smallest_need - s.footprint - overhead_)
                                               : ""));
}

void ResidencyManager::Account(int64_t delta, TransitionRecord* rec) {
  resident_bytes_ = static_cast<uint64_t>(static_cast<int64_t>(resident_bytes_) + delta);
  if (rec != nullptr) rec->peak_bytes = std::max(rec->peak_bytes, resident_bytes_);
}

Status ResidencyManager::Acquire(int m, TransitionRecord* rec) {
  Resident& r = resident_[static_cast<size_t>(m)];
  const ResidentModuleInfo& info = modules_[static_cast<size_t>(m)];
  if (!r.present) {
    if (r.data.size() == 0) {
      FQ_ASSIGN_OR_RETURN(r.data, LoadModule(m, &r.region));
    } else if (r.region != nullptr && options_.prefault) {
      r.region->Populate(page_size_);  // released early and wanted again
    }
    if (info.zstd) owned_bytes_ += info.bytes;
    r.present = true;
    Account(static_cast<int64_t>(info.bytes), rec);
    if (rec != nullptr) {
      rec->bytes_in += info.bytes;
      rec->bytes_read += pack_->payloads()[info.payload].stored_bytes;
    }
  }
  ++r.refs;
  return Status::OK();
}

void ResidencyManager::Drop(int m, TransitionRecord* rec) {
  Resident& r = resident_[static_cast<size_t>(m)];
  const ResidentModuleInfo& info = modules_[static_cast<size_t>(m)];
  if (!r.present) return;
  r.present = false;
  if (info.zstd) {
    owned_bytes_ -= info.bytes;
  } else if (r.region != nullptr) {
    // The slot may still point here (released before its replacement is
    // loaded): the pages go now, the mapping when the last holder lets go.
    r.region->DontNeed();
  }
  Account(-static_cast<int64_t>(info.bytes), rec);
  if (rec != nullptr) rec->bytes_out += info.bytes;
}

void ResidencyManager::Unref(int m, TransitionRecord* rec) {
  Resident& r = resident_[static_cast<size_t>(m)];
  if (--r.refs > 0) return;
  r.data = store::ModuleData();
  if (r.region != nullptr && r.region.use_count() == 1 && r.present) {
    // The slot let go of it in Bind, so unmapping gives the pages back: one
    // system call (and one TLB flush) instead of madvise and then munmap.
    r.region.reset();
    const ResidentModuleInfo& info = modules_[static_cast<size_t>(m)];
    r.present = false;
    Account(-static_cast<int64_t>(info.bytes), rec);
    if (rec != nullptr) rec->bytes_out += info.bytes;
    return;
  }
  Drop(m, rec);
  // The last holders of the decoded buffer or the mapping.
  r.region.reset();
}

Status ResidencyManager::Bind(int position, int m) {
  const Resident& r = resident_[static_cast<size_t>(m)];
  FQ_RETURN_IF_ERROR(model_->SetSlot(slot_idx_[static_cast<size_t>(position)], r.data,
                                     modules_[static_cast<size_t>(m)].desc));
  bound_[static_cast<size_t>(position)] = m;
  return Status::OK();
}

Status ResidencyManager::Start(int level, ThreadPool* pool) {
  if (model_ != nullptr) return Status::InvalidArgument("the residency manager has started already");
  if (level < 0 || static_cast<size_t>(level) >= levels_.size()) {
    return Status::InvalidArgument("no level " + std::to_string(level));
  }
  const ResidencyLevel& L = levels_[static_cast<size_t>(level)];
  store::ModelManifest manifest = manifest_;
  manifest.label = L.label;
  for (size_t p = 0; p < manifest.slots.size(); ++p) {
    const ResidentModuleInfo& info = modules_[static_cast<size_t>(L.modules[p])];
    manifest.slots[p].key = info.key;
    manifest.slots[p].desc = info.desc;
    manifest.slots[p].bytes = info.bytes;
  }
  const Clock::time_point t0 = Clock::now();
  StartSource source(this);
  FQ_ASSIGN_OR_RETURN(model_, Model::Load(manifest, &source, pool));
  TransitionRecord rec;
  for (size_t p = 0; p < manifest.slots.size(); ++p) {
    const int m = L.modules[p];
    Resident& r = resident_[static_cast<size_t>(m)];
    if (r.data.size() == 0) {
      r.data = model_->slot_at(static_cast<int>(p)).data;
      r.region = source.region(m);
    }
    FQ_RETURN_IF_ERROR(Acquire(m, &rec));
    held_[p] = m;
    bound_[p] = m;
  }
  level_ = level;
  totals_.bytes_in += rec.bytes_in;
  totals_.bytes_read += rec.bytes_read;
  totals_.max_peak_bytes = std::max(totals_.max_peak_bytes, resident_bytes_);
  totals_.transition_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  PublishStats();
  return Status::OK();
}

Result<TransitionRecord> ResidencyManager::TransitionTo(int level) {
  if (model_ == nullptr) return Status::InvalidArgument("the residency manager has not started");
  if (level < 0 || static_cast<size_t>(level) >= levels_.size()) {
    return Status::InvalidArgument("no level " + std::to_string(level));
  }
  const Clock::time_point t0 = Clock::now();
  const ResidencyLevel& L = levels_[static_cast<size_t>(level)];
  TransitionRecord rec;
  rec.from = level_;
  rec.to = level;
  rec.from_label = level_ >= 0 ? levels_[static_cast<size_t>(level_)].label : "mixed";
  rec.to_label = L.label;
  rec.budget = budget_;
  rec.resident_before = resident_bytes_;
  rec.peak_bytes = resident_bytes_;
  const uint64_t owned_before = owned_bytes_;

  // References each module keeps once the transition is done, and the bytes
  // held then.
  std::unordered_map<int, int> final_refs;
  for (int m : L.modules) ++final_refs[m];
  for (const auto& [pos, m] : copies_) ++final_refs[m];
  uint64_t end_bytes = 0;
  for (const auto& [m, refs] : final_refs) end_bytes += modules_[static_cast<size_t>(m)].bytes;
  // Memory never goes above the larger of the start and the end.
  const uint64_t limit = std::max(resident_bytes_, end_bytes);
  // Slots whose old module is mapped go first, those that free the most
  // first, so room builds up quickly. Slots holding a decoded buffer go last
  // (see the header: their buffer can only be freed once the slot points
  // elsewhere), smallest replacement first: the first overshoots by the
  // least, and each later one finds the room the earlier ones freed.
  auto bytes_of = [&](int m) { return static_cast<int64_t>(modules_[static_cast<size_t>(m)].bytes); };
  std::vector<int> mapped_first, decoded_last;
  for (size_t p = 0; p < held_.size(); ++p) {
    if (held_[p] == L.modules[p]) continue;
    (modules_[static_cast<size_t>(held_[p])].zstd ? decoded_last : mapped_first).push_back(static_cast<int>(p));
  }
  std::stable_sort(mapped_first.begin(), mapped_first.end(), [&](int a, int b) {
    return bytes_of(held_[static_cast<size_t>(a)]) - bytes_of(L.modules[static_cast<size_t>(a)]) >
           bytes_of(held_[static_cast<size_t>(b)]) - bytes_of(L.modules[static_cast<size_t>(b)]);
  });
  std::stable_sort(decoded_last.begin(), decoded_last.end(), [&](int a, int b) {
    return bytes_of(L.modules[static_cast<size_t>(a)]) < bytes_of(L.modules[static_cast<size_t>(b)]);
  });
  std::vector<int> order = mapped_first;
  order.insert(order.end(), decoded_last.begin(), decoded_last.end());

  Status status;
  for (int p : order) {
    const int old_m = held_[static_cast<size_t>(p)];
    const int new_m = L.modules[static_cast<size_t>(p)];
    // A mapped old module that is going anyway is released before its
    // replacement comes in when there is no room for both. Otherwise it goes
    // after (one unmap, instead of madvise now and unmap later).
    const uint64_t incoming = resident_[static_cast<size_t>(new_m)].present ? 0 : modules_[static_cast<size_t>(new_m)].bytes;
    if (!modules_[static_cast<size_t>(old_m)].zstd && final_refs[old_m] == 0 &&
        resident_bytes_ + incoming > limit) {
      Drop(old_m, &rec);
    }
    status = Acquire(new_m, &rec);
    if (status.ok()) {
      status = Bind(p, new_m);
      if (!status.ok()) Unref(new_m, &rec);
    }
    if (!status.ok()) break;
    held_[static_cast<size_t>(p)] = new_m;
    Unref(old_m, &rec);
    ++rec.modules_swapped;
  }
  // Slots running a held copy go back to the level's module (no I/O).
  for (size_t p = 0; p < held_.size() && status.ok(); ++p) {
    if (bound_[p] != held_[p]) status = Bind(static_cast<int>(p), held_[p]);
  }
  if (!status.ok()) {
    // Modules still held whose pages went early are mapped again lazily;
    // count them as present so the books match what the model can touch.
    for (size_t m = 0; m < resident_.size(); ++m) {
      Resident& r = resident_[m];
      if (r.refs > 0 && !r.present) {
        r.present = true;
        Account(static_cast<int64_t>(modules_[m].bytes), nullptr);
      }
    }
    level_ = -1;
    PublishStats();
    return status.WithContext("transition from " + rec.from_label + " to " + rec.to_label);
  }
  level_ = level;
  rec.resident_after = resident_bytes_;
#ifdef __GLIBC__
  // glibc keeps freed decoded buffers in its heap (after a large free it
  // raises its mmap threshold, so later buffers of that size come from the
  // heap): give their pages back, or the process would not shrink.
  if (owned_bytes_ < owned_before) ::malloc_trim(0);
#endif
  rec.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (rec.modules_swapped > 0) {
    ++totals_.transitions;
    totals_.modules_swapped += rec.modules_swapped;
    totals_.bytes_in += rec.bytes_in;
    totals_.bytes_read += rec.bytes_read;
    totals_.transition_seconds += rec.seconds;
    totals_.max_peak_bytes = std::max(totals_.max_peak_bytes, rec.peak_bytes);
  }
  PublishStats();
  return rec;
}

Result<TransitionRecord> ResidencyManager::SetBudget(uint64_t budget) {
  FQ_ASSIGN_OR_RETURN(int level, LevelForBudget(budget));
  budget_ = budget;
  FQ_ASSIGN_OR_RETURN(TransitionRecord rec, TransitionTo(level));
  rec.budget = budget;
  return rec;
}

Status ResidencyManager::RequestBudget(uint64_t budget) {
  if (budget == 0) return Status::InvalidArgument("a budget must be more than 0 bytes");
  Result<int> level = LevelForBudget(budget);
  if (!level.ok()) return level.status();
  pending_.store(budget);
  return Status::OK();
}

Result<std::optional<TransitionRecord>> ResidencyManager::ApplyPendingBudget() {
  const uint64_t budget = pending_.exchange(0);
  if (budget == 0) return std::optional<TransitionRecord>();
  FQ_ASSIGN_OR_RETURN(TransitionRecord rec, SetBudget(budget));
  return std::optional<TransitionRecord>(std::move(rec));
}

Status ResidencyManager::HoldCopy(int slot_idx, const store::ModuleKey& key) {
  if (model_ == nullptr) return Status::InvalidArgument("the residency manager has not started");
  auto pos = std::find(slot_idx_.begin(), slot_idx_.end(), slot_idx);
  if (pos == slot_idx_.end()) return Status::InvalidArgument("no slot with idx " + std::to_string(slot_idx));
  const int p = static_cast<int>(pos - slot_idx_.begin());
  FQ_ASSIGN_OR_RETURN(int m, ModuleIndex(key));
  const store::ManifestSlot& slot = manifest_.slots[static_cast<size_t>(p)];
  if (!modules_[static_cast<size_t>(m)].desc.SameShape(slot.desc)) {
    return Status::InvalidArgument("module " + key.Hex() + " has shape " +
                                   modules_[static_cast<size_t>(m)].desc.ShapeString() + "; slot '" + slot.name +
                                   "' takes " + slot.desc.ShapeString());
  }
  FQ_RETURN_IF_ERROR(CheckExecutable(modules_[static_cast<size_t>(m)].desc.qtype, slot.name));
  TransitionRecord rec;
  FQ_RETURN_IF_ERROR(Acquire(m, &rec));
  copies_.emplace_back(p, m);
  totals_.bytes_in += rec.bytes_in;
  totals_.bytes_read += rec.bytes_read;
  PublishStats();
  return Status::OK();
}

Status ResidencyManager::UseCopy(int slot_idx, const store::ModuleKey& key) {
  if (model_ == nullptr) return Status::InvalidArgument("the residency manager has not started");
  auto pos = std::find(slot_idx_.begin(), slot_idx_.end(), slot_idx);
  auto m_it = module_of_key_.find(key);
  if (pos == slot_idx_.end() || m_it == module_of_key_.end() ||
      resident_[static_cast<size_t>(m_it->second)].refs == 0) {
    return Status::InvalidArgument("slot " + std::to_string(slot_idx) + " holds no module " + key.Hex() +
                                   " (HoldCopy it first)");
  }
  const int p = static_cast<int>(pos - slot_idx_.begin());
  const int m = m_it->second;
  const bool held = held_[static_cast<size_t>(p)] == m ||
                    std::find(copies_.begin(), copies_.end(), std::make_pair(p, m)) != copies_.end();
  if (!held) {
    return Status::InvalidArgument("slot " + std::to_string(slot_idx) + " holds no module " + key.Hex() +
                                   " (HoldCopy it for this slot first)");
  }
  if (bound_[static_cast<size_t>(p)] == m) return Status::OK();
  return Bind(p, m);
}

void ResidencyManager::DropCopies() {
  for (const auto& [p, m] : copies_) {
    const size_t pos = static_cast<size_t>(p);
    // Binding a slot back to the module its level holds cannot fail: it ran before.
    if (bound_[pos] == m && held_[pos] != m) (void)Bind(p, held_[pos]);
    Unref(m, nullptr);
  }
  copies_.clear();
  PublishStats();
}

uint64_t ResidencyManager::copy_bytes() const {
  uint64_t n = 0;
  std::vector<int> counted;
  for (const auto& [p, m] : copies_) {
    if (std::find(held_.begin(), held_.end(), m) != held_.end()) continue;
    if (std::find(counted.begin(), counted.end(), m) != counted.end()) continue;
    counted.push_back(m);
    n += modules_[static_cast<size_t>(m)].bytes;
  }
  return n;
}

void ResidencyManager::PublishStats() {
  std::lock_guard<std::mutex> lock(stats_mu_);
  published_ = totals_;
  published_.level = level_;
  if (level_ >= 0) {
    const ResidencyLevel& L = levels_[static_cast<size_t>(level_)];
    published_.label = L.label;
    published_.step = L.step;
    published_.footprint = L.footprint;
  } else {
    published_.label = model_ == nullptr ? "" : "mixed";
    published_.step = -1;
    published_.footprint = 0;
  }
  published_.resident_bytes = resident_bytes_;
  published_.owned_bytes = owned_bytes_;
  published_.overhead_bytes = overhead_;
  published_.budget = budget_;
  copy_snapshot_.clear();
  for (const auto& [p, m] : copies_) copy_snapshot_.emplace_back(m, modules_[static_cast<size_t>(m)].bytes);
}

ResidencyStats ResidencyManager::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return published_;
}

Result<uint64_t> PresentBytes(const void* addr, size_t size) {
  if (size == 0) return uint64_t{0};
  const long page_l = ::sysconf(_SC_PAGESIZE);
  const uint64_t page = page_l > 0 ? static_cast<uint64_t>(page_l) : 4096;
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(std::string("/proc/self/pagemap: ") + std::strerror(errno));
  const uint64_t first = reinterpret_cast<uintptr_t>(addr) / page;
  const uint64_t last = (reinterpret_cast<uintptr_t>(addr) + size - 1) / page;
  std::vector<uint64_t> entries(4096);
  uint64_t present = 0;
  Status status;
  for (uint64_t p = first; p <= last && status.ok();) {
    const uint64_t n = std::min<uint64_t>(entries.size(), last - p + 1);
    const ssize_t got = ::pread(fd, entries.data(), n * sizeof(uint64_t), static_cast<off_t>(p * sizeof(uint64_t)));
    if (got != static_cast<ssize_t>(n * sizeof(uint64_t))) {
      status = Status::IOError(std::string("/proc/self/pagemap: short read: ") + std::strerror(errno));
      break;
    }
    // Bit 63: the page is present in this process's page tables.
    for (uint64_t i = 0; i < n; ++i) present += (entries[i] >> 63) & 1;
    p += n;
  }
  ::close(fd);
  if (!status.ok()) return status;
  return present * page;
}

Result<uint64_t> ProcessRssBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return Status::IOError(std::string("/proc/self/statm: ") + std::strerror(errno));
  unsigned long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2) return Status::IOError("/proc/self/statm: unreadable");
  const long page = ::sysconf(_SC_PAGESIZE);
  return static_cast<uint64_t>(resident) * static_cast<uint64_t>(page > 0 ? page : 4096);
}

Result<uint64_t> PackPayloadPresentBytes(const pack::PackReader& pack) {
  pack::PayloadInfo area;
  area.offset = pack::kHeaderSize;
  area.stored_bytes = pack.footer().payload_end - pack::kHeaderSize;
  const ByteSpan bytes = pack.PayloadBytes(area);
  return PresentBytes(bytes.data(), bytes.size());
}

}  // namespace fqpack::runtime
