// A stack of Linear + ReLU (+ dropout) layers: the deep part of DeepFM, the
// MLP expert, the shared bottom and the towers are all made of it. Without
// dropout and outside autocast the layers run as one autograd node
// (detail/dense_layers.hpp).
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/autocast_state.hpp>
#include <mtl/detail/dense_layers.hpp>
#include <mtl/detail/join.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <utility>
#include <vector>

namespace mtl {

/// Options of `MLP`.
///
/// Example:
///   MLP mlp(MLPOptions(/*input_dim=*/200, /*hidden_dims=*/{256, 128}).dropout(0.1));
struct MLPOptions {
  MLPOptions(int64_t input_dim, std::vector<int64_t> hidden_dims)
      : input_dim_(input_dim), hidden_dims_(std::move(hidden_dims)) {}

  TORCH_ARG(int64_t, input_dim);
  /// Width of each layer; empty makes the MLP the identity.
  TORCH_ARG(std::vector<int64_t>, hidden_dims);
  /// Dropout after each activation; 0 disables it.
  TORCH_ARG(double, dropout) = 0.0;
  /// ReLU after the last layer too; false leaves the last layer linear.
  TORCH_ARG(bool, activate_last) = true;
};

class MLPImpl : public torch::nn::Cloneable<MLPImpl> {
 public:
  MLPImpl(int64_t input_dim, std::vector<int64_t> hidden_dims)
      : MLPImpl(MLPOptions(input_dim, std::move(hidden_dims))) {}
  explicit MLPImpl(MLPOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.input_dim() > 0, "MLP expects a positive input dim, but got ", options.input_dim());
    TORCH_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0, "MLP expects dropout in [0, 1), but got ",
                options.dropout());
    layers = register_module("layers", torch::nn::ModuleList());
    int64_t in = options.input_dim();
    for (int64_t width : options.hidden_dims()) {
      TORCH_CHECK(width > 0, "MLP expects positive layer widths, but got ", width);
      layers->push_back(torch::nn::Linear(in, width));
      in = width;
    }
    dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
  }

  torch::Tensor forward(torch::Tensor x) {
    check_input(x);
    if (runs_as_one_node()) return dense_layers(x, {}, {}, options.activate_last());
    return forward_layer_by_layer(x);
  }

  /// `head(forward(x))`, `head` a Linear with a bias and no activation after
  /// it (an expert's projection, a tower's logit): where the layers run as one
  /// node, the head is its last layer.
  torch::Tensor forward_with_head(const torch::Tensor& x, torch::nn::Linear& head) {
    if (runs_as_one_node() && options.activate_last() && head->options.bias()) {
      check_input(x);
      return dense_layers(x, head->weight, head->bias, /*activate_last=*/false);
    }
    return detail::linear_forward(head, forward(x));
  }

  int64_t output_dim() const {
    return options.hidden_dims().empty() ? options.input_dim() : options.hidden_dims().back();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::MLP(input_dim=" << options.input_dim() << ", hidden_dims=[" << detail::join(options.hidden_dims())
           << "], dropout=" << options.dropout() << ")";
  }

  MLPOptions options;
  torch::nn::ModuleList layers{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  void check_input(const torch::Tensor& x) const {
    TORCH_CHECK(x.dim() == 2 && x.size(1) == options.input_dim(), "MLP expects [batch, ", options.input_dim(),
                "], but got shape ", x.sizes());
  }

  // One DenseLayers node: there are layers, no dropout draws, and no autocast
  // (under it the layers go through the Linear modules, so that their products
  // run in the autocast dtype).
  bool runs_as_one_node() const {
    return !layers->is_empty() && !(options.dropout() > 0.0 && is_training()) && !detail::autocast_enabled();
  }

  // The layers, then `head_weight`, `head_bias` when defined, as one DenseLayers node.
  torch::Tensor dense_layers(const torch::Tensor& x, const torch::Tensor& head_weight, const torch::Tensor& head_bias,
                             bool activate_last) {
    std::vector<torch::Tensor> weights, biases;
    for (const auto& layer : *layers) {
      weights.push_back(layer->as<torch::nn::Linear>()->weight);
      biases.push_back(layer->as<torch::nn::Linear>()->bias);
    }
    if (head_weight.defined()) weights.push_back(head_weight), biases.push_back(head_bias);
    return detail::apply_function<detail::DenseLayers>(x, torch::TensorList(weights), torch::TensorList(biases),
                                                       activate_last)[0];
  }

  torch::Tensor forward_layer_by_layer(torch::Tensor x) {
    const size_t n = layers->size();
    for (size_t i = 0; i < n; ++i) {
      x = layers[i]->as<torch::nn::Linear>()->forward(x);
      if (i + 1 < n || options.activate_last()) {
        x = torch::relu(x);
        if (options.dropout() > 0.0) x = dropout->forward(x);
      }
    }
    return x;
  }
};
TORCH_MODULE(MLP);

}  // namespace mtl
