// ExpertOutputAligner: experts of different kinds emit outputs on different
// scales, and a gate mixing them raw favours the loud one. Each expert's
// output is layer-normalised, multiplied by a learnable per-expert scale
// (initialised to 1), then dropped out. On the CPU in float or double the
// normalisation and the scale are one autograd node
// (detail/normalize_and_scale.hpp).
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/autocast_state.hpp>
#include <mtl/detail/normalize_and_scale.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <utility>

namespace mtl {

/// Options of `ExpertOutputAligner`.
///
/// Example:
///   ExpertOutputAligner align(ExpertOutputAlignerOptions(/*num_experts=*/6, /*dim=*/64));
struct ExpertOutputAlignerOptions {
  ExpertOutputAlignerOptions(int64_t num_experts, int64_t dim) : num_experts_(num_experts), dim_(dim) {}

  TORCH_ARG(int64_t, num_experts);
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(double, eps) = 1e-5;
};

class ExpertOutputAlignerImpl : public torch::nn::Cloneable<ExpertOutputAlignerImpl> {
 public:
  ExpertOutputAlignerImpl(int64_t num_experts, int64_t dim)
      : ExpertOutputAlignerImpl(ExpertOutputAlignerOptions(num_experts, dim)) {}
  explicit ExpertOutputAlignerImpl(ExpertOutputAlignerOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.num_experts() > 0, "ExpertOutputAligner expects at least one expert, but got ",
                options.num_experts());
    TORCH_CHECK(options.dim() > 0, "ExpertOutputAligner expects a positive dim, but got ", options.dim());
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
    const bool one_function = detail::NormalizeAndScale::applies_to(outputs, scale) && !detail::autocast_enabled();
    auto aligned =
        one_function ? detail::apply_function<detail::NormalizeAndScale>(outputs.contiguous(), scale, options.eps())[0]
                     : normalize(outputs) * scale.view({1, -1, 1});
    return options.dropout() > 0.0 ? dropout->forward(aligned) : aligned;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::ExpertOutputAligner(num_experts=" << options.num_experts() << ", dim=" << options.dim()
           << ", dropout=" << options.dropout() << ")";
  }

  ExpertOutputAlignerOptions options;
  /// Learnable per-expert scale, initialised to 1.
  torch::Tensor scale;
  torch::nn::Dropout dropout{nullptr};

 private:
  void check_shape(const torch::Tensor& outputs) const {
    TORCH_CHECK(outputs.dim() == 3 && outputs.size(1) == options.num_experts() && outputs.size(2) == options.dim(),
                "ExpertOutputAligner expects [batch, ", options.num_experts(), ", ", options.dim(), "], but got shape ",
                outputs.sizes());
  }
};
TORCH_MODULE(ExpertOutputAligner);

}  // namespace mtl
