// Tests of the functions (functional/) and the ESMM loss: single-task BCE,
// clicked-row CVR loss, ESMM v1/v2 against hand computation and at extreme
// logits; ESCM2's counterfactual risks against their formulas; FM's
// second-order term; expert mixing.
#include "test_helpers.hpp"

#include <mtl/esmm.hpp>
#include <mtl/functional/expert_mixing.hpp>
#include <mtl/functional/fm.hpp>
#include <mtl/functional/losses.hpp>

#include <cmath>
#include <sstream>

using namespace mtl;

namespace {
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double bce(double p, double y) { return -(y * std::log(p) + (1 - y) * std::log(1 - p)); }

// A small batch: CTR and CVR logits, clicks and conversions (conversion <= click).
const std::vector<double> kCtr{0.3, -1.2, 2.0, -0.4, 0.9};
const std::vector<double> kCvr{-0.7, 0.5, 1.5, -2.0, 0.1};
const std::vector<double> kClick{1, 0, 1, 0, 1};
const std::vector<double> kConv{0, 0, 1, 0, 1};

torch::Tensor as_tensor(const std::vector<double>& v) { return torch::tensor(v, torch::kDouble); }
}  // namespace

// BCE over all rows and the CVR loss over clicked rows equal their hand-computed values.
TEST_CASE("single-task losses equal hand computation") {
  double ctr = 0, cvr = 0;
  int clicked = 0;
  for (size_t i = 0; i < kCtr.size(); ++i) {
    ctr += bce(sigmoid(kCtr[i]), kClick[i]);
    if (kClick[i] == 1) cvr += bce(sigmoid(kCvr[i]), kConv[i]), ++clicked;
  }
  REQUIRE(binary_cross_entropy_loss(as_tensor(kCtr), as_tensor(kClick)).item<double>() ==
          Approx(ctr / kCtr.size()).epsilon(1e-12));
  REQUIRE(clicked_cvr_loss(as_tensor(kCvr), as_tensor(kConv), as_tensor(kClick)).item<double>() ==
          Approx(cvr / clicked).epsilon(1e-12));
}

// ESMM v1 = BCE(p_ctr, click) + BCE(p_ctr * p_cvr, click * conversion), each a mean over all rows.
TEST_CASE("ESMM v1 equals hand computation") {
  double ctr = 0, ctcvr = 0;
  for (size_t i = 0; i < kCtr.size(); ++i) {
    ctr += bce(sigmoid(kCtr[i]), kClick[i]);
    ctcvr += bce(sigmoid(kCtr[i]) * sigmoid(kCvr[i]), kClick[i] * kConv[i]);
  }
  const double n = static_cast<double>(kCtr.size());
  ESMMLoss loss(ESMMLossOptions().version(ESMMVersion::v1));
  auto terms = loss->forward(as_tensor(kCtr), as_tensor(kCvr), as_tensor(kClick), as_tensor(kConv));
  REQUIRE(terms.ctr.item<double>() == Approx(ctr / n).epsilon(1e-12));
  REQUIRE(terms.ctcvr.item<double>() == Approx(ctcvr / n).epsilon(1e-12));
  REQUIRE(terms.total.item<double>() == Approx((ctr + ctcvr) / n).epsilon(1e-12));
  REQUIRE(terms.cvr_aux.item<double>() == 0.0);
  REQUIRE(torch::allclose(esmm_ctcvr_probability(as_tensor(kCtr), as_tensor(kCvr)),
                          torch::sigmoid(as_tensor(kCtr)) * torch::sigmoid(as_tensor(kCvr))));
}

// v2 adds exactly lambda times the clicked-row CVR BCE to v1.
TEST_CASE("ESMM v2 adds lambda times the clicked-row CVR loss") {
  auto args = std::make_tuple(as_tensor(kCtr), as_tensor(kCvr), as_tensor(kClick), as_tensor(kConv));
  auto v1 =
      std::apply([](auto... a) { return ESMMLoss(ESMMLossOptions().version(ESMMVersion::v1))->forward(a...); }, args);
  for (double lambda : {0.1, 0.7}) {
    ESMMLoss v2(ESMMLossOptions().version(ESMMVersion::v2).lambda_cvr_aux(lambda));
    auto terms = std::apply([&](auto... a) { return v2->forward(a...); }, args);
    auto aux = clicked_cvr_loss(as_tensor(kCvr), as_tensor(kConv), as_tensor(kClick));
    REQUIRE(terms.cvr_aux.item<double>() == Approx(aux.item<double>()).epsilon(1e-12));
    REQUIRE((terms.total - v1.total).item<double>() == Approx(lambda * aux.item<double>()).epsilon(1e-10));
  }
}

