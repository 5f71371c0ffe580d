#include "runtime/matmul_hook.h"

namespace fqpack::runtime {
namespace {
thread_local MatMulObserver* g_observer = nullptr;
}  // namespace

MatMulObserver* CurrentMatMulObserver() { return g_observer; }

ScopedMatMulObserver::ScopedMatMulObserver(MatMulObserver* observer) : previous_(g_observer) {
  g_observer = observer;
}

ScopedMatMulObserver::~ScopedMatMulObserver() { g_observer = previous_; }

}  // namespace fqpack::runtime
