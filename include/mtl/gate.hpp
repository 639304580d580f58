// A softmax gate: one linear layer scoring each expert, normalised per row.
// It keeps the weights of its last forward for expert-health diagnostics.
#pragma once

#include <mtl/cpu_loops.hpp>
#include <mtl/mlp.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <algorithm>
#include <cmath>
#include <ostream>

namespace mtl {

namespace detail {

/// Softmax over each row of [rows, cols] on the CPU in float or double, for
/// the few columns of a gate: ATen's softmax and its backward took 64 + 46 us
/// on [1024, 5], this plain loop over the rows 19 + 8.
class RowSoftmax : public torch::autograd::Function<RowSoftmax> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits) {
    const auto x = logits.contiguous();
    auto y = torch::empty_like(x);
    const int64_t cols = x.size(1);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mtl::RowSoftmax", [&] {
      const scalar_t* in = x.data_ptr<scalar_t>();
      scalar_t* out = y.data_ptr<scalar_t>();
      at::parallel_for(0, x.size(0), row_grain(cols, kValuesPerThread), [&](int64_t first, int64_t end) {
        for (int64_t r = first; r < end; ++r) {
          const scalar_t* a = in + r * cols;
          scalar_t* o = out + r * cols;
          const scalar_t high = *std::max_element(a, a + cols);  // exp of at most 0: no overflow
          scalar_t sum = 0;
          for (int64_t c = 0; c < cols; ++c) sum += (o[c] = std::exp(a[c] - high));
          const scalar_t inverse = 1 / sum;
          for (int64_t c = 0; c < cols; ++c) o[c] *= inverse;
        }
      });
    });
    ctx->save_for_backward({y});
    return {y};
  }

  /// d logits = y * (g - sum over the row of g * y).
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto y = ctx->get_saved_variables()[0];
    const auto g = grads[0].to(y.scalar_type()).contiguous();
    auto grad_logits = torch::empty_like(y);
    const int64_t cols = y.size(1);
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "mtl::RowSoftmax::backward", [&] {
      const scalar_t* yp = y.data_ptr<scalar_t>();
      const scalar_t* gp = g.data_ptr<scalar_t>();
      scalar_t* out = grad_logits.data_ptr<scalar_t>();
      at::parallel_for(0, y.size(0), row_grain(cols, kValuesPerThread), [&](int64_t first, int64_t end) {
        for (int64_t r = first; r < end; ++r) {
          const scalar_t *yr = yp + r * cols, *gr = gp + r * cols;
          scalar_t dot = 0;
          for (int64_t c = 0; c < cols; ++c) dot += yr[c] * gr[c];
          for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = yr[c] * (gr[c] - dot);
        }
      });
    });
    return {grad_logits};
  }

  /// Whether RowSoftmax takes these logits.
  static bool applies_to(const torch::Tensor& logits) {
    return cpu_float_or_double(logits) && logits.dim() == 2 && logits.size(1) > 0;
  }

 private:
  // A batch of a few thousand rows is not worth a second thread.
  static constexpr int64_t kValuesPerThread = int64_t{1} << 15;
};

}  // namespace detail

/// Options of `Gate`.
///
/// Example:
///   Gate gate(GateOptions(/*input_dim=*/144, /*num_experts=*/4));
struct GateOptions {
  GateOptions(int64_t input_dim, int64_t num_experts)
      : input_dim_(input_dim), num_experts_(num_experts) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, num_experts);
};

class GateImpl : public torch::nn::Cloneable<GateImpl> {
 public:
  GateImpl(int64_t input_dim, int64_t num_experts)
      : GateImpl(GateOptions(input_dim, num_experts)) {}
  explicit GateImpl(GateOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.num_experts() > 0, "Gate expects at least one expert, but got ",
                options.num_experts());
    TORCH_CHECK(options.input_dim() > 0, "Gate expects a positive input dim, but got ",
                options.input_dim());
    scorer = register_module("scorer", torch::nn::Linear(options.input_dim(), options.num_experts()));
  }

  /// [batch, input_dim] -> weights [batch, num_experts], each row summing to 1.
  torch::Tensor forward(const torch::Tensor& x) {
    // Softmax in fp32 at least: under bf16 autocast a low-precision softmax rounds the weights.
    const auto logits = detail::linear_forward(scorer, x);
    auto weights = (detail::RowSoftmax::applies_to(logits) ? detail::RowSoftmax::apply(logits)[0]
                                                            : torch::softmax(logits, /*dim=*/1, torch::kFloat))
                       .to(x.scalar_type());
    last_weights_ = weights.detach();
    return weights;
  }

  /// The weights of the last forward (detached), or an undefined tensor.
  const torch::Tensor& last_weights() const noexcept { return last_weights_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::Gate(input_dim=" << options.input_dim()
           << ", num_experts=" << options.num_experts() << ")";
  }

  GateOptions options;
  torch::nn::Linear scorer{nullptr};

 private:
  torch::Tensor last_weights_;
};
TORCH_MODULE(Gate);

/// Mixes expert outputs [batch, num_experts, dim] by gate weights
/// [batch, num_experts] into [batch, dim].
inline torch::Tensor mix_experts(const torch::Tensor& expert_outputs, const torch::Tensor& weights) {
  return (expert_outputs * weights.unsqueeze(2)).sum(1);
}

}  // namespace mtl
