// A per-thread observer of MatMul's inputs. GPTQ calibration
// (quantize/calibration.h) collects the activations entering every
// linear layer this way while an unchanged forward pass runs; nothing else
// installs one, and without one MatMul only checks a thread-local pointer.
//
// Thread-safety: the observer is per thread; MatMul calls it on the thread
// that called MatMul (the forward pass's thread), before any work starts.
#ifndef FQPACK_RUNTIME_MATMUL_HOOK_H_
#define FQPACK_RUNTIME_MATMUL_HOOK_H_

#include <cstdint>

#include "runtime/matmul.h"

namespace fqpack::runtime {

class MatMulObserver {
 public:
  virtual ~MatMulObserver() = default;
  // `x` holds n_tokens rows of w.cols floats: the matmul's input.
  virtual void OnMatMul(const WeightView& w, const float* x, int64_t n_tokens) = 0;
};

// The calling thread's observer, or nullptr.
MatMulObserver* CurrentMatMulObserver();

// Installs an observer on the calling thread for the scope's lifetime (the
// previous one is restored after).
class ScopedMatMulObserver {
 public:
  explicit ScopedMatMulObserver(MatMulObserver* observer);
  ~ScopedMatMulObserver();
  ScopedMatMulObserver(const ScopedMatMulObserver&) = delete;
  ScopedMatMulObserver& operator=(const ScopedMatMulObserver&) = delete;

 private:
  MatMulObserver* previous_;
};

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_MATMUL_HOOK_H_
