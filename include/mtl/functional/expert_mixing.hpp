// Mixing expert outputs by gate weights, as functions: one gate over all
// experts (`mix_experts`), or every gate of a mixer over its chosen experts at
// once (`mix_chosen_experts`, one autograd node: detail/gated_mixtures.hpp).
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/gated_mixtures.hpp>

#include <torch/types.h>

#include <cstdint>
#include <numeric>
#include <vector>

namespace mtl {

/// Mixes expert outputs [batch, num_experts, dim] by gate weights
/// [batch, num_experts] into [batch, dim].
inline torch::Tensor mix_experts(const torch::Tensor& expert_outputs, const torch::Tensor& weights) {
  return (expert_outputs * weights.unsqueeze(2)).sum(1);
}

/// Expert indices 0 .. n - 1: a gate that mixes the first n experts.
inline std::vector<int64_t> first_experts(int64_t n) {
  std::vector<int64_t> chosen(static_cast<size_t>(n));
  std::iota(chosen.begin(), chosen.end(), 0);
  return chosen;
}

/// Mixes `experts` [batch, num_experts, dim] for several gates at once: gate g's
/// weights `weights[g]` [batch, K_g] apply to experts `chosen[g]` (K_g expert
/// indices, in the weights' column order). Returns one [batch, dim] per gate.
///
/// Example (PLE, two tasks, experts = 2 shared, then one private per task):
///   auto mixed = mix_chosen_experts(experts, {w_task0, w_task1}, {{0, 1, 2}, {0, 1, 3}});
inline std::vector<torch::Tensor> mix_chosen_experts(const torch::Tensor& experts,
                                                     const std::vector<torch::Tensor>& weights,
                                                     const std::vector<std::vector<int64_t>>& chosen) {
  TORCH_CHECK(experts.dim() == 3, "mix_chosen_experts expects experts [batch, num_experts, dim], but got shape ",
              experts.sizes());
  TORCH_CHECK(weights.size() == chosen.size(), "mix_chosen_experts expects one expert list per gate (", weights.size(),
              " gates), but got ", chosen.size(), " lists");
  std::vector<int64_t> flat, begin{0};
  for (size_t g = 0; g < chosen.size(); ++g) {
    const auto k = static_cast<int64_t>(chosen[g].size());
    TORCH_CHECK(weights[g].dim() == 2 && weights[g].size(0) == experts.size(0) && weights[g].size(1) == k,
                "mix_chosen_experts: gate ", g, " expects weights [", experts.size(0), ", ", k, "], but got shape ",
                weights[g].sizes());
    for (const int64_t e : chosen[g]) {
      TORCH_CHECK(e >= 0 && e < experts.size(1), "mix_chosen_experts: gate ", g, " chooses expert ", e,
                  ", but there are ", experts.size(1), " experts");
      flat.push_back(e);
    }
    begin.push_back(static_cast<int64_t>(flat.size()));
  }
  // Weights in the experts' dtype (a gate's softmax may run in fp32 under autocast).
  std::vector<torch::Tensor> cast;
  for (const auto& w : weights) cast.push_back(w.to(experts.scalar_type()).contiguous());
  // As a TensorList, so that autograd sees each weight tensor as an input.
  return detail::apply_function<detail::GatedMixtures>(experts.contiguous(), torch::TensorList(cast), flat, begin);
}

}  // namespace mtl
