// A stack of Linear + ReLU (+ dropout) layers: the deep part of DeepFM, the
// MLP expert, the shared bottom and the towers are all made of it.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
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
    TORCH_CHECK(options.input_dim() > 0, "MLP expects a positive input dim, but got ",
                options.input_dim());
    TORCH_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0,
                "MLP expects dropout in [0, 1), but got ", options.dropout());
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
    TORCH_CHECK(x.dim() == 2 && x.size(1) == options.input_dim(), "MLP expects [batch, ",
                options.input_dim(), "], but got shape ", x.sizes());
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

  int64_t output_dim() const {
    return options.hidden_dims().empty() ? options.input_dim() : options.hidden_dims().back();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::MLP(input_dim=" << options.input_dim() << ", hidden_dims=[";
    for (size_t i = 0; i < options.hidden_dims().size(); ++i)
      stream << (i ? ", " : "") << options.hidden_dims()[i];
    stream << "], dropout=" << options.dropout() << ")";
  }

  MLPOptions options;
  torch::nn::ModuleList layers{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(MLP);

}  // namespace mtl
