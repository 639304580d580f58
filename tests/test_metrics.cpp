// Tests of the metrics: exact AUC with ties against brute force and
// scikit-learn, DeLong against its pairwise definition, GAUC, log loss,
// calibration, the multi-task evaluation, and the tests over seeds (Student's t,
// the paired test, Holm's adjustment).
#include "test_helpers.hpp"

#include <mtl/metrics/auc.hpp>
#include <mtl/metrics/calibration.hpp>
#include <mtl/metrics/delong.hpp>
#include <mtl/metrics/gauc.hpp>
#include <mtl/metrics/log_loss.hpp>
#include <mtl/metrics/multitask_metrics.hpp>
#include <mtl/metrics/paired_seeds.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>

using namespace mtl::metrics;

namespace {

/// Scores rounded to one decimal, so that many rows tie.
struct TiedData {
  std::vector<float> scores_a, scores_b, labels;
};
TiedData tied_data(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.f, 1.f);
  std::bernoulli_distribution coin(0.3);
  TiedData d;
  for (size_t i = 0; i < n; ++i) {
    const float y = coin(rng) ? 1.f : 0.f;
    const float signal = y + noise(rng);
    d.labels.push_back(y);
    d.scores_a.push_back(std::round(signal * 5.f) / 10.f);
    d.scores_b.push_back(std::round((0.5f * signal + noise(rng)) * 5.f) / 10.f);
  }
  return d;
}

/// psi(x, y): 1 if a positive's score beats a negative's, 1/2 on a tie.
double psi(double pos, double neg) { return pos > neg ? 1.0 : (pos == neg ? 0.5 : 0.0); }

double brute_force_auc(const std::vector<float>& s, const std::vector<float>& y) {
  double wins = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i)
    for (size_t j = 0; j < s.size(); ++j)
      if (y[i] == 1 && y[j] == 0) wins += psi(s[i], s[j]), pairs += 1;
  return wins / pairs;
}

}  // namespace

// The midrank AUC equals the pairwise definition on data full of ties.
TEST_CASE("roc_auc equals the brute-force pairwise AUC with ties") {
  for (unsigned seed : {1u, 2u, 3u}) {
    auto d = tied_data(1500, seed);
    REQUIRE(roc_auc(d.scores_a, d.labels).value == Approx(brute_force_auc(d.scores_a, d.labels)).epsilon(1e-12));
  }
  // All scores tied: exactly one half.
  REQUIRE(roc_auc(std::vector<float>(6, 0.3f), std::vector<float>{1, 0, 1, 0, 0, 1}).value == 0.5);
  REQUIRE(roc_auc(std::vector<double>{0.1, 0.4, 0.35, 0.8}, std::vector<int>{0, 0, 1, 1}).value == 0.75);
}

// One class, or a NaN score, gives NaN with a reason, not a crash.
TEST_CASE("roc_auc is undefined on one class") {
  auto only_neg = roc_auc(std::vector<float>{0.1f, 0.2f}, std::vector<float>{0, 0});
  REQUIRE(std::isnan(only_neg.value));
  REQUIRE(only_neg.undefined_because == "2 rows hold only negatives: AUC needs both classes");
  REQUIRE(roc_auc(std::vector<float>{}, std::vector<float>{}).undefined_because.find("only") != std::string::npos);
  REQUIRE(roc_auc(std::vector<float>{NAN, 0.2f}, std::vector<float>{1, 0}).undefined_because == "a score is NaN");
  REQUIRE_TORCH_ERROR(roc_auc(std::vector<float>{0.1f}, std::vector<float>{1, 0}), "one label per score");
}

// Midranks give tied values the mean of their ranks.
TEST_CASE("midranks") {
  REQUIRE(midranks(std::vector<double>{3.0, 1.0, 3.0, 2.0, 3.0}) == std::vector<double>{4.0, 1.0, 4.0, 2.0, 4.0});
}

