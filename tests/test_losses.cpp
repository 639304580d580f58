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