// Logits of +-30 give finite losses and finite gradients, in float and double.
TEST_CASE("ESMM stays finite at extreme logits") {
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    auto ctr = torch::tensor({30.0, -30.0, 30.0, -30.0, 30.0, -30.0}, dtype).requires_grad_();
    auto cvr = torch::tensor({30.0, 30.0, -30.0, -30.0, 30.0, -30.0}, dtype).requires_grad_();
    auto click = torch::tensor({0.0, 1.0, 0.0, 1.0, 1.0, 1.0}, dtype);
    auto conv = torch::tensor({0.0, 1.0, 0.0, 0.0, 1.0, 1.0}, dtype);
    auto terms = ESMMLoss()->forward(ctr, cvr, click, conv);
    REQUIRE(std::isfinite(terms.total.item<double>()));
    terms.total.backward();
    REQUIRE(torch::isfinite(ctr.grad()).all().item<bool>());
    REQUIRE(torch::isfinite(cvr.grad()).all().item<bool>());
    // Row 0: p_ctcvr = 1 - 2e-13 against label 0 costs about 30 - log 2 nats, not inf.
    auto row0 = ctcvr_loss(ctr.detach().narrow(0, 0, 1), cvr.detach().narrow(0, 0, 1), conv.narrow(0, 0, 1));
    REQUIRE(row0.item<double>() == Approx(30.0 - std::log(2.0)).epsilon(1e-4));
  }
}

// A batch without any click gives a finite loss and a zero auxiliary term.
TEST_CASE("ESMM v2 on a batch without clicks") {
  auto ctr = torch::randn({8}).requires_grad_();
  auto cvr = torch::randn({8}).requires_grad_();
  auto none = torch::zeros({8});
  auto terms = ESMMLoss()->forward(ctr, cvr, none, none);
  REQUIRE(terms.cvr_aux.item<double>() == 0.0);
  REQUIRE(std::isfinite(terms.total.item<double>()));
  terms.total.backward();
  REQUIRE(torch::isfinite(cvr.grad()).all().item<bool>());
}

