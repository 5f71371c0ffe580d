// The residency manager's transitions: loading a level (Start), moving
// between levels slot by slot (TransitionTo, budgets), held copies, stats.
// The planner (levels, budgets) is residency.cc; how a module's bytes are
// mapped or decoded is region_map.cc.
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "runtime/matmul.h"
#include "runtime/region_map.h"
#include "runtime/residency.h"

namespace fqpack::runtime {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

ResidencyManager::~ResidencyManager() {
  model_.reset();
  resident_.clear();
  if (fd_ >= 0) ::close(fd_);
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
  if (model_ != nullptr)
    return Status::InvalidArgument("the residency manager has started already");
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
  auto bytes_of = [&](int m) {
    return static_cast<int64_t>(modules_[static_cast<size_t>(m)].bytes);
  };
  std::vector<int> mapped_first, decoded_last;
  for (size_t p = 0; p < held_.size(); ++p) {
    if (held_[p] == L.modules[p]) continue;
    (modules_[static_cast<size_t>(held_[p])].zstd ? decoded_last : mapped_first)
        .push_back(static_cast<int>(p));
  }
  std::stable_sort(mapped_first.begin(), mapped_first.end(), [&](int a, int b) {
    return bytes_of(held_[static_cast<size_t>(a)]) - bytes_of(L.modules[static_cast<size_t>(a)]) >
           bytes_of(held_[static_cast<size_t>(b)]) - bytes_of(L.modules[static_cast<size_t>(b)]);
  });
  std::stable_sort(decoded_last.begin(), decoded_last.end(), [&](int a, int b) {
    return bytes_of(L.modules[static_cast<size_t>(a)]) <
           bytes_of(L.modules[static_cast<size_t>(b)]);
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
    const uint64_t incoming = resident_[static_cast<size_t>(new_m)].present
                                  ? 0
                                  : modules_[static_cast<size_t>(new_m)].bytes;
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
  rec.finished_at =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
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
  if (pos == slot_idx_.end())
    return Status::InvalidArgument("no slot with idx " + std::to_string(slot_idx));
  const int p = static_cast<int>(pos - slot_idx_.begin());
  FQ_ASSIGN_OR_RETURN(int m, ModuleIndex(key));
  const store::ManifestSlot& slot = manifest_.slots[static_cast<size_t>(p)];
  if (!modules_[static_cast<size_t>(m)].desc.SameShape(slot.desc)) {
    return Status::InvalidArgument("module " + key.Hex() + " has shape " +
                                   modules_[static_cast<size_t>(m)].desc.ShapeString() +
                                   "; slot '" + slot.name + "' takes " + slot.desc.ShapeString());
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
    return Status::InvalidArgument("slot " + std::to_string(slot_idx) + " holds no module " +
                                   key.Hex() + " (HoldCopy it first)");
  }
  const int p = static_cast<int>(pos - slot_idx_.begin());
  const int m = m_it->second;
  const bool held =
      held_[static_cast<size_t>(p)] == m ||
      std::find(copies_.begin(), copies_.end(), std::make_pair(p, m)) != copies_.end();
  if (!held) {
    return Status::InvalidArgument("slot " + std::to_string(slot_idx) + " holds no module " +
                                   key.Hex() + " (HoldCopy it for this slot first)");
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
  for (const auto& [p, m] : copies_)
    copy_snapshot_.emplace_back(m, modules_[static_cast<size_t>(m)].bytes);
}

ResidencyStats ResidencyManager::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return published_;
}

}  // namespace fqpack::runtime
