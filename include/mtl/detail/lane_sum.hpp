// Floating-point sums over a short row that the compiler can vectorise: one
// running sum is a chain it may not reorder, eight running sums fit one
// vector register. Used by the aligner's normalisation and the gates' mixing.
#pragma once

#include <cstdint>

namespace mtl::detail {

/// The sum of value(d) over d < n: the tail after the last full group of eight
/// first, then the eight running sums in order (the same order every time).
template <class Value>
auto lane_sum(int64_t n, const Value& value) {
  using T = decltype(value(0));
  T lanes[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int64_t k = 0; k < 8; ++k) lanes[k] += value(d + k);
  T total = 0;
  for (; d < n; ++d) total += value(d);
  for (T lane : lanes) total += lane;
  return total;
}

}  // namespace mtl::detail
