// A softmax gate: one linear layer scoring each expert, normalised per row.
// It keeps the weights of its last forward for expert-health diagnostics,
// except under inference mode, where forwards write nothing to the module
// (so that several threads can serve one model at once).
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/dense_layers.hpp>
#include <mtl/detail/row_softmax.hpp>

#include <c10/core/InferenceMode.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <utility>

namespace mtl {

/// Options of `Gate`.
///
/// Example:
///   Gate gate(GateOptions(/*input_dim=*/144, /*num_experts=*/4));
struct GateOptions {
  GateOptions(int64_t input_dim, int64_t num_experts) : input_dim_(input_dim), num_experts_(num_experts) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, num_experts);
};

class GateImpl : public torch::nn::Cloneable<GateImpl> {
 public:
  GateImpl(int64_t input_dim, int64_t num_experts) : GateImpl(GateOptions(input_dim, num_experts)) {}
  explicit GateImpl(GateOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.num_experts() > 0, "Gate expects at least one expert, but got ", options.num_experts());
    TORCH_CHECK(options.input_dim() > 0, "Gate expects a positive input dim, but got ", options.input_dim());
    scorer = register_module("scorer", torch::nn::Linear(options.input_dim(), options.num_experts()));
  }

  /// [batch, input_dim] -> weights [batch, num_experts], each row summing to 1.
  torch::Tensor forward(const torch::Tensor& x) {
    // Softmax in fp32 at least: under bf16 autocast a low-precision softmax rounds the weights.
    const auto logits = detail::linear_forward(scorer, x);
    auto weights = (detail::RowSoftmax::applies_to(logits) ? detail::apply_function<detail::RowSoftmax>(logits)[0]
                                                           : torch::softmax(logits, /*dim=*/1, torch::kFloat))
                       .to(x.scalar_type());
    if (!c10::InferenceMode::is_enabled()) last_weights_ = weights.detach();
    return weights;
  }

  /// The weights of the last forward outside inference mode (detached), or an undefined tensor.
  const torch::Tensor& last_weights() const noexcept { return last_weights_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::Gate(input_dim=" << options.input_dim() << ", num_experts=" << options.num_experts() << ")";
  }

  GateOptions options;
  torch::nn::Linear scorer{nullptr};

 private:
  torch::Tensor last_weights_;
};
TORCH_MODULE(Gate);

}  // namespace mtl
