// Tests of the built-in synthetic data: Ali-CCP shape, determinism, and that
// each knob moves what its documentation says it moves.
#include "test_helpers.hpp"

#include <mtl/data/synthetic.hpp>
#include <mtl/functional/losses.hpp>
#include <mtl/metrics/auc.hpp>
#include <mtl/model.hpp>
#include <mtl/optim/dual_optimizer.hpp>

#include <algorithm>
#include <cmath>
#include <map>

using namespace mtl;
using namespace mtl::data;

namespace {

/// Small entity tables keep each generator cheap to build in tests.
SyntheticOptions small() { return SyntheticOptions().num_users(20000).num_items(20000); }

template <class T>
double mean(const std::vector<T>& v) {
  double s = 0;
  for (T x : v) s += x;
  return s / static_cast<double>(v.size());
}

double correlation(const std::vector<double>& x, const std::vector<double>& y) {
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
  mx /= x.size(), my /= y.size();
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i)
    sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx), syy += (y[i] - my) * (y[i] - my);
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace

// 23 sparse fields named as Ali-CCP's, 8 dense; ids in range; conversion only on clicks.
TEST_CASE("synthetic data has the Ali-CCP shape") {
  SyntheticGenerator gen(small());
  const auto& schema = gen.schema();
  REQUIRE(schema.num_sparse() == 23);
  REQUIRE(schema.num_dense() == 8);
  REQUIRE(schema.sparse_fields()[0].name == "101");
  REQUIRE(schema.sparse_fields()[9].name == "205");
  REQUIRE(schema.sparse_fields()[22].name == "150_14");
  REQUIRE(schema.dense_fields()[0].name == "D109_14");
  auto ds = gen.generate(Split::train, 50000);
  REQUIRE(ds.num_rows() == 50000);
  REQUIRE(ds.truth.p_cvr.size() == 50000);
  for (int64_t r = 0; r < ds.num_rows(); ++r) {
    REQUIRE(ds.conversion[r] == ds.click[r] * ds.truth.counterfactual_conversion[r]);
    for (int64_t j = 0; j < 23; ++j) {
      const int32_t id = ds.ids[r * 23 + j];
      if (id < 0 || id >= schema.sparse_fields()[j].vocab_size) FAIL("id " << id << " out of range in field " << j);
    }
  }
  // Default levels: CTR a few percent, CVR among clicks around a tenth.
  const double ctr = mean(ds.click), cvr = mean(ds.conversion) / ctr;
  INFO("CTR " << ctr << ", CVR " << cvr);
  REQUIRE(ctr > 0.02);
  REQUIRE(ctr < 0.08);
  REQUIRE(cvr > 0.05);
  REQUIRE(cvr < 0.25);
  // Ids follow Zipf laws: the most frequent user is far above the mean.
  std::map<int32_t, int> user_counts;
  for (int64_t r = 0; r < ds.num_rows(); ++r) ++user_counts[ds.ids[r * 23]];
  int most = 0;
  for (const auto& [u, c] : user_counts) most = std::max(most, c);
  REQUIRE(most > 50 * 50000 / 20000);
}

// The same seed gives the same rows; rows are addressable in chunks; splits and seeds differ.
TEST_CASE("synthetic data is deterministic for a seed") {
  SyntheticGenerator a(small()), b(small()), other(small().seed(7));
  auto whole = a.generate(Split::valid, 3000);
  auto again = b.generate(Split::valid, 3000);
  REQUIRE(whole.ids == again.ids);
  REQUIRE(whole.dense == again.dense);
  REQUIRE(whole.truth.counterfactual_conversion == again.truth.counterfactual_conversion);
  auto tail = a.generate(Split::valid, 1000, /*first_row=*/2000);
  REQUIRE(std::vector<int32_t>(whole.ids.begin() + 2000 * 23, whole.ids.end()) == tail.ids);
  REQUIRE(a.generate(Split::test, 3000).ids != whole.ids);
  REQUIRE(other.generate(Split::valid, 3000).ids != whole.ids);
}

