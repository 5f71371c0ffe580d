// A fixed pool of worker threads for data-parallel loops (rows of a matmul,
// heads of attention, candidates of a search, the tensors of an import). The
// calling thread takes part in every loop, so a pool of size 1 runs
// everything inline. It lives in the base layer so that every layer above
// (the store's importer as much as the runtime) shares one implementation.
//
// Thread-safety: ParallelFor may be called from one thread at a time per
// pool; it blocks until the whole range is done.
#ifndef FQPACK_SCHEMA_THREAD_POOL_H_
#define FQPACK_SCHEMA_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fqpack {

class ThreadPool {
 public:
  // `n_threads` counts the caller; 0 means one per core.
  explicit ThreadPool(int n_threads = 0);
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
  void RunChunks();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 1;
  int64_t next_ = 0;
  int busy_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_THREAD_POOL_H_