// AUC and log loss equal scikit-learn's roc_auc_score and log_loss within 1e-9.
TEST_CASE("roc_auc and log_loss equal scikit-learn") {
#ifndef MTL_TEST_SKLEARN_PYTHON
  WARN("skipped: no python3 with scikit-learn was found when the tests were configured");
#else
  auto d = tied_data(20000, 11);
  std::vector<float> probs;
  for (float s : d.scores_a) probs.push_back(1.f / (1.f + std::exp(-s)));
  const std::string path = "sklearn_compare_input.csv";
  {
    std::ofstream out(path);
    out.precision(9);
    for (size_t i = 0; i < probs.size(); ++i) out << probs[i] << "," << d.labels[i] << "\n";
  }
  const std::string script =
      "import numpy as np, sys; from sklearn.metrics import roc_auc_score, log_loss; "
      "d = np.loadtxt('" +
      path +
      "', delimiter=',', dtype=np.float64); "
      "print(repr(roc_auc_score(d[:,1], d[:,0])), repr(log_loss(d[:,1], d[:,0])))";
  std::string command = std::string(MTL_TEST_SKLEARN_PYTHON) + " -c \"" + script + "\"";
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  double sk_auc = NAN, sk_logloss = NAN;
  REQUIRE(std::fscanf(pipe, "%lf %lf", &sk_auc, &sk_logloss) == 2);
  REQUIRE(pclose(pipe) == 0);
  // Reread the rounded values the file holds, so both sides see the same numbers.
  std::vector<double> p, y;
  std::ifstream in(path);
  double a, b;
  char comma;
  while (in >> a >> comma >> b) p.push_back(a), y.push_back(b);
  REQUIRE(p.size() == probs.size());
  INFO("scikit-learn AUC " << sk_auc << ", log loss " << sk_logloss);
  REQUIRE(std::fabs(roc_auc(p, y).value - sk_auc) < 1e-9);
  REQUIRE(std::fabs(log_loss(p, y).value - sk_logloss) < 1e-9);
  std::remove(path.c_str());
#endif
}

// DeLong's variance and covariance equal their definition from pairwise psi.
TEST_CASE("DeLong test equals its brute-force definition") {
  auto d = tied_data(600, 5);
  std::vector<size_t> pos, neg;
  for (size_t i = 0; i < d.labels.size(); ++i) (d.labels[i] == 1 ? pos : neg).push_back(i);
  auto components = [&](const std::vector<float>& s) {
    std::vector<double> v10, v01;
    for (size_t i : pos) {
      double sum = 0;
      for (size_t j : neg) sum += psi(s[i], s[j]);
      v10.push_back(sum / neg.size());
    }
    for (size_t j : neg) {
      double sum = 0;
      for (size_t i : pos) sum += psi(s[i], s[j]);
      v01.push_back(sum / pos.size());
    }
    return std::make_pair(v10, v01);
  };
  auto [a10, a01] = components(d.scores_a);
  auto [b10, b01] = components(d.scores_b);
  const double m = pos.size(), n = neg.size();
  using mtl::metrics::detail::covariance;
  const double var_a = covariance(a10, a10) / m + covariance(a01, a01) / n;
  const double var_b = covariance(b10, b10) / m + covariance(b01, b01) / n;
  const double cov = covariance(a10, b10) / m + covariance(a01, b01) / n;
  const double auc_a = brute_force_auc(d.scores_a, d.labels), auc_b = brute_force_auc(d.scores_b, d.labels);
  const double z = (auc_a - auc_b) / std::sqrt(var_a + var_b - 2 * cov);

  auto t = delong_test(d.scores_a, d.scores_b, d.labels);
  REQUIRE(t.defined());
  REQUIRE(t.auc_a == Approx(auc_a).epsilon(1e-12));
  REQUIRE(t.auc_b == Approx(auc_b).epsilon(1e-12));
  REQUIRE(t.se_a == Approx(std::sqrt(var_a)).epsilon(1e-10));
  REQUIRE(t.se_difference == Approx(std::sqrt(var_a + var_b - 2 * cov)).epsilon(1e-10));
  REQUIRE(t.z == Approx(z).epsilon(1e-10));
  REQUIRE(t.p_value == Approx(std::erfc(std::fabs(z) / std::sqrt(2.0))).epsilon(1e-10));
  REQUIRE(delong_standard_error(d.scores_b, d.labels).value == Approx(std::sqrt(var_b)).epsilon(1e-10));
  // The stronger score column wins clearly on 600 rows.
  REQUIRE(t.auc_a > t.auc_b);
  REQUIRE(t.p_value < 1e-3);
}

