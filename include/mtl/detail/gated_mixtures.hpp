// Every gate of a mixer mixing its chosen experts, as one autograd function:
// forward reads each expert row once per gate that uses it, and backward
// writes the experts' gradient once, in one pass over the batch (as tensor
// ops, each gate costs a cat of its experts' slices, a broadcast multiply and
// a sum, and backward zero-fills a full-size gradient per slice). Other
// devices and dtypes take the tensor-op path inside the same function.
#pragma once

#include <mtl/detail/cpu_loops.hpp>
#include <mtl/detail/lane_sum.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace mtl::detail {

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
    if (!applies_to(experts, weights)) {
      for (int64_t g = 0; g < gates; ++g) {
        auto chosen = experts.index_select(1, index_tensor(flat, begin, g, experts.device()));
        mixed.push_back((chosen * weights[g].unsqueeze(2)).sum(1));
      }
      return mixed;
    }
    for (int64_t g = 0; g < gates; ++g) mixed.push_back(torch::empty({batch, dim}, experts.options()));
    AT_DISPATCH_FLOATING_TYPES(experts.scalar_type(), "mtl::GatedMixtures", [&] {
      const scalar_t* e = experts.data_ptr<scalar_t>();
      at::parallel_for(0, batch, row_grain(gates * dim, kValuesPerThread), [&](int64_t b0, int64_t b1) {
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
    if (!applies_to(experts, weights)) {
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
      at::parallel_for(0, batch, row_grain(gates * dim, kValuesPerThread), [&](int64_t b0, int64_t b1) {
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
              const scalar_t* expert_row = e + offset;
              gw[b * k_end + k] = lane_sum(dim, [&](int64_t d) { return grad_out[d] * expert_row[d]; });
            }
          }
        }
      });
    });
    result[0] = grad_experts;
    return result;
  }

 private:
  // A batch of a few thousand rows is not worth a second thread.
  static constexpr int64_t kValuesPerThread = int64_t{1} << 15;

  static torch::Tensor index_tensor(const std::vector<int64_t>& flat, const std::vector<int64_t>& begin, int64_t g,
                                    const torch::Device& device) {
    std::vector<int64_t> chosen(flat.begin() + begin[g], flat.begin() + begin[g + 1]);
    return torch::tensor(chosen, torch::kLong).to(device);
  }
  // Whether the CPU loops take the experts and every gate's weights.
  static bool applies_to(const torch::Tensor& experts, torch::TensorList weights) {
    if (!cpu_loops_take({experts}) || !experts.is_contiguous()) return false;
    return std::all_of(weights.begin(), weights.end(), [&](const torch::Tensor& w) {
      return cpu_loops_take({experts, w}) && w.is_contiguous();
    });
  }
};

}  // namespace mtl::detail
