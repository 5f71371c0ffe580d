// The thread pool moved to the base layer (schema/thread_pool.h). This
// header keeps the old name for code that still says runtime::ThreadPool
// (runtime/quantize/, search/report.cc); new code includes the schema header.
#ifndef FQPACK_RUNTIME_THREAD_POOL_H_
#define FQPACK_RUNTIME_THREAD_POOL_H_

#include "schema/thread_pool.h"

namespace fqpack::runtime {

using ::fqpack::ThreadPool;

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_THREAD_POOL_H_
