// GAUC: the AUC computed within each group (usually a user) and averaged with
// each group's row count as weight, over the groups that hold both classes.
// It asks whether the model ranks items well for each user, which a global
// AUC mixes with how well it tells active users from idle ones.
#pragma once

#include <mtl/metrics/auc.hpp>

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace mtl::metrics {

struct GroupedAuc {
  MetricValue gauc;
  int64_t groups_used = 0;     ///< groups with both classes
  int64_t groups_skipped = 0;  ///< groups with one class only
};

template <class Score, class Label>
GroupedAuc grouped_auc(const std::vector<Score>& scores, const std::vector<Label>& labels,
                       const std::vector<int64_t>& groups) {
  TORCH_CHECK(scores.size() == labels.size() && groups.size() == labels.size(),
              "grouped_auc expects scores, labels and groups of one length, but got ", scores.size(), ", ",
              labels.size(), " and ", groups.size());
  std::unordered_map<int64_t, std::vector<size_t>> rows_of;
  for (size_t i = 0; i < groups.size(); ++i) rows_of[groups[i]].push_back(i);
  GroupedAuc out;
  double weighted = 0.0, weight = 0.0;
  std::vector<Score> s;
  std::vector<Label> l;
  for (const auto& [group, rows] : rows_of) {
    s.clear(), l.clear();
    for (size_t r : rows) s.push_back(scores[r]), l.push_back(labels[r]);
    auto auc = roc_auc(s, l);
    if (!auc.defined()) {
      ++out.groups_skipped;
      continue;
    }
    ++out.groups_used;
    weighted += auc.value * static_cast<double>(rows.size());
    weight += static_cast<double>(rows.size());
  }
  out.gauc =
      out.groups_used > 0
          ? MetricValue::of(weighted / weight)
          : MetricValue::undefined("no group holds both classes (" + std::to_string(out.groups_skipped) + " groups)");
  return out;
}

}  // namespace mtl::metrics
