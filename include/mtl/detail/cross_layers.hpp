// CrossNet-v2's layers as one autograd function with a written-out backward. On
// the CPU in float or double, each layer's work beside its products is one pass
// over the rows forward (the bias, the cross and the residual) and one backward
// (the cross's gradients and the bias gradient), and the products add into the
// input gradient in place.
#pragma once

#include <mtl/detail/blocked_column_sums.hpp>
#include <mtl/detail/cpu_loops.hpp>
#include <mtl/detail/matrix_product.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

namespace mtl::detail {

/// A cross layer after its product u = W_l x_l: adds the bias to `u` in place
/// and returns x_{l+1} = x0 * u + x_l.
inline torch::Tensor add_bias_and_cross(torch::Tensor& u, const torch::Tensor& bias, const torch::Tensor& x0,
                                        const torch::Tensor& x) {
  if (!cpu_loops_take({u, x0, x, bias}) || !contiguous_matrices_of_one_shape({u, x0, x}) || bias.dim() != 1 ||
      bias.size(0) != u.size(1)) {
    u.add_(bias);
    return torch::addcmul(x, x0, u);
  }
  const auto b = bias.contiguous();
  auto next = torch::empty_like(x);
  const int64_t columns = u.size(1);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "mtl::add_bias_and_cross", [&] {
    scalar_t* up = u.data_ptr<scalar_t>();
    const scalar_t *bp = b.data_ptr<scalar_t>(), *x0p = x0.data_ptr<scalar_t>(), *xp = x.data_ptr<scalar_t>();
    scalar_t* np = next.data_ptr<scalar_t>();
    at::parallel_for(0, u.size(0), row_grain(columns, kOnePassValuesPerThread), [&](int64_t first, int64_t end) {
      for (int64_t i = first; i < end; ++i) {
        const int64_t at = i * columns;
        scalar_t* __restrict ur = up + at;
        scalar_t* __restrict nr = np + at;
        const scalar_t* __restrict x0r = x0p + at, * __restrict xr = xp + at, * __restrict br = bp;
        for (int64_t c = 0; c < columns; ++c) {
          const scalar_t value = ur[c] + br[c];
          ur[c] = value, nr[c] = xr[c] + x0r[c] * value;
        }
      }
    });
  });
  return next;
}

/// A cross layer's gradients that take no product, from g = dL/dx_{l+1}:
/// returns g * x0 (dL/du) and its column sums (the bias gradient), and adds
/// g * u to `grad_x0` (started where undefined), and g itself where
/// `x_is_x0` (layer 0, whose x_l is x0 itself).
inline std::pair<torch::Tensor, torch::Tensor> cross_gradients(const torch::Tensor& g, const torch::Tensor& x0,
                                                               const torch::Tensor& u, torch::Tensor& grad_x0,
                                                               bool x_is_x0) {
  const bool loops_take =
      grad_x0.defined() ? cpu_loops_take({g, x0, u, grad_x0}) && contiguous_matrices_of_one_shape({g, x0, u, grad_x0})
                        : cpu_loops_take({g, x0, u}) && contiguous_matrices_of_one_shape({g, x0, u});
  if (!loops_take) {
    auto grad_u = g * x0;
    auto through_u = x_is_x0 ? torch::addcmul(g, g, u) : g * u;
    grad_x0 = grad_x0.defined() ? grad_x0.add_(through_u) : through_u;
    return {grad_u, grad_u.sum(0)};
  }
  const bool accumulate = grad_x0.defined();
  if (!accumulate) grad_x0 = torch::empty_like(g);
  auto grad_u = torch::empty_like(g);
  const int64_t columns = g.size(1);
  constexpr int64_t kBlockRows = 256;
  torch::Tensor bias_grad;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "mtl::cross_gradients", [&] {
    const scalar_t *gp = g.data_ptr<scalar_t>(), *x0p = x0.data_ptr<scalar_t>(), *up = u.data_ptr<scalar_t>();
    scalar_t *gup = grad_u.data_ptr<scalar_t>(), *gxp = grad_x0.data_ptr<scalar_t>();
    const scalar_t identity = x_is_x0 ? scalar_t(1) : scalar_t(0);
    // `adds` true: grad_x0 holds earlier layers' sums; false: it is new and written, not read.
    const auto pass = [&](auto adds) {
      return blocked_column_sums<scalar_t>(
          g.size(0), kBlockRows, columns, row_grain(columns, kOnePassValuesPerThread, kBlockRows), g.options(),
          [&](int64_t first_row, int64_t end_row, scalar_t* __restrict sums) {
            for (int64_t i = first_row; i < end_row; ++i) {
              const int64_t at = i * columns;
              const scalar_t* __restrict gr = gp + at, * __restrict x0r = x0p + at, * __restrict ur = up + at;
              scalar_t* __restrict gur = gup + at, * __restrict gxr = gxp + at;
              for (int64_t c = 0; c < columns; ++c) {
                const scalar_t through_u = gr[c] * x0r[c];
                gur[c] = through_u, sums[c] += through_u;
                const scalar_t to_x0 = gr[c] * (ur[c] + identity);
                if constexpr (decltype(adds)::value)
                  gxr[c] += to_x0;
                else
                  gxr[c] = to_x0;
              }
            }
          });
    };
    bias_grad = accumulate ? pass(std::true_type{}) : pass(std::false_type{});
  });
  return {grad_u, bias_grad};
}

