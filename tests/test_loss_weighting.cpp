// Tests of task-loss weighting against the papers' formulas: fixed weights
// on the objective's terms, uncertainty weighting's gradient and its fixed
// point (Kendall et al. 2018), GradNorm balancing two terms whose scales
// differ 100-fold (Chen et al. 2018), and bad options refused by name.
#include "test_helpers.hpp"

#include <mtl/train/loss_weighting.hpp>
#include <mtl/train/objective.hpp>

#include <algorithm>
#include <cmath>

using namespace mtl;
using namespace mtl::train;

namespace {

/// A batch of `n` rows with a few clicks and conversions, and logits that need gradients.
struct EsmmBatch {
  data::TrainingBatch batch;
  TaskLogits logits;
  explicit EsmmBatch(int64_t n = 64) {
    torch::manual_seed(7);
    batch.click = (torch::rand({n}) < 0.3).to(torch::kFloat);
    batch.conversion = batch.click * (torch::rand({n}) < 0.4).to(torch::kFloat);
    logits = {{"ctr", "cvr"},
              {torch::randn({n}, torch::requires_grad()), torch::randn({n}, torch::requires_grad())}};
  }
};
}  // namespace

// Every objective shape's term_names are the names its losses carry, in order.
TEST_CASE("Objective::term_names are the loss's terms") {
  EsmmBatch b;
  auto with_imputation = b.logits;
  with_imputation.tasks.push_back(kImputationHead);
  with_imputation.logits.push_back(torch::randn({64}));
  const std::vector<std::pair<std::vector<std::string>, ObjectiveOptions>> shapes{
      {{"ctr"}, ObjectiveOptions()},
      {{"cvr"}, ObjectiveOptions()},
      {{"ctr", "cvr"}, ObjectiveOptions()},
      {{"ctr", "cvr"}, ObjectiveOptions().use_esmm(true).esmm_version(ESMMVersion::v1)},
      {{"ctr", "cvr"}, ObjectiveOptions().use_esmm(true)},
      {{"ctr", "cvr"}, ObjectiveOptions().use_esmm(true).counterfactual(ESMMCounterfactual::ips)},
      {{"ctr", "cvr", kImputationHead}, ObjectiveOptions().use_esmm(true).counterfactual(ESMMCounterfactual::dr)}};
  for (const auto& [tasks, options] : shapes) {
    const Objective objective(tasks, options);
    const auto loss = objective(tasks.size() == 3 ? with_imputation : b.logits, b.batch);
    std::vector<std::string> names;
    for (const auto& [name, t] : loss.terms) names.push_back(name);
    REQUIRE(names == objective.term_names());
    // The total is each term times its coefficient.
    auto sum = torch::zeros({});
    for (const auto& [name, t] : loss.terms) sum = sum + objective.coefficient(name) * t;
    REQUIRE(loss.total.item<double>() == Approx(sum.item<double>()).epsilon(1e-6));
  }
}

// Fixed weights: the total is sum_i w_i c_i L_i, its gradient that of the formula; weights of 1 change nothing.
TEST_CASE("fixed loss weights weigh each term") {
  EsmmBatch b;
  const Objective objective({"ctr", "cvr"}, ObjectiveOptions().use_esmm(true).lambda_cvr_aux(0.1));
  const LossWeighting weighting(objective, LossWeightingOptions().fixed_weights({{"ctr", 0.5}, {"cvr_aux", 3.0}}));
  REQUIRE_FALSE(weighting.is_identity());
  const auto loss = objective(b.logits, b.batch);
  const auto total = weighting.total(loss);
  const auto expected = 0.5 * loss.at("ctr") + loss.at("ctcvr") + 3.0 * 0.1 * loss.at("cvr_aux");
  REQUIRE(total.item<double>() == Approx(expected.item<double>()).epsilon(1e-6));
  const auto got = torch::autograd::grad({total}, b.logits.logits, {}, true);
  const auto want = torch::autograd::grad({expected}, b.logits.logits);
  for (size_t i = 0; i < got.size(); ++i) REQUIRE(torch::allclose(got[i], want[i], 1e-6, 1e-7));
  REQUIRE(LossWeighting(objective, LossWeightingOptions().fixed_weights({{"ctr", 1.0}})).is_identity());
  REQUIRE(LossWeighting(objective, LossWeightingOptions()).weights().empty());
}

