// Comparing two models trained with the same seeds: the paired t-test of
// their per-seed metric differences, its confidence interval, and Holm's
// step-down adjustment of several p-values. Each seed's difference includes
// everything that changes between training runs (initialisation, the training
// rows and their order, dropout), so the test measures whether a difference survives
// retraining, which a test on the test rows of one run cannot say. What the
// seeds share (the same test rows) does not vary between them; its sampling
// variance can be added (e.g. DeLong's), so that a difference must also
// stand out from the test rows' noise. Two one-sided tests show a difference
// to lie inside a margin (equivalence), and the minimum detectable effect
// says how large a difference a test could have seen.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

namespace mtl::metrics {

namespace detail {

/// The continued fraction of the regularized incomplete beta function I_x(a, b),
/// evaluated by the modified Lentz method (converges fast for x < (a + 1) / (a + b + 2)).
inline double incomplete_beta_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300, kEpsilon = 1e-15;
  double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
  if (std::abs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 300; ++m) {
    const double m2 = 2.0 * m;
    // Even step.
    double numerator = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
    d = 1.0 + numerator * d;
    c = 1.0 + numerator / c;
    if (std::abs(d) < kTiny) d = kTiny;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    // Odd step.
    numerator = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
    d = 1.0 + numerator * d;
    c = 1.0 + numerator / c;
    if (std::abs(d) < kTiny) d = kTiny;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double step = d * c;
    h *= step;
    if (std::abs(step - 1.0) < kEpsilon) break;
  }
  return h;
}

}  // namespace detail

/// The regularized incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1].
inline double regularized_incomplete_beta(double a, double b, double x) {
  if (!(a > 0) || !(b > 0) || !(x >= 0) || !(x <= 1)) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0 || x == 1) return x;
  const double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  if (x < (a + 1.0) / (a + b + 2.0)) return std::exp(log_front) * detail::incomplete_beta_fraction(a, b, x) / a;
  return 1.0 - std::exp(log_front) * detail::incomplete_beta_fraction(b, a, 1.0 - x) / b;
}

/// P(|T| >= |t|) for Student's t with `df` degrees of freedom: the two-sided p-value.
inline double student_t_two_sided_p(double t, double df) {
  if (std::isnan(t) || !(df > 0)) return std::numeric_limits<double>::quiet_NaN();
  if (std::isinf(t)) return 0.0;
  return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
}

/// The t with P(|T| >= t) = `two_sided_p` for Student's t with `df` degrees of freedom.
inline double student_t_critical(double two_sided_p, double df) {
  if (!(two_sided_p > 0) || !(two_sided_p < 1) || !(df > 0)) return std::numeric_limits<double>::quiet_NaN();
  double low = 0.0, high = 1.0;
  while (student_t_two_sided_p(high, df) > two_sided_p) high *= 2.0;
  for (int k = 0; k < 200 && high - low > 1e-12 * high; ++k) {
    const double mid = 0.5 * (low + high);
    (student_t_two_sided_p(mid, df) > two_sided_p ? low : high) = mid;
  }
  return 0.5 * (low + high);
}

/// The paired comparison of a challenger against a reference over seeds.
struct PairedSeedTest {
  std::vector<double> differences;  ///< challenger - reference, one per seed
  double mean = std::numeric_limits<double>::quiet_NaN();
  double standard_deviation = std::numeric_limits<double>::quiet_NaN();  ///< sample (n - 1)
  double interval_low = std::numeric_limits<double>::quiet_NaN();        ///< the mean's confidence interval
  double interval_high = std::numeric_limits<double>::quiet_NaN();
  double t = std::numeric_limits<double>::quiet_NaN();
  double p_value = std::numeric_limits<double>::quiet_NaN();         ///< two-sided
  double standard_error = std::numeric_limits<double>::quiet_NaN();  ///< of the mean, the shared variance included
  double degrees_of_freedom = std::numeric_limits<double>::quiet_NaN();
  std::string undefined_because;
  bool defined() const noexcept { return undefined_because.empty(); }
};

