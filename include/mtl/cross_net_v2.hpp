// CrossNet-v2 (DCN-v2): explicit bounded-degree feature crosses,
// x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, with W_l full rank or low rank (U_l V_l^T).
// Outside autocast the layers run as one autograd node with a written-out
// backward (detail/cross_layers.hpp).
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/autocast_state.hpp>
#include <mtl/detail/cross_layers.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <utility>
#include <vector>

namespace mtl {

/// Options of `CrossNetV2`.
///
/// Example:
///   CrossNetV2 cross(CrossNetV2Options(/*input_dim=*/200, /*num_layers=*/3).low_rank(32));
struct CrossNetV2Options {
  CrossNetV2Options(int64_t input_dim, int64_t num_layers) : input_dim_(input_dim), num_layers_(num_layers) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, num_layers);
  /// Rank r of W_l = U_l V_l^T; 0 keeps W_l full rank.
  TORCH_ARG(int64_t, low_rank) = 0;
};

class CrossNetV2Impl : public torch::nn::Cloneable<CrossNetV2Impl> {
 public:
  CrossNetV2Impl(int64_t input_dim, int64_t num_layers) : CrossNetV2Impl(CrossNetV2Options(input_dim, num_layers)) {}
  explicit CrossNetV2Impl(CrossNetV2Options options) : options(std::move(options)) { reset(); }

  void reset() override {
    const int64_t d = options.input_dim(), r = options.low_rank();
    TORCH_CHECK(d > 0, "CrossNetV2 expects a positive input dim, but got ", d);
    TORCH_CHECK(options.num_layers() > 0, "CrossNetV2 expects at least one layer, but got ", options.num_layers());
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
    TORCH_CHECK(x0.dim() == 2 && x0.size(1) == options.input_dim(), "CrossNetV2 expects [batch, ", options.input_dim(),
                "], but got shape ", x0.sizes());
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
    return detail::apply_function<detail::CrossLayers>(x0, torch::TensorList(ups), torch::TensorList(biases),
                                                       torch::TensorList(downs))[0];
  }

  int64_t output_dim() const noexcept { return options.input_dim(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::CrossNetV2(input_dim=" << options.input_dim() << ", num_layers=" << options.num_layers()
           << ", low_rank=" << options.low_rank() << ")";
  }

  CrossNetV2Options options;
  /// Low rank: V_l^T (d -> r) per layer; empty when full rank.
  torch::nn::ModuleList down{nullptr};
  /// Full rank: W_l, b_l (d -> d); low rank: U_l, b_l (r -> d).
  torch::nn::ModuleList up{nullptr};
};
TORCH_MODULE(CrossNetV2);

}  // namespace mtl