// Uncertainty weighting minimises sum_i exp(-s_i) c_i L_i + s_i: its update follows that function's gradient in
// s (checked against autograd), the model's loss weighs each term exp(-s_i), and with the terms held still each
// s_i settles where the gradient vanishes, at log(c_i L_i): the weight 1 / (c_i L_i).
TEST_CASE("uncertainty weighting follows Kendall et al.'s formula") {
  const Objective objective({"ctr", "cvr"});
  LossTerms loss;
  const double l_ctr = 0.5, l_cvr = 2.0;
  loss.terms = {{"ctr", torch::tensor(l_ctr)}, {"cvr", torch::tensor(l_cvr)}};
  loss.total = torch::tensor(l_ctr + l_cvr);
  LossWeighting weighting(objective, LossWeightingOptions().kind(LossWeightingKind::uncertainty).lr(0.05));
  REQUIRE(weighting.weights() == std::vector<std::pair<std::string, double>>{{"ctr", 1.0}, {"cvr", 1.0}});

  // One Adam step moves s against the formula's gradient: s = 0 gives d/ds = 1 - L, so ctr's s (L < 1) rises
  // and cvr's (L > 1) falls, each by lr (Adam's first step is lr times the gradient's sign).
  auto s = torch::zeros({2}, torch::requires_grad());
  const auto formula = (torch::exp(-s) * torch::tensor({l_ctr, l_cvr}) + s).sum();
  const auto gradient = torch::autograd::grad({formula}, {s})[0];
  weighting.update(loss);
  const auto w = weighting.weights();
  for (int i = 0; i < 2; ++i) {
    const double moved = -std::log(w[i].second);  // s after the step
    REQUIRE(moved == Approx(-0.05 * (gradient[i].item<double>() > 0 ? 1 : -1)).margin(1e-9));
  }
  // The weighted total is sum_i exp(-s_i) L_i.
  REQUIRE(weighting.total(loss).item<double>() == Approx(w[0].second * l_ctr + w[1].second * l_cvr).epsilon(1e-6));

  for (int step = 0; step < 3000; ++step) weighting.update(loss);
  const auto settled = weighting.weights();
  INFO("weights after 3000 steps: " << settled[0].second << ", " << settled[1].second);
  REQUIRE(settled[0].second == Approx(1 / l_ctr).epsilon(0.01));
  REQUIRE(settled[1].second == Approx(1 / l_cvr).epsilon(0.01));
}

