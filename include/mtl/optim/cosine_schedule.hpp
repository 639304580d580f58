// Learning-rate schedule: linear warmup to the base rate, then a cosine
// decay to `min_ratio` of it at `total_steps`.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace mtl::optim {

class CosineWarmupSchedule {
 public:
  CosineWarmupSchedule(int64_t total_steps, int64_t warmup_steps, double min_ratio = 0.0)
      : total_(total_steps), warmup_(warmup_steps), min_ratio_(min_ratio) {
    TORCH_CHECK(total_steps > 0, "CosineWarmupSchedule expects total_steps > 0, but got ", total_steps);
    TORCH_CHECK(warmup_steps >= 0 && warmup_steps <= total_steps,
                "CosineWarmupSchedule expects warmup_steps in [0, total_steps=", total_steps, "], but got ",
                warmup_steps);
    TORCH_CHECK(min_ratio >= 0.0 && min_ratio <= 1.0, "CosineWarmupSchedule expects min_ratio in [0, 1], but got ",
                min_ratio);
  }

  /// Multiplier of the base learning rate for 0-based `step`: (step + 1) /
  /// warmup during warmup, then min + (1 - min) * (1 + cos(pi * t)) / 2 with
  /// t going from 0 to 1 over the remaining steps; min_ratio after total_steps.
  double factor(int64_t step) const {
    if (step < warmup_) return static_cast<double>(step + 1) / static_cast<double>(warmup_);
    const int64_t decay_steps = total_ - warmup_;
    if (decay_steps <= 0) return 1.0;
    const double t = std::min(1.0, static_cast<double>(step - warmup_) / static_cast<double>(decay_steps));
    return min_ratio_ + (1.0 - min_ratio_) * 0.5 * (1.0 + std::cos(M_PI * t));
  }

  int64_t total_steps() const noexcept { return total_; }
  int64_t warmup_steps() const noexcept { return warmup_; }

 private:
  int64_t total_, warmup_;
  double min_ratio_;
};

}  // namespace mtl::optim
