// DeLong's variance of an AUC and the DeLong test for two correlated AUCs
// measured on the same rows (DeLong et al. 1988), computed with midranks
// (Sun and Xu 2014) in O(n log n).
#pragma once

#include <mtl/metrics/auc.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace mtl::metrics {

/// The two AUCs, their standard errors, and the test of their difference.
struct DeLongTest {
  double auc_a = NAN, auc_b = NAN;
  double se_a = NAN, se_b = NAN;
  /// Standard error of auc_a - auc_b, which accounts for the shared rows.
  double se_difference = NAN;
  double z = NAN;
  /// Two-sided p-value of "the two AUCs are equal".
  double p_value = NAN;
  std::string undefined_because;
  bool defined() const noexcept { return undefined_because.empty(); }
};

namespace detail {

/// DeLong's structural components of one score column: for each positive,
/// the share of negatives it outscores (V10); for each negative, the share of
/// positives that outscore it (V01). Ties count one half.
struct StructuralComponents {
  std::vector<double> v10, v01;
  double auc = NAN;
};

template <class Score, class Label>
StructuralComponents structural_components(const std::vector<Score>& scores, const std::vector<Label>& labels) {
  std::vector<double> pos, neg;
  for (size_t i = 0; i < scores.size(); ++i)
    (is_positive(static_cast<double>(labels[i])) ? pos : neg).push_back(static_cast<double>(scores[i]));
  std::vector<double> all(pos);
  all.insert(all.end(), neg.begin(), neg.end());
  const auto rank_all = midranks(all), rank_pos = midranks(pos), rank_neg = midranks(neg);
  const double m = static_cast<double>(pos.size()), n = static_cast<double>(neg.size());
  StructuralComponents c;
  double rank_sum = 0;
  for (size_t i = 0; i < pos.size(); ++i) {
    c.v10.push_back((rank_all[i] - rank_pos[i]) / n);
    rank_sum += rank_all[i];
  }
  for (size_t j = 0; j < neg.size(); ++j) c.v01.push_back(1.0 - (rank_all[pos.size() + j] - rank_neg[j]) / m);
  c.auc = (rank_sum - m * (m + 1) / 2) / (m * n);
  return c;
}

/// Sample covariance (denominator k - 1) of two equally long columns.
inline double covariance(const std::vector<double>& a, const std::vector<double>& b) {
  const size_t k = a.size();
  if (k < 2) return 0.0;
  double mean_a = 0, mean_b = 0;
  for (size_t i = 0; i < k; ++i) mean_a += a[i], mean_b += b[i];
  mean_a /= static_cast<double>(k), mean_b /= static_cast<double>(k);
  double s = 0;
  for (size_t i = 0; i < k; ++i) s += (a[i] - mean_a) * (b[i] - mean_b);
  return s / static_cast<double>(k - 1);
}

/// DeLong's variance from structural components (of one AUC, or of the difference of two).
inline double delong_variance(const std::vector<double>& v10, const std::vector<double>& v01) {
  return covariance(v10, v10) / static_cast<double>(v10.size()) +
         covariance(v01, v01) / static_cast<double>(v01.size());
}

}  // namespace detail

/// DeLong's standard error of the AUC of `scores`.
template <class Score, class Label>
MetricValue delong_standard_error(const std::vector<Score>& scores, const std::vector<Label>& labels) {
  auto why = auc_undefined_because(scores, labels);
  if (!why.empty()) return MetricValue::undefined(why);
  const auto c = detail::structural_components(scores, labels);
  return MetricValue::of(std::sqrt(detail::delong_variance(c.v10, c.v01)));
}

