// Every gate of a mixer mixing its chosen experts, as one autograd function.
// Written with tensor ops, each gate costs a cat of its experts' slices, a
// broadcast multiply and a sum, and backward zero-fills a full-size gradient
// per slice (PLE's gating forward + backward measured 1.4-1.7 ms at batch
// 1024 with six experts of width 64). Here forward reads each expert row once
// per gate that uses it, and backward writes the experts' gradient once, in
// one pass over the batch. Other devices and dtypes take the tensor-op path.
#pragma once

#include <mtl/cpu_loops.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace mtl {

namespace detail {

/// Gate g's weights [batch, K_g] mix experts `flat[begin[g] .. begin[g + 1])`
/// of `experts` [batch, num_experts, dim] into [batch, dim].
class GatedMixtures : public torch::autograd::Function<GatedMixtures> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& experts,
                                                torch::TensorList weights, std::vector<int64_t> flat,
                                                std::vector<int64_t> begin) {
    torch::autograd::variable_list saved{experts};
    saved.insert(saved.end(), weights.begin(), weights.end());
    ctx->save_for_backward(saved);
    ctx->set_materialize_grads(false);  // a mixture nobody used gets no zero-filled gradient
    ctx->saved_data["flat"] = flat;
    ctx->saved_data["begin"] = begin;
    const auto gates = static_cast<int64_t>(weights.size());
    const int64_t batch = experts.size(0), n = experts.size(1), dim = experts.size(2);
    torch::autograd::variable_list mixed;
    if (!fused_cpu(experts, weights)) {
      for (int64_t g = 0; g < gates; ++g) {
        auto chosen = experts.index_select(1, index_tensor(flat, begin, g, experts.device()));
        mixed.push_back((chosen * weights[g].unsqueeze(2)).sum(1));
      }
      return mixed;
    }
    for (int64_t g = 0; g < gates; ++g) mixed.push_back(torch::empty({batch, dim}, experts.options()));
    AT_DISPATCH_FLOATING_TYPES(experts.scalar_type(), "mtl::GatedMixtures", [&] {
      const scalar_t* e = experts.data_ptr<scalar_t>();
      at::parallel_for(0, batch, /*grain_size=*/64, [&](int64_t b0, int64_t b1) {
        for (int64_t g = 0; g < gates; ++g) {
          const scalar_t* w = weights[g].data_ptr<scalar_t>();
          scalar_t* out = mixed[g].data_ptr<scalar_t>();
          const int64_t k_end = begin[g + 1] - begin[g];
          for (int64_t b = b0; b < b1; ++b) {
            scalar_t* o = out + b * dim;
            std::fill(o, o + dim, scalar_t(0));
            for (int64_t k = 0; k < k_end; ++k) {
              const scalar_t wk = w[b * k_end + k];
              const scalar_t* row = e + (b * n + flat[begin[g] + k]) * dim;
              for (int64_t d = 0; d < dim; ++d) o[d] += wk * row[d];
            }
          }
        }
      });
    });
    return mixed;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& experts = saved[0];
    const std::vector<torch::Tensor> weights(saved.begin() + 1, saved.end());
    const auto flat = ctx->saved_data["flat"].toIntVector();
    const auto begin = ctx->saved_data["begin"].toIntVector();
    const auto gates = static_cast<int64_t>(weights.size());
    const int64_t batch = experts.size(0), n = experts.size(1), dim = experts.size(2);
    // Returned per forward input: experts, then one gradient for the whole weight list, then the two index lists.
    torch::autograd::variable_list result(1 + gates + 2);
    if (!fused_cpu(experts, weights)) {
      auto grad_experts = torch::zeros_like(experts);
      for (int64_t g = 0; g < gates; ++g) {
        if (!grads[g].defined()) continue;
        const auto index = index_tensor(flat, begin, g, experts.device());
        const auto chosen = experts.index_select(1, index);
        result[1 + g] = (chosen * grads[g].unsqueeze(1)).sum(2);
        grad_experts.index_add_(1, index, weights[g].unsqueeze(2) * grads[g].unsqueeze(1));
      }
      result[0] = grad_experts;
      return result;
    }
    auto grad_experts = torch::zeros_like(experts);
    for (int64_t g = 0; g < gates; ++g) {
      if (!grads[g].defined()) continue;
      grads[g] = grads[g].to(experts.scalar_type()).contiguous();
      result[1 + g] = torch::empty_like(weights[g]);
    }
    AT_DISPATCH_FLOATING_TYPES(experts.scalar_type(), "mtl::GatedMixtures::backward", [&] {
      const scalar_t* e = experts.data_ptr<scalar_t>();
      scalar_t* ge = grad_experts.data_ptr<scalar_t>();
      at::parallel_for(0, batch, /*grain_size=*/64, [&](int64_t b0, int64_t b1) {
        for (int64_t g = 0; g < gates; ++g) {
          if (!grads[g].defined()) continue;
          const scalar_t* w = weights[g].data_ptr<scalar_t>();
          const scalar_t* go = grads[g].data_ptr<scalar_t>();
          scalar_t* gw = result[1 + g].data_ptr<scalar_t>();
          const int64_t k_end = begin[g + 1] - begin[g];
          for (int64_t b = b0; b < b1; ++b) {
            const scalar_t* grad_out = go + b * dim;
            for (int64_t k = 0; k < k_end; ++k) {
              const int64_t offset = (b * n + flat[begin[g] + k]) * dim;
              const scalar_t wk = w[b * k_end + k];
              for (int64_t d = 0; d < dim; ++d) ge[offset + d] += wk * grad_out[d];
              gw[b * k_end + k] = dot_product(grad_out, e + offset, dim);
            }
          }
        }
      });
    });
    result[0] = grad_experts;
    return result;
  }

 private:
  /// Eight running sums, so that the compiler can vectorise the reduction
  /// without reordering one sum (which it may not do for floating point).
  template <class scalar_t>
  static scalar_t dot_product(const scalar_t* a, const scalar_t* b, int64_t n) {
    scalar_t partial[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; ++j) partial[j] += a[i + j] * b[i + j];
    scalar_t sum = 0;
    for (; i < n; ++i) sum += a[i] * b[i];
    for (int j = 0; j < 8; ++j) sum += partial[j];
    return sum;
  }
  static torch::Tensor index_tensor(const std::vector<int64_t>& flat, const std::vector<int64_t>& begin, int64_t g,
                                    const torch::Device& device) {
    std::vector<int64_t> chosen(flat.begin() + begin[g], flat.begin() + begin[g + 1]);
    return torch::tensor(chosen, torch::kLong).to(device);
  }
  static bool fused_cpu(const torch::Tensor& experts, torch::TensorList weights) {
    const auto type = experts.scalar_type();
    if (!cpu_float_or_double(experts) || !experts.is_contiguous()) return false;
    return std::all_of(weights.begin(), weights.end(), [&](const torch::Tensor& w) {
      return w.device().is_cpu() && w.is_contiguous() && w.scalar_type() == type;
    });
  }
};

}  // namespace detail

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
  TORCH_CHECK(weights.size() == chosen.size(), "mix_chosen_experts expects one expert list per gate (",
              weights.size(), " gates), but got ", chosen.size(), " lists");
  std::vector<int64_t> flat, begin{0};
  for (size_t g = 0; g < chosen.size(); ++g) {
    const auto k = static_cast<int64_t>(chosen[g].size());
    TORCH_CHECK(weights[g].dim() == 2 && weights[g].size(0) == experts.size(0) && weights[g].size(1) == k,
                "mix_chosen_experts: gate ", g, " expects weights [", experts.size(0), ", ", k,
                "], but got shape ", weights[g].sizes());
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
  return detail::GatedMixtures::apply(experts.contiguous(), torch::TensorList(cast), flat, begin);
}

}  // namespace mtl
