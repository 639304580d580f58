// Softmax over each row of a gate's scores as one autograd function on the CPU in
// float or double: a plain loop over the rows, for the few columns of a gate.
#pragma once

#include <mtl/detail/cpu_loops.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>

namespace mtl::detail {

/// Softmax over each row of [rows, cols] on the CPU in float or double.
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
    return cpu_loops_take({logits}) && logits.dim() == 2 && logits.size(1) > 0;
  }

 private:
  // A batch of a few thousand rows is not worth a second thread.
  static constexpr int64_t kValuesPerThread = int64_t{1} << 15;
};

}  // namespace mtl::detail
