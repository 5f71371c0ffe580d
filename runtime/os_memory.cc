#include "runtime/os_memory.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "pack/format.h"

namespace fqpack::runtime {

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
    const ssize_t got =
        ::pread(fd, entries.data(), n * sizeof(uint64_t), static_cast<off_t>(p * sizeof(uint64_t)));
    if (got != static_cast<ssize_t>(n * sizeof(uint64_t))) {
      status =
          Status::IOError(std::string("/proc/self/pagemap: short read: ") + std::strerror(errno));
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
  if (f == nullptr)
    return Status::IOError(std::string("/proc/self/statm: ") + std::strerror(errno));
  // "size resident shared text lib data dt", in pages.
  char line[256] = {};
  const bool read = std::fgets(line, sizeof line, f) != nullptr;
  std::fclose(f);
  const char* end = line + std::strlen(line);
  uint64_t size = 0, resident = 0;
  auto [after_size, e1] = std::from_chars(line, end, size);
  const char* p = after_size;
  while (p < end && *p == ' ') ++p;
  auto [after_resident, e2] = std::from_chars(p, end, resident);
  if (!read || e1 != std::errc() || e2 != std::errc() || after_resident == p)
    return Status::IOError("/proc/self/statm: unreadable");
  const long page = ::sysconf(_SC_PAGESIZE);
  return resident * static_cast<uint64_t>(page > 0 ? page : 4096);
}

Result<uint64_t> PackPayloadPresentBytes(const pack::PackReader& pack) {
  pack::PayloadInfo area;
  area.offset = pack::kHeaderSize;
  area.stored_bytes = pack.footer().payload_end - pack::kHeaderSize;
  const ByteSpan bytes = pack.PayloadBytes(area);
  return PresentBytes(bytes.data(), bytes.size());
}

}  // namespace fqpack::runtime
