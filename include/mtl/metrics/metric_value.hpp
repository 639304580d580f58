// A metric's value, or NaN with the reason it is undefined (one-class labels,
// no rows), so that a summary can say why a figure is missing.
#pragma once

#include <cmath>
#include <limits>
#include <string>

namespace mtl::metrics {

struct MetricValue {
  double value = std::numeric_limits<double>::quiet_NaN();
  /// Empty when the value is defined.
  std::string undefined_because;

  static MetricValue of(double v) { return {v, {}}; }
  static MetricValue undefined(std::string why) { return {std::numeric_limits<double>::quiet_NaN(), std::move(why)}; }
  bool defined() const noexcept { return undefined_because.empty(); }
};

}  // namespace mtl::metrics
