// ESMM's three loss terms and their weighted total as one autograd function on
// the CPU: one pass over the batch computes every row's terms and their
// derivatives, and backward only weighs the saved derivatives (as tensor ops
// the loss is about 25 operations each way, each too small to share out).
// The same log-space formulas as functional/losses.hpp, so logits of +-30
// stay finite.
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/cpu_loops.hpp>

#include <ATen/Dispatch.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>

namespace mtl::detail {

/// The weights of the terms in the total.
struct EsmmWeights {
  double ctr = 1, ctcvr = 1, cvr_aux = 0;
};

/// Inputs ctr and cvr logits [batch] (float or double, CPU), click and
/// conversion [batch] in the logits' dtype. Outputs four scalars: the weighted
/// total; BCE(sigmoid(ctr), click) over all rows; BCE(p_ctcvr, click *
/// conversion) over all rows; and BCE(sigmoid(cvr), conversion) over clicked
/// rows (weighted by click, divided by max(sum of clicks, 1)). The labels get
/// no gradient. Row sums are taken in double, in batch order.
class EsmmTerms : public torch::autograd::Function<EsmmTerms> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& ctr_logits,
                                                const torch::Tensor& cvr_logits, const torch::Tensor& click,
                                                const torch::Tensor& conversion, EsmmWeights weights) {
    const int64_t n = ctr_logits.size(0);
    const auto a = ctr_logits.contiguous(), b = cvr_logits.contiguous();
    const auto c = click.contiguous(), v = conversion.contiguous();
    // Per row: d(ctr term)/da, d(ctcvr term)/da, d(ctcvr term)/db, d(cvr_aux term)/db, before the means;
    // none where no logit needs a gradient (an evaluation pass).
    const bool differentiable = ctr_logits.requires_grad() || cvr_logits.requires_grad();
    torch::Tensor derivatives = differentiable ? torch::empty({4, n}, a.options()) : torch::Tensor();
    double sums[3] = {0, 0, 0}, clicks = 0;
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "mtl::EsmmTerms", [&] {
      const scalar_t *ap = a.data_ptr<scalar_t>(), *bp = b.data_ptr<scalar_t>();
      const scalar_t *cp = c.data_ptr<scalar_t>(), *vp = v.data_ptr<scalar_t>();
      scalar_t* d = differentiable ? derivatives.data_ptr<scalar_t>() : nullptr;
      for (int64_t i = 0; i < n; ++i) {
        const double x = ap[i], y = bp[i], click_i = cp[i], conversion_i = vp[i], label = click_i * conversion_i;
        const Logit ctr(x), cvr(y);
        // log p_ctcvr = log sig(a) + log sig(b); log(1 - p_ctcvr) = log(sig(-a) + sig(a) sig(-b)).
        const double log_p = ctr.log_sigmoid + cvr.log_sigmoid;
        const double log_1mp = log_add_exp(ctr.log_sigmoid_neg, ctr.log_sigmoid + cvr.log_sigmoid_neg);
        sums[0] += ctr.softplus - click_i * x;
        sums[1] -= label * log_p + (1 - label) * log_1mp;
        sums[2] += click_i * (cvr.softplus - conversion_i * y);
        clicks += click_i;
        if (!differentiable) continue;
        // d log(1 - p)/da = -sig(a) sig(-a) sig(b) / (1 - p), and for b alike: ratios taken in log space.
        const double shrink_a = std::exp(ctr.log_sigmoid + ctr.log_sigmoid_neg + cvr.log_sigmoid - log_1mp);
        const double shrink_b = std::exp(ctr.log_sigmoid + cvr.log_sigmoid + cvr.log_sigmoid_neg - log_1mp);
        d[i] = static_cast<scalar_t>(ctr.sigmoid - click_i);
        d[n + i] = static_cast<scalar_t>(-label * (1 - ctr.sigmoid) + (1 - label) * shrink_a);
        d[2 * n + i] = static_cast<scalar_t>(-label * (1 - cvr.sigmoid) + (1 - label) * shrink_b);
        d[3 * n + i] = static_cast<scalar_t>(click_i * (cvr.sigmoid - conversion_i));
      }
    });
    const double rows = static_cast<double>(n), clicked = std::max(clicks, 1.0);
    const double ctr_term = sums[0] / rows, ctcvr_term = sums[1] / rows, aux_term = sums[2] / clicked;
    ctx->save_for_backward({derivatives});
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["clicked"] = clicked;
    ctx->saved_data["weight_ctr"] = weights.ctr;
    ctx->saved_data["weight_ctcvr"] = weights.ctcvr;
    ctx->saved_data["weight_cvr_aux"] = weights.cvr_aux;
    const auto scalar = [&](double value) { return torch::tensor(value, a.options()); };
    const double total = weights.ctr * ctr_term + weights.ctcvr * ctcvr_term + weights.cvr_aux * aux_term;
    return {scalar(total), scalar(ctr_term), scalar(ctcvr_term), scalar(aux_term)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto derivatives = ctx->get_saved_variables()[0];
    const auto given = [&](size_t k) { return grads[k].defined() ? grads[k].item<double>() : 0.0; };
    const double total = given(0);
    const double rows = ctx->saved_data["rows"].toDouble(), clicked = ctx->saved_data["clicked"].toDouble();
    // Each term's weight in what is differentiated: through the total, and directly.
    const double ctr = (total * ctx->saved_data["weight_ctr"].toDouble() + given(1)) / rows;
    const double ctcvr = (total * ctx->saved_data["weight_ctcvr"].toDouble() + given(2)) / rows;
    const double aux = (total * ctx->saved_data["weight_cvr_aux"].toDouble() + given(3)) / clicked;
    const int64_t n = derivatives.size(1);
    auto grad_ctr = torch::empty({n}, derivatives.options()), grad_cvr = torch::empty({n}, derivatives.options());
    AT_DISPATCH_FLOATING_TYPES(derivatives.scalar_type(), "mtl::EsmmTerms::backward", [&] {
      const scalar_t* d = derivatives.data_ptr<scalar_t>();
      scalar_t *ga = grad_ctr.data_ptr<scalar_t>(), *gb = grad_cvr.data_ptr<scalar_t>();
      for (int64_t i = 0; i < n; ++i) {
        ga[i] = static_cast<scalar_t>(ctr * d[i] + ctcvr * d[n + i]);
        gb[i] = static_cast<scalar_t>(ctcvr * d[2 * n + i] + aux * d[3 * n + i]);
      }
    });
    return {grad_ctr, grad_cvr, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }

  /// Whether EsmmTerms takes these logits (CPU, float or double, 1-D, one dtype).
  static bool applies_to(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits) {
    return cpu_loops_take({ctr_logits, cvr_logits}) && ctr_logits.dim() == 1 && cvr_logits.dim() == 1;
  }

 private:
  /// sigmoid, log sigmoid and softplus of one logit, from one exp and one log1p.
  struct Logit {
    explicit Logit(double x) {
      const double e = std::exp(-std::abs(x));
      softplus = std::max(x, 0.0) + std::log1p(e);  // log(1 + exp(x)) = -log sig(-x)
      log_sigmoid = x - softplus;
      log_sigmoid_neg = -softplus;
      sigmoid = x >= 0 ? 1 / (1 + e) : e / (1 + e);
    }
    double softplus, log_sigmoid, log_sigmoid_neg, sigmoid;
  };

  static double log_add_exp(double x, double y) {
    const double high = std::max(x, y);
    return high + std::log1p(std::exp(-std::abs(x - y)));
  }
};

/// The terms as `EsmmTerms` computes them: {total, ctr, ctcvr, cvr_aux}.
inline torch::autograd::variable_list esmm_terms(const torch::Tensor& ctr_logits, const torch::Tensor& cvr_logits,
                                                 const torch::Tensor& click, const torch::Tensor& conversion,
                                                 EsmmWeights weights) {
  const auto dtype = ctr_logits.scalar_type();
  return apply_function<EsmmTerms>(ctr_logits, cvr_logits, click.to(dtype), conversion.to(dtype), weights);
}

}  // namespace mtl::detail