// On the CPU ESMMLoss computes its terms in one pass (detail::EsmmTerms); they
// and their gradients equal the loss written as tensor ops (ctcvr_loss and the
// rest): the total and each term on its own, v1 and v2, float and double,
// logits out to +-30, soft labels, batches of 1, 7 and 1000.
TEST_CASE("ESMM in one pass equals the loss as tensor ops") {
  for (auto dtype : {torch::kFloat, torch::kDouble})
    for (int64_t n : {1, 7, 1000})
      for (auto version : {ESMMVersion::v1, ESMMVersion::v2}) {
        torch::manual_seed(n);
        const auto options = ESMMLossOptions().version(version).lambda_cvr_aux(0.3).ctr_weight(0.8).ctcvr_weight(1.7);
        auto a = (torch::randn({n}, dtype) * 4).requires_grad_(), b = (torch::randn({n}, dtype) * 4).requires_grad_();
        if (n > 7) {  // extreme logits in every combination
          torch::NoGradGuard no_grad;
          a.narrow(0, 0, 4).copy_(torch::tensor({30.0, -30.0, 30.0, -30.0}, dtype));
          b.narrow(0, 0, 4).copy_(torch::tensor({30.0, 30.0, -30.0, -30.0}, dtype));
        }
        auto click = (torch::rand({n}) < 0.5).to(dtype), conversion = click * (torch::rand({n}) < 0.5).to(dtype);
        if (n == 7) conversion = click * torch::rand({n}, dtype);  // soft labels
        const auto ra = a.detach().clone().requires_grad_(), rb = b.detach().clone().requires_grad_();
        auto ours = ESMMLoss(options)->forward(a, b, click, conversion);
        const double aux_weight = version == ESMMVersion::v2 ? 0.3 : 0.0;
        const std::vector<std::pair<torch::Tensor, double>> reference{
            {binary_cross_entropy_loss(ra, click), 0.8},
            {ctcvr_loss(ra, rb, click * conversion), 1.7},
            {clicked_cvr_loss(rb, conversion, click), aux_weight}};
        auto reference_total = reference[0].first * 0.8 + reference[1].first * 1.7 + reference[2].first * aux_weight;
        const double tolerance = dtype == torch::kFloat ? 2e-6 : 1e-12;
        const std::vector<std::pair<torch::Tensor, torch::Tensor>> pairs{{ours.total, reference_total},
                                                                         {ours.ctr, reference[0].first},
                                                                         {ours.ctcvr, reference[1].first},
                                                                         {ours.cvr_aux, reference[2].first}};
        for (size_t k = 0; k < pairs.size(); ++k) {
          CAPTURE(dtype, n, static_cast<int>(version), k);
          if (k == 3 && version == ESMMVersion::v1) {
            REQUIRE(ours.cvr_aux.item<double>() == 0.0);
            continue;
          }
          REQUIRE(pairs[k].first.scalar_type() == dtype);
          REQUIRE(pairs[k].first.item<double>() ==
                  Approx(pairs[k].second.item<double>()).epsilon(tolerance).margin(tolerance));
          const auto grads =
              torch::autograd::grad({pairs[k].first}, {a, b}, {}, /*retain_graph=*/true, false, /*allow_unused=*/true);
          const auto expected = torch::autograd::grad({pairs[k].second}, {ra, rb}, {}, /*retain_graph=*/true, false,
                                                      /*allow_unused=*/true);
          for (size_t g = 0; g < 2; ++g) {
            const auto want = expected[g].defined() ? expected[g] : torch::zeros_like(a);
            REQUIRE(torch::allclose(grads[g], want, tolerance, tolerance));
          }
        }
        // Two outputs differentiated together add up.
        const auto both = torch::autograd::grad({ours.ctr, ours.ctcvr}, {a}, {}, true)[0];
        const auto expected = torch::autograd::grad({reference[0].first, reference[1].first}, {ra}, {}, true)[0];
        REQUIRE(torch::allclose(both, expected, tolerance, tolerance));
        // An evaluation pass (no logit needs a gradient) gives the same values.
        const auto evaluated = ESMMLoss(options)->forward(a.detach(), b.detach(), click, conversion);
        REQUIRE_FALSE(evaluated.total.requires_grad());
        REQUIRE(evaluated.total.item<double>() == ours.total.item<double>());
        REQUIRE(evaluated.ctcvr.item<double>() == ours.ctcvr.item<double>());
        REQUIRE(evaluated.cvr_aux.item<double>() == ours.cvr_aux.item<double>());
      }
}

namespace {
// The gradients of `value` with respect to `inputs` (zeros where it does not depend on one).
std::vector<torch::Tensor> gradients(const torch::Tensor& value, const std::vector<torch::Tensor>& inputs) {
  auto grads = torch::autograd::grad({value}, inputs, {}, /*retain_graph=*/true, false, /*allow_unused=*/true);
  for (size_t i = 0; i < grads.size(); ++i)
    if (!grads[i].defined()) grads[i] = torch::zeros_like(inputs[i]);
  return grads;
}

// -[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], written out (moderate logits only).
torch::Tensor cross_entropy_formula(const torch::Tensor& x, const torch::Tensor& y) {
  const auto p = 1 / (1 + torch::exp(-x));
  return -(y * torch::log(p) + (1 - y) * torch::log(1 - p));
}
}  // namespace

