// FM's second-order vector as one autograd function on the CPU in float or
// double: forward reads the embeddings once and keeps each sample's field sum,
// backward writes v_f's gradient as g * (sum - v_f) in one pass. DeepFM has
// the same pass write its deep part's input too.
#pragma once

#include <mtl/detail/cpu_loops.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>

namespace mtl::detail {

/// embeddings [batch, fields, dim] -> [batch, dim], contiguous float or double
/// on the CPU. With `join`, a second output: DeepFM's deep input [batch,
/// fields * dim + dense columns], each row's embeddings and then `dense`
/// [batch, columns] (columns may be 0), written in the same pass; its gradient and
/// FM's reach the embeddings in one pass backward, in place of a cat, a
/// reshape and the sum of the two gradients.
class FmSecondOrder : public torch::autograd::Function<FmSecondOrder> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& embeddings,
                                                const torch::Tensor& dense, bool join) {
    const auto v = embeddings.contiguous();
    const int64_t batch = v.size(0), fields = v.size(1), dim = v.size(2);
    const auto d = dense.contiguous();
    const int64_t dense_columns = join ? d.size(1) : 0, width = fields * dim + dense_columns;
    auto field_sums = torch::empty({batch, dim}, v.options());
    auto out = torch::empty({batch, dim}, v.options());
    auto joined = join ? torch::empty({batch, width}, v.options()) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "mtl::FmSecondOrder", [&] {
      const scalar_t* in = v.data_ptr<scalar_t>();
      const scalar_t* dense_rows = dense_columns > 0 ? d.data_ptr<scalar_t>() : nullptr;
      scalar_t* sums = field_sums.data_ptr<scalar_t>();
      scalar_t* result = out.data_ptr<scalar_t>();
      scalar_t* deep = join ? joined.data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, batch, row_grain(fields * dim, kValuesPerThread), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          scalar_t* sum = sums + b * dim;
          scalar_t* squares = result + b * dim;  // the sum of squares, until the last line
          std::fill(sum, sum + dim, scalar_t(0)), std::fill(squares, squares + dim, scalar_t(0));
          const scalar_t* rows = in + b * fields * dim;
          for (int64_t f = 0; f < fields; ++f) {
            const scalar_t* row = rows + f * dim;
            for (int64_t k = 0; k < dim; ++k) sum[k] += row[k], squares[k] += row[k] * row[k];
          }
          for (int64_t k = 0; k < dim; ++k) squares[k] = scalar_t(0.5) * (sum[k] * sum[k] - squares[k]);
          if (!join) continue;
          std::copy(rows, rows + fields * dim, deep + b * width);
          if (dense_rows)
            std::copy(dense_rows + b * dense_columns, dense_rows + (b + 1) * dense_columns,
                      deep + b * width + fields * dim);
        }
      });
    });
    ctx->save_for_backward({v, field_sums});
    ctx->saved_data["join"] = join;
    ctx->saved_data["dense_columns"] = dense_columns;
    if (!join) return {out};
    return {out, joined};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& v = saved[0];
    const auto& field_sums = saved[1];
    const bool join = ctx->saved_data["join"].toBool();
    const int64_t dense_columns = ctx->saved_data["dense_columns"].toInt();
    const auto grad_out = grads[0].defined() ? grads[0].contiguous() : torch::Tensor();
    const auto grad_joined = join && grads[1].defined() ? grads[1].contiguous() : torch::Tensor();
    const int64_t batch = v.size(0), fields = v.size(1), dim = v.size(2), width = fields * dim + dense_columns;
    auto grad_v = torch::empty_like(v);
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "mtl::FmSecondOrder::backward", [&] {
      const scalar_t* in = v.data_ptr<scalar_t>();
      const scalar_t* sums = field_sums.data_ptr<scalar_t>();
      const scalar_t* g = grad_out.defined() ? grad_out.data_ptr<scalar_t>() : nullptr;
      const scalar_t* deep = grad_joined.defined() ? grad_joined.data_ptr<scalar_t>() : nullptr;
      scalar_t* out = grad_v.data_ptr<scalar_t>();
      at::parallel_for(0, batch, row_grain(fields * dim, kValuesPerThread), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b)
          for (int64_t f = 0; f < fields; ++f) {
            const int64_t row = (b * fields + f) * dim;
            for (int64_t k = 0; k < dim; ++k) {
              const scalar_t through_fm = g ? g[b * dim + k] * (sums[b * dim + k] - in[row + k]) : scalar_t(0);
              out[row + k] = deep ? deep[b * width + f * dim + k] + through_fm : through_fm;
            }
          }
      });
    });
    // The dense columns' gradient: theirs in the deep input's gradient.
    auto grad_dense = grad_joined.defined() && dense_columns > 0 ? grad_joined.narrow(1, fields * dim, dense_columns)
                                                                 : torch::Tensor();
    return {grad_v, grad_dense, torch::Tensor()};
  }

  /// Whether FmSecondOrder takes `embeddings` and `dense` (undefined: no dense values).
  static bool applies_to(const torch::Tensor& embeddings, const torch::Tensor& dense) {
    return dense.defined() ? cpu_loops_take({embeddings, dense}) : cpu_loops_take({embeddings});
  }

 private:
  static constexpr int64_t kValuesPerThread = int64_t{1} << 16;
};

}  // namespace mtl::detail
