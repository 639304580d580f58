// AITM's adaptive information transfer (Xi et al., KDD 2021) between the
// towers of tasks in sequence (click, then conversion): the previous task's
// tower state z_{t-1} passes through a transfer layer p = relu(W_p z_{t-1} + b),
// and the current tower state q_t attends over {p, q_t}:
//   z_t = sum_u w_u h3(u),  w_u = softmax_u(<h1(u), h2(u)> / sqrt(dim)),
// h1, h2, h3 linear maps. The first task's state passes unchanged. The
// behavioural expectation calibrator is `behavioral_expectation_calibrator`
// in functional/losses.hpp.
#pragma once

#include <mtl/detail/apply_function.hpp>
#include <mtl/detail/autocast_state.hpp>
#include <mtl/detail/dense_layers.hpp>

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
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

/// One transfer from task t-1 to task t: the transfer layer, and the attention's three maps h1, h2, h3 as one
/// layer whose weight rows are h1's, then h2's, then h3's ([3 * dim, dim]), so that one product maps both
/// candidates through all three.
struct TransferStep {
  torch::nn::Linear transfer{nullptr}, attention{nullptr};
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
      const auto suffix = std::to_string(t);  // step t's layers: transfer1 and attention1 for t = 1
      steps.push_back(
          {register_module("transfer" + suffix, torch::nn::Linear(d, d)),
           register_module("attention" + suffix, torch::nn::Linear(d, 3 * d))});
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
    auto& s = steps.at(t - 1);
    const auto w_p = weight_of_transferred(mapped(s, transferred(s, previous)), mapped(s, current));
    return torch::stack({w_p, 1 - w_p}, 1);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::AdaptiveTransfer(dim=" << options.dim() << ", num_tasks=" << options.num_tasks() << ")";
  }

  AdaptiveTransferOptions options;
  std::vector<TransferStep> steps;

 private:
  /// p = relu(W_p z + b_p), on the layers' fused CPU path outside autocast.
  static torch::Tensor transferred(TransferStep& s, const torch::Tensor& previous) {
    if (detail::autocast_enabled()) return torch::relu(s.transfer->forward(previous));
    return detail::apply_function<detail::DenseLayers>(previous, torch::TensorList(s.transfer->weight),
                                                       torch::TensorList(s.transfer->bias), /*activate_last=*/true)[0];
  }

  /// h1(u), h2(u), h3(u) of one candidate u: three [batch, dim] views of one product.
  static std::vector<torch::Tensor> mapped(TransferStep& s, const torch::Tensor& u) {
    return detail::linear_forward(s.attention, u).chunk(3, 1);
  }

  /// p's weight in the softmax over the two candidates of <h1(u), h2(u)> / sqrt(dim): a softmax over two
  /// scores is the sigmoid of their difference. [batch].
  torch::Tensor weight_of_transferred(const std::vector<torch::Tensor>& p, const std::vector<torch::Tensor>& q) const {
    const auto score = [](const std::vector<torch::Tensor>& h) { return (h[0] * h[1]).sum(1); };
    return torch::sigmoid((score(p) - score(q)) / std::sqrt(static_cast<double>(options.dim())));
  }

  /// z = w_p h3(p) + (1 - w_p) h3(q) = h3(q) + w_p (h3(p) - h3(q)).
  torch::Tensor transfer(TransferStep& s, const torch::Tensor& previous, const torch::Tensor& current) {
    const auto p = mapped(s, transferred(s, previous)), q = mapped(s, current);
    return torch::addcmul(q[2], weight_of_transferred(p, q).unsqueeze(1), p[2] - q[2]);
  }
};
TORCH_MODULE(AdaptiveTransfer);

}  // namespace mtl
