// The lookup behind SparseEmbedding as one autograd function: forward copies
// each id's table row into two outputs (the embedding columns and the
// first-order column) in one pass, prefetching rows ahead; backward packs
// both incoming gradients into one [n, dim + 1] block of row gradients and
// hands it to the table as a sparse COO tensor made directly from the ids,
// with no zero-filled intermediates (in place of embedding() + narrow/select
// and their backward).
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/cpu_loops.hpp>
#include <mtl/detail/fixed_width.hpp>

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>

namespace mtl::detail {

struct RowGatherOutputs {
  torch::Tensor embeddings;   ///< [n, dim]
  torch::Tensor first_order;  ///< [n]
};

/// Rows `rows` (int64 [n], already offset into the table) of `weight` [V, dim + 1].
class RowGather : public torch::autograd::Function<RowGather> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& weight,
                                                const torch::Tensor& rows, bool sparse_grad) {
    ctx->save_for_backward({rows});
    ctx->saved_data["sparse_grad"] = sparse_grad;
    const int64_t dim = weight.size(1) - 1;
    ctx->saved_data["table_rows"] = weight.size(0);
    ctx->saved_data["dim"] = dim;
    if (!applies_to(weight)) {
      auto gathered = weight.index_select(0, rows);
      return {gathered.narrow(1, 0, dim).contiguous(), gathered.select(1, dim).contiguous()};
    }
    const auto ids = rows.contiguous();
    auto embeddings = torch::empty({ids.size(0), dim}, weight.options());
    auto first_order = torch::empty({ids.size(0)}, weight.options());
    AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "mtl::RowGather", [&] {
      const scalar_t* table = weight.data_ptr<scalar_t>();
      const int64_t* id = ids.data_ptr<int64_t>();
      scalar_t* out = embeddings.data_ptr<scalar_t>();
      scalar_t* linear = first_order.data_ptr<scalar_t>();
      // `columns` is dim, or for short rows dim as a compile-time constant: then
      // the row copy is a vector move or two instead of a memmove call.
      const auto copy_rows = [&](auto columns) {
        const int64_t width = columns + 1;
        at::parallel_for(0, ids.size(0), row_grain(width, kValuesPerThread), [&](int64_t begin, int64_t end) {
          constexpr int64_t kAhead = 16;  // random rows: ask for them before they are needed
          for (int64_t i = begin; i < end; ++i) {
            if (i + kAhead < end) {  // both ends: a row of dim + 1 values often spans two cache lines
              const scalar_t* ahead = table + id[i + kAhead] * width;
              __builtin_prefetch(ahead), __builtin_prefetch(ahead + columns);
            }
            const scalar_t* row = table + id[i] * width;
            std::copy(row, row + columns, out + i * columns);
            linear[i] = row[columns];
          }
        });
      };
      with_fixed_width<4, 8>(dim, copy_rows);
    });
    return {embeddings, first_order};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto rows = ctx->get_saved_variables()[0];
    const auto& grad_embeddings = grads[0];
    const auto& grad_first_order = grads[1];
    if (!grad_embeddings.defined() && !grad_first_order.defined())
      return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    const int64_t n = rows.size(0), dim = ctx->saved_data["dim"].toInt();
    const int64_t table_rows = ctx->saved_data["table_rows"].toInt();
    // Row gradients [n, dim + 1]: the embedding columns, then the first-order column.
    auto values =
        torch::empty({n, dim + 1}, (grad_embeddings.defined() ? grad_embeddings : grad_first_order).options());
    if (grad_embeddings.defined() && grad_first_order.defined() &&
        cpu_loops_take({values, grad_embeddings, grad_first_order}) && grad_embeddings.is_contiguous() &&
        grad_first_order.is_contiguous()) {
      pack_row_gradients(grad_embeddings, grad_first_order, values);  // one pass, in place of two strided copies
    } else {
      auto columns = values.narrow(1, 0, dim);
      auto linear = values.select(1, dim);
      grad_embeddings.defined() ? columns.copy_(grad_embeddings.reshape({n, dim})) : columns.zero_();
      grad_first_order.defined() ? linear.copy_(grad_first_order.reshape({n})) : linear.zero_();
    }
    if (ctx->saved_data["sparse_grad"].toBool())
      return {at::_sparse_coo_tensor_unsafe(rows.unsqueeze(0), values, {table_rows, dim + 1}), torch::Tensor(),
              torch::Tensor()};
    return {torch::zeros({table_rows, dim + 1}, values.options()).index_add_(0, rows, values), torch::Tensor(),
            torch::Tensor()};
  }

 private:
  /// values [n, dim + 1] = each row's embedding gradient, then its first-order gradient.
  static void pack_row_gradients(const torch::Tensor& grad_embeddings, const torch::Tensor& grad_first_order,
                                 torch::Tensor& values) {
    const int64_t n = values.size(0), dim = values.size(1) - 1;
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "mtl::RowGather::backward", [&] {
      const scalar_t* columns = grad_embeddings.data_ptr<scalar_t>();
      const scalar_t* linear = grad_first_order.data_ptr<scalar_t>();
      scalar_t* out = values.data_ptr<scalar_t>();
      at::parallel_for(0, n, row_grain(dim + 1, kValuesPerThread), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          std::copy(columns + i * dim, columns + (i + 1) * dim, out + i * (dim + 1));
          out[i * (dim + 1) + dim] = linear[i];
        }
      });
    });
  }

  // Whether the CPU loops take the table.
  static bool applies_to(const torch::Tensor& weight) { return cpu_loops_take({weight}) && weight.is_contiguous(); }

  // Rows read at random: a second thread pays from a few thousand rows.
  static constexpr int64_t kValuesPerThread = int64_t{1} << 14;
};

/// Rows of `weight` for `rows`, split into embedding columns and the first-order column.
inline RowGatherOutputs gather_rows(const torch::Tensor& weight, const torch::Tensor& rows, bool sparse_grad) {
  auto out = apply_function<RowGather>(weight, rows, sparse_grad);
  return {out[0], out[1]};
}

}  // namespace mtl::detail