// GradNorm on a shared layer and two heads whose losses differ 100-fold in scale: at the start the gradient norms
// on the shared layer differ about 100-fold; with alpha 0 (every norm pulled to the mean) their ratio approaches 1
// (its geometric mean over the last 200 of 1500 steps within 10 %; the sign-driven moves keep it swinging around 1),
// and the weights keep summing to the number of terms.
TEST_CASE("GradNorm balances two terms whose scales differ 100-fold") {
  torch::manual_seed(3);
  auto shared = torch::nn::Linear(8, 16);
  auto head_a = torch::nn::Linear(16, 1), head_b = torch::nn::Linear(16, 1);
  std::vector<torch::Tensor> parameters = shared->parameters();
  for (auto& p : head_a->parameters()) parameters.push_back(p);
  for (auto& p : head_b->parameters()) parameters.push_back(p);
  torch::optim::SGD sgd(parameters, 0.01);
  const auto x = torch::randn({256, 8});
  const auto y_a = torch::randn({256}), y_b = torch::randn({256});
  const Objective objective({"ctr", "cvr"});
  LossWeighting weighting(
      objective,
      LossWeightingOptions().kind(LossWeightingKind::gradnorm).lr(0.005).gradnorm_alpha(0).gradnorm_interval(1));
  const auto norm_ratio = [&](const LossTerms& loss) {
    const auto g = weighting.term_gradients(loss, {shared->weight});
    const auto w = weighting.weights();
    return w[0].second * g[0].norm().item<double>() / (w[1].second * g[1].norm().item<double>());
  };
  const auto forward = [&] {
    const auto h = torch::relu(shared->forward(x));
    LossTerms loss;
    const auto l_a = (head_a->forward(h).squeeze(1) - y_a).pow(2).mean();
    const auto l_b = 100 * (head_b->forward(h).squeeze(1) - y_b).pow(2).mean();
    loss.terms = {{"ctr", l_a}, {"cvr", l_b}};
    loss.total = l_a + l_b;
    return loss;
  };
  const double first_ratio = norm_ratio(forward());
  INFO("gradient norm ratio before: " << first_ratio);
  REQUIRE(first_ratio < 0.05);
  double log_ratio_sum = 0, lowest = INFINITY, highest = 0;
  for (int step = 1; step <= 1500; ++step) {
    auto loss = forward();
    REQUIRE(weighting.needs_gradient_norms(step));
    const auto gradients = weighting.term_gradients(loss, {shared->weight});
    sgd.zero_grad();
    weighting.total(loss).backward();
    sgd.step();
    weighting.update(loss, gradients);
    const auto w = weighting.weights();
    REQUIRE(w[0].second + w[1].second == Approx(2.0).epsilon(1e-9));
    if (step > 1300) {
      const double ratio = norm_ratio(forward());
      log_ratio_sum += std::log(ratio), lowest = std::min(lowest, ratio), highest = std::max(highest, ratio);
    }
  }
  const double mean_ratio = std::exp(log_ratio_sum / 200);
  INFO("gradient norm ratio over the last 200 steps: geometric mean " << mean_ratio << ", range " << lowest << " to "
                                                                      << highest);
  REQUIRE(std::abs(std::log(mean_ratio)) < std::log(1.1));
  REQUIRE(lowest > 0.4);
  REQUIRE(highest < 2.5);
  // The default interval, 25, asks for the norms on steps 1, 26, 51, ...
  const LossWeighting sparse(objective, LossWeightingOptions().kind(LossWeightingKind::gradnorm));
  REQUIRE(sparse.needs_gradient_norms(1));
  REQUIRE_FALSE(sparse.needs_gradient_norms(2));
  REQUIRE_FALSE(sparse.needs_gradient_norms(25));
  REQUIRE(sparse.needs_gradient_norms(26));
}

// GradNorm's targets follow the terms' training rates: with equal gradient norms, the first update (every
// ratio 1) leaves the weights; once one term's loss has fallen to a quarter of its first value and the other's
// has not, the slower term's target rises above its norm (alpha 1.5) and its weight grows.
TEST_CASE("GradNorm raises the weight of the term that trains slower") {
  const Objective objective({"ctr", "cvr"});
  LossWeighting weighting(objective, LossWeightingOptions().kind(LossWeightingKind::gradnorm).lr(0.1));
  const auto gradients = torch::ones({2, 3}, torch::kDouble);
  const auto terms = [](double ctr, double cvr) {
    LossTerms loss;
    loss.terms = {{"ctr", torch::tensor(ctr)}, {"cvr", torch::tensor(cvr)}};
    loss.total = torch::tensor(ctr + cvr);
    return loss;
  };
  weighting.update(terms(0.8, 0.4), gradients);
  REQUIRE(weighting.weights()[0].second == 1.0);
  REQUIRE(weighting.weights()[1].second == 1.0);
  weighting.update(terms(0.8, 0.1), gradients);  // ctr's ratio 1, cvr's 0.25
  const auto w = weighting.weights();
  INFO("weights: ctr " << w[0].second << ", cvr " << w[1].second);
  REQUIRE(w[0].second > 1.0);
  REQUIRE(w[1].second < 1.0);
  REQUIRE(w[0].second + w[1].second == Approx(2.0));
}

// Under ESMM v2 the cvr_aux term enters the total times lambda_cvr_aux (c = 0.1): its learned weight settles where
// exp(-s) c L = 1, at 1 / (c L).
TEST_CASE("uncertainty weighting settles each term at 1 / (c L), its coefficient c included") {
  const Objective objective({"ctr", "cvr"}, ObjectiveOptions().use_esmm(true).lambda_cvr_aux(0.1));
  LossTerms loss;
  loss.terms = {{"ctr", torch::tensor(0.4)}, {"ctcvr", torch::tensor(0.05)}, {"cvr_aux", torch::tensor(0.5)}};
  loss.total = torch::tensor(0.4 + 0.05 + 0.1 * 0.5);
  LossWeighting weighting(objective, LossWeightingOptions().kind(LossWeightingKind::uncertainty).lr(0.05));
  for (int step = 0; step < 4000; ++step) weighting.update(loss);
  const auto w = weighting.weights();
  REQUIRE(w[0].second == Approx(1 / 0.4).epsilon(0.01));
  REQUIRE(w[1].second == Approx(1 / 0.05).epsilon(0.01));
  REQUIRE(w[2].second == Approx(1 / (0.1 * 0.5)).epsilon(0.01));
}

