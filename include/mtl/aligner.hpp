// ExpertOutputAligner: experts of different kinds emit outputs on different
// scales, and a gate mixing them raw favours the loud one. Each expert's
// output is layer-normalised, multiplied by a learnable per-expert scale
// (initialised to 1), then dropped out. On the CPU in float or double the
// normalisation and the scale are one autograd function: one pass forward,
// one backward (in place of LayerNorm, a multiply, and their backward with
// the scale's gradient a separate reduction).
#pragma once

#include <mtl/autocast_state.hpp>
#include <mtl/blocked_column_sums.hpp>
#include <mtl/cpu_loops.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/pimpl.h>

#include <algorithm>
#include <cmath>
#include <ostream>

namespace mtl {

namespace detail {

// The sum of value(d) over d < n in eight running sums, which the compiler
// can keep in one vector register (one running sum is a chain it may not reorder).
template <class Value>
auto lane_sum(int64_t n, const Value& value) {
  using T = decltype(value(0));
  T lanes[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int64_t k = 0; k < 8; ++k) lanes[k] += value(d + k);
  T total = 0;
  for (; d < n; ++d) total += value(d);
  for (T lane : lanes) total += lane;
  return total;
}

/// LayerNorm over the last axis without affine terms, times `scale[e]` for
/// expert e: x [batch, experts, dim] -> [batch, experts, dim]. Saves each
/// row's mean and 1 / std and recomputes the normalised row in backward.
class NormalizeAndScale : public torch::autograd::Function<NormalizeAndScale> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                                const torch::Tensor& scale, double eps) {
    const int64_t experts = x.size(1), dim = x.size(2), rows = x.size(0) * experts;
    auto out = torch::empty_like(x);
    auto mean = torch::empty({rows}, x.options()), rstd = torch::empty({rows}, x.options());
    const auto scales = scale.contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mtl::NormalizeAndScale", [&] {
      const scalar_t* in = x.data_ptr<scalar_t>();
      const scalar_t* s = scales.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      scalar_t* means = mean.data_ptr<scalar_t>();
      scalar_t* rstds = rstd.data_ptr<scalar_t>();
      at::parallel_for(0, rows, row_grain(dim, kValuesPerThread), [&](int64_t first, int64_t end) {
        for (int64_t r = first; r < end; ++r) {
          const scalar_t* row = in + r * dim;
          const scalar_t mu = lane_sum(dim, [&](int64_t d) { return row[d]; }) / static_cast<scalar_t>(dim);
          const scalar_t squares = lane_sum(dim, [&](int64_t d) { return (row[d] - mu) * (row[d] - mu); });
          const scalar_t inv = scalar_t(1) / std::sqrt(squares / static_cast<scalar_t>(dim) + static_cast<scalar_t>(eps));
          const scalar_t times = inv * s[r % experts];
          for (int64_t d = 0; d < dim; ++d) o[r * dim + d] = (row[d] - mu) * times;
          means[r] = mu, rstds[r] = inv;
        }
      });
    });
    ctx->save_for_backward({x, scale, mean, rstd});
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &scale = saved[1], &mean = saved[2], &rstd = saved[3];
    const auto g = grads[0].contiguous();
    const auto scales = scale.contiguous();
    const int64_t batch = x.size(0), experts = x.size(1), dim = x.size(2);
    auto grad_x = torch::empty_like(x);
    torch::Tensor grad_scale;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mtl::NormalizeAndScale::backward", [&] {
      const scalar_t* in = x.data_ptr<scalar_t>();
      const scalar_t* s = scales.data_ptr<scalar_t>();
      const scalar_t* gp = g.data_ptr<scalar_t>();
      const scalar_t* means = mean.data_ptr<scalar_t>();
      const scalar_t* rstds = rstd.data_ptr<scalar_t>();
      scalar_t* gx = grad_x.data_ptr<scalar_t>();
      // The scale's gradient summed over blocks of 64 batch rows, so that threads do not change it.
      constexpr int64_t kBlockRows = 64;
      grad_scale = blocked_column_sums<scalar_t>(
          batch, kBlockRows, experts, std::max<int64_t>(1, row_grain(dim, kValuesPerThread) / (kBlockRows * experts)),
          x.options(),
          [&](int64_t first_row, int64_t end_row, scalar_t* sums) {
            for (int64_t r = first_row * experts; r < end_row * experts; ++r) {
              const scalar_t* row = in + r * dim;
              const scalar_t* grow = gp + r * dim;
              const scalar_t mu = means[r], inv = rstds[r], se = s[r % experts];
              // d/dx of LayerNorm with gy = g * scale: inv * (gy - mean(gy) - xhat * mean(gy * xhat)).
              const scalar_t g_sum = lane_sum(dim, [&](int64_t d) { return grow[d]; });
              const scalar_t g_xhat = inv * lane_sum(dim, [&](int64_t d) { return grow[d] * (row[d] - mu); });  // sum of g * xhat
              sums[r % experts] += g_xhat;
              const scalar_t mean_gy = se * g_sum / static_cast<scalar_t>(dim);
              const scalar_t mean_gy_xhat = se * g_xhat / static_cast<scalar_t>(dim);
              for (int64_t d = 0; d < dim; ++d)
                gx[r * dim + d] = inv * (se * grow[d] - mean_gy - (row[d] - mu) * inv * mean_gy_xhat);
            }
          });
    });
    return {grad_x, grad_scale, torch::Tensor()};
  }

 private:
  // Threads from about 65k values. Unlike mlp.hpp's one-pass loops, these
  // rows have enough arithmetic (two sums, a square root) for a second thread
  // to pay at this size: [1024, 6, 64] forward + backward 0.23-0.29 ms on two
  // threads, 0.57 on one; LayerNorm and the multiply as tensor ops 0.58-0.64.
  static constexpr int64_t kValuesPerThread = int64_t{1} << 16;
};

}  // namespace detail

