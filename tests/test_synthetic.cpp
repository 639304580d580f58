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

double mean(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / static_cast<double>(v.size());
}
double logit(double p) { return std::log(p / (1 - p)); }

double correlation(const std::vector<double>& x, const std::vector<double>& y) {
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
  mx /= x.size(), my /= y.size();
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i)
    sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx), syy += (y[i] - my) * (y[i] - my);
  return sxy / std::sqrt(sxx * syy);
}

/// Variance of what is left of cell means after removing row and column
/// effects: the interaction of two fields in `values` (two-way layout).
double interaction_variance(const Dataset& ds, int field_a, int field_b, const std::vector<double>& values) {
  const int64_t f = ds.schema().num_sparse();
  std::map<std::pair<int, int>, std::pair<double, int>> cells;
  for (int64_t r = 0; r < ds.num_rows(); ++r) {
    auto& c = cells[{ds.ids[r * f + field_a], ds.ids[r * f + field_b]}];
    c.first += values[r], c.second += 1;
  }
  std::map<int, std::pair<double, int>> rows, cols;
  double grand = 0;
  int n = 0;
  for (const auto& [key, c] : cells) {
    if (c.second < 20) continue;  // well-estimated cells only
    const double m = c.first / c.second;
    rows[key.first].first += m, rows[key.first].second++;
    cols[key.second].first += m, cols[key.second].second++;
    grand += m, ++n;
  }
  grand /= n;
  double var = 0;
  int used = 0;
  for (const auto& [key, c] : cells) {
    if (c.second < 20) continue;
    const double residual = c.first / c.second - rows[key.first].first / rows[key.first].second -
                            cols[key.second].first / cols[key.second].second + grand;
    var += residual * residual, ++used;
  }
  return var / used;
}

