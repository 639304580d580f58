// ESMM (entire space multi-task model) loss: CVR is learnt over all
// impressions through p_ctcvr = p_ctr * p_cvr. v1 takes losses on click and on
// click*conversion; v2 adds lambda_cvr_aux times the CVR loss on clicked rows.
// Everything is computed from logits in log space, so logits of +-30 give
// finite losses and gradients. On the CPU all terms are one pass
// (detail/esmm_terms.hpp); functional/losses.hpp has the same loss as tensor ops.
// ESCM2 (Wang et al., SIGIR 2022) adds a counterfactual CVR risk over the
// entire space, inverse propensity (ips) or doubly robust (dr, with an
// imputation tower's logits), weighted by counterfactual_weight.
#pragma once

#include <mtl/detail/esmm_terms.hpp>
#include <mtl/functional/losses.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <ostream>

namespace mtl {

enum class ESMMVersion { v1, v2 };

/// ESCM2's counterfactual CVR regularizer: none, inverse propensity, or doubly robust.
enum class ESMMCounterfactual { none, ips, dr };

/// Options of `ESMMLoss`.
///
/// Example:
///   ESMMLoss loss(ESMMLossOptions().version(ESMMVersion::v2).lambda_cvr_aux(0.1));
struct ESMMLossOptions {
  TORCH_ARG(ESMMVersion, version) = ESMMVersion::v2;
  /// Weight of the clicked-row CVR loss; used by v2 only.
  TORCH_ARG(double, lambda_cvr_aux) = 0.1;
  TORCH_ARG(double, ctr_weight) = 1.0;
  TORCH_ARG(double, ctcvr_weight) = 1.0;
  /// ESCM2's risk (functional/losses.hpp: ips_cvr_risk, dr_cvr_risk); dr also adds its imputation loss.
  TORCH_ARG(ESMMCounterfactual, counterfactual) = ESMMCounterfactual::none;
  /// Weight of the counterfactual risk (and of dr's imputation loss).
  TORCH_ARG(double, counterfactual_weight) = 0.1;
  /// p_ctr below this counts as this in the risk's 1 / p_ctr; in (0, 1].
  TORCH_ARG(double, propensity_floor) = 0.05;
};

/// The total and each term, so that a non-finite loss can be traced to its term.
struct ESMMLossTerms {
  torch::Tensor total;
  torch::Tensor ctr;
  torch::Tensor ctcvr;
  torch::Tensor cvr_aux;         ///< zero under v1, and for a batch without a click
  torch::Tensor counterfactual;  ///< ESCM2's risk; zero without one
  torch::Tensor imputation;      ///< dr's imputation loss; zero otherwise
};

class ESMMLossImpl : public torch::nn::Cloneable<ESMMLossImpl> {
 public:
  explicit ESMMLossImpl(ESMMLossOptions options = {}) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.lambda_cvr_aux() >= 0.0, "ESMMLoss expects lambda_cvr_aux >= 0, but got ",
                options.lambda_cvr_aux());
    TORCH_CHECK(options.ctr_weight() >= 0.0 && options.ctcvr_weight() >= 0.0,
                "ESMMLoss expects term weights >= 0, but got ctr_weight ", options.ctr_weight(), " and ctcvr_weight ",
                options.ctcvr_weight());
    TORCH_CHECK(options.counterfactual_weight() >= 0.0, "ESMMLoss expects counterfactual_weight >= 0, but got ",
                options.counterfactual_weight());
    TORCH_CHECK(options.propensity_floor() > 0.0 && options.propensity_floor() <= 1.0,
                "ESMMLoss expects propensity_floor in (0, 1], but got ", options.propensity_floor());
  }

  /// Logits and labels are [batch]; labels are 0/1 with conversion <= click.
  /// `imputation_logits` [batch], the imputation tower's, only with the dr counterfactual.
  ESMMLossTerms forward(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits, const torch::Tensor& click,
                        const torch::Tensor& conversion, const torch::Tensor& imputation_logits = {}) {
    auto terms = esmm_terms(ctr_logits, cvr_logits, click, conversion);
    terms.counterfactual = terms.imputation = torch::zeros({}, ctr_logits.options());
    const auto kind = options.counterfactual();
    TORCH_CHECK(imputation_logits.defined() == (kind == ESMMCounterfactual::dr),
                kind == ESMMCounterfactual::dr
                    ? "ESMMLoss's dr counterfactual needs the imputation tower's logits, but got none"
                    : "ESMMLoss got imputation logits, which only the dr counterfactual reads");
    if (kind == ESMMCounterfactual::ips) {
      terms.counterfactual = ips_cvr_risk(ctr_logits, cvr_logits, click, conversion, options.propensity_floor());
      terms.total = terms.total + options.counterfactual_weight() * terms.counterfactual;
    } else if (kind == ESMMCounterfactual::dr) {
      auto dr = dr_cvr_risk(ctr_logits, cvr_logits, imputation_logits, click, conversion, options.propensity_floor());
      terms.counterfactual = dr.risk, terms.imputation = dr.imputation;
      terms.total = terms.total + options.counterfactual_weight() * (dr.risk + dr.imputation);
    }
    return terms;
  }

  void pretty_print(std::ostream& stream) const override {
    static const char* const counterfactuals[] = {"none", "ips", "dr"};
    stream << "mtl::ESMMLoss(version=" << (options.version() == ESMMVersion::v2 ? "v2" : "v1")
           << ", lambda_cvr_aux=" << options.lambda_cvr_aux()
           << ", counterfactual=" << counterfactuals[static_cast<int>(options.counterfactual())] << ")";
  }

  ESMMLossOptions options;

 private:
  /// ESMM's own terms: the CTR, CTCVR and (v2) clicked-row CVR losses and their weighted total.
  ESMMLossTerms esmm_terms(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits, const torch::Tensor& click,
                           const torch::Tensor& conversion) {
    ESMMLossTerms terms;
    if (detail::EsmmTerms::applies_to(ctr_logits, cvr_logits)) {  // on the CPU: one pass, one autograd node
      check_inputs(ctr_logits, cvr_logits, click, conversion);
      const bool v2 = options.version() == ESMMVersion::v2;
      const auto out =
          detail::esmm_terms(ctr_logits, cvr_logits, click, conversion,
                             {options.ctr_weight(), options.ctcvr_weight(), v2 ? options.lambda_cvr_aux() : 0.0});
      terms.total = out[0], terms.ctr = out[1], terms.ctcvr = out[2];
      terms.cvr_aux = v2 ? out[3] : torch::zeros({}, ctr_logits.options());
      return terms;
    }
    terms.ctr = binary_cross_entropy_loss(ctr_logits, click);
    terms.ctcvr = ctcvr_loss(ctr_logits, cvr_logits, click * conversion);
    terms.total = options.ctr_weight() * terms.ctr + options.ctcvr_weight() * terms.ctcvr;
    if (options.version() == ESMMVersion::v2) {
      terms.cvr_aux = clicked_cvr_loss(cvr_logits, conversion, click);
      terms.total = terms.total + options.lambda_cvr_aux() * terms.cvr_aux;
    } else {
      terms.cvr_aux = torch::zeros({}, ctr_logits.options());
    }
    return terms;
  }

  /// What the tensor-op path checks in ctcvr_loss and clicked_cvr_loss.
  static void check_inputs(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits, const torch::Tensor& click,
                           const torch::Tensor& conversion) {
    detail::check_logits_and_labels(ctr_logits, click, "ESMMLoss", "click");
    TORCH_CHECK(cvr_logits.sizes() == ctr_logits.sizes(), "ESMMLoss expects CVR logits of shape ", ctr_logits.sizes(),
                " like the CTR logits, but got ", cvr_logits.sizes());
    detail::check_logits_and_labels(cvr_logits, conversion, "ESMMLoss", "conversion");
  }
};
TORCH_MODULE(ESMMLoss);

}  // namespace mtl
