// A task tower: a small MLP on a task's representation ending in one logit.
#pragma once

#include <mtl/mlp.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <vector>

namespace mtl {

/// Options of `Tower`.
///
/// Example:
///   Tower ctr(TowerOptions(/*input_dim=*/64).hidden_dims({32}));
struct TowerOptions {
  /* implicit */ TowerOptions(int64_t input_dim) : input_dim_(input_dim) {}

  TORCH_ARG(int64_t, input_dim);
  /// Hidden layers before the logit; empty makes the tower one linear layer.
  TORCH_ARG(std::vector<int64_t>, hidden_dims);
  TORCH_ARG(double, dropout) = 0.0;
};

class TowerImpl : public torch::nn::Cloneable<TowerImpl> {
 public:
  explicit TowerImpl(TowerOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    hidden = register_module("hidden",
                             MLP(MLPOptions(options.input_dim(), options.hidden_dims()).dropout(options.dropout())));
    logit = register_module("logit", torch::nn::Linear(hidden->output_dim(), 1));
  }

  /// [batch, input_dim] -> logits [batch].
  torch::Tensor forward(const torch::Tensor& x) { return hidden->forward_with_head(x, logit).squeeze(1); }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::Tower(input_dim=" << options.input_dim() << ", hidden_layers=" << options.hidden_dims().size()
           << ")";
  }

  TowerOptions options;
  MLP hidden{nullptr};
  torch::nn::Linear logit{nullptr};
};
TORCH_MODULE(Tower);

}  // namespace mtl