// Identical columns give p = 1; one-class labels give a reason.
TEST_CASE("DeLong edge cases") {
  auto d = tied_data(200, 9);
  auto same = delong_test(d.scores_a, d.scores_a, d.labels);
  REQUIRE(same.p_value == 1.0);
  REQUIRE(same.z == 0.0);
  auto one_class = delong_test(d.scores_a, d.scores_b, std::vector<float>(200, 0.f));
  REQUIRE_FALSE(one_class.defined());
  REQUIRE(std::isnan(one_class.p_value));
}

// The test rows' variance that seeds share: the rows' own part of a difference, not each seed's own noise.
TEST_CASE("shared_test_row_variance") {
  const size_t rows = 4000, seeds = 5;
  std::mt19937 rng(17);
  std::normal_distribution<double> normal;
  std::vector<double> signal(rows), row_effect(rows);
  std::vector<float> labels(rows);
  for (size_t i = 0; i < rows; ++i) {
    signal[i] = normal(rng), row_effect[i] = normal(rng);
    labels[i] = std::bernoulli_distribution(1.0 / (1.0 + std::exp(-signal[i])))(rng) ? 1.f : 0.f;
  }
  // Each seed's model: the signal, plus (for a) a per-row effect every seed shares, plus noise of its own.
  auto model = [&](double shared_weight) {
    std::vector<float> out(rows);
    for (size_t i = 0; i < rows; ++i)
      out[i] = static_cast<float>(signal[i] + shared_weight * row_effect[i] + normal(rng));
    return out;
  };
  std::vector<std::vector<float>> a_alike, b, a_apart;
  for (size_t k = 0; k < seeds; ++k) a_alike.push_back(model(0)), b.push_back(model(0)), a_apart.push_back(model(2));

  // One seed: DeLong's variance of its difference.
  const auto one = shared_test_row_variance(std::vector<std::vector<float>>{a_alike[0]},
                                            std::vector<std::vector<float>>{b[0]}, labels);
  const auto t = delong_test(a_alike[0], b[0], labels);
  REQUIRE(one.shared == Approx(t.se_difference * t.se_difference).epsilon(1e-10));
  // The same seed repeated: nothing differs between seeds, so all of it is shared.
  const auto repeated = shared_test_row_variance(std::vector(3, a_apart[0]), std::vector(3, b[0]), labels);
  REQUIRE(repeated.of_mean == Approx(repeated.of_each).epsilon(1e-10));
  REQUIRE(repeated.shared == Approx(repeated.of_each).epsilon(1e-10));
  // Models that differ by their own noise only share little; a per-row effect in every seed is shared.
  const auto alike = shared_test_row_variance(a_alike, b, labels);
  const auto apart = shared_test_row_variance(a_apart, b, labels);
  INFO("alike: shared " << alike.shared << " of " << alike.of_each << "; apart: " << apart.shared << " of "
                        << apart.of_each);
  REQUIRE(alike.shared < 0.2 * alike.of_each);
  REQUIRE(apart.shared > 0.4 * apart.of_each);
  REQUIRE(alike.of_mean < alike.of_each);
  // A one-class column has no AUC.
  REQUIRE_FALSE(shared_test_row_variance(a_alike, b, std::vector<float>(rows, 1.f)).defined());
}

// GAUC weights each two-class group's AUC by its rows and skips one-class groups.
TEST_CASE("grouped_auc") {
  // Group 7: AUC 1 over 4 rows; group 8: AUC 0 over 2 rows; group 9: one class.
  std::vector<float> s{0.9f, 0.1f, 0.8f, 0.2f, 0.1f, 0.9f, 0.5f};
  std::vector<float> y{1, 0, 1, 0, 1, 0, 1};
  std::vector<int64_t> g{7, 7, 7, 7, 8, 8, 9};
  auto r = grouped_auc(s, y, g);
  REQUIRE(r.gauc.value == Approx((1.0 * 4 + 0.0 * 2) / 6));
  REQUIRE(r.groups_used == 2);
  REQUIRE(r.groups_skipped == 1);
  REQUIRE_FALSE(grouped_auc(s, std::vector<float>(7, 1.f), g).gauc.defined());
}

