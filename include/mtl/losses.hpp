// Single-task losses from logits: binary cross-entropy over all rows, and the
// CVR loss taken on clicked rows only (the classic, selection-biased CVR setup).
#pragma once

#include <torch/nn/functional/loss.h>
#include <torch/types.h>

namespace mtl {

namespace detail {
inline void check_logits_and_labels(const torch::Tensor& logits, const torch::Tensor& labels,
                                    const char* who, const char* label_name) {
  TORCH_CHECK(logits.dim() == 1, who, " expects logits of shape [batch], but got a ", logits.dim(),
              "-D tensor");
  TORCH_CHECK(logits.is_floating_point(), who, " expects floating logits, but got ",
              logits.scalar_type());
  TORCH_CHECK(labels.sizes() == logits.sizes(), who, " expects ", label_name,
              " labels of shape ", logits.sizes(), " (one per logit), but got ", labels.sizes());
}
}  // namespace detail

/// Mean binary cross-entropy of `logits` against 0/1 `labels`, all rows.
inline torch::Tensor binary_cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  detail::check_logits_and_labels(logits, labels, "binary_cross_entropy_loss", "target");
  return torch::binary_cross_entropy_with_logits(logits, labels.to(logits.scalar_type()));
}

/// Mean BCE of CVR logits against conversion, over the rows with click = 1.
/// A batch without a click gives 0 (with a zero gradient), not NaN.
inline torch::Tensor clicked_cvr_loss(const torch::Tensor& cvr_logits, const torch::Tensor& conversion,
                                      const torch::Tensor& click) {
  detail::check_logits_and_labels(cvr_logits, conversion, "clicked_cvr_loss", "conversion");
  detail::check_logits_and_labels(cvr_logits, click, "clicked_cvr_loss", "click");
  auto mask = click.to(cvr_logits.scalar_type());
  auto per_row = torch::binary_cross_entropy_with_logits(
      cvr_logits, conversion.to(cvr_logits.scalar_type()), /*weight=*/{}, /*pos_weight=*/{},
      at::Reduction::None);
  return (per_row * mask).sum() / mask.sum().clamp_min(1.0);
}

}  // namespace mtl
