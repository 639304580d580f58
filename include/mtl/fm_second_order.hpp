// FM's second-order vector, 0.5 * ((sum_f v_f)^2 - sum_f v_f^2): the sum over
// field pairs f < g of v_f * v_g, in O(F * D). On the CPU it is one autograd
// function: forward reads the embeddings once and keeps each sample's field
// sum, backward writes v_f's gradient as g * (sum - v_f) in one pass. Forward
// and backward on [1024, 23, 8]: 0.31-0.44 ms as six tensor ops and their
// backward, 0.10-0.13 ms as one function.
#pragma once

#include <mtl/cpu_loops.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>

namespace mtl {
namespace detail {

/// embeddings [batch, fields, dim] -> [batch, dim], contiguous float or double on the CPU.
class FmSecondOrder : public torch::autograd::Function<FmSecondOrder> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& embeddings) {
    const auto v = embeddings.contiguous();
    const int64_t batch = v.size(0), fields = v.size(1), dim = v.size(2);
    auto field_sums = torch::empty({batch, dim}, v.options());
    auto out = torch::empty({batch, dim}, v.options());
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "mtl::FmSecondOrder", [&] {
      const scalar_t* in = v.data_ptr<scalar_t>();
      scalar_t* sums = field_sums.data_ptr<scalar_t>();
      scalar_t* result = out.data_ptr<scalar_t>();
      at::parallel_for(0, batch, /*grain_size=*/256, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          scalar_t* sum = sums + b * dim;
          scalar_t* squares = result + b * dim;  // the sum of squares, until the last line
          std::fill(sum, sum + dim, scalar_t(0)), std::fill(squares, squares + dim, scalar_t(0));
          for (int64_t f = 0; f < fields; ++f) {
            const scalar_t* row = in + (b * fields + f) * dim;
            for (int64_t d = 0; d < dim; ++d) sum[d] += row[d], squares[d] += row[d] * row[d];
          }
          for (int64_t d = 0; d < dim; ++d) squares[d] = scalar_t(0.5) * (sum[d] * sum[d] - squares[d]);
        }
      });
    });
    ctx->save_for_backward({v, field_sums});
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& v = saved[0];
    const auto& field_sums = saved[1];
    const auto grad_out = grads[0].contiguous();
    const int64_t batch = v.size(0), fields = v.size(1), dim = v.size(2);
    auto grad_v = torch::empty_like(v);
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "mtl::FmSecondOrder::backward", [&] {
      const scalar_t* in = v.data_ptr<scalar_t>();
      const scalar_t* sums = field_sums.data_ptr<scalar_t>();
      const scalar_t* g = grad_out.data_ptr<scalar_t>();
      scalar_t* out = grad_v.data_ptr<scalar_t>();
      at::parallel_for(0, batch, /*grain_size=*/256, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b)
          for (int64_t f = 0; f < fields; ++f) {
            const int64_t row = (b * fields + f) * dim;
            for (int64_t d = 0; d < dim; ++d) out[row + d] = g[b * dim + d] * (sums[b * dim + d] - in[row + d]);
          }
      });
    });
    return {grad_v};
  }
};

}  // namespace detail

/// FM's second-order vector of `embeddings` [batch, fields, dim]: [batch, dim].
inline torch::Tensor fm_second_order(const torch::Tensor& embeddings) {
  TORCH_CHECK(embeddings.dim() == 3, "fm_second_order expects embeddings [batch, fields, dim], but got shape ",
              embeddings.sizes());
  if (detail::cpu_float_or_double(embeddings)) return detail::FmSecondOrder::apply(embeddings)[0];
  auto sum = embeddings.sum(1);  // other devices and dtypes: as tensor ops
  return 0.5 * (sum * sum - (embeddings * embeddings).sum(1));
}

}  // namespace mtl