/// The paired t-test of `differences` (one per seed) against a mean of 0, with
/// a `confidence` interval for the mean. `shared_variance` is the variance of
/// the mean difference that the seeds share and so cannot show (the test rows'
/// sampling variance), added to the seeds' s^2 / n; the degrees of freedom then
/// follow Welch-Satterthwaite, the shared part counted as known. Needs
/// `min_seeds` differences at least (2 make a test, but one degree of freedom
/// makes it nearly powerless). With no variance at all, differences equal and
/// non-zero give p = 0; all zero give p = 1.
inline PairedSeedTest paired_seed_test(std::vector<double> differences, double confidence = 0.95, size_t min_seeds = 2,
                                       double shared_variance = 0.0) {
  PairedSeedTest test;
  test.differences = std::move(differences);
  const auto& d = test.differences;
  const double n = static_cast<double>(d.size());
  if (!d.empty()) test.mean = std::accumulate(d.begin(), d.end(), 0.0) / n;
  if (d.size() < std::max<size_t>(min_seeds, 2)) {
    test.undefined_because = "a test over seeds needs " + std::to_string(std::max<size_t>(min_seeds, 2)) +
                             " seeds or more, but there " +
                             (d.size() == 1 ? "is 1" : "are " + std::to_string(d.size()));
    return test;
  }
  double squares = 0;
  for (double x : d) squares += (x - test.mean) * (x - test.mean);
  test.standard_deviation = std::sqrt(squares / (n - 1.0));
  const double seed_variance = squares / (n - 1.0) / n;
  const double shared = std::isfinite(shared_variance) && shared_variance > 0 ? shared_variance : 0.0;
  const double standard_error = std::sqrt(seed_variance + shared);
  // Welch-Satterthwaite: (sum of variances)^2 / sum of (variance^2 / df); the shared part has df = infinity.
  const double df = seed_variance > 0 ? std::min(1e6, (seed_variance + shared) * (seed_variance + shared) /
                                                          (seed_variance * seed_variance / (n - 1.0)))
                                      : 1e6;
  test.standard_error = standard_error;
  test.degrees_of_freedom = df;
  if (standard_error == 0.0) {
    test.t = test.mean == 0.0 ? 0.0 : std::copysign(std::numeric_limits<double>::infinity(), test.mean);
    test.p_value = test.mean == 0.0 ? 1.0 : 0.0;
    test.interval_low = test.interval_high = test.mean;
    return test;
  }
  test.t = test.mean / standard_error;
  test.p_value = student_t_two_sided_p(test.t, df);
  const double half_width = student_t_critical(1.0 - confidence, df) * standard_error;
  test.interval_low = test.mean - half_width;
  test.interval_high = test.mean + half_width;
  return test;
}

/// P(T >= t) for Student's t with `df` degrees of freedom: the upper one-sided p-value.
inline double student_t_upper_p(double t, double df) {
  const double two_sided = student_t_two_sided_p(t, df);
  if (std::isnan(two_sided)) return two_sided;
  return t >= 0 ? 0.5 * two_sided : 1.0 - 0.5 * two_sided;
}

/// Two one-sided tests (TOST) of `test`'s mean difference against the
/// equivalence interval (-margin, +margin): H0 |difference| >= margin. Its
/// p-value is the larger of the two one-sided p-values; below alpha, the
/// difference is shown to lie inside the margin (the 1 - 2 alpha interval
/// lies inside it), which is what "no difference" can honestly mean.
struct EquivalenceTest {
  double margin = std::numeric_limits<double>::quiet_NaN();
  double p_value = std::numeric_limits<double>::quiet_NaN();
  std::string undefined_because;
  bool defined() const noexcept { return undefined_because.empty(); }
};

inline EquivalenceTest equivalence_test(const PairedSeedTest& test, double margin) {
  EquivalenceTest e;
  e.margin = margin;
  if (!test.defined()) {
    e.undefined_because = test.undefined_because;
    return e;
  }
  if (!(margin > 0)) {
    e.undefined_because = "an equivalence test needs a margin > 0";
    return e;
  }
  if (test.standard_error == 0.0) {
    e.p_value = std::abs(test.mean) < margin ? 0.0 : 1.0;
    return e;
  }
  const double above_lower = student_t_upper_p((test.mean + margin) / test.standard_error, test.degrees_of_freedom);
  const double below_upper = student_t_upper_p((margin - test.mean) / test.standard_error, test.degrees_of_freedom);
  e.p_value = std::max(above_lower, below_upper);
  return e;
}

/// The smallest true difference the two-sided test at `alpha` finds with
/// probability `power`, at `test`'s standard error and degrees of freedom:
/// (t_{1 - alpha/2} + t_{power}) x standard error. NaN without a test.
inline double minimum_detectable_effect(const PairedSeedTest& test, double alpha = 0.05, double power = 0.8) {
  if (!test.defined() || !(alpha > 0 && alpha < 1) || !(power > 0 && power < 1))
    return std::numeric_limits<double>::quiet_NaN();
  const double df = test.degrees_of_freedom;
  const double t_power = power == 0.5  ? 0.0
                         : power > 0.5 ? student_t_critical(2.0 * (1.0 - power), df)
                                       : -student_t_critical(2.0 * power, df);
  return (student_t_critical(alpha, df) + t_power) * test.standard_error;
}

/// Holm's step-down adjustment: p-values adjusted so that rejecting those
/// below alpha keeps the family-wise error rate at alpha. NaN entries (no
/// test) stay NaN and do not count in the family.
inline std::vector<double> holm_adjusted(const std::vector<double>& p_values) {
  std::vector<size_t> order;
  for (size_t i = 0; i < p_values.size(); ++i)
    if (!std::isnan(p_values[i])) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p_values[a] < p_values[b]; });
  std::vector<double> adjusted(p_values.size(), std::numeric_limits<double>::quiet_NaN());
  const double m = static_cast<double>(order.size());
  double running = 0.0;
  for (size_t k = 0; k < order.size(); ++k) {
    running = std::max(running, std::min(1.0, (m - static_cast<double>(k)) * p_values[order[k]]));
    adjusted[order[k]] = running;
  }
  return adjusted;
}

}  // namespace mtl::metrics
