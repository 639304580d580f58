// FM's second-order interaction, 0.5 * ((sum_f v_f)^2 - sum_f v_f^2): the sum
// over field pairs f < g of v_f * v_g, in O(F * D); and the same pass writing
// DeepFM's deep input. On the CPU one autograd node (detail/fm_second_order.hpp).
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/fm_second_order.hpp>

#include <torch/types.h>

namespace mtl {

/// FM's second-order vector of `embeddings` [batch, fields, dim]: [batch, dim].
inline torch::Tensor fm_second_order(const torch::Tensor& embeddings) {
  TORCH_CHECK(embeddings.dim() == 3, "fm_second_order expects embeddings [batch, fields, dim], but got shape ",
              embeddings.sizes());
  if (detail::FmSecondOrder::applies_to(embeddings, {}))
    return detail::apply_function<detail::FmSecondOrder>(embeddings, torch::empty({0, 0}, embeddings.options()),
                                                         /*join=*/false)[0];
  auto sum = embeddings.sum(1);  // other devices and dtypes: as tensor ops
  return 0.5 * (sum * sum - (embeddings * embeddings).sum(1));
}

/// FM's second-order vector and DeepFM's deep input.
struct FmAndDeepInput {
  torch::Tensor second_order;  ///< [batch, dim]
  torch::Tensor deep_input;    ///< [batch, fields * dim + dense columns]: each row's embeddings, then its dense values
};

/// Both readers of `embeddings` [batch, fields, dim] in DeepFM: FM's
/// second-order vector and the deep part's input, the embeddings flattened
/// and joined with `dense` [batch, columns] (undefined: none). On the CPU in
/// float or double one pass each way.
inline FmAndDeepInput fm_second_order_and_deep_input(const torch::Tensor& embeddings, const torch::Tensor& dense) {
  TORCH_CHECK(embeddings.dim() == 3,
              "fm_second_order_and_deep_input expects embeddings [batch, fields, dim], but got shape ",
              embeddings.sizes());
  const int64_t batch = embeddings.size(0);
  const auto columns = dense.defined() ? dense.to(embeddings.scalar_type()) : torch::Tensor();
  TORCH_CHECK(!columns.defined() || (columns.dim() == 2 && columns.size(0) == batch),
              "fm_second_order_and_deep_input expects dense values [", batch, ", columns], but got shape ",
              columns.sizes());
  if (detail::FmSecondOrder::applies_to(embeddings, columns)) {
    const auto out = detail::apply_function<detail::FmSecondOrder>(
        embeddings, columns.defined() ? columns : torch::empty({batch, 0}, embeddings.options()), /*join=*/true);
    return {out[0], out[1]};
  }
  auto flat = embeddings.reshape({batch, -1});
  return {fm_second_order(embeddings), columns.defined() ? torch::cat({flat, columns}, 1) : flat};
}

}  // namespace mtl
