// Log loss (mean binary cross-entropy) of predicted probabilities.
#pragma once

#include <mtl/metrics/metric_value.hpp>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace mtl::metrics {

/// Mean of -[y log p + (1 - y) log(1 - p)], with p clipped to [1e-15, 1 - 1e-15]
/// as scikit-learn's log_loss does, so a confident miss costs ~34.5, not inf.
template <class Prob, class Label>
MetricValue log_loss(const std::vector<Prob>& probabilities, const std::vector<Label>& labels) {
  TORCH_CHECK(probabilities.size() == labels.size(), "log_loss expects one label per probability, but got ",
              probabilities.size(), " probabilities and ", labels.size(), " labels");
  if (labels.empty()) return MetricValue::undefined("no rows");
  constexpr double eps = 1e-15;
  double total = 0.0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const double p = std::clamp(static_cast<double>(probabilities[i]), eps, 1.0 - eps);
    const double y = static_cast<double>(labels[i]);
    total -= y * std::log(p) + (1.0 - y) * std::log1p(-p);
  }
  return MetricValue::of(total / static_cast<double>(labels.size()));
}

}  // namespace mtl::metrics