// Log loss clips like scikit-learn; calibration is mean prediction over mean label.
TEST_CASE("log_loss and calibration") {
  REQUIRE(log_loss(std::vector<double>{0.8, 0.4}, std::vector<double>{1, 0}).value ==
          Approx(-(std::log(0.8) + std::log(0.6)) / 2));
  REQUIRE(std::isfinite(log_loss(std::vector<double>{0.0}, std::vector<double>{1}).value));
  REQUIRE(calibration(std::vector<double>{0.2, 0.2, 0.2, 0.2}, std::vector<double>{1, 0, 0, 0}).value == Approx(0.8));
  REQUIRE_FALSE(calibration(std::vector<double>{0.2}, std::vector<double>{0}).defined());
}

// The multi-task evaluation computes CVR on clicked rows (also as a masked
// stream), CTCVR over all rows, and each AUC's oracle from the true probabilities.
TEST_CASE("evaluate_predictions") {
  PredictionColumns c;
  c.p_ctr = {0.9f, 0.2f, 0.7f, 0.1f, 0.6f};
  c.p_cvr = {0.8f, 0.9f, 0.1f, 0.3f, 0.5f};
  c.click = {1, 0, 1, 0, 1};
  c.conversion = {1, 0, 0, 0, 1};
  c.counterfactual_conversion = {1, 1, 0, 0, 1};
  c.true_p_cvr = {0.7f, 0.6f, 0.2f, 0.1f, 0.15f};
  c.true_p_click = {0.8f, 0.3f, 0.5f, 0.2f, 0.4f};
  auto m = evaluate_predictions(c);
  // Clicked rows 0, 2, 4: p_cvr 0.8, 0.1, 0.5 against 1, 0, 1.
  REQUIRE(m.at("auc_cvr").value == 1.0);
  // p_ctcvr = 0.72, 0.18, 0.07, 0.03, 0.30 against 1, 0, 0, 0, 1.
  REQUIRE(m.at("auc_ctcvr").value == 1.0);
  // Entire space: p_cvr 0.8, 0.9, 0.1, 0.3, 0.5 against 1, 1, 0, 0, 1.
  REQUIRE(m.at("auc_cvr_entire_space").value == 1.0);
  REQUIRE(m.at("auc_cvr_masked").value == m.at("auc_cvr").value);
  // Oracles. Entire space: 0.7, 0.6, 0.15 against 0.2, 0.1: five of six pairs won.
  REQUIRE(m.at("auc_cvr_entire_space_oracle").value == Approx(5.0 / 6.0));
  // Clicked rows: 0.7, 0.15 against 0.2: one of two.
  REQUIRE(m.at("auc_cvr_oracle").value == Approx(0.5));
  REQUIRE(m.at("auc_ctr_oracle").value == 1.0);
  // True p_ctcvr 0.56, 0.18, 0.10, 0.02, 0.06: 0.56 beats all three negatives, 0.06 one.
  REQUIRE(m.at("auc_ctcvr_oracle").value == Approx(4.0 / 6.0));
  REQUIRE(m.at("auc_ctr").value == 1.0);
  REQUIRE(m.count("gauc_ctr") == 0);

  PredictionColumns ctr_only;
  ctr_only.p_ctr = {0.3f, 0.6f};
  ctr_only.click = {0, 1};
  auto single = evaluate_predictions(ctr_only);
  REQUIRE(single.count("auc_cvr") == 0);
  REQUIRE(single.count("auc_ctcvr") == 0);
  REQUIRE(single.count("auc_ctr_oracle") == 0);  // no truth columns: no oracle
  ctr_only.p_cvr = {0.1f};
  REQUIRE_TORCH_ERROR(evaluate_predictions(ctr_only), "expects p_cvr to hold 2 rows like click, but it holds 1");
}

