// A loop over short rows written once, run with the row width as a
// compile-time constant for the usual widths: there a row's copy is a vector
// move or two instead of a memmove call, and short loops unroll. Used by the
// embedding lookup and by SparseAdam's update.
#pragma once

#include <cstdint>
#include <type_traits>

namespace mtl::detail {

/// Calls `run(std::integral_constant<int64_t, W>{})` for the W in `Widths` that
/// equals `width`, else `run(width)`. `run` takes its argument as `auto` and
/// uses it as an int64_t.
template <int64_t... Widths, class Run>
void with_fixed_width(int64_t width, Run&& run) {
  const bool fixed = ((width == Widths ? (run(std::integral_constant<int64_t, Widths>{}), true) : false) || ...);
  if (!fixed) run(width);
}

}  // namespace mtl::detail
