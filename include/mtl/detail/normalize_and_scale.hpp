// The ExpertOutputAligner's LayerNorm (without affine terms) and per-expert
// scale as one autograd function on the CPU in float or double: one pass
// forward and one backward, the scale's gradient summed in the same pass.
#pragma once

#include <mtl/detail/blocked_column_sums.hpp>
#include <mtl/detail/cpu_loops.hpp>
#include <mtl/detail/lane_sum.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>

namespace mtl::detail {

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
          const scalar_t inv =
              scalar_t(1) / std::sqrt(squares / static_cast<scalar_t>(dim) + static_cast<scalar_t>(eps));
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
          batch, kBlockRows, experts, row_grain(dim, kValuesPerThread, kBlockRows * experts), x.options(),
          [&](int64_t first_row, int64_t end_row, scalar_t* sums) {
            for (int64_t r = first_row * experts; r < end_row * experts; ++r) {
              const scalar_t* row = in + r * dim;
              const scalar_t* grow = gp + r * dim;
              const scalar_t mu = means[r], inv = rstds[r], se = s[r % experts];
              // d/dx of LayerNorm with gy = g * scale: inv * (gy - mean(gy) - xhat * mean(gy * xhat)).
              const scalar_t g_sum = lane_sum(dim, [&](int64_t d) { return grow[d]; });
              const scalar_t g_xhat =
                  inv * lane_sum(dim, [&](int64_t d) { return grow[d] * (row[d] - mu); });  // sum of g * xhat
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

  /// Whether NormalizeAndScale takes `x` [batch, experts, dim] and `scale` [experts].
  static bool applies_to(const torch::Tensor& x, const torch::Tensor& scale) { return cpu_loops_take({x, scale}); }

 private:
  // Threads from about 65k values: unlike the one-pass loops, these rows have
  // enough arithmetic (two sums, a square root) for a second thread to pay.
  static constexpr int64_t kValuesPerThread = int64_t{1} << 16;
};

}  // namespace mtl::detail
