// AITM's adaptive information transfer (Xi et al., KDD 2021) between the
// towers of tasks in sequence (click, then conversion): the previous task's
// tower state z_{t-1} passes through a transfer layer p = relu(W_p z_{t-1} + b),
// and the current tower state q_t attends over {p, q_t}:
//   z_t = sum_u w_u h3(u),  w_u = softmax_u(<h1(u), h2(u)> / sqrt(dim)),
// h1, h2, h3 linear maps. The first task's state passes unchanged. The
// behavioural expectation calibrator is `behavioral_expectation_calibrator`
// in functional/losses.hpp.
#pragma once

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

namespace mtl {

/// Options of `AdaptiveTransfer`.
///
/// Example:
///   AdaptiveTransfer transfer(AdaptiveTransferOptions(/*dim=*/32, /*num_tasks=*/2));
struct AdaptiveTransferOptions {
  AdaptiveTransferOptions(int64_t dim, int64_t num_tasks) : dim_(dim), num_tasks_(num_tasks) {}

  /// The width of every task's tower state.
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_tasks);
};

/// One transfer from task t-1 to task t: the transfer layer and the attention's three maps.
struct TransferStep {
  torch::nn::Linear transfer{nullptr}, h1{nullptr}, h2{nullptr}, h3{nullptr};
};

class AdaptiveTransferImpl : public torch::nn::Cloneable<AdaptiveTransferImpl> {
 public:
  explicit AdaptiveTransferImpl(AdaptiveTransferOptions options) : options(options) { reset(); }

  void reset() override {
    TORCH_CHECK(options.dim() > 0, "AdaptiveTransfer expects a positive dim, but got ", options.dim());
    TORCH_CHECK(options.num_tasks() >= 2, "AdaptiveTransfer passes information between tasks and needs at least two, ",
                "but got ", options.num_tasks());
    steps.clear();
    const int64_t d = options.dim();
    for (int64_t t = 1; t < options.num_tasks(); ++t) {
      const auto suffix = std::to_string(t);  // step t's layers: transfer1, h1_1, h2_1, h3_1 for t = 1
      const auto map = [&](const char* name) {
        return register_module(name + ("_" + suffix), torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)));
      };
      steps.push_back({register_module("transfer" + suffix, torch::nn::Linear(d, d)), map("h1"), map("h2"), map("h3")});
    }
  }

  /// The tower states q_t [batch, dim], in task order -> z_t [batch, dim].
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& states) {
    TORCH_CHECK(static_cast<int64_t>(states.size()) == options.num_tasks(), "AdaptiveTransfer expects ",
                options.num_tasks(), " task states, but got ", states.size());
    std::vector<torch::Tensor> out{states.front()};
    for (size_t t = 1; t < states.size(); ++t) {
      TORCH_CHECK(states[t].dim() == 2 && states[t].size(1) == options.dim(), "AdaptiveTransfer expects task ", t,
                  "'s state of shape [batch, ", options.dim(), "], but got ", states[t].sizes());
      out.push_back(transfer(steps[t - 1], out.back(), states[t]));
    }
    return out;
  }

  /// The attention weights of step t (1-based) on {p, q}: [batch, 2]; what `forward` mixes with.
  torch::Tensor attention(size_t t, const torch::Tensor& previous, const torch::Tensor& current) {
    return attention(steps.at(t - 1), stacked(steps.at(t - 1), previous, current));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::AdaptiveTransfer(dim=" << options.dim() << ", num_tasks=" << options.num_tasks() << ")";
  }

  AdaptiveTransferOptions options;
  std::vector<TransferStep> steps;

 private:
  /// {p, q} side by side: [batch, 2, dim].
  static torch::Tensor stacked(TransferStep& s, const torch::Tensor& previous, const torch::Tensor& current) {
    return torch::stack({torch::relu(s.transfer->forward(previous)), current}, 1);
  }

  torch::Tensor attention(TransferStep& s, const torch::Tensor& u) const {
    const auto scores = (s.h1->forward(u) * s.h2->forward(u)).sum(-1) / std::sqrt(static_cast<double>(options.dim()));
    return torch::softmax(scores, 1);
  }

  torch::Tensor transfer(TransferStep& s, const torch::Tensor& previous, const torch::Tensor& current) {
    const auto u = stacked(s, previous, current);
    return (attention(s, u).unsqueeze(-1) * s.h3->forward(u)).sum(1);
  }
};
TORCH_MODULE(AdaptiveTransfer);

}  // namespace mtl
