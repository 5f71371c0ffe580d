// Internal to the residency manager (residency.cc, residency_transitions.cc,
// region_map.cc; see runtime/residency.h): how a module's bytes are held.
// A raw payload gets a mapping of its own (Region); at Start, Model::Load
// reads modules through a StartSource that loads each one once.
#ifndef FQPACK_RUNTIME_REGION_MAP_H_
#define FQPACK_RUNTIME_REGION_MAP_H_

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "runtime/residency.h"
#include "schema/log.h"
#include "store/module_source.h"

namespace fqpack::runtime {

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
    if (::madvise(base_, len_, MADV_DONTNEED) != 0)
      Warn(std::string("madvise(dontneed): ") + std::strerror(errno));
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
    return loaded_.emplace(m, std::make_pair(std::move(data), std::move(region)))
        .first->second.first;
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

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_REGION_MAP_H_
