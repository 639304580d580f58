// Independent tasks of unequal size on the intra-op threads at once, each
// thread taking the next task when it is free: a mixer's experts
// (stacked_branches.hpp), the optimizers' parts (optim/dual_optimizer.hpp).
// Cores do not run alike while all are busy (shared caches, virtual CPUs), so
// a split fixed in advance leaves the faster ones waiting.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <atomic>
#include <cstdint>

namespace mtl::detail {

/// Calls work(k) for every k in [0, tasks), each on one of `threads` threads
/// (the caller's among them), with the caller's thread-local state (grad
/// mode, dispatch keys). Tasks start in index order; put the long ones first.
/// Nested ATen and oneDNN work inside a task runs on the thread that took it.
/// Where no other thread joins (one thread, or inside a parallel region), the
/// caller runs them all in order.
template <class Work>
void for_each_task_side_by_side(int64_t tasks, int64_t threads, const Work& work) {
  const at::ThreadLocalState state;
  std::atomic<int64_t> next{0};
  // The shared counter decides who runs what, not the range parallel_for hands each thread.
  at::parallel_for(0, threads, /*grain_size=*/1, [&](int64_t, int64_t) {
    const at::ThreadLocalStateGuard guard(state);
    for (int64_t k = next++; k < tasks; k = next++) work(k);
  });
}

}  // namespace mtl::detail
