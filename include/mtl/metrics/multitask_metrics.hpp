// A multi-task model's evaluation metrics from one pass of predictions: CTR, CVR on
// clicked rows, CTCVR over all rows, and on synthetic data the entire-space
// CVR AUC against counterfactual labels, which real logs can never give.
#pragma once

#include <mtl/metrics/auc.hpp>
#include <mtl/metrics/calibration.hpp>
#include <mtl/metrics/gauc.hpp>
#include <mtl/metrics/log_loss.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mtl::metrics {

/// One evaluation pass, a value per row. A model without a CTR (or CVR)
/// head leaves that column empty; real data leaves the truth columns empty.
struct PredictionColumns {
  std::vector<float> p_ctr, p_cvr;
  std::vector<float> click, conversion;
  /// Synthetic data only: the true P(click), the true P(conversion | click)
  /// and a conversion label drawn for every impression, clicked or not.
  std::vector<float> true_p_click, true_p_cvr, counterfactual_conversion;
  /// A user id per row, for GAUC; may be empty.
  std::vector<int64_t> user;
};

/// The scores a ranking metric orders and the labels it orders them against,
/// on the rows it covers.
struct RankedRows {
  std::vector<float> scores, labels;
};

/// Which rows and labels each AUC uses: `auc_ctr` every row, p_ctr against
/// click; `auc_cvr` the clicked rows, p_cvr against conversion;
/// `auc_cvr_entire_space` every row, p_cvr against the counterfactual
/// conversion (synthetic data); `auc_ctcvr` every row, p_ctr p_cvr against
/// click x conversion. Nothing when the columns lack what the metric needs.
/// A metric's oracle reads the same rows of `truth_as_predictions(c)`.
inline std::optional<RankedRows> ranked_rows(const PredictionColumns& c, const std::string& metric) {
  const size_t n = c.click.size();
  RankedRows r;
  if (metric == "auc_ctr") {
    if (c.p_ctr.empty()) return std::nullopt;
    return RankedRows{c.p_ctr, c.click};
  }
  if (c.p_cvr.empty() || c.conversion.empty()) return std::nullopt;
  if (metric == "auc_cvr") {
    for (size_t i = 0; i < n; ++i)
      if (is_positive(c.click[i])) r.scores.push_back(c.p_cvr[i]), r.labels.push_back(c.conversion[i]);
    return r;
  }
  if (metric == "auc_cvr_entire_space") {
    if (c.counterfactual_conversion.empty()) return std::nullopt;
    return RankedRows{c.p_cvr, c.counterfactual_conversion};
  }
  if (metric == "auc_ctcvr") {
    if (c.p_ctr.empty()) return std::nullopt;
    r.scores.resize(n), r.labels.resize(n);
    for (size_t i = 0; i < n; ++i) r.scores[i] = c.p_ctr[i] * c.p_cvr[i], r.labels[i] = c.click[i] * c.conversion[i];
    return r;
  }
  return std::nullopt;
}

/// The columns with the true probabilities (synthetic data) in place of the
/// predictions: what an oracle metric ranks.
inline PredictionColumns truth_as_predictions(const PredictionColumns& c) {
  PredictionColumns truth;
  truth.p_ctr = c.true_p_click, truth.p_cvr = c.true_p_cvr;
  truth.click = c.click, truth.conversion = c.conversion;
  truth.counterfactual_conversion = c.counterfactual_conversion;
  return truth;
}

/// Named metrics: auc_ctr, logloss_ctr, calibration_ctr, gauc_ctr; auc_cvr,
/// logloss_cvr, calibration_cvr (clicked rows) and auc_cvr_masked (the same
/// AUC taken over the whole stream with the click as a label mask); auc_ctcvr,
/// logloss_ctcvr; on synthetic data auc_cvr_entire_space and the oracle AUC of
/// every AUC (`<metric>_oracle`: the true probabilities ranked against the
/// same labels, the ceiling a model can reach). Only the keys the columns
/// allow are present; `ranked_rows` says which rows each AUC reads.
inline std::map<std::string, MetricValue> evaluate_predictions(const PredictionColumns& c) {
  const size_t n = c.click.size();
  auto check = [&](const std::vector<float>& column, const char* name) {
    TORCH_CHECK(column.empty() || column.size() == n, "evaluate_predictions expects ", name, " to hold ", n,
                " rows like click, but it holds ", column.size());
  };
  check(c.p_ctr, "p_ctr"), check(c.p_cvr, "p_cvr"), check(c.conversion, "conversion");
  check(c.true_p_click, "true_p_click"), check(c.true_p_cvr, "true_p_cvr");
  check(c.counterfactual_conversion, "counterfactual_conversion");
  TORCH_CHECK(c.user.empty() || c.user.size() == n, "evaluate_predictions expects one user per row");

  std::map<std::string, MetricValue> out;
  // An oracle, where the model's own AUC is defined: the true probabilities ranked on the same rows.
  const auto truth = truth_as_predictions(c);
  const auto auc = [&](const PredictionColumns& columns, const std::string& metric, const std::string& key) {
    auto rows = ranked_rows(columns, metric);
    if (!rows) return;
    out[key] = !rows->scores.empty() ? roc_auc(rows->scores, rows->labels)
                                     : MetricValue::undefined(metric == "auc_cvr" ? "no clicked row" : "no rows");
    if (key == "auc_cvr") {
      out["logloss_cvr"] = log_loss(rows->scores, rows->labels);
      out["calibration_cvr"] = calibration(rows->scores, rows->labels);
    }
    if (key == "auc_ctcvr") out["logloss_ctcvr"] = log_loss(rows->scores, rows->labels);
  };
  for (const std::string metric : {"auc_ctr", "auc_cvr", "auc_cvr_entire_space", "auc_ctcvr"}) {
    auc(c, metric, metric);
    if (out.count(metric)) auc(truth, metric, metric + "_oracle");
  }
  if (!c.p_ctr.empty()) {
    out["logloss_ctr"] = log_loss(c.p_ctr, c.click);
    out["calibration_ctr"] = calibration(c.p_ctr, c.click);
    if (!c.user.empty()) out["gauc_ctr"] = grouped_auc(c.p_ctr, c.click, c.user).gauc;
  }
  if (!c.p_cvr.empty() && !c.conversion.empty()) out["auc_cvr_masked"] = masked_auc(c.p_cvr, c.conversion, c.click);
  return out;
}

}  // namespace mtl::metrics
