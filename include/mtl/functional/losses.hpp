// Losses from logits, as functions: binary cross-entropy over all rows, the
// CVR loss taken on clicked rows only (the classic, selection-biased CVR
// setup), ESMM's CTCVR loss in log space, and ESCM2's counterfactual CVR
// risks over the entire space, inverse propensity and doubly robust (the
// ESMMLoss module, esmm.hpp, combines them).
#pragma once

#include <torch/nn/functional/loss.h>
#include <torch/types.h>

namespace mtl {

namespace detail {
inline void check_logits_and_labels(const torch::Tensor& logits, const torch::Tensor& labels, const char* who,
                                    const char* label_name) {
  TORCH_CHECK(logits.dim() == 1, who, " expects logits of shape [batch], but got a ", logits.dim(), "-D tensor");
  TORCH_CHECK(logits.is_floating_point(), who, " expects floating logits, but got ", logits.scalar_type());
  TORCH_CHECK(labels.sizes() == logits.sizes(), who, " expects ", label_name, " labels of shape ", logits.sizes(),
              " (one per logit), but got ", labels.sizes());
}
}  // namespace detail

/// Mean binary cross-entropy of `logits` against 0/1 `labels`, all rows.
inline torch::Tensor binary_cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  detail::check_logits_and_labels(logits, labels, "binary_cross_entropy_loss", "target");
  return torch::binary_cross_entropy_with_logits(logits, labels.to(logits.scalar_type()));
}

/// Mean BCE of CVR logits against conversion, over the rows with click = 1.
/// A batch without a click gives 0 (with a zero gradient), not NaN.
inline torch::Tensor clicked_cvr_loss(const torch::Tensor& cvr_logits, const torch::Tensor& conversion,
                                      const torch::Tensor& click) {
  detail::check_logits_and_labels(cvr_logits, conversion, "clicked_cvr_loss", "conversion");
  detail::check_logits_and_labels(cvr_logits, click, "clicked_cvr_loss", "click");
  auto mask = click.to(cvr_logits.scalar_type());
  auto per_row = torch::binary_cross_entropy_with_logits(cvr_logits, conversion.to(cvr_logits.scalar_type()),
                                                         /*weight=*/{}, /*pos_weight=*/{}, at::Reduction::None);
  return (per_row * mask).sum() / mask.sum().clamp_min(1.0);
}

/// p_ctcvr = sigmoid(ctr_logit) * sigmoid(cvr_logit).
inline torch::Tensor esmm_ctcvr_probability(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits) {
  return torch::sigmoid(ctr_logits) * torch::sigmoid(cvr_logits);
}

/// Mean BCE of p_ctcvr against `ctcvr_labels` (click * conversion), in log
/// space: log p = logsig(a) + logsig(b), and
/// log(1 - p) = log(sigmoid(-a) + sigmoid(a) * sigmoid(-b)), a log-sum-exp of two finite terms.
inline torch::Tensor ctcvr_loss(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits,
                                const torch::Tensor& ctcvr_labels) {
  detail::check_logits_and_labels(ctr_logits, ctcvr_labels, "ctcvr_loss", "ctcvr");
  TORCH_CHECK(cvr_logits.sizes() == ctr_logits.sizes(), "ctcvr_loss expects CVR logits of shape ", ctr_logits.sizes(),
              " like the CTR logits, but got ", cvr_logits.sizes());
  auto y = ctcvr_labels.to(ctr_logits.scalar_type());
  auto log_sig_a = torch::log_sigmoid(ctr_logits), log_sig_b = torch::log_sigmoid(cvr_logits);
  auto log_p = log_sig_a + log_sig_b;
  auto log_1mp = torch::logaddexp(torch::log_sigmoid(-ctr_logits), log_sig_a + torch::log_sigmoid(-cvr_logits));
  return -(y * log_p + (1 - y) * log_1mp).mean();
}

namespace detail {
/// The clicked rows' propensity for the counterfactual risks: p_ctr, detached,
/// raised to `floor` (0 < floor <= 1) so that 1 / p stays bounded.
inline torch::Tensor clicked_propensity(const torch::Tensor& ctr_logits, double floor) {
  TORCH_CHECK(floor > 0.0 && floor <= 1.0, "the propensity floor must be in (0, 1], but got ", floor);
  return torch::sigmoid(ctr_logits.detach()).clamp_min(floor);
}
}  // namespace detail

