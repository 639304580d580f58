// A 64-bit mix (splitmix64's finalizer after its increment) and its reading as
// a number in [0, 1): reproducible pseudo-random values from a key, the same
// with any compiler and on any machine.
#pragma once

#include <cstdint>

namespace mtl::detail {

inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// The top 53 bits of `h` as a double in [0, 1).
inline double unit_interval(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53; }

}  // namespace mtl::detail
