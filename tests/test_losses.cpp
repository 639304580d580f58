// Tests of the losses: single-task BCE, clicked-row CVR loss, and ESMM v1/v2
// against hand computation and at extreme logits.
#include "test_helpers.hpp"

#include <mtl/esmm.hpp>
#include <mtl/losses.hpp>

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
  auto v1 = std::apply([](auto... a) { return ESMMLoss(ESMMLossOptions().version(ESMMVersion::v1))->forward(a...); }, args);
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
        const std::vector<std::pair<torch::Tensor, torch::Tensor>> pairs{
            {ours.total, reference_total}, {ours.ctr, reference[0].first}, {ours.ctcvr, reference[1].first},
            {ours.cvr_aux, reference[2].first}};
        for (size_t k = 0; k < pairs.size(); ++k) {
          CAPTURE(dtype, n, static_cast<int>(version), k);
          if (k == 3 && version == ESMMVersion::v1) {
            REQUIRE(ours.cvr_aux.item<double>() == 0.0);
            continue;
          }
          REQUIRE(pairs[k].first.scalar_type() == dtype);
          REQUIRE(pairs[k].first.item<double>() == Approx(pairs[k].second.item<double>()).epsilon(tolerance).margin(tolerance));
          const auto grads = torch::autograd::grad({pairs[k].first}, {a, b}, {}, /*retain_graph=*/true, false, /*allow_unused=*/true);
          const auto expected = torch::autograd::grad({pairs[k].second}, {ra, rb}, {}, /*retain_graph=*/true, false, /*allow_unused=*/true);
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

// Mismatched shapes and non-float logits are refused with what was expected.
TEST_CASE("losses refuse bad input") {
  auto logits = torch::zeros({4});
  REQUIRE_TORCH_ERROR(binary_cross_entropy_loss(logits, torch::zeros({5})), "target labels of shape [4] (one per logit), but got [5]");
  REQUIRE_TORCH_ERROR(binary_cross_entropy_loss(torch::zeros({4, 1}), torch::zeros({4, 1})), "logits of shape [batch], but got a 2-D tensor");
  REQUIRE_TORCH_ERROR(binary_cross_entropy_loss(torch::zeros({4}, torch::kLong), torch::zeros({4})), "floating logits");
  REQUIRE_TORCH_ERROR(ESMMLoss()->forward(logits, torch::zeros({3}), logits, logits), "CVR logits of shape [4] like the CTR logits, but got [3]");
  REQUIRE_TORCH_ERROR(ESMMLoss(ESMMLossOptions().lambda_cvr_aux(-1.0)), "lambda_cvr_aux >= 0");
  std::ostringstream s;
  ESMMLoss()->pretty_print(s);
  REQUIRE(s.str() == "mtl::ESMMLoss(version=v2, lambda_cvr_aux=0.1)");
}
