// A training step frees and reallocates the same few megabytes of
// activations every step. glibc returns freed memory at the top of the heap
// to the kernel (and serves large blocks with fresh mmaps), so each step
// page-faults and the kernel zeroes the pages again (clear_page in a
// profile of a training step). Keeping freed memory in the process
// removes that; peak memory is unchanged, it is just not handed back.
#pragma once

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace mtl::train {

/// Keeps freed memory for reuse (glibc only; elsewhere a no-op). Process-wide:
/// call it from a program's training loop, not from a library's hot path.
inline void retain_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 256 << 20);  // blocks below 256 MiB come from the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);    // and the heap's top is not given back below 1 GiB
#endif
}

}  // namespace mtl::train
