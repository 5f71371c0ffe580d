// The pool's contract: every index of every loop runs exactly once, on
// disjoint chunks of at least min_chunk, with the caller's writes visible to
// the workers and theirs to the caller when ParallelFor returns; loops that
// follow each other at once (workers still spinning) and loops after the
// workers went to sleep behave the same.
#include "schema/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace fqpack {
namespace {

// Runs a loop of n items on `pool` and checks each ran exactly once; returns
// the distinct threads that ran chunks.
std::set<std::thread::id> CheckLoop(ThreadPool& pool, int64_t n, int64_t min_chunk) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  std::mutex mu;
  std::set<std::thread::id> threads;
  std::vector<std::pair<int64_t, int64_t>> chunks;
  pool.ParallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        threads.insert(std::this_thread::get_id());
        chunks.emplace_back(begin, end);
      },
      min_chunk);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "item " << i;
  std::sort(chunks.begin(), chunks.end());
  for (size_t c = 0; c < chunks.size(); ++c) {
    EXPECT_LT(chunks[c].first, chunks[c].second);
    // Every chunk but the last holds at least min_chunk items.
    if (chunks[c].second != n) {
      EXPECT_GE(chunks[c].second - chunks[c].first, min_chunk);
    }
    if (c > 0) {
      EXPECT_EQ(chunks[c].first, chunks[c - 1].second);
    }
  }
  return threads;
}

TEST(ThreadPoolTest, EveryItemOnceForManySizes) {
  ThreadPool pool(3);
  // Workers that never spin: every loop wakes them through the kernel.
  ThreadPool sleeping(3, /*spin_micros=*/0);
  for (ThreadPool* p : {&pool, &sleeping}) {
    for (int64_t n : {1, 2, 3, 7, 12, 13, 100, 1000, 4097})
      for (int64_t min_chunk : {1, 4, 64}) CheckLoop(*p, n, min_chunk);
  }
}

TEST(ThreadPoolTest, EmptyAndSingleThreadRunInline) {
  ThreadPool one(1);
  EXPECT_EQ(one.size(), 1);
  const std::set<std::thread::id> threads = CheckLoop(one, 50, 1);
  ASSERT_EQ(threads.size(), 1u);
  EXPECT_EQ(*threads.begin(), std::this_thread::get_id());
  bool called = false;
  one.ParallelFor(0, [&](int64_t, int64_t) { called = true; });
  ThreadPool two(2);
  two.ParallelFor(-3, [&](int64_t, int64_t) { called = true; });
  EXPECT_FALSE(called);
}

// Thousands of short loops back to back: the workers are spinning when each
// starts, and a worker that is late for one loop must never take a chunk of
// the next with the old loop's function.
// Loops of changing sizes back to back, each writing every item once into a
// buffer that dies with the loop: a worker that ran a chunk late, twice, or
// with another loop's fields would leave a wrong value or write freed memory.
void BackToBackLoops(int threads, int loops) {
  ThreadPool pool(threads);
  for (int loop = 0; loop < loops; ++loop) {
    const int64_t n = 1 + (loop * 7) % 64;
    std::vector<int64_t> out(static_cast<size_t>(n), 0);
    std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
    pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        out[static_cast<size_t>(i)] = loop * 1000 + i;
        runs[static_cast<size_t>(i)].fetch_add(1);
      }
    });
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(out[static_cast<size_t>(i)], loop * 1000 + i) << "loop " << loop;
      ASSERT_EQ(runs[static_cast<size_t>(i)].load(), 1) << "loop " << loop << " item " << i;
    }
  }
}

TEST(ThreadPoolTest, BackToBackLoopsStayExact) { BackToBackLoops(2, 20000); }

// More threads than cores: workers are preempted anywhere, also between
// reading a loop's ticket and its fields while the caller opens the next
// loop, which must then not let them claim anything.
TEST(ThreadPoolTest, BackToBackLoopsStayExactWithPreemptedWorkers) { BackToBackLoops(6, 20000); }

// Loops after the workers have gone to sleep still reach them, and the
// caller sees what they wrote.
TEST(ThreadPoolTest, SleepingWorkersWakeForTheNextLoop) {
  ThreadPool pool(2);
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(std::chrono::microseconds(ThreadPool::kSpinMicros * 5));
    // The caller's chunks wait (up to a generous limit) for a worker to
    // run one, so the loop only ends early if no worker ever wakes.
    const std::thread::id caller = std::this_thread::get_id();
    std::atomic<bool> worker_ran{false};
    std::vector<int64_t> out(8, -1);
    pool.ParallelFor(8, [&](int64_t begin, int64_t end) {
      if (std::this_thread::get_id() == caller) {
        const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (!worker_ran.load() && std::chrono::steady_clock::now() < limit)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
      } else {
        worker_ran.store(true);
      }
      for (int64_t i = begin; i < end; ++i) out[static_cast<size_t>(i)] = i * i;
    });
    EXPECT_TRUE(worker_ran.load()) << "round " << round;
    for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(out[static_cast<size_t>(i)], i * i);
  }
}

TEST(ThreadPoolTest, DestroyWhileWorkersSpinOrSleep) {
  for (int wait_micros : {0, ThreadPool::kSpinMicros * 5}) {
    ThreadPool pool(4);
    CheckLoop(pool, 100, 1);
    std::this_thread::sleep_for(std::chrono::microseconds(wait_micros));
  }  // the destructor joins every worker, or this test hangs
}

}  // namespace
}  // namespace fqpack
