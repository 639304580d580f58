// A multi-task model's evaluation metrics from one pass of predictions: CTR, CVR on
// clicked rows, CTCVR over all rows, and on synthetic data the entire-space
// CVR AUC against counterfactual labels, which real logs can never give.
#pragma once

#include <mtl/metrics/auc.hpp>
#include <mtl/metrics/calibration.hpp>
#include <mtl/metrics/gauc.hpp>
#include <mtl/metrics/log_loss.hpp>

#include <map>
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

/// Named metrics: auc_ctr, logloss_ctr, calibration_ctr, gauc_ctr; auc_cvr,
/// logloss_cvr, calibration_cvr (clicked rows) and auc_cvr_masked (the same
/// AUC taken over the whole stream with the click as a label mask); auc_ctcvr,
/// logloss_ctcvr; on synthetic data auc_cvr_entire_space and the oracle AUC of
/// every AUC (`<metric>_oracle`: the true probabilities ranked against the
/// same labels, the ceiling a model can reach). Only the keys the columns
/// allow are present.
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
  if (!c.p_ctr.empty()) {
    out["auc_ctr"] = roc_auc(c.p_ctr, c.click);
    out["logloss_ctr"] = log_loss(c.p_ctr, c.click);
    out["calibration_ctr"] = calibration(c.p_ctr, c.click);
    if (!c.user.empty()) out["gauc_ctr"] = grouped_auc(c.p_ctr, c.click, c.user).gauc;
  }
  if (!c.p_cvr.empty() && !c.conversion.empty()) {
    std::vector<float> clicked_p, clicked_y;
    for (size_t i = 0; i < n; ++i)
      if (is_positive(c.click[i])) clicked_p.push_back(c.p_cvr[i]), clicked_y.push_back(c.conversion[i]);
    out["auc_cvr"] = clicked_p.empty() ? MetricValue::undefined("no clicked row") : roc_auc(clicked_p, clicked_y);
    out["logloss_cvr"] = log_loss(clicked_p, clicked_y);
    out["calibration_cvr"] = calibration(clicked_p, clicked_y);
    out["auc_cvr_masked"] = masked_auc(c.p_cvr, c.conversion, c.click);
    if (!c.counterfactual_conversion.empty())
      out["auc_cvr_entire_space"] = roc_auc(c.p_cvr, c.counterfactual_conversion);
  }
  if (!c.p_ctr.empty() && !c.p_cvr.empty() && !c.conversion.empty()) {
    std::vector<float> p_ctcvr(n), ctcvr(n);
    for (size_t i = 0; i < n; ++i) p_ctcvr[i] = c.p_ctr[i] * c.p_cvr[i], ctcvr[i] = c.click[i] * c.conversion[i];
    out["auc_ctcvr"] = roc_auc(p_ctcvr, ctcvr);
    out["logloss_ctcvr"] = log_loss(p_ctcvr, ctcvr);
  }
  // Oracles: the true probabilities in place of the predictions, for every AUC the predictions gave.
  if (!c.true_p_click.empty() && out.count("auc_ctr")) out["auc_ctr_oracle"] = roc_auc(c.true_p_click, c.click);
  if (!c.true_p_cvr.empty() && out.count("auc_cvr")) {
    out["auc_cvr_oracle"] = masked_auc(c.true_p_cvr, c.conversion, c.click);
    if (!c.counterfactual_conversion.empty())
      out["auc_cvr_entire_space_oracle"] = roc_auc(c.true_p_cvr, c.counterfactual_conversion);
  }
  if (!c.true_p_click.empty() && !c.true_p_cvr.empty() && out.count("auc_ctcvr")) {
    std::vector<float> p_ctcvr(n), ctcvr(n);
    for (size_t i = 0; i < n; ++i)
      p_ctcvr[i] = c.true_p_click[i] * c.true_p_cvr[i], ctcvr[i] = c.click[i] * c.conversion[i];
    out["auc_ctcvr_oracle"] = roc_auc(p_ctcvr, ctcvr);
  }
  return out;
}

}  // namespace mtl::metrics
