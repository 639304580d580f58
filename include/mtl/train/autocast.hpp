// Mixed precision in one place: an RAII guard that turns on autocast for a
// device type with a given low-precision dtype (bf16 by default; no loss
// scaler is needed for bf16) and restores the previous state. LibTorch
// renamed this API in 2.4; the guard hides the difference.
#pragma once

#include <mtl/detail/autocast_state.hpp>

#include <ATen/autocast_mode.h>
#include <torch/types.h>

namespace mtl::train {

class AutocastGuard {
 public:
  /// Autocast on `device`'s type with `dtype` while the guard lives; a
  /// disabled guard changes nothing.
  AutocastGuard(const torch::Device& device, bool enabled, torch::ScalarType dtype = torch::kBFloat16)
      : type_(device.type()), active_(enabled) {
    if (!active_) return;
    TORCH_CHECK(type_ == torch::kCPU || type_ == torch::kCUDA, "AutocastGuard supports cpu and cuda, but got ", device);
    previous_enabled_ = enabled_now();
    previous_dtype_ = dtype_now();
    set(true, dtype);
    at::autocast::increment_nesting();
  }

  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set(previous_enabled_, previous_dtype_);
  }

  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
#ifdef MTL_AUTOCAST_BY_DEVICE_TYPE
  bool enabled_now() const { return at::autocast::is_autocast_enabled(type_); }
  torch::ScalarType dtype_now() const { return at::autocast::get_autocast_dtype(type_); }
  void set(bool on, torch::ScalarType dtype) const {
    at::autocast::set_autocast_enabled(type_, on);
    at::autocast::set_autocast_dtype(type_, dtype);
  }
#else
  bool enabled_now() const {
    return type_ == torch::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
  }
  torch::ScalarType dtype_now() const {
    return type_ == torch::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
  }
  void set(bool on, torch::ScalarType dtype) const {
    if (type_ == torch::kCUDA) {
      at::autocast::set_enabled(on);
      at::autocast::set_autocast_gpu_dtype(dtype);
    } else {
      at::autocast::set_cpu_enabled(on);
      at::autocast::set_autocast_cpu_dtype(dtype);
    }
  }
#endif

  torch::DeviceType type_;
  bool active_;
  bool previous_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kBFloat16;
};

}  // namespace mtl::train
