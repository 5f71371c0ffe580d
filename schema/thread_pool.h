// A fixed pool of worker threads for data-parallel loops (rows of a matmul,
// heads of attention, candidates of a search, the tensors of an import). The
// calling thread takes part in every loop, so a pool of size 1 runs
// everything inline. It lives in the base layer so that every layer above
// (the store's importer as much as the runtime) shares one implementation.
//
// A decoded token is some 150 matmuls of a few hundred microseconds each, so
// handing out a loop must cost far less than waking a sleeping thread (tens
// of microseconds through the kernel). Workers therefore spin on the job
// counter for a short while after each loop (kSpinMicros) before they sleep;
// a loop that starts while they spin reaches them in well under a
// microsecond, and an idle pool costs no CPU once that time has passed.
//
// Thread-safety: ParallelFor may be called from one thread at a time per
// pool; it blocks until the whole range is done.
#ifndef FQPACK_SCHEMA_THREAD_POOL_H_
#define FQPACK_SCHEMA_THREAD_POOL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace fqpack {

class ThreadPool {
 public:
  // How long an idle worker keeps checking for work before it sleeps.
  static constexpr int kSpinMicros = 200;

  // `n_threads` counts the caller; 0 means one per core. `spin_micros`
  // replaces kSpinMicros (0: workers sleep as soon as a loop ends, which
  // benchmarks use as the baseline).
  explicit ThreadPool(int n_threads = 0, int spin_micros = kSpinMicros);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint ranges that together cover [0, n), in
  // chunks of at least `min_chunk` items, on all threads of the pool.
  void ParallelFor(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn,
                   int64_t min_chunk = 1);

 private:
  void WorkerLoop();
  // Claims and runs chunks of the loop of generation `gen` until none is
  // left or a newer loop has replaced it.
  void RunChunks(uint32_t gen);

  // The loop being run. Written by the caller only while no loop is open
  // (every chunk of the last one done) and after it has closed the ticket
  // under the new generation, read by workers that hold a generation;
  // atomics so that a worker reading a loop that has already been replaced
  // is not a data race (its claim then fails).
  std::atomic<const std::function<void(int64_t, int64_t)>*> fn_{nullptr};
  std::atomic<int64_t> n_{0};
  std::atomic<int64_t> chunk_{1};
  std::atomic<uint32_t> n_chunks_{0};
  // (generation << 32) | next chunk to claim (all ones while a loop's
  // fields are written). A claim is a compare-exchange that names the
  // generation, so a worker can never take a chunk of a loop other than the
  // one whose fields it read.
  std::atomic<uint64_t> ticket_{0};
  // Chunks of the open loop that have finished.
  std::atomic<uint32_t> done_{0};
  // The generation alone, for sleeping workers to wait on.
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  const int spin_micros_;
  std::vector<std::thread> workers_;
};

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_THREAD_POOL_H_