// Student's t against closed forms: df = 1 is Cauchy (p = 1 - 2 atan|t| / pi),
// df = 2 has p = 1 - |t| / sqrt(t^2 + 2); the tabled 5 % points for df 2, 4
// and 30; the critical value inverts the p-value.
TEST_CASE("Student's t p-values and critical values") {
  using mtl::metrics::student_t_critical;
  using mtl::metrics::student_t_two_sided_p;
  for (double t : {0.0, 0.3, 1.0, 2.5, 12.0, -4.0}) {
    INFO("t " << t);
    REQUIRE(student_t_two_sided_p(t, 1) == Approx(1 - 2 * std::atan(std::abs(t)) / M_PI).margin(1e-12));
    REQUIRE(student_t_two_sided_p(t, 2) == Approx(1 - std::abs(t) / std::sqrt(t * t + 2)).margin(1e-12));
  }
  REQUIRE(student_t_two_sided_p(4.302652729911275, 2) == Approx(0.05).epsilon(1e-9));
  REQUIRE(student_t_two_sided_p(2.7764451051977987, 4) == Approx(0.05).epsilon(1e-9));
  REQUIRE(student_t_two_sided_p(2.0422724563012373, 30) == Approx(0.05).epsilon(1e-9));
  REQUIRE(student_t_critical(0.05, 2) == Approx(4.302652729911275).epsilon(1e-9));
  REQUIRE(student_t_critical(0.01, 9) == Approx(3.2498355440153697).epsilon(1e-9));
  REQUIRE(std::isnan(student_t_two_sided_p(1.0, 0)));
}

// The paired test over seeds: a hand-computed case, the degenerate cases, too
// few seeds, and its false-positive rate on simulated null differences (three
// seeds, 20,000 trials) within sampling error of the nominal 5 %.
TEST_CASE("paired_seed_test") {
  using mtl::metrics::paired_seed_test;
  const auto test = paired_seed_test({1.0, 2.0, 3.0});
  REQUIRE(test.defined());
  REQUIRE(test.mean == Approx(2.0));
  REQUIRE(test.standard_deviation == Approx(1.0));
  REQUIRE(test.t == Approx(2.0 * std::sqrt(3.0)));
  REQUIRE(test.p_value == Approx(1 - std::sqrt(12.0) / std::sqrt(14.0)).epsilon(1e-9));
  REQUIRE(test.interval_low == Approx(2.0 - 4.302652729911275 / std::sqrt(3.0)).epsilon(1e-9));
  REQUIRE(test.interval_high == Approx(2.0 + 4.302652729911275 / std::sqrt(3.0)).epsilon(1e-9));
  REQUIRE(paired_seed_test({0.5, 0.5}).p_value == 0.0);
  REQUIRE(paired_seed_test({0.0, 0.0, 0.0}).p_value == 1.0);
  const auto one = paired_seed_test({0.01});
  REQUIRE_FALSE(one.defined());
  REQUIRE(one.undefined_because == "a test over seeds needs 2 seeds or more, but there is 1");
  REQUIRE(one.mean == Approx(0.01));
  REQUIRE_FALSE(paired_seed_test({0.1, 0.2}, 0.95, /*min_seeds=*/3).defined());
  // A shared variance widens the test: s^2 / n = 1/3 plus 2/3 gives a standard error of 1, and
  // Welch-Satterthwaite df = 1^2 / ((1/3)^2 / 2) = 18.
  const auto wider = paired_seed_test({1.0, 2.0, 3.0}, 0.95, 2, /*shared_variance=*/2.0 / 3.0);
  REQUIRE(wider.t == Approx(2.0));
  REQUIRE(wider.p_value == Approx(mtl::metrics::student_t_two_sided_p(2.0, 18)).epsilon(1e-9));
  REQUIRE(wider.interval_high - wider.mean == Approx(mtl::metrics::student_t_critical(0.05, 18)).epsilon(1e-9));
  // Equal differences with a shared variance: the normal test (z = 2 -> p = 0.0455).
  REQUIRE(paired_seed_test({0.5, 0.5, 0.5}, 0.95, 2, 0.0625).p_value == Approx(0.0455).epsilon(1e-3));

  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(0.0, 0.002);
  int rejected = 0;
  const int trials = 20000;
  for (int k = 0; k < trials; ++k) rejected += paired_seed_test({noise(rng), noise(rng), noise(rng)}).p_value < 0.05;
  const double rate = static_cast<double>(rejected) / trials;
  REQUIRE(rate == Approx(0.05).margin(4 * std::sqrt(0.05 * 0.95 / trials)));
}

