// Memory measured from the kernel's page tables (Linux /proc), for the
// residency manager's stats and the benchmarks: what is really in memory, as
// opposed to what the manager accounts.
//
// Thread-safety: the functions are reentrant.
#ifndef FQPACK_RUNTIME_OS_MEMORY_H_
#define FQPACK_RUNTIME_OS_MEMORY_H_

#include <cstddef>
#include <cstdint>

#include "pack/reader.h"
#include "schema/status.h"

namespace fqpack::runtime {

// Bytes of [addr, addr + size) mapped into this process now
// (/proc/self/pagemap "present" bits).
Result<uint64_t> PresentBytes(const void* addr, size_t size);
// The process's resident set (/proc/self/statm).
Result<uint64_t> ProcessRssBytes();
// Bytes of the pack's payload area mapped into this process.
Result<uint64_t> PackPayloadPresentBytes(const pack::PackReader& pack);

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_OS_MEMORY_H_