/// DeLong test of two score columns against the same labels.
template <class Score, class Label>
DeLongTest delong_test(const std::vector<Score>& scores_a, const std::vector<Score>& scores_b,
                       const std::vector<Label>& labels) {
  TORCH_CHECK(scores_a.size() == labels.size() && scores_b.size() == labels.size(),
              "delong_test expects two score columns as long as the labels (", labels.size(), "), but got ",
              scores_a.size(), " and ", scores_b.size());
  DeLongTest t;
  t.undefined_because = auc_undefined_because(scores_a, labels);
  if (t.undefined_because.empty()) t.undefined_because = auc_undefined_because(scores_b, labels);
  if (!t.defined()) return t;
  const auto a = detail::structural_components(scores_a, labels);
  const auto b = detail::structural_components(scores_b, labels);
  const double m = static_cast<double>(a.v10.size()), n = static_cast<double>(a.v01.size());
  using detail::covariance;
  const double var_a = detail::delong_variance(a.v10, a.v01), var_b = detail::delong_variance(b.v10, b.v01);
  const double cov_ab = covariance(a.v10, b.v10) / m + covariance(a.v01, b.v01) / n;
  t.auc_a = a.auc, t.auc_b = b.auc;
  t.se_a = std::sqrt(var_a), t.se_b = std::sqrt(var_b);
  t.se_difference = std::sqrt(std::max(0.0, var_a + var_b - 2 * cov_ab));
  const double diff = a.auc - b.auc;
  if (t.se_difference > 0) {
    t.z = diff / t.se_difference;
    t.p_value = std::erfc(std::fabs(t.z) / std::sqrt(2.0));
  } else {
    // The two columns rank every pair alike: no evidence of a difference.
    t.z = 0.0;
    t.p_value = 1.0;
  }
  return t;
}

/// The test rows' sampling variance of a difference of AUCs that several
/// training seeds share. Seed k scores the same rows with two models (a_k,
/// b_k). DeLong's variance of one seed's difference holds a part every seed
/// shares (which rows were drawn) and a part that differs between seeds (how
/// each pair of training runs meets those rows); the spread of the per-seed
/// differences already holds the second. With V_mean DeLong's variance of the
/// seed-averaged difference (each row's structural components averaged over
/// the seeds: shared + own / n) and V_each the seeds' mean DeLong variance
/// (shared + own), shared = (n V_mean - V_each) / (n - 1), at least 0. One
/// seed cannot separate the parts: shared is then V_each.
struct SharedTestRowVariance {
  double shared = NAN;  ///< what a test over the seeds adds to their s^2 / n
  double of_mean = NAN, of_each = NAN;
  std::string undefined_because;
  bool defined() const noexcept { return undefined_because.empty(); }
};

template <class Score, class Label>
SharedTestRowVariance shared_test_row_variance(const std::vector<std::vector<Score>>& scores_a,
                                               const std::vector<std::vector<Score>>& scores_b,
                                               const std::vector<Label>& labels) {
  TORCH_CHECK(!scores_a.empty() && scores_a.size() == scores_b.size(),
              "shared_test_row_variance expects one score column per seed for each model, but got ", scores_a.size(),
              " and ", scores_b.size());
  SharedTestRowVariance out;
  std::vector<double> mean10, mean01;
  double each = 0;
  const double seeds = static_cast<double>(scores_a.size());
  for (size_t k = 0; k < scores_a.size(); ++k) {
    TORCH_CHECK(scores_a[k].size() == labels.size() && scores_b[k].size() == labels.size(),
                "shared_test_row_variance expects score columns as long as the labels (", labels.size(),
                "), but seed ", k, " has ", scores_a[k].size(), " and ", scores_b[k].size());
    for (const auto* column : {&scores_a[k], &scores_b[k]})
      if (out.undefined_because.empty()) out.undefined_because = auc_undefined_because(*column, labels);
    if (!out.defined()) return out;
    const auto a = detail::structural_components(scores_a[k], labels);
    const auto b = detail::structural_components(scores_b[k], labels);
    std::vector<double> d10(a.v10.size()), d01(a.v01.size());
    for (size_t i = 0; i < d10.size(); ++i) d10[i] = a.v10[i] - b.v10[i];
    for (size_t j = 0; j < d01.size(); ++j) d01[j] = a.v01[j] - b.v01[j];
    each += detail::delong_variance(d10, d01);
    mean10.resize(d10.size()), mean01.resize(d01.size());
    for (size_t i = 0; i < d10.size(); ++i) mean10[i] += d10[i] / seeds;
    for (size_t j = 0; j < d01.size(); ++j) mean01[j] += d01[j] / seeds;
  }
  out.of_each = each / seeds;
  out.of_mean = detail::delong_variance(mean10, mean01);
  out.shared = scores_a.size() == 1 ? out.of_each : std::max(0.0, (seeds * out.of_mean - out.of_each) / (seeds - 1));
  return out;
}

}  // namespace mtl::metrics
