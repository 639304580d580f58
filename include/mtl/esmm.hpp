// ESMM (entire space multi-task model) loss: CVR is learnt over all
// impressions through p_ctcvr = p_ctr * p_cvr. v1 takes losses on click and on
// click*conversion; v2 adds lambda_cvr_aux times the CVR loss on clicked rows.
// Everything is computed from logits in log space, so logits of +-30 give
// finite losses and gradients. On the CPU all terms are one pass
// (detail/esmm_terms.hpp); functional/losses.hpp has the same loss as tensor ops.
#pragma once

#include <mtl/detail/esmm_terms.hpp>
#include <mtl/functional/losses.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <ostream>

namespace mtl {

enum class ESMMVersion { v1, v2 };

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
};

/// The total and each term, so that a non-finite loss can be traced to its term.
struct ESMMLossTerms {
  torch::Tensor total;
  torch::Tensor ctr;
  torch::Tensor ctcvr;
  torch::Tensor cvr_aux;  ///< zero under v1, and for a batch without a click
};

class ESMMLossImpl : public torch::nn::Cloneable<ESMMLossImpl> {
 public:
  explicit ESMMLossImpl(ESMMLossOptions options = {}) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.lambda_cvr_aux() >= 0.0, "ESMMLoss expects lambda_cvr_aux >= 0, but got ",
                options.lambda_cvr_aux());
  }

  /// Logits and labels are [batch]; labels are 0/1 with conversion <= click.
  ESMMLossTerms forward(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits, const torch::Tensor& click,
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

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::ESMMLoss(version=" << (options.version() == ESMMVersion::v2 ? "v2" : "v1")
           << ", lambda_cvr_aux=" << options.lambda_cvr_aux() << ")";
  }

  ESMMLossOptions options;

 private:
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
