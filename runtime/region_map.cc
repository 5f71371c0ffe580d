// The region mapper: a module's bytes from the pack, a raw payload mapped on
// its own (Region, verified against its key the first time), a zstd payload
// decoded by the PackReader.
#include "runtime/region_map.h"

#include <cerrno>
#include <cstring>

#include "pack/format.h"
#include "runtime/os_memory.h"
#include "schema/log.h"

namespace fqpack::runtime {
namespace {

// Linux maps up to this many bytes of page-cache pages around a read fault
// in a file mapping (fault_around_bytes, 64 KiB by default), aligned to it.
constexpr uint64_t kFaultAroundBytes = uint64_t{64} << 10;

}  // namespace

Result<store::ModuleData> ResidencyManager::LoadModule(int m,
                                                       std::shared_ptr<Region>* region) const {
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
    pages.stored_bytes = (p.offset + p.stored_bytes + kFaultAroundBytes - 1) / kFaultAroundBytes *
                             kFaultAroundBytes -
                         pages.offset;
    pack_->Release(pages);
    return data;
  }
  const uint64_t base = p.offset / page_size_ * page_size_;
  const size_t len = static_cast<size_t>(p.offset + p.stored_bytes - base);
  void* addr = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd_, static_cast<off_t>(base));
  if (addr == MAP_FAILED) {
    return Status::IOError(pack_->path() + ": mapping module " + info.key.Hex() + ": " +
                           std::strerror(errno));
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

}  // namespace fqpack::runtime
