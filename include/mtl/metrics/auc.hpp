// Exact ROC AUC with ties counted as half (the midrank definition, as
// scikit-learn's roc_auc_score), in O(n log n), plus midranks for DeLong.
#pragma once

#include <mtl/metrics/metric_value.hpp>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace mtl::metrics {

/// A label counts as positive when it is above 0.5 (labels are 0/1).
inline bool is_positive(double label) noexcept { return label > 0.5; }

/// Indices of `scores` in ascending score order.
template <class Score>
std::vector<int64_t> ascending_order(const std::vector<Score>& scores) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] < scores[b]; });
  return order;
}

/// Why AUC is undefined for these columns (a NaN score, or one class only),
/// or an empty string; one pass, no sort.
template <class Score, class Label>
std::string auc_undefined_because(const std::vector<Score>& scores, const std::vector<Label>& labels) {
  size_t positives = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(static_cast<double>(scores[i]))) return "a score is NaN";
    positives += is_positive(static_cast<double>(labels[i]));
  }
  if (positives == 0 || positives == scores.size())
    return std::to_string(scores.size()) + " rows hold only " + (positives == 0 ? "negatives" : "positives") +
           ": AUC needs both classes";
  return {};
}

/// ROC AUC of `scores` against 0/1 `labels`: the probability that a random
/// positive outscores a random negative, ties counting one half. NaN with a
/// reason when the labels hold one class only, or a score is NaN.
template <class Score, class Label>
MetricValue roc_auc(const std::vector<Score>& scores, const std::vector<Label>& labels) {
  TORCH_CHECK(scores.size() == labels.size(), "roc_auc expects one label per score, but got ", scores.size(),
              " scores and ", labels.size(), " labels");
  if (auto why = auc_undefined_because(scores, labels); !why.empty()) return MetricValue::undefined(why);
  // Sort (score, label) pairs by value, not indices: the pairs stay in cache.
  std::vector<std::pair<double, bool>> pairs(scores.size());
  for (size_t i = 0; i < scores.size(); ++i)
    pairs[i] = {static_cast<double>(scores[i]), is_positive(static_cast<double>(labels[i]))};
  std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  // For each group of tied scores: positives in it beat every negative below
  // and tie with the negatives inside. Counted twice to stay in integers.
  uint64_t twice_wins = 0, negatives_below = 0, positives = 0;
  for (size_t i = 0; i < pairs.size();) {
    size_t j = i;
    uint64_t pos = 0, neg = 0;
    for (; j < pairs.size() && pairs[j].first == pairs[i].first; ++j) pairs[j].second ? ++pos : ++neg;
    twice_wins += 2 * pos * negatives_below + pos * neg;
    negatives_below += neg;
    positives += pos;
    i = j;
  }
  const uint64_t negatives = negatives_below;
  return MetricValue::of(static_cast<double>(twice_wins) /
                         (2.0 * static_cast<double>(positives) * static_cast<double>(negatives)));
}

/// ROC AUC over the rows whose `mask` is positive, read from the whole stream
/// (the CVR AUC with the click as the mask): the same as roc_auc of the
/// masked rows alone. NaN with a reason when no row passes the mask.
template <class Score, class Label, class Mask>
MetricValue masked_auc(const std::vector<Score>& scores, const std::vector<Label>& labels,
                       const std::vector<Mask>& mask) {
  TORCH_CHECK(scores.size() == labels.size() && scores.size() == mask.size(),
              "masked_auc expects one label and one mask value per score, but got ", scores.size(), " scores, ",
              labels.size(), " labels and ", mask.size(), " mask values");
  std::vector<Score> kept_scores;
  std::vector<Label> kept_labels;
  for (size_t i = 0; i < scores.size(); ++i)
    if (is_positive(static_cast<double>(mask[i]))) kept_scores.push_back(scores[i]), kept_labels.push_back(labels[i]);
  if (kept_scores.empty()) return MetricValue::undefined("no row passes the mask");
  return roc_auc(kept_scores, kept_labels);
}

/// Midranks (1-based, ties get the mean of their ranks) of `values`.
template <class Score>
std::vector<double> midranks(const std::vector<Score>& values) {
  const auto order = ascending_order(values);
  std::vector<double> ranks(values.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && values[order[j]] == values[order[i]]) ++j;
    const double mid = 0.5 * static_cast<double>(i + 1 + j);  // mean of ranks i+1 .. j
    for (size_t k = i; k < j; ++k) ranks[order[k]] = mid;
    i = j;
  }
  return ranks;
}

}  // namespace mtl::metrics