std::vector<double> click_logits(const Dataset& ds) {
  std::vector<double> v;
  for (float p : ds.truth.p_click) v.push_back(logit(p));
  return v;
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
// same ids and dense values as the designed scenario's, labels at the base
// rates, and no score computed from the features (here the designed truth)
// ranks them better than chance.
TEST_CASE("synthetic null scenario: the same features, labels independent of them") {
  const auto designed = SyntheticGenerator(small()).generate(Split::test, 200000);
  const auto null = SyntheticGenerator(small().scenario(SyntheticScenario::null)).generate(Split::test, 200000);
  REQUIRE(null.ids == designed.ids);
  REQUIRE(null.dense == designed.dense);
  const double base_ctr = 1 / (1 + std::exp(-small().ctr_bias())), base_cvr = 1 / (1 + std::exp(-small().cvr_bias()));
  REQUIRE(mean(null.click) == Approx(base_ctr).margin(4 * std::sqrt(base_ctr / 200000)));
  REQUIRE(mean(null.truth.counterfactual_conversion) == Approx(base_cvr).margin(4 * std::sqrt(base_cvr / 200000)));
  REQUIRE(std::all_of(null.truth.p_click.begin(), null.truth.p_click.end(),
                      [&](float p) { return p == static_cast<float>(base_ctr); }));
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
  REQUIRE(sum == 9978366994681072698ULL);
}

// ctr_bias and cvr_bias move the label levels.
TEST_CASE("synthetic knobs: label levels") {
  auto base = SyntheticGenerator(small()).generate(Split::train, 40000);
  auto more = SyntheticGenerator(small().ctr_bias(-3.8).cvr_bias(-1.8)).generate(Split::train, 40000);
  REQUIRE(mean(more.click) > 1.5 * mean(base.click));
  REQUIRE(mean(more.truth.p_cvr) > 1.5 * mean(base.truth.p_cvr));
}

// task_relatedness raises the correlation of the click and conversion logits.
TEST_CASE("synthetic knobs: task relatedness") {
  auto corr_at = [](double rho) {
    auto ds = SyntheticGenerator(small().task_relatedness(rho).selection_bias(0).deep_signal(0).cross_signal(0))
                  .generate(Split::train, 40000);
    std::vector<double> c, v;
    for (int64_t r = 0; r < ds.num_rows(); ++r)
      c.push_back(logit(ds.truth.p_click[r])), v.push_back(logit(ds.truth.p_cvr[r]));
    return correlation(c, v);
  };
  const double unrelated = corr_at(0.0), related = corr_at(1.0);
  INFO("correlation at relatedness 0: " << unrelated << ", at 1: " << related);
  REQUIRE(std::fabs(unrelated) < 0.1);
  REQUIRE(related > unrelated + 0.3);
}

// selection_bias makes the clicked population convert less than the whole
// population would: the clicked rows are not a sample of the entire space.
TEST_CASE("synthetic knobs: selection bias shifts the clicked population") {
  auto ratio_at = [](double bias) {
    auto ds = SyntheticGenerator(small().selection_bias(bias).task_relatedness(0).deep_signal(0))
                  .generate(Split::train, 100000);
    double clicked = 0, n = 0;
    for (int64_t r = 0; r < ds.num_rows(); ++r)
      if (ds.click[r] > 0) clicked += ds.truth.p_cvr[r], n += 1;
    return (clicked / n) / mean(ds.truth.p_cvr);
  };
  const double none = ratio_at(0.0), strong = ratio_at(1.5);
  INFO("mean true CVR of clicked rows over all rows: bias 0 -> " << none << ", bias 1.5 -> " << strong);
  REQUIRE(std::fabs(none - 1.0) < 0.1);
  REQUIRE(strong < 0.8);
}

// On the default data, a CVR model trained on clicked rows only falls further
// short of the oracle on the entire space than on the clicked rows.
TEST_CASE("synthetic data: a clicked-rows CVR model ranks the entire space worse") {
  torch::manual_seed(1);
  SyntheticGenerator gen(small());
  auto train = gen.generate(Split::train, 400000);
  std::vector<int64_t> clicked;
  for (int64_t r = 0; r < train.num_rows(); ++r)
    if (train.click[r] > 0) clicked.push_back(r);
  SharedBottomModel model(SharedBottomModelOptions(DeepFMOptions(gen.schema()).deep_hidden_dims({64, 32}),
                                                   SharedBottomOptions(0, 0), {"cvr"}));
  optim::DualSparseDenseOptimizer opt(
      *model, optim::DualSparseDenseOptions().sparse_lr(0.01).dense_lr(0.003).total_steps(300).warmup_steps(10));
  for (int step = 0; step < 300; ++step) {
    std::vector<int64_t> rows;
    for (int j = 0; j < 512; ++j) rows.push_back(clicked[(step * 512 + j) % clicked.size()]);
    auto batch = train.batch(rows);
    opt.zero_grad();
    binary_cross_entropy_loss(model->forward(batch.features).logits[0], batch.conversion).backward();
    opt.step();
  }
  auto test = gen.generate(Split::test, 200000);
  torch::NoGradGuard no_grad;
  auto p = torch::sigmoid(model->forward(test.slice(0, test.num_rows()).features).logits[0]).contiguous();
  std::vector<float> p_all(p.data_ptr<float>(), p.data_ptr<float>() + p.numel()), p_clicked, y_clicked, oracle_clicked;
  for (int64_t r = 0; r < test.num_rows(); ++r)
    if (test.click[r] > 0)
      p_clicked.push_back(p_all[r]), y_clicked.push_back(test.conversion[r]),
          oracle_clicked.push_back(test.truth.p_cvr[r]);
  const double model_clicked = metrics::roc_auc(p_clicked, y_clicked).value;
  const double model_entire = metrics::roc_auc(p_all, test.truth.counterfactual_conversion).value;
  const double oracle_clicked_auc = metrics::roc_auc(oracle_clicked, y_clicked).value;
  const double oracle_entire = metrics::roc_auc(test.truth.p_cvr, test.truth.counterfactual_conversion).value;
  INFO("model AUC clicked " << model_clicked << ", entire " << model_entire << "; oracle clicked " << oracle_clicked_auc
                            << ", entire " << oracle_entire);
  REQUIRE(model_clicked > 0.55);
  REQUIRE(model_entire < model_clicked);
  REQUIRE(oracle_entire - model_entire > oracle_clicked_auc - model_clicked);
}

// cross_signal adds an interaction of user profile 122 and item category 206 to the click logit.
TEST_CASE("synthetic knobs: cross signal") {
  auto options = small().deep_signal(0);
  auto off = SyntheticGenerator(SyntheticOptions(options).cross_signal(0)).generate(Split::train, 200000);
  auto on = SyntheticGenerator(SyntheticOptions(options).cross_signal(1.0)).generate(Split::train, 200000);
  const double without = interaction_variance(off, 2, 10, click_logits(off));
  const double with = interaction_variance(on, 2, 10, click_logits(on));
  INFO("interaction variance of (122, 206) in the click logit: off " << without << ", on " << with);
  REQUIRE(with > 0.5);
  REQUIRE(with > 5 * without);
}

// deep_signal adds a user-item term that neither the user nor the item explains alone.
TEST_CASE("synthetic knobs: deep signal") {
  auto off = SyntheticGenerator(small().deep_signal(0)).generate(Split::train, 100000);
  auto on = SyntheticGenerator(small().deep_signal(1.0)).generate(Split::train, 100000);
  std::vector<double> added;
  for (int64_t r = 0; r < on.num_rows(); ++r) added.push_back(logit(on.truth.p_click[r]) - logit(off.truth.p_click[r]));
  double var = 0, m = 0;
  for (double x : added) m += x;
  m /= added.size();
  for (double x : added) var += (x - m) * (x - m);
  var /= added.size();
  REQUIRE(var > 0.5);
  // Averaged per item, the term mostly cancels: it lives in the user-item interaction.
  std::map<int32_t, std::pair<double, int>> per_item;
  for (int64_t r = 0; r < on.num_rows(); ++r) {
    auto& c = per_item[on.ids[r * 23 + 9]];
    c.first += added[r], c.second++;
  }
  double between = 0, weight = 0;
  for (const auto& [item, c] : per_item)
    if (c.second >= 30) between += c.second * std::pow(c.first / c.second - m, 2), weight += c.second;
  INFO("variance of the deep term " << var << ", of its per-item means " << between / weight);
  REQUIRE(between / weight < 0.25 * var);
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
}
