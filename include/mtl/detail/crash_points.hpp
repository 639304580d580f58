// Fault injection for the resume tests (train/trainer_hooks.hpp). With
// MTL_CRASH_AT=NAME:N in the environment, the N-th time the program passes
// crash point NAME it sends itself SIGKILL, as `kill -9` would at that
// instant. Without the variable a crash point is one comparison.
//
// Points: checkpoint_write (half of a checkpoint's bytes written, before
// fsync and rename), atomic_write (the same for any other whole-file
// write), checkpoint_rotate (the last checkpoint moved to ckpt_prev.pt, the
// new one not yet in place), after_validation (metrics recorded, checkpoint
// not yet saved).
#pragma once

#include <c10/util/Exception.h>

#include <csignal>
#include <cstdlib>
#include <string>

namespace mtl::detail {

struct CrashTarget {
  std::string name;
  long count = 0;
  long passed = 0;
};

inline CrashTarget& crash_target() {
  static CrashTarget target = [] {
    CrashTarget t;
    const char* spec = std::getenv("MTL_CRASH_AT");
    if (spec == nullptr || *spec == '\0') return t;
    const std::string text = spec;
    const auto colon = text.rfind(':');
    char* end = nullptr;
    const long count = colon == std::string::npos ? 0 : std::strtol(text.c_str() + colon + 1, &end, 10);
    TORCH_CHECK(colon != std::string::npos && end != nullptr && *end == '\0' && count > 0,
                "MTL_CRASH_AT expects NAME:N with N >= 1 (for example checkpoint_rotate:2), got '", text, "'");
    t.name = text.substr(0, colon);
    t.count = count;
    return t;
  }();
  return target;
}

/// Kills the process here when MTL_CRASH_AT names this point and its count is reached.
inline void crash_point(const char* name) {
  auto& target = crash_target();
  if (target.count == 0 || target.name != name) return;
  if (++target.passed == target.count) std::raise(SIGKILL);
}

}  // namespace mtl::detail