// The null scenario keeps the features and turns every mechanism off: the
// same ids and dense values as the designed scenario's, labels at the
// designed scenario's marginal rates (as many clicks and conversions), and no
// score computed from the features (here the designed truth) ranks them
// better than chance.
TEST_CASE("synthetic null scenario: the same features, labels independent of them") {
  const auto designed = SyntheticGenerator(small()).generate(Split::test, 200000);
  const auto null = SyntheticGenerator(small().scenario(SyntheticScenario::null)).generate(Split::test, 200000);
  REQUIRE(null.ids == designed.ids);
  REQUIRE(null.dense == designed.dense);
  // The designed rates, measured on these rows: clicks, and conversions among the clicked rows.
  const double base_ctr = mean(designed.truth.p_click);
  double converting = 0;
  for (size_t r = 0; r < designed.truth.p_click.size(); ++r)
    converting += designed.truth.p_click[r] * designed.truth.p_cvr[r];
  const double base_cvr = converting / (base_ctr * static_cast<double>(designed.truth.p_click.size()));
  INFO("designed rates: clicks " << base_ctr << ", conversions among clicks " << base_cvr);
  REQUIRE(base_ctr > 0.03);  // far above sigmoid(ctr_bias): the mechanisms raise it
  REQUIRE(mean(null.click) == Approx(base_ctr).margin(0.002));
  REQUIRE(mean(null.truth.counterfactual_conversion) == Approx(base_cvr).margin(0.01));
  REQUIRE(std::all_of(null.truth.p_click.begin(), null.truth.p_click.end(),
                      [&](float p) { return p == null.truth.p_click.front(); }));
  // AUC of a score independent of the labels: 0.5 within sampling error (sd about 0.003 at these counts).
  const double auc_click = metrics::roc_auc(designed.truth.p_click, null.click).value;
  const double auc_conversion = metrics::roc_auc(designed.truth.p_cvr, null.truth.counterfactual_conversion).value;
  REQUIRE(auc_click == Approx(0.5).margin(0.015));
  REQUIRE(auc_conversion == Approx(0.5).margin(0.012));
  REQUIRE(metrics::roc_auc(designed.truth.p_click, designed.click).value > 0.7);  // the designed labels follow it
  REQUIRE(std::string(scenario_name(SyntheticScenario::null)) == "null");
}

// The stream a seed gives is pinned: a checksum of the first rows' ids,
// dense values and labels. Every draw is a statement of its own, so another
// compiler draws the same stream; a change to the generator's formulas shows here.
TEST_CASE("synthetic data: a seed gives the same rows on every build") {
  const auto ds = SyntheticGenerator(small()).generate(Split::train, 2000);
  uint64_t sum = 1469598103934665603ULL;  // FNV-1a over the values' bytes
  const auto add = [&](const auto& values) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
    for (size_t i = 0; i < values.size() * sizeof(values[0]); ++i) sum = (sum ^ bytes[i]) * 1099511628211ULL;
  };
  add(ds.ids), add(ds.dense), add(ds.click), add(ds.conversion), add(ds.truth.counterfactual_conversion);
  REQUIRE(sum == 17808597879146083891ULL);
}

// ctr_bias and cvr_bias move the label levels.
TEST_CASE("synthetic knobs: label levels") {
  auto base = SyntheticGenerator(small()).generate(Split::train, 40000);
  auto more = SyntheticGenerator(small().ctr_bias(-3.8).cvr_bias(-1.8)).generate(Split::train, 40000);
  REQUIRE(mean(more.click) > 1.5 * mean(base.click));
  REQUIRE(mean(more.truth.p_cvr) > 1.5 * mean(base.truth.p_cvr));
}

namespace {

/// The logit terms of the first `rows` rows of a split.
std::vector<SyntheticGenerator::LogitTerms> terms_of(const SyntheticGenerator& gen, int64_t rows,
                                                     Split split = Split::train) {
  std::vector<SyntheticGenerator::LogitTerms> out;
  for (int64_t r = 0; r < rows; ++r) out.push_back(gen.logit_terms(split, r));
  return out;
}

template <class F>
std::vector<double> column(const std::vector<SyntheticGenerator::LogitTerms>& terms, F&& f) {
  std::vector<double> out;
  for (const auto& t : terms) out.push_back(f(t));
  return out;
}

double variance(const std::vector<double>& v) {
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= v.size();
  for (double x : v) s += (x - m) * (x - m);
  return s / v.size();
}

}  // namespace