// Holm's adjustment against a hand-worked family; untested entries stay NaN
// and do not count.
// TOST: the larger one-sided p-value of the two hypotheses |difference| >= margin.
TEST_CASE("equivalence_test") {
  using namespace mtl::metrics;
  const auto test = paired_seed_test({0.001, 0.002, 0.003});  // mean 0.002, standard error 0.001 / sqrt(3)
  const double se = 0.001 / std::sqrt(3.0);
  REQUIRE(test.standard_error == Approx(se));
  REQUIRE(test.degrees_of_freedom == Approx(2.0));
  const auto e = equivalence_test(test, 0.005);
  // The binding side is the upper bound: P(T_2 >= (0.005 - 0.002) / se).
  REQUIRE(e.p_value == Approx(0.5 * student_t_two_sided_p(0.003 / se, 2.0)));
  REQUIRE(e.p_value < 0.05);  // the 90 % interval, 0.002 +- 2.92 se, lies inside +-0.005
  REQUIRE(equivalence_test(test, 0.003).p_value > 0.05);
  REQUIRE(equivalence_test(test, 0.002).p_value >= 0.5);  // the mean on the margin: never equivalent
  REQUIRE_FALSE(equivalence_test(paired_seed_test({0.001}, 0.95, 2), 0.005).defined());
  REQUIRE_FALSE(equivalence_test(test, 0.0).defined());
  // Its level: with a true difference equal to the margin, "equivalent" in at most alpha of replicates.
  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(0.004, 0.004);  // true difference 0.004 = the margin, seed sd 0.004
  const int trials = 4000;
  int equivalent = 0;
  for (int k = 0; k < trials; ++k) {
    std::vector<double> d(8);
    for (auto& x : d) x = noise(rng);
    equivalent += equivalence_test(paired_seed_test(d), 0.004).p_value < 0.05;
  }
  INFO("equivalent in " << equivalent << " of " << trials << " replicates at the margin");
  REQUIRE(static_cast<double>(equivalent) / trials <= 0.05 + 2 * std::sqrt(0.05 * 0.95 / trials));
}

TEST_CASE("minimum_detectable_effect") {
  using namespace mtl::metrics;
  // Many degrees of freedom: (z_0.975 + z_0.8) x standard error.
  const auto wide = paired_seed_test({1.0, 2.0, 3.0}, 0.95, 2, /*shared_variance=*/1e6);
  REQUIRE(minimum_detectable_effect(wide) == Approx((1.959964 + 0.841621) * wide.standard_error).epsilon(1e-3));
  // Three seeds, no shared variance: (t_2,0.975 + t_2,0.8) x s / sqrt(3).
  const auto three = paired_seed_test({1.0, 2.0, 3.0});
  REQUIRE(minimum_detectable_effect(three) == Approx((4.302653 + 1.060660) / std::sqrt(3.0)).epsilon(1e-4));
  REQUIRE(std::isnan(minimum_detectable_effect(paired_seed_test({1.0}, 0.95, 2))));
}

TEST_CASE("holm_adjusted") {
  using mtl::metrics::holm_adjusted;
  const auto adjusted = holm_adjusted({0.01, 0.04, 0.03, 0.005});
  REQUIRE(adjusted[3] == Approx(0.02));
  REQUIRE(adjusted[0] == Approx(0.03));
  REQUIRE(adjusted[2] == Approx(0.06));
  REQUIRE(adjusted[1] == Approx(0.06));  // 0.04 alone, but never below the step before it
  const auto with_gap = holm_adjusted({0.2, NAN, 0.01});
  REQUIRE(with_gap[2] == Approx(0.02));
  REQUIRE(with_gap[0] == Approx(0.2));
  REQUIRE(std::isnan(with_gap[1]));
  REQUIRE(holm_adjusted({0.6, 0.7})[1] == 1.0);
}

// The masked AUC equals the AUC of the masked rows alone, and says when no row passes.
TEST_CASE("masked_auc") {
  const std::vector<float> scores{0.9f, 0.1f, 0.4f, 0.3f, 0.8f, 0.2f};
  const std::vector<float> labels{1, 1, 0, 1, 0, 0};
  const std::vector<float> mask{1, 0, 1, 1, 0, 1};
  REQUIRE(masked_auc(scores, labels, mask).value ==
          roc_auc(std::vector<float>{0.9f, 0.4f, 0.3f, 0.2f}, std::vector<float>{1, 0, 1, 0}).value);
  REQUIRE(masked_auc(scores, labels, std::vector<float>(6, 0.0f)).undefined_because == "no row passes the mask");
  REQUIRE_TORCH_ERROR(masked_auc(scores, labels, std::vector<float>{1}), "one label and one mask value per score");
}