// ESCM2's IPS risk (Wang et al., SIGIR 2022, eq. for R_IPS): the mean over all rows of
// click * e / p, e the CVR cross-entropy, p = max(p_ctr, floor) taken as a constant:
// its value and its gradients (none to the CTR logits) equal the formula's.
TEST_CASE("ESCM2's IPS risk equals its formula") {
  const double floor = 0.3;  // above two rows' p_ctr, so that the floor acts
  auto a = as_tensor(kCtr).requires_grad_(), b = as_tensor(kCvr).requires_grad_();
  const auto c = as_tensor(kClick), v = as_tensor(kConv);
  const auto risk = ips_cvr_risk(a, b, c, v, floor);
  const auto p = torch::clamp_min(1 / (1 + torch::exp(-a.detach())), floor);
  const auto formula = (c * cross_entropy_formula(b, v) / p).mean();
  REQUIRE(risk.item<double>() == Approx(formula.item<double>()).epsilon(1e-12));
  const auto ours = gradients(risk, {a, b}), expected = gradients(formula, {a, b});
  REQUIRE(torch::allclose(ours[1], expected[1], 1e-12, 1e-12));
  REQUIRE(torch::count_nonzero(ours[0]).item<int64_t>() == 0);  // the propensity is a constant
  REQUIRE(torch::count_nonzero(ours[1]).item<int64_t>() == 3);  // unclicked rows give no gradient
  // In closed form: d/db_i = click_i (sigmoid(b_i) - conversion_i) / (N p_i).
  for (size_t i = 0; i < kCtr.size(); ++i) {
    const double closed = kClick[i] * (sigmoid(kCvr[i]) - kConv[i]) / (std::max(sigmoid(kCtr[i]), floor) * kCtr.size());
    REQUIRE(ours[1][static_cast<int64_t>(i)].item<double>() == Approx(closed).epsilon(1e-10));
  }
  // ESMMLoss adds it, weighted, to ESMM v1's terms.
  ESMMLoss loss(ESMMLossOptions()
                    .version(ESMMVersion::v1)
                    .counterfactual(ESMMCounterfactual::ips)
                    .counterfactual_weight(0.4)
                    .propensity_floor(floor));
  const auto terms = loss->forward(a, b, c, v);
  const auto v1 = ESMMLoss(ESMMLossOptions().version(ESMMVersion::v1))->forward(a, b, c, v);
  REQUIRE(terms.counterfactual.item<double>() == Approx(formula.item<double>()).epsilon(1e-12));
  REQUIRE(terms.total.item<double>() == Approx((v1.total + 0.4 * formula).item<double>()).epsilon(1e-12));
  REQUIRE(terms.imputation.item<double>() == 0.0);
  // Finite at extreme logits.
  const auto far = torch::tensor({30.0, -30.0, 30.0, -30.0}, torch::kDouble);
  const auto extreme =
      ips_cvr_risk(-far, far, torch::ones({4}, torch::kDouble), torch::tensor({0.0, 1.0, 1.0, 0.0}), 0.05);
  REQUIRE(std::isfinite(extreme.item<double>()));
}

// ESCM2's DR risk: the imputation tower's r~ = sigmoid(t) gives each row an imputed error e^ (the CVR
// cross-entropy against r~); risk = mean(e^ + click (e - e^) / p) with r~ constant, and the
// imputation loss = mean(click (e - e^)^2 / p) with the CVR logits constant.
TEST_CASE("ESCM2's DR risk and imputation loss equal their formulas") {
  const double floor = 0.05;
  auto a = as_tensor(kCtr).requires_grad_(), b = as_tensor(kCvr).requires_grad_();
  auto t = as_tensor({0.2, -1.0, 0.7, -0.3, 1.1}).requires_grad_();  // kImputation below
  const auto c = as_tensor(kClick), v = as_tensor(kConv);
  const auto dr = dr_cvr_risk(a, b, t, c, v, floor);
  const auto p = torch::clamp_min(1 / (1 + torch::exp(-a.detach())), floor);
  const auto imputed = 1 / (1 + torch::exp(-t));
  const auto risk_formula = [&](const torch::Tensor& imputed_conversion) {
    const auto e = cross_entropy_formula(b, v), e_hat = cross_entropy_formula(b, imputed_conversion);
    return (e_hat + c * (e - e_hat) / p).mean();
  };
  const auto risk = risk_formula(imputed.detach());
  const auto gap = cross_entropy_formula(b.detach(), v) - cross_entropy_formula(b.detach(), imputed);
  const auto imputation = (c * gap * gap / p).mean();
  REQUIRE(dr.risk.item<double>() == Approx(risk.item<double>()).epsilon(1e-12));
  REQUIRE(dr.imputation.item<double>() == Approx(imputation.item<double>()).epsilon(1e-12));
  const auto risk_grads = gradients(dr.risk, {a, b, t}), imputation_grads = gradients(dr.imputation, {a, b, t});
  REQUIRE(torch::allclose(risk_grads[1], gradients(risk, {b})[0], 1e-12, 1e-12));
  REQUIRE(torch::allclose(imputation_grads[2], gradients(imputation, {t})[0], 1e-12, 1e-12));
  for (const auto& none : {risk_grads[0], risk_grads[2], imputation_grads[0], imputation_grads[1]})
    REQUIRE(torch::count_nonzero(none).item<int64_t>() == 0);
  // Every row moves the CVR logits (the imputed errors cover the unclicked rows too), in closed form
  // d/db_i = [(1 - click_i / p_i)(sigmoid(b_i) - r~_i) + (click_i / p_i)(sigmoid(b_i) - conversion_i)] / N.
  REQUIRE(torch::count_nonzero(risk_grads[1]).item<int64_t>() == 5);
  const std::vector<double> kImputation{0.2, -1.0, 0.7, -0.3, 1.1};
  for (size_t i = 0; i < kCtr.size(); ++i) {
    const double q = kClick[i] / std::max(sigmoid(kCtr[i]), floor), s_b = sigmoid(kCvr[i]);
    const double closed = ((1 - q) * (s_b - sigmoid(kImputation[i])) + q * (s_b - kConv[i])) / kCtr.size();
    REQUIRE(risk_grads[1][static_cast<int64_t>(i)].item<double>() == Approx(closed).epsilon(1e-10));
  }
  // Every row clicked with propensity 1 (floor 1): the risk is the plain mean CVR cross-entropy, whatever r~.
  const auto ones = torch::ones({5}, torch::kDouble);
  REQUIRE(dr_cvr_risk(a, b, t, ones, v, 1.0).risk.item<double>() ==
          Approx(cross_entropy_formula(b, v).mean().item<double>()).epsilon(1e-12));
  ESMMLoss loss(
      ESMMLossOptions().version(ESMMVersion::v1).counterfactual(ESMMCounterfactual::dr).counterfactual_weight(0.2));
  const auto terms = loss->forward(a, b, c, v, t);
  const auto v1 = ESMMLoss(ESMMLossOptions().version(ESMMVersion::v1))->forward(a, b, c, v);
  REQUIRE(terms.total.item<double>() == Approx((v1.total + 0.2 * (risk + imputation)).item<double>()).epsilon(1e-12));
}