// task_relatedness is the correlation of the two tasks' taste terms, measured on the rows.
TEST_CASE("synthetic mechanism, shared taste: task_relatedness is the taste terms' correlation") {
  for (double r : {0.0, 0.3, 0.8, 1.0}) {
    const auto terms = terms_of(SyntheticGenerator(SyntheticOptions().task_relatedness(r)), 100000);
    const double measured = correlation(column(terms, [](const auto& t) { return t.click_taste; }),
                                        column(terms, [](const auto& t) { return t.buy_taste; }));
    INFO("task_relatedness " << r << ": measured correlation " << measured);
    REQUIRE(measured == Approx(r).margin(0.03));
  }
}

// The selection latent makes selection missing not at random: the best
// score a model of the visible features can learn from clicked rows,
// P(conversion | x, click), ranks the entire space worse than P(conversion | x).
// Both are integrated over the latent's normal law from the row's other terms.
TEST_CASE("synthetic mechanism, selection latent: the selection latent biases clicked-row CVR over the entire space") {
  const auto gap_at = [](double weight) {
    SyntheticGenerator gen(small().selection_latent_weight(weight));
    const auto terms = terms_of(gen, 100000, Split::test);
    const auto ds = gen.generate(Split::test, 100000);
    std::vector<double> z, pdf;
    for (int k = -60; k <= 60; ++k) z.push_back(k / 10.0), pdf.push_back(std::exp(-0.5 * z.back() * z.back()));
    const auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
    std::vector<float> entire_space, clicked_rows;
    for (const auto& t : terms) {
      // The visible parts of the logits: the true logits less the latent's share.
      const double click = t.click_logit - weight * t.selection_latent, cvr = t.cvr_logit + weight * t.selection_latent;
      double conv = 0, click_p = 0, both = 0, mass = 0;
      for (size_t k = 0; k < z.size(); ++k) {
        const double pc = sig(click + weight * z[k]), pv = sig(cvr - weight * z[k]);
        conv += pdf[k] * pv, click_p += pdf[k] * pc, both += pdf[k] * pc * pv, mass += pdf[k];
      }
      entire_space.push_back(static_cast<float>(conv / mass));
      clicked_rows.push_back(static_cast<float>(both / click_p));
    }
    const double a = metrics::roc_auc(entire_space, ds.truth.counterfactual_conversion).value;
    const double b = metrics::roc_auc(clicked_rows, ds.truth.counterfactual_conversion).value;
    INFO("selection_latent_weight " << weight << ": entire-space AUC of P(conv | x) " << a << ", of P(conv | x, click) "
                                    << b);
    return a - b;
  };
  // Exactly no gap without the latent; a small one at the default weight, growing with it.
  const double none = gap_at(0.0), weak = gap_at(1.0), strong = gap_at(2.0);
  REQUIRE(std::fabs(none) < 1e-4);
  REQUIRE(weak > 0.0003);
  REQUIRE(strong > weak + 0.005);
  // The clicked rows convert less than they would without the latent.
  const auto clicked_cvr = [](double weight) {
    const auto ds = SyntheticGenerator(small().selection_latent_weight(weight)).generate(Split::train, 100000);
    double sum = 0, n = 0;
    for (int64_t r = 0; r < ds.num_rows(); ++r)
      if (ds.click[r] > 0) sum += ds.truth.p_cvr[r], n += 1;
    return sum / n;
  };
  REQUIRE(clicked_cvr(1.0) < 0.8 * clicked_cvr(0.0));
}

// private_term_weight adds to each logit a term of its task's own, unit-variance,
// uncorrelated with the other task's; the knob sets its weight.
TEST_CASE("synthetic mechanism, private terms: each task's private term") {
  const auto off = terms_of(SyntheticGenerator(small().private_term_weight(0)), 50000);
  const auto on = terms_of(SyntheticGenerator(small().private_term_weight(1.5)), 50000);
  for (size_t r = 0; r < on.size(); ++r) {
    REQUIRE(on[r].click_logit - off[r].click_logit == Approx(1.5 * on[r].private_click).margin(1e-9));
    REQUIRE(on[r].cvr_logit - off[r].cvr_logit == Approx(1.5 * on[r].private_buy).margin(1e-9));
  }
  const auto click = column(on, [](const auto& t) { return t.private_click; });
  const auto buy = column(on, [](const auto& t) { return t.private_buy; });
  INFO("variances " << variance(click) << ", " << variance(buy) << "; correlation " << correlation(click, buy));
  REQUIRE(variance(click) == Approx(1.0).margin(0.3));
  REQUIRE(variance(buy) == Approx(1.0).margin(0.3));
  REQUIRE(std::fabs(correlation(click, buy)) < 0.05);
  // Non-linear in the taste: neither task's taste term explains it.
  REQUIRE(std::fabs(correlation(click, column(on, [](const auto& t) { return t.click_taste; }))) < 0.05);
}

