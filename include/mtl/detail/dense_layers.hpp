// Linear layers with ReLUs as one autograd function on the CPU (outside autocast and
// without dropout): each ReLU in place on its product, each ReLU's gradient and its
// layer's bias gradient in one pass, and no input gradient where the input needs none.
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/autocast_state.hpp>
#include <mtl/detail/blocked_column_sums.hpp>
#include <mtl/detail/cpu_loops.hpp>
#include <mtl/detail/matrix_product.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

namespace mtl::detail {

// One row's part of relu_grad_and_bias_grad; restrict, so that the loops vectorise.
template <class T>
void relu_grad_row(const T* __restrict grad, const T* __restrict output, T* __restrict kept, T* __restrict sums,
                   int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const T through = grad[c];  // loaded unconditionally: a conditional load keeps the loop scalar
    const T value = output[c] <= T(0) ? T(0) : through;
    kept[c] = value, sums[c] += value;
  }
}

/// A layer's gradient through its ReLU (zero where `output` <= 0, as
/// threshold_backward; `relu` false leaves it as it is) and the bias gradient
/// (its column sums), in one pass on the CPU.
inline std::pair<torch::Tensor, torch::Tensor> relu_grad_and_bias_grad(const torch::Tensor& grad,
                                                                       const torch::Tensor& output, bool relu) {
  if (!cpu_loops_take({grad, output}) || !output.is_contiguous() || grad.sizes() != output.sizes() || grad.dim() != 2) {
    auto through = relu ? torch::threshold_backward(grad, output, 0) : grad;
    return {through, through.sum(0)};
  }
  const auto g = grad.contiguous();
  auto through = relu ? torch::empty_like(g) : g;
  const int64_t columns = g.size(1);
  constexpr int64_t kBlockRows = 256;
  const int64_t grain = row_grain(columns, kOnePassValuesPerThread, kBlockRows);
  torch::Tensor bias_grad;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "mtl::relu_grad_and_bias_grad", [&] {
    const scalar_t* in = g.data_ptr<scalar_t>();
    const scalar_t* out = output.data_ptr<scalar_t>();
    scalar_t* kept = through.data_ptr<scalar_t>();
    bias_grad = blocked_column_sums<scalar_t>(
        g.size(0), kBlockRows, columns, grain, g.options(), [&](int64_t first_row, int64_t end_row, scalar_t* sum) {
          for (int64_t i = first_row; i < end_row; ++i) {
            if (relu)
              relu_grad_row(in + i * columns, out + i * columns, kept + i * columns, sum, columns);
            else
              add_row(in + i * columns, sum, columns);
          }
        });
  });
  return {through, bias_grad};
}

/// `products` + `bias` on every row, then a ReLU unless `relu` is false, in
/// place and in one pass on the CPU: after the product, in place of addmm's
/// copy of the bias before it and the ReLU's pass after it.
inline void add_bias_and_relu_(torch::Tensor& products, const torch::Tensor& bias, bool relu) {
  if (!cpu_loops_take({products, bias}) || !products.is_contiguous() || products.dim() != 2 || bias.dim() != 1 ||
      bias.size(0) != products.size(1)) {
    products.add_(bias);
    if (relu) products.relu_();
    return;
  }
  const auto b = bias.contiguous();
  const int64_t columns = products.size(1);
  AT_DISPATCH_FLOATING_TYPES(products.scalar_type(), "mtl::add_bias_and_relu_", [&] {
    scalar_t* rows = products.data_ptr<scalar_t>();
    const scalar_t* __restrict add = b.data_ptr<scalar_t>();
    at::parallel_for(0, products.size(0), row_grain(columns, kOnePassValuesPerThread), [&](int64_t first, int64_t end) {
      for (int64_t i = first; i < end; ++i) {
        scalar_t* __restrict row = rows + i * columns;
        if (relu)
          for (int64_t c = 0; c < columns; ++c) row[c] = std::max(row[c] + add[c], scalar_t(0));
        else
          for (int64_t c = 0; c < columns; ++c) row[c] += add[c];
      }
    });
  });
}

/// Linear layers `weights[l]` [out, in], `biases[l]` [out], each followed by a
/// ReLU except the last when `activate_last` is false.
class DenseLayers : public torch::autograd::Function<DenseLayers> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x0,
                                                torch::TensorList weights, torch::TensorList biases,
                                                bool activate_last) {
    // Saved: the input, then each layer's output (the next layer's input; after
    // a ReLU its sign is the ReLU's mask), then the weights.
    torch::autograd::variable_list saved{x0};
    torch::Tensor x = x0;
    for (size_t l = 0; l < weights.size(); ++l) {
      x = detail::mm_transposed(x, weights[l]);
      add_bias_and_relu_(x, biases[l], l + 1 < weights.size() || activate_last);
      saved.push_back(x);
    }
    saved.insert(saved.end(), weights.begin(), weights.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["activate_last"] = activate_last;
    return {x};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const size_t layers = (saved.size() - 1) / 2;
    const bool activate_last = ctx->saved_data["activate_last"].toBool();
    std::vector<torch::Tensor> grad_weights(layers), grad_biases(layers);
    torch::Tensor g = grads[0], grad_x0;
    for (size_t l = layers; l-- > 0;) {
      const auto& input = saved[l];
      const auto& output = saved[l + 1];
      std::tie(g, grad_biases[l]) = relu_grad_and_bias_grad(g, output, l + 1 < layers || activate_last);
      grad_weights[l] = detail::mm(g.t(), input);
      if (l > 0)
        g = detail::mm(g, saved[1 + layers + l]);
      else if (ctx->needs_input_grad(0))
        grad_x0 = detail::mm(g, saved[1 + layers]);
    }
    torch::autograd::variable_list result{grad_x0};
    result.insert(result.end(), grad_weights.begin(), grad_weights.end());
    result.insert(result.end(), grad_biases.begin(), grad_biases.end());
    result.emplace_back();  // activate_last
    return result;
  }
};

/// `layer`'s forward as DenseLayers' one node with no activation, so that its
/// products go where DenseLayers sends them (oneDNN on the CPU in float); under
/// autocast, without a bias, or on an input that is not 2-D, the module's own forward.
inline torch::Tensor linear_forward(torch::nn::Linear& layer, const torch::Tensor& x) {
  if (autocast_enabled() || !layer->options.bias() || x.dim() != 2) return layer->forward(x);
  return apply_function<DenseLayers>(x, torch::TensorList(layer->weight), torch::TensorList(layer->bias),
                                     /*activate_last=*/false)[0];
}

}  // namespace mtl::detail
