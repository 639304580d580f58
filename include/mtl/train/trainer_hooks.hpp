// The test seam of Trainer::run: the points where a test interrupts a run as
// a kill would. A plain run's hooks are the crash points that MTL_CRASH_AT
// names (detail/crash_points.hpp); a test may stop a run after a number of
// steps, leaving its files as a kill there would.
#pragma once

#include <mtl/detail/crash_points.hpp>

#include <cstdint>

namespace mtl::train {

class TrainerHooks {
 public:
  virtual ~TrainerHooks() = default;
  /// Whether run() returns before its next step, as if killed, having run `steps_this_run` steps.
  virtual bool stop_before_step(int64_t /*steps_this_run*/) { return false; }
  /// After a validation's records are written, before the last checkpoint is saved.
  virtual void after_validation() { mtl::detail::crash_point("after_validation"); }
};

/// Stops a run after `steps` steps of one run() call, as if killed there.
class StopAfterSteps : public TrainerHooks {
 public:
  explicit StopAfterSteps(int64_t steps) : steps_(steps) {}
  bool stop_before_step(int64_t steps_this_run) override { return steps_ > 0 && steps_this_run == steps_; }

 private:
  int64_t steps_;
};

}  // namespace mtl::train
