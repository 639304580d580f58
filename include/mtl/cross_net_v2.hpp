// CrossNet-v2 (DCN-v2): explicit bounded-degree feature crosses,
// x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, with W_l full rank or low rank (U_l V_l^T).
// Outside autocast the layers run as one autograd function with a written-out
// backward: per layer one multiply and one addcmul in place of autograd's two
// multiplies and two additions, and the input gradient's addition folded into
// its matrix product.
#pragma once

#include <mtl/autocast_state.hpp>
#include <mtl/matrix_product.hpp>

#include <torch/autograd.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <vector>

namespace mtl {

namespace detail {

/// The cross layers given their weights: `ups[l]` W_l (or U_l) [d, d or r],
/// `up_biases[l]` b_l [d], `downs[l]` V_l^T [r, d] (empty list: full rank).
class CrossLayers : public torch::autograd::Function<CrossLayers> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x0,
                                                torch::TensorList ups, torch::TensorList up_biases,
                                                torch::TensorList downs) {
    const bool low_rank = !downs.empty();
    // Saved: x0, then per layer its input x_l, its low-rank code h_l (low rank only) and u_l = W_l h_l + b_l.
    torch::autograd::variable_list saved{x0};
    torch::Tensor x = x0;
    for (size_t l = 0; l < ups.size(); ++l) {
      const auto h = low_rank ? detail::mm(x, downs[l].t()) : x;
      const auto u = detail::addmm(up_biases[l], h, ups[l].t());
      saved.push_back(x);
      if (low_rank) saved.push_back(h);
      saved.push_back(u);
      x = torch::addcmul(x, x0, u);
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
    torch::Tensor g = grads[0], grad_x0;
    for (size_t l = layers; l-- > 0;) {
      const auto& x = layer_tensor(l, 0);
      const auto& h = low_rank ? layer_tensor(l, 1) : x;
      const auto& u = layer_tensor(l, per_layer - 1);
      const auto& up = saved[weights_at + l];
      // x_{l+1} = x0 * u + x_l: d/du = g * x0, d/dx0 gathers g * u from every layer, d/dx_l = g + ...
      const auto grad_u = g * x0;
      grad_x0 = grad_x0.defined() ? grad_x0.addcmul_(g, u) : g * u;
      grad_ups[l] = detail::mm(grad_u.t(), h);
      grad_biases[l] = grad_u.sum(0);
      if (low_rank) {
        const auto& down = saved[weights_at + layers + l];
        const auto grad_h = detail::mm(grad_u, up);
        grad_downs[l] = detail::mm(grad_h.t(), x);
        g = detail::addmm(g, grad_h, down);
      } else {
        g = detail::addmm(g, grad_u, up);
      }
    }
    grad_x0.add_(g);  // x_0 is x0 itself
    torch::autograd::variable_list result{grad_x0};
    result.insert(result.end(), grad_ups.begin(), grad_ups.end());
    result.insert(result.end(), grad_biases.begin(), grad_biases.end());
    result.insert(result.end(), grad_downs.begin(), grad_downs.end());
    return result;
  }
};

}  // namespace detail

/// Options of `CrossNetV2`.
///
/// Example:
///   CrossNetV2 cross(CrossNetV2Options(/*input_dim=*/200, /*num_layers=*/3).low_rank(32));
struct CrossNetV2Options {
  CrossNetV2Options(int64_t input_dim, int64_t num_layers)
      : input_dim_(input_dim), num_layers_(num_layers) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, num_layers);
  /// Rank r of W_l = U_l V_l^T; 0 keeps W_l full rank.
  TORCH_ARG(int64_t, low_rank) = 0;
};

class CrossNetV2Impl : public torch::nn::Cloneable<CrossNetV2Impl> {
 public:
  CrossNetV2Impl(int64_t input_dim, int64_t num_layers)
      : CrossNetV2Impl(CrossNetV2Options(input_dim, num_layers)) {}
  explicit CrossNetV2Impl(CrossNetV2Options options) : options(std::move(options)) { reset(); }

  void reset() override {
    const int64_t d = options.input_dim(), r = options.low_rank();
    TORCH_CHECK(d > 0, "CrossNetV2 expects a positive input dim, but got ", d);
    TORCH_CHECK(options.num_layers() > 0, "CrossNetV2 expects at least one layer, but got ",
                options.num_layers());
    TORCH_CHECK(r >= 0, "CrossNetV2 expects low_rank >= 0 (0 = full rank), but got ", r);
    down = register_module("down", torch::nn::ModuleList());
    up = register_module("up", torch::nn::ModuleList());
    for (int64_t l = 0; l < options.num_layers(); ++l) {
      if (r == 0) {
        up->push_back(torch::nn::Linear(d, d));
      } else {
        down->push_back(torch::nn::Linear(torch::nn::LinearOptions(d, r).bias(false)));
        up->push_back(torch::nn::Linear(r, d));
      }
    }
  }

  torch::Tensor forward(const torch::Tensor& x0) {
    TORCH_CHECK(x0.dim() == 2 && x0.size(1) == options.input_dim(), "CrossNetV2 expects [batch, ",
                options.input_dim(), "], but got shape ", x0.sizes());
    // Under autocast the layers go through the Linear modules, so that their products run in the autocast dtype.
    if (detail::autocast_enabled()) {
      torch::Tensor x = x0;
      for (int64_t l = 0; l < options.num_layers(); ++l) {
        torch::Tensor h = x;
        if (options.low_rank() > 0) h = down[l]->as<torch::nn::Linear>()->forward(h);
        x = x0 * up[l]->as<torch::nn::Linear>()->forward(h) + x;
      }
      return x;
    }
    std::vector<torch::Tensor> ups, biases, downs;
    for (const auto& layer : *up) {
      ups.push_back(layer->as<torch::nn::Linear>()->weight);
      biases.push_back(layer->as<torch::nn::Linear>()->bias);
    }
    for (const auto& layer : *down) downs.push_back(layer->as<torch::nn::Linear>()->weight);
    return detail::CrossLayers::apply(x0, torch::TensorList(ups), torch::TensorList(biases),
                                      torch::TensorList(downs))[0];
  }

  int64_t output_dim() const noexcept { return options.input_dim(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::CrossNetV2(input_dim=" << options.input_dim()
           << ", num_layers=" << options.num_layers() << ", low_rank=" << options.low_rank()
           << ")";
  }

  CrossNetV2Options options;
  /// Low rank: V_l^T (d -> r) per layer; empty when full rank.
  torch::nn::ModuleList down{nullptr};
  /// Full rank: W_l, b_l (d -> d); low rank: U_l, b_l (r -> d).
  torch::nn::ModuleList up{nullptr};
};
TORCH_MODULE(CrossNetV2);

}  // namespace mtl
