// What a training run tells its reader: each line appended to the run
// folder's train.log and printed, and a progress line (a bar on a terminal,
// a plain line otherwise). A rank that is not the leader writes nothing.
#pragma once

#include <mtl/train/run_directory.hpp>

#include <fmt/core.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

namespace mtl::train {

class RunLog {
 public:
  /// `writes`: this process writes the folder (the leader); `quiet`: print nothing.
  RunLog(RunDirectory dir, bool writes, bool quiet) : dir_(std::move(dir)), writes_(writes), quiet_(quiet || !writes) {}

  void line(const std::string& text) const {
    if (!writes_) return;
    dir_.append_log(text);
    if (quiet_) return;
    if (isatty(STDOUT_FILENO)) std::printf("\r\033[K");
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
  }

  /// Step `step` of `max_steps`, with the throughput, the mean loss and an ETA
  /// from the `steps_done` steps this process ran in `elapsed` seconds.
  void progress(int64_t step, int64_t max_steps, double samples_per_s, double loss, double elapsed,
                int64_t steps_done) const {
    if (quiet_) return;
    const double eta = steps_done > 0 ? elapsed / steps_done * (max_steps - step) : 0.0;
    const auto text = fmt::format("step {}/{} | {:.0f} samples/s | ETA {}m{:02d}s | loss {:.5f}", step, max_steps,
                                  samples_per_s, static_cast<int64_t>(eta) / 60, static_cast<int64_t>(eta) % 60, loss);
    if (isatty(STDOUT_FILENO)) {
      std::printf("\r\033[K%s", text.c_str());
    } else {
      std::printf("%s\n", text.c_str());
    }
    std::fflush(stdout);
  }

  /// Ends the progress bar's line on a terminal.
  void end_progress() const {
    if (!quiet_ && isatty(STDOUT_FILENO)) std::printf("\n");
  }

 private:
  RunDirectory dir_;
  bool writes_, quiet_;
};

}  // namespace mtl::train