// Bad ESCM2 options and inputs are refused, naming what was expected.
TEST_CASE("ESCM2 refuses bad options and inputs") {
  const auto x = as_tensor(kCtr), c = as_tensor(kClick), v = as_tensor(kConv);
  REQUIRE_TORCH_ERROR(ESMMLoss(ESMMLossOptions().propensity_floor(0.0)), "propensity_floor in (0, 1]");
  REQUIRE_TORCH_ERROR(ESMMLoss(ESMMLossOptions().propensity_floor(1.5)), "propensity_floor in (0, 1]");
  REQUIRE_TORCH_ERROR(ESMMLoss(ESMMLossOptions().counterfactual_weight(-0.1)), "counterfactual_weight >= 0");
  REQUIRE_TORCH_ERROR(ESMMLoss(ESMMLossOptions().ctcvr_weight(-1.0)), "term weights >= 0");
  REQUIRE_TORCH_ERROR(ESMMLoss(ESMMLossOptions().counterfactual(ESMMCounterfactual::dr))->forward(x, x, c, v),
                      "dr counterfactual needs the imputation tower's logits");
  REQUIRE_TORCH_ERROR(ESMMLoss(ESMMLossOptions().counterfactual(ESMMCounterfactual::ips))->forward(x, x, c, v, x),
                      "which only the dr counterfactual reads");
  REQUIRE_TORCH_ERROR(ips_cvr_risk(x, x, c, v, 0.0), "the propensity floor must be in (0, 1]");
  REQUIRE_TORCH_ERROR(dr_cvr_risk(x, x, torch::zeros({3}, torch::kDouble), c, v, 0.1),
                      "imputation logits of shape [5] like the CVR logits, but got [3]");
}