// The learned state round-trips, and a state of another weighting is refused.
TEST_CASE("loss weighting state round-trips") {
  const Objective objective({"ctr", "cvr"});
  LossTerms loss;
  loss.terms = {{"ctr", torch::tensor(0.3)}, {"cvr", torch::tensor(1.7)}};
  loss.total = torch::tensor(2.0);
  const auto options = LossWeightingOptions().kind(LossWeightingKind::uncertainty).lr(0.1);
  LossWeighting a(objective, options), b(objective, options);
  for (int i = 0; i < 5; ++i) a.update(loss);
  b.load_state(a.state());
  a.update(loss), b.update(loss);
  REQUIRE(a.weights() == b.weights());
  REQUIRE_TORCH_ERROR(b.load_state(torch::zeros({3}, torch::kDouble)), "of another weighting or other terms");
  LossWeighting gradnorm(objective, LossWeightingOptions().kind(LossWeightingKind::gradnorm));
  REQUIRE_TORCH_ERROR(gradnorm.load_state(a.state()), "of another weighting or other terms than this run's (ctr, cvr)");
  const Objective esmm({"ctr", "cvr"}, ObjectiveOptions().use_esmm(true));
  LossWeighting first(esmm, LossWeightingOptions(options).terms({"ctr", "ctcvr"}));
  LossWeighting second(esmm, LossWeightingOptions(options).terms({"ctr", "cvr_aux"}));
  REQUIRE_TORCH_ERROR(second.load_state(first.state()), "of another weighting or other terms");
}

// Bad options are refused, naming what was expected.
TEST_CASE("loss weighting refuses bad options") {
  const Objective esmm({"ctr", "cvr"}, ObjectiveOptions().use_esmm(true));
  const auto uncertainty = LossWeightingOptions().kind(LossWeightingKind::uncertainty);
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions().fixed_weights({{"ctr", -1.0}})),
                      "must be a finite number >= 0");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions().fixed_weights({{"ctr", NAN}})),
                      "must be a finite number >= 0");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions().fixed_weights({{"cvr", 2.0}})),
                      "the objective has no term 'cvr'; its terms are: ctr, ctcvr, cvr_aux");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions(uncertainty).fixed_weights({{"ctr", 2.0}})),
                      "fixed weights are given, but the weighting is not fixed");
  REQUIRE_TORCH_ERROR(LossWeighting(Objective({"ctr"}), uncertainty), "needs at least two, but got 1");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions(uncertainty).terms({"ctr"})),
                      "needs at least two, but got 1");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions(uncertainty).terms({"ctr", "ctr"})),
                      "'ctr' is listed twice");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions(uncertainty).lr(0)), "lr must be > 0");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions(uncertainty).gradnorm_interval(0)),
                      "gradnorm_interval must be >= 1");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions(uncertainty).gradnorm_alpha(-1)),
                      "gradnorm_alpha must be >= 0");
  REQUIRE_TORCH_ERROR(LossWeighting(esmm, LossWeightingOptions().terms({"ctr", "ctcvr"})),
                      "the terms to weigh are listed, but fixed weights are given per term");
  // ESCM2's dr risk can be negative: it is left out of the default list and refused when named.
  const Objective dr({"ctr", "cvr", kImputationHead},
                     ObjectiveOptions().use_esmm(true).counterfactual(ESMMCounterfactual::dr));
  std::vector<std::string> weighed;
  for (const auto& [name, w] : LossWeighting(dr, uncertainty).weights()) weighed.push_back(name);
  REQUIRE(weighed == std::vector<std::string>{"ctr", "ctcvr", "cvr_aux", "imputation"});
  REQUIRE_TORCH_ERROR(LossWeighting(dr, LossWeightingOptions(uncertainty).terms({"ctr", "counterfactual"})),
                      "the term 'counterfactual' can be negative");
}
