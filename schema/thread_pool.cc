#include "schema/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace fqpack {
namespace {

// One iteration of a spin-wait: tells the core that this thread only polls,
// so its sibling (or the other thread of an SMT pair) gets the pipeline.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins a caller does waiting for the workers' last chunks before it lets
// the OS run something else: a chunk in flight normally ends within a few
// microseconds of the caller's own, so yielding is only for a preempted
// worker.
constexpr int kCallerSpins = 4096;

// The low half of a closed ticket: no loop has that many chunks.
constexpr uint64_t kNoChunk = 0xFFFFFFFFu;

}  // namespace

ThreadPool::ThreadPool(int n_threads, int spin_micros) : spin_micros_(std::max(0, spin_micros)) {
  if (n_threads <= 0)
    n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunChunks(uint32_t gen) {
  uint64_t t = ticket_.load(std::memory_order_acquire);
  if (static_cast<uint32_t>(t >> 32) != gen) return;
  // Seen under `gen`'s ticket: these are gen's fields or, in part, a later
  // loop's; one of a later loop's values means its ParallelFor has closed
  // gen's ticket, so every claim below fails.
  const auto* fn = fn_.load(std::memory_order_acquire);
  const int64_t n = n_.load(std::memory_order_acquire);
  const int64_t chunk = chunk_.load(std::memory_order_acquire);
  const uint32_t n_chunks = n_chunks_.load(std::memory_order_acquire);
  while (static_cast<uint32_t>(t >> 32) == gen) {
    const auto next = static_cast<uint32_t>(t);
    if (next >= n_chunks) break;
    if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
      continue;  // t now holds the current ticket
    }
    const int64_t begin = int64_t{next} * chunk;
    (*fn)(begin, std::min(n, begin + chunk));
    done_.fetch_add(1, std::memory_order_release);
    ++t;
  }
}

void ThreadPool::WorkerLoop() {
  using Clock = std::chrono::steady_clock;
  uint32_t seen = 0;
  while (true) {
    uint32_t gen = generation_.load(std::memory_order_acquire);
    if (gen == seen && spin_micros_ > 0) {
      // Spin a while: the next loop usually follows within microseconds.
      const Clock::time_point until = Clock::now() + std::chrono::microseconds(spin_micros_);
      for (int i = 1; (gen = generation_.load(std::memory_order_acquire)) == seen; ++i) {
        CpuRelax();
        if (i % 64 == 0 && Clock::now() >= until) break;
      }
    }
    if (gen == seen) {
      // Then sleep until the generation moves. Counting as a sleeper before
      // the last check pairs with the caller's check of sleepers_ after it
      // publishes a loop: either the caller sees this thread and notifies,
      // or this thread sees the new generation and does not wait.
      sleepers_.fetch_add(1);
      while ((gen = generation_.load()) == seen) generation_.wait(seen);
      sleepers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = gen;
    RunChunks(gen);
  }
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                             int64_t min_chunk) {
  if (n <= 0) return;
  const int64_t threads = size();
  if (threads == 1 || n <= min_chunk) {
    fn(0, n);
    return;
  }
  // About four chunks per thread balances uneven rows without much traffic
  // on the shared counter.
  const int64_t chunk = std::max(min_chunk, (n + threads * 4 - 1) / (threads * 4));
  const auto n_chunks = static_cast<uint32_t>((n + chunk - 1) / chunk);
  const uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
  // First close the last loop's ticket under the new generation, with no
  // chunk to claim. A worker still in RunChunks of the last loop may read
  // the fields below while they are written; whatever new value it reads
  // was stored after this (release store, acquire load), so its claim then
  // sees this ticket and fails, instead of taking a chunk of the last,
  // finished loop with the new loop's count or function.
  ticket_.store(uint64_t{gen} << 32 | kNoChunk, std::memory_order_relaxed);
  fn_.store(&fn, std::memory_order_release);
  n_.store(n, std::memory_order_release);
  chunk_.store(chunk, std::memory_order_release);
  n_chunks_.store(n_chunks, std::memory_order_release);
  done_.store(0, std::memory_order_relaxed);
  ticket_.store(uint64_t{gen} << 32, std::memory_order_release);
  generation_.store(gen);
  if (sleepers_.load() > 0) generation_.notify_all();

  RunChunks(gen);
  for (int i = 0; done_.load(std::memory_order_acquire) < n_chunks; ++i) {
    if (i < kCallerSpins) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace fqpack