// Mismatched shapes and non-float logits are refused with what was expected.
TEST_CASE("losses refuse bad input") {
  auto logits = torch::zeros({4});
  REQUIRE_TORCH_ERROR(binary_cross_entropy_loss(logits, torch::zeros({5})),
                      "target labels of shape [4] (one per logit), but got [5]");
  REQUIRE_TORCH_ERROR(binary_cross_entropy_loss(torch::zeros({4, 1}), torch::zeros({4, 1})),
                      "logits of shape [batch], but got a 2-D tensor");
  REQUIRE_TORCH_ERROR(binary_cross_entropy_loss(torch::zeros({4}, torch::kLong), torch::zeros({4})), "floating logits");
  REQUIRE_TORCH_ERROR(ESMMLoss()->forward(logits, torch::zeros({3}), logits, logits),
                      "CVR logits of shape [4] like the CTR logits, but got [3]");
  REQUIRE_TORCH_ERROR(ESMMLoss(ESMMLossOptions().lambda_cvr_aux(-1.0)), "lambda_cvr_aux >= 0");
  std::ostringstream s;
  ESMMLoss()->pretty_print(s);
  REQUIRE(s.str() == "mtl::ESMMLoss(version=v2, lambda_cvr_aux=0.1, counterfactual=none)");
}

// FM's second-order vector equals the brute-force sum over field pairs.
TEST_CASE("DeepFM second-order term equals the pairwise sum") {
  auto v = torch::randn({5, 4, 3}, torch::kDouble);
  auto brute = torch::zeros({5, 3}, torch::kDouble);
  for (int64_t f = 0; f < 4; ++f)
    for (int64_t g = f + 1; g < 4; ++g) brute += v.select(1, f) * v.select(1, g);
  REQUIRE(torch::allclose(fm_second_order(v), brute, 1e-12, 1e-12));
}

// FM's second-order term as one function gives the values and the gradient of
// the tensor-op formula through autograd, in double and float, for a
// non-contiguous input, one field and an empty batch.
TEST_CASE("FM second-order term as one function equals tensor ops through autograd") {
  const auto reference = [](const torch::Tensor& v) {
    auto sum = v.sum(1);
    return 0.5 * (sum * sum - (v * v).sum(1));
  };
  for (auto shape : {std::vector<int64_t>{7, 5, 3}, {4, 1, 8}, {0, 3, 2}}) {
    INFO("shape " << torch::IntArrayRef(shape));
    auto v = torch::randn(shape, torch::kDouble).requires_grad_();
    const auto projection = torch::randn({shape[0], shape[2]}, torch::kDouble);
    const auto out = fm_second_order(v);
    REQUIRE(out.sizes() == torch::IntArrayRef{shape[0], shape[2]});
    REQUIRE(torch::allclose(out, reference(v), 1e-12, 1e-12));
    const auto grad = torch::autograd::grad({(out * projection).sum()}, {v})[0];
    const auto reference_grad = torch::autograd::grad({(reference(v) * projection).sum()}, {v})[0];
    REQUIRE(torch::allclose(grad, reference_grad, 1e-12, 1e-12));
  }
  auto transposed = torch::randn({6, 4, 5}).transpose(1, 2).requires_grad_();  // [6, 5, 4], not contiguous
  const auto projection = torch::randn({6, 4});
  const auto out = fm_second_order(transposed);
  REQUIRE(torch::allclose(out, reference(transposed), 1e-5, 1e-6));
  const auto grad = torch::autograd::grad({(out * projection).sum()}, {transposed})[0];
  const auto reference_grad = torch::autograd::grad({(reference(transposed) * projection).sum()}, {transposed})[0];
  REQUIRE(torch::allclose(grad, reference_grad, 1e-5, 1e-6));
  REQUIRE_TORCH_ERROR(fm_second_order(torch::randn({4, 3})),
                      "fm_second_order expects embeddings [batch, fields, dim], but got shape [4, 3]");
}