/// ESCM2's inverse-propensity CVR risk over the entire space (Wang et al., SIGIR
/// 2022): the mean over all rows of click * BCE(cvr_logit, conversion) / p_ctr,
/// with p_ctr detached and floored at `propensity_floor`.
inline torch::Tensor ips_cvr_risk(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits,
                                  const torch::Tensor& click, const torch::Tensor& conversion,
                                  double propensity_floor) {
  detail::check_logits_and_labels(cvr_logits, conversion, "ips_cvr_risk", "conversion");
  detail::check_logits_and_labels(ctr_logits, click, "ips_cvr_risk", "click");
  const auto o = click.to(cvr_logits.scalar_type());
  const auto error = torch::binary_cross_entropy_with_logits(cvr_logits, conversion.to(cvr_logits.scalar_type()), {},
                                                             {}, at::Reduction::None);
  return (o * error / detail::clicked_propensity(ctr_logits, propensity_floor)).mean();
}

/// ESCM2's doubly robust CVR risk and the imputation loss that trains its
/// imputation tower, in the joint-learning form of doubly robust estimation
/// (Wang et al., ICML 2019): the tower imputes a conversion r~ =
/// sigmoid(imputation_logit), and a row's imputed error is the CVR prediction's
/// cross-entropy against r~ (ESCM2's reference code has the tower emit the
/// error itself), its error the cross-entropy against the conversion (clicked
/// rows). With p = p_ctr (detached, floored):
///   risk       = mean over all rows of  e^ + click * (e - e^) / p   (r~ fixed: trains the CVR tower)
///   imputation = mean over all rows of  click * (e - e^)^2 / p      (CVR logit fixed: trains the imputation tower)
struct DoublyRobustTerms {
  torch::Tensor risk;
  torch::Tensor imputation;
};

inline DoublyRobustTerms dr_cvr_risk(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits,
                                     const torch::Tensor& imputation_logits, const torch::Tensor& click,
                                     const torch::Tensor& conversion, double propensity_floor) {
  detail::check_logits_and_labels(cvr_logits, conversion, "dr_cvr_risk", "conversion");
  detail::check_logits_and_labels(ctr_logits, click, "dr_cvr_risk", "click");
  TORCH_CHECK(imputation_logits.sizes() == cvr_logits.sizes(), "dr_cvr_risk expects imputation logits of shape ",
              cvr_logits.sizes(), " like the CVR logits, but got ", imputation_logits.sizes());
  const auto dtype = cvr_logits.scalar_type();
  const auto o = click.to(dtype), r = conversion.to(dtype);
  const auto p = detail::clicked_propensity(ctr_logits, propensity_floor);
  const auto imputed = torch::sigmoid(imputation_logits.to(dtype));
  const auto cross_entropy = [](const torch::Tensor& logits, const torch::Tensor& target) {
    return torch::binary_cross_entropy_with_logits(logits, target, {}, {}, at::Reduction::None);
  };
  // The CVR tower's step: the imputed conversion fixed.
  const auto error = cross_entropy(cvr_logits, r), imputed_error = cross_entropy(cvr_logits, imputed.detach());
  const auto risk = (imputed_error + o * (error - imputed_error) / p).mean();
  // The imputation tower's step: the CVR prediction fixed.
  const auto gap = error.detach() - cross_entropy(cvr_logits.detach(), imputed);
  return {risk, (o * gap * gap / p).mean()};
}

/// AITM's behavioural expectation calibrator (Xi et al., KDD 2021): the mean over rows of
/// max(p_later - p_earlier, 0), p = sigmoid(logits), for two tasks of a sequence over the entire space
/// (click, then click-and-convert), whose later probability cannot exceed the earlier one: for models whose
/// heads predict p(click) and p(click and convert) directly. No Objective here adds it: with ESMM's
/// p_ctcvr = p_ctr * p_cvr the hinge is zero by construction.
inline torch::Tensor behavioral_expectation_calibrator(const torch::Tensor& earlier_logits,
                                                       const torch::Tensor& later_logits) {
  TORCH_CHECK(earlier_logits.dim() == 1 && later_logits.sizes() == earlier_logits.sizes(),
              "behavioral_expectation_calibrator expects two logit tensors of shape [batch], but got ",
              earlier_logits.sizes(), " and ", later_logits.sizes());
  return torch::relu(torch::sigmoid(later_logits) - torch::sigmoid(earlier_logits)).mean();
}

}  // namespace mtl