/// Options of `ExpertOutputAligner`.
///
/// Example:
///   ExpertOutputAligner align(ExpertOutputAlignerOptions(/*num_experts=*/6, /*dim=*/64));
struct ExpertOutputAlignerOptions {
  ExpertOutputAlignerOptions(int64_t num_experts, int64_t dim)
      : num_experts_(num_experts), dim_(dim) {}

  TORCH_ARG(int64_t, num_experts);
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(double, eps) = 1e-5;
};

class ExpertOutputAlignerImpl : public torch::nn::Cloneable<ExpertOutputAlignerImpl> {
 public:
  ExpertOutputAlignerImpl(int64_t num_experts, int64_t dim)
      : ExpertOutputAlignerImpl(ExpertOutputAlignerOptions(num_experts, dim)) {}
  explicit ExpertOutputAlignerImpl(ExpertOutputAlignerOptions options)
      : options(std::move(options)) {
    reset();
  }

  void reset() override {
    TORCH_CHECK(options.num_experts() > 0, "ExpertOutputAligner expects at least one expert, but got ",
                options.num_experts());
    TORCH_CHECK(options.dim() > 0, "ExpertOutputAligner expects a positive dim, but got ",
                options.dim());
    scale = register_parameter("scale", torch::ones({options.num_experts()}));
    dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
  }

  /// LayerNorm over the feature axis, without affine terms: per row, mean 0
  /// and standard deviation 1. `outputs` is [batch, num_experts, dim].
  torch::Tensor normalize(const torch::Tensor& outputs) const {
    check_shape(outputs);
    return torch::nn::functional::layer_norm(
        outputs, torch::nn::functional::LayerNormFuncOptions({options.dim()}).eps(options.eps()));
  }

  /// [batch, num_experts, dim] -> [batch, num_experts, dim]
  torch::Tensor forward(const torch::Tensor& outputs) {
    check_shape(outputs);
    const bool one_function = detail::cpu_float_or_double(outputs) && scale.scalar_type() == outputs.scalar_type() &&
                              scale.device().is_cpu() && !detail::autocast_enabled();
    auto aligned = one_function ? detail::NormalizeAndScale::apply(outputs.contiguous(), scale, options.eps())[0]
                                : normalize(outputs) * scale.view({1, -1, 1});
    return options.dropout() > 0.0 ? dropout->forward(aligned) : aligned;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::ExpertOutputAligner(num_experts=" << options.num_experts()
           << ", dim=" << options.dim() << ", dropout=" << options.dropout() << ")";
  }

  ExpertOutputAlignerOptions options;
  /// Learnable per-expert scale, initialised to 1.
  torch::Tensor scale;
  torch::nn::Dropout dropout{nullptr};

 private:
  void check_shape(const torch::Tensor& outputs) const {
    TORCH_CHECK(outputs.dim() == 3 && outputs.size(1) == options.num_experts() &&
                    outputs.size(2) == options.dim(),
                "ExpertOutputAligner expects [batch, ", options.num_experts(), ", ", options.dim(),
                "], but got shape ", outputs.sizes());
  }
};
TORCH_MODULE(ExpertOutputAligner);

}  // namespace mtl
