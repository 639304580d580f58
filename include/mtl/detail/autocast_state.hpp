// Whether autocast is on, asked the way the LibTorch in use spells it: 2.4
// renamed the API (one switch per device type). Modules with a hand-written
// fast path use this to step aside under autocast, so that their products run
// in the autocast dtype; train/autocast.hpp's guard uses the same switch.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define MTL_AUTOCAST_BY_DEVICE_TYPE 1
#endif

namespace mtl::detail {

/// True while autocast is on for the CPU or for CUDA.
inline bool autocast_enabled() {
#ifdef MTL_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::is_autocast_enabled(at::kCPU) || at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_cpu_enabled() || at::autocast::is_enabled();
#endif
}

}  // namespace mtl::detail