// dense_product_weight adds a product of four dense features (user-category
// affinity D702, shop score D508, context values D509 and D853) to the click
// logit: unit variance, nothing of it in any one feature, pair or triple (at
// the chain's entity counts).
TEST_CASE("synthetic mechanism, dense product: a four-way cross of dense features") {
  SyntheticGenerator gen{SyntheticOptions()};
  const auto terms = terms_of(gen, 100000);
  const auto ds = gen.generate(Split::train, 100000);
  const auto off = terms_of(SyntheticGenerator(SyntheticOptions().dense_product_weight(0)), 100000);
  // The four features, each centred on its mean over these rows.
  const auto feature = [&](int64_t column) {
    std::vector<double> v;
    for (int64_t r = 0; r < ds.num_rows(); ++r) v.push_back(ds.dense[r * 8 + column]);
    const double m = mean(v);
    for (auto& x : v) x -= m;
    return v;
  };
  const std::vector<std::vector<double>> factors{feature(6), feature(4), feature(5), feature(7)};
  // The product of all four, and of every proper subset of them (each one, each pair, each triple).
  std::vector<double> all;
  std::vector<std::vector<double>> parts;
  for (int subset = 1; subset < 16; ++subset) {
    std::vector<double> product(ds.num_rows(), 1.0);
    for (int f = 0; f < 4; ++f)
      if (subset & (1 << f))
        for (int64_t r = 0; r < ds.num_rows(); ++r) product[r] *= factors[f][r];
    if (subset == 15)
      all = std::move(product);
    else
      parts.push_back(std::move(product));
  }
  for (int64_t r = 0; r < ds.num_rows(); ++r)
    REQUIRE(terms[r].click_logit - off[r].click_logit == Approx(terms[r].cross).margin(1e-9));
  const auto cross = column(terms, [](const auto& t) { return t.cross; });
  REQUIRE(variance(cross) == Approx(1.0).margin(0.05));
  REQUIRE(correlation(cross, all) > 0.999);
  // Nothing of it in any one feature, pair or triple: each factor is centred on its mean over rows.
  for (const auto& part : parts) {
    INFO("correlation with a product of fewer factors: " << correlation(cross, part));
    REQUIRE(std::fabs(correlation(cross, part)) < 0.05);
  }
  // What it is worth: the true click logit ranks the clicks clearly better with the term than without it.
  const auto click_logit = column(terms, [](const auto& t) { return t.click_logit; });
  const auto without_cross = column(terms, [](const auto& t) { return t.click_logit - t.cross; });
  const double worth = metrics::roc_auc(click_logit, ds.click).value - metrics::roc_auc(without_cross, ds.click).value;
  INFO("CTR AUC the term is worth to the true logit: " << worth);
  REQUIRE(worth > 0.03);
}

// label_noise lowers the AUC that even the true probabilities reach.
TEST_CASE("synthetic knobs: label noise") {
  auto clean = SyntheticGenerator(small()).generate(Split::train, 100000);
  auto noisy = SyntheticGenerator(small().label_noise(2.0)).generate(Split::train, 100000);
  const double clean_auc = metrics::roc_auc(clean.truth.p_click, clean.click).value;
  const double noisy_auc = metrics::roc_auc(noisy.truth.p_click, noisy.click).value;
  INFO("oracle CTR AUC clean " << clean_auc << ", noisy " << noisy_auc);
  REQUIRE(noisy_auc < clean_auc - 0.03);
}

// Bad knob values are refused.
TEST_CASE("synthetic knobs: bad values") {
  REQUIRE_TORCH_ERROR(SyntheticGenerator(small().task_relatedness(1.5)), "task_relatedness in [0, 1], but got 1.5");
  REQUIRE_TORCH_ERROR(SyntheticGenerator(small().num_users(0)), "positive num_users");
  REQUIRE_TORCH_ERROR(SyntheticGenerator(small().label_noise(-1)), "label_noise >= 0");
  REQUIRE_TORCH_ERROR(SyntheticGenerator(small().selection_latent_weight(-1)), "selection_latent_weight >= 0");
}
