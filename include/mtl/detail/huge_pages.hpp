// Large tables read at random rows (embeddings, their optimizer moments)
// spend much of each access walking page tables when they sit in 4 KiB
// pages. On Linux, `zeros_on_huge_pages` asks for 2 MiB pages (where the
// system allows them on request) before the memory is first touched.
#pragma once

#include <torch/types.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>

namespace mtl::detail {

/// Asks the kernel to back `t`'s untouched memory with huge pages; a hint only.
inline void advise_huge_pages(const torch::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!t.device().is_cpu() || t.nbytes() < (size_t{4} << 20)) return;
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(kHuge - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

/// A zero tensor like `shape`/`options`, on huge pages where the system grants them.
inline torch::Tensor zeros_on_huge_pages(torch::IntArrayRef shape, const torch::TensorOptions& options) {
  auto t = torch::empty(shape, options);
  advise_huge_pages(t);
  return t.zero_();
}

}  // namespace mtl::detail
