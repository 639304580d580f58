// Calibration: mean prediction over mean label; 1 is calibrated, above 1
// over-predicts. Sampling or a biased training population moves it.
#pragma once

#include <mtl/metrics/metric_value.hpp>

#include <c10/util/Exception.h>

#include <vector>

namespace mtl::metrics {

template <class Prob, class Label>
MetricValue calibration(const std::vector<Prob>& probabilities, const std::vector<Label>& labels) {
  TORCH_CHECK(probabilities.size() == labels.size(), "calibration expects one label per probability, but got ",
              probabilities.size(), " probabilities and ", labels.size(), " labels");
  double predicted = 0.0, observed = 0.0;
  for (size_t i = 0; i < labels.size(); ++i) {
    predicted += static_cast<double>(probabilities[i]);
    observed += static_cast<double>(labels[i]);
  }
  if (observed == 0.0) return MetricValue::undefined(std::to_string(labels.size()) + " rows hold no positive label");
  return MetricValue::of(predicted / observed);
}

}  // namespace mtl::metrics