// FM's second-order term with DeepFM's deep input written in the same pass:
// values and gradients of the tensor ops (cat, reshape, the formula) through
// autograd, with and without dense columns, and with either output unused.
TEST_CASE("FM second-order term and the deep input in one function equal tensor ops") {
  const auto reference = [](const torch::Tensor& v, const torch::Tensor& dense) {
    auto sum = v.sum(1);
    auto flat = v.reshape({v.size(0), -1});
    return FmAndDeepInput{0.5 * (sum * sum - (v * v).sum(1)), dense.defined() ? torch::cat({flat, dense}, 1) : flat};
  };
  for (bool with_dense : {true, false})
    for (int used : {0, 1, 2}) {  // both outputs, only FM's, only the deep input
      INFO("dense " << with_dense << ", used " << used);
      auto v = torch::randn({7, 5, 3}, torch::kDouble).requires_grad_();
      auto dense = with_dense ? torch::randn({7, 4}, torch::kDouble).requires_grad_() : torch::Tensor();
      const auto ours = fm_second_order_and_deep_input(v, dense);
      const auto expected = reference(v, dense);
      REQUIRE(ours.deep_input.sizes() == torch::IntArrayRef{7, with_dense ? 19 : 15});
      REQUIRE(torch::allclose(ours.second_order, expected.second_order, 1e-12, 1e-12));
      REQUIRE(torch::equal(ours.deep_input, expected.deep_input));
      const auto fm_weights = torch::randn({7, 3}, torch::kDouble);
      const auto deep_weights = torch::randn(ours.deep_input.sizes(), torch::kDouble);
      const auto loss = [&](const FmAndDeepInput& out) {
        auto fm_part = (out.second_order * fm_weights).sum(), deep_part = (out.deep_input * deep_weights).sum();
        return used == 0 ? fm_part + deep_part : used == 1 ? fm_part : deep_part;
      };
      std::vector<torch::Tensor> leaves{v};
      if (with_dense) leaves.push_back(dense);
      const auto grads = torch::autograd::grad({loss(ours)}, leaves, {}, false, false, /*allow_unused=*/true);
      const auto expected_grads = torch::autograd::grad({loss(expected)}, leaves, {}, false, false, true);
      for (size_t k = 0; k < leaves.size(); ++k) {
        INFO("leaf " << k);
        const auto want = expected_grads[k].defined() ? expected_grads[k] : torch::zeros_like(leaves[k]);
        const auto got = grads[k].defined() ? grads[k] : torch::zeros_like(leaves[k]);
        REQUIRE(torch::allclose(got, want, 1e-12, 1e-12));
      }
    }
  // bf16 takes the tensor ops.
  const auto v = torch::randn({3, 2, 4}).to(torch::kBFloat16), dense = torch::randn({3, 5});
  const auto ours = fm_second_order_and_deep_input(v, dense);
  REQUIRE(torch::equal(ours.deep_input, torch::cat({v.reshape({3, 8}), dense.to(torch::kBFloat16)}, 1)));
  REQUIRE(torch::equal(ours.second_order, fm_second_order(v)));
  REQUIRE_TORCH_ERROR(fm_second_order_and_deep_input(torch::randn({3, 2, 4}), torch::randn({4, 5})),
                      "expects dense values [3, columns], but got shape [4, 5]");
}

// The fused mixing of several gates equals each gate's mixture written with
// tensor ops (mix_experts over the chosen experts), in value and in the
// gradients to the experts and to every gate's weights; in fp32 and fp64 (the
// fused CPU path) and in bf16 (the tensor-op path).
TEST_CASE("mix_chosen_experts equals mix_experts over the chosen experts") {
  const std::vector<std::vector<int64_t>> chosen{{0, 1, 2, 3, 4}, {0, 1, 2, 3, 5}, {0, 1, 2, 3, 4, 5}, {5}};
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kBFloat16}) {
    INFO("dtype " << dtype);
    torch::manual_seed(3);
    const auto experts = torch::randn({37, 6, 16}, torch::kDouble);
    std::vector<torch::Tensor> weights;
    for (const auto& c : chosen)
      weights.push_back(torch::softmax(torch::randn({37, static_cast<int64_t>(c.size())}, torch::kDouble), 1));
    const auto projections = torch::randn({4, 16}, torch::kDouble);

    // Reference in fp64 with tensor ops.
    auto ref_experts = experts.clone().requires_grad_();
    std::vector<torch::Tensor> ref_weights;
    auto ref_loss = torch::zeros({}, torch::kDouble);
    std::vector<torch::Tensor> ref_mixed;
    for (size_t g = 0; g < chosen.size(); ++g) {
      ref_weights.push_back(weights[g].clone().requires_grad_());
      ref_mixed.push_back(mix_experts(ref_experts.index_select(1, torch::tensor(chosen[g])), ref_weights[g]));
      ref_loss = ref_loss + (ref_mixed[g] * projections[static_cast<int64_t>(g)]).sum();
    }
    ref_loss.backward();

    auto our_experts = experts.to(dtype).requires_grad_();
    std::vector<torch::Tensor> our_weights;
    for (const auto& w : weights) our_weights.push_back(w.to(dtype).requires_grad_());
    const auto mixed = mix_chosen_experts(our_experts, our_weights, chosen);
    REQUIRE(mixed.size() == chosen.size());
    auto loss = torch::zeros({}, dtype);
    for (size_t g = 0; g < chosen.size(); ++g)
      loss = loss + (mixed[g] * projections[static_cast<int64_t>(g)].to(dtype)).sum();
    loss.backward();

    const double tol = dtype == torch::kBFloat16 ? 5e-2 : dtype == torch::kFloat ? 1e-5 : 1e-12;
    for (size_t g = 0; g < chosen.size(); ++g) {
      INFO("gate " << g);
      REQUIRE(mixed[g].scalar_type() == dtype);
      REQUIRE(torch::allclose(mixed[g].to(torch::kDouble), ref_mixed[g], tol, tol));
      REQUIRE(torch::allclose(our_weights[g].grad().to(torch::kDouble), ref_weights[g].grad(), tol, tol));
    }
    REQUIRE(torch::allclose(our_experts.grad().to(torch::kDouble), ref_experts.grad(), tol, tol));
  }
}