/// The cross layers given their weights: `ups[l]` W_l (or U_l) [d, d or r],
/// `up_biases[l]` b_l [d], `downs[l]` V_l^T [r, d] (empty list: full rank).
class CrossLayers : public torch::autograd::Function<CrossLayers> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x0,
                                                torch::TensorList ups, torch::TensorList up_biases,
                                                torch::TensorList downs) {
    const bool low_rank = !downs.empty();
    // Saved: x0, then per layer its input x_l, its low-rank code h_l (low rank only) and u_l = W_l h_l + b_l.
    const auto x0_rows = x0.contiguous();
    torch::autograd::variable_list saved{x0_rows};
    torch::Tensor x = x0_rows;
    for (size_t l = 0; l < ups.size(); ++l) {
      const auto h = low_rank ? detail::mm_transposed(x, downs[l]) : x;
      auto u = detail::mm_transposed(h, ups[l]);
      auto next = add_bias_and_cross(u, up_biases[l], x0_rows, x);
      saved.push_back(x);
      if (low_rank) saved.push_back(h);
      saved.push_back(u);
      x = std::move(next);
    }
    saved.insert(saved.end(), ups.begin(), ups.end());
    saved.insert(saved.end(), downs.begin(), downs.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["layers"] = static_cast<int64_t>(ups.size());
    ctx->saved_data["low_rank"] = low_rank;
    return {x};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto layers = static_cast<size_t>(ctx->saved_data["layers"].toInt());
    const bool low_rank = ctx->saved_data["low_rank"].toBool();
    const size_t per_layer = low_rank ? 3 : 2;
    const auto& x0 = saved[0];
    auto layer_tensor = [&](size_t l, size_t k) -> const torch::Tensor& { return saved[1 + l * per_layer + k]; };
    const size_t weights_at = 1 + layers * per_layer;
    std::vector<torch::Tensor> grad_ups(layers), grad_biases(layers), grad_downs(low_rank ? layers : 0);
    torch::Tensor g = grads[0].contiguous(), grad_x0;
    for (size_t l = layers; l-- > 0;) {
      const auto& x = layer_tensor(l, 0);
      const auto& h = low_rank ? layer_tensor(l, 1) : x;
      const auto& u = layer_tensor(l, per_layer - 1);
      const auto& up = saved[weights_at + l];
      // x_{l+1} = x0 * u + x_l: d/du = g * x0, d/dx0 gathers g * u from every layer, d/dx_l = g + d/du W_l.
      auto [grad_u, grad_bias] = cross_gradients(g, x0, u, grad_x0, /*x_is_x0=*/l == 0);
      grad_ups[l] = detail::mm(grad_u.t(), h);
      grad_biases[l] = std::move(grad_bias);
      // d/dx_l, in place: layer 0's joins grad_x0 (x_0 is x0), the top layer's starts as a copy of the
      // gradient handed in, the others' is the g of the layer above, not needed after this.
      torch::Tensor into_x = l == 0 ? grad_x0 : l + 1 == layers ? g.clone(at::MemoryFormat::Contiguous) : g;
      if (low_rank) {
        const auto& down = saved[weights_at + layers + l];
        const auto grad_h = detail::mm(grad_u, up);
        grad_downs[l] = detail::mm(grad_h.t(), x);
        add_product_(into_x, grad_h, down);
      } else {
        add_product_(into_x, grad_u, up);
      }
      g = std::move(into_x);
    }
    torch::autograd::variable_list result{grad_x0};
    result.insert(result.end(), grad_ups.begin(), grad_ups.end());
    result.insert(result.end(), grad_biases.begin(), grad_biases.end());
    result.insert(result.end(), grad_downs.begin(), grad_downs.end());
    return result;
  }
};

}  // namespace mtl::detail