// A gate whose output is not used gets no gradient, and the others are unchanged by that.
TEST_CASE("mix_chosen_experts with an unused gate") {
  auto experts = torch::randn({5, 3, 4}, torch::requires_grad());
  auto w0 = torch::softmax(torch::randn({5, 3}), 1).requires_grad_();
  auto w1 = torch::softmax(torch::randn({5, 2}), 1).requires_grad_();
  mix_chosen_experts(experts, {w0, w1}, {{0, 1, 2}, {1, 2}})[0].sum().backward();
  REQUIRE_FALSE(w1.grad().defined());
  REQUIRE(torch::allclose(experts.grad(), w0.unsqueeze(2).expand({5, 3, 4})));
}

// Bad shapes and lists are refused, naming what was expected.
TEST_CASE("mix_chosen_experts refuses bad shapes") {
  const auto experts = torch::randn({5, 3, 4});
  const auto w = torch::softmax(torch::randn({5, 3}), 1);
  REQUIRE_TORCH_ERROR(mix_chosen_experts(torch::randn({5, 3}), {w}, {{0, 1, 2}}),
                      "expects experts [batch, num_experts, dim], but got shape [5, 3]");
  REQUIRE_TORCH_ERROR(mix_chosen_experts(experts, {w}, {}), "one expert list per gate (1 gates), but got 0 lists");
  REQUIRE_TORCH_ERROR(mix_chosen_experts(experts, {w}, {{0, 1}}),
                      "gate 0 expects weights [5, 2], but got shape [5, 3]");
  REQUIRE_TORCH_ERROR(mix_chosen_experts(experts, {w}, {{0, 1, 3}}),
                      "gate 0 chooses expert 3, but there are 3 experts");
}

// AITM's behavioural expectation calibrator: mean over rows of max(sigmoid(later) - sigmoid(earlier), 0), with
// the hinge's gradient only on rows that break the order; ESMM's product never breaks it.
TEST_CASE("AITM's calibrator equals its formula") {
  const auto earlier = torch::tensor({0.0, 2.0, -1.0, 30.0}, torch::requires_grad());
  const auto later = torch::tensor({1.0, 0.5, -1.0, -30.0}, torch::requires_grad());
  const auto loss = behavioral_expectation_calibrator(earlier, later);
  const double expected = (1 / (1 + std::exp(-1.0)) - 0.5) / 4;  // only the first row breaks the order
  REQUIRE(loss.item<double>() == Approx(expected).epsilon(1e-6));
  loss.backward();
  REQUIRE(later.grad()[0].item<double>() == Approx(std::exp(-1.0) / std::pow(1 + std::exp(-1.0), 2) / 4));
  REQUIRE(earlier.grad()[0].item<double>() == Approx(-0.25 / 4));
  for (int i = 1; i < 4; ++i) REQUIRE(later.grad()[i].item<double>() == 0);
  const auto ctr = torch::randn({100}), cvr = torch::randn({100});
  const auto p_ctcvr = esmm_ctcvr_probability(ctr, cvr);
  REQUIRE(behavioral_expectation_calibrator(ctr, torch::logit(p_ctcvr)).item<double>() < 1e-6);
  REQUIRE_TORCH_ERROR(behavioral_expectation_calibrator(ctr, torch::zeros({3})), "two logit tensors of shape [batch]");
}
