// Independent branches of a model (a mixer's experts, the task towers) with
// outputs of one shape, run at once on the CPU, each branch on one intra-op
// thread, in place of one after another with every op split across the
// threads: at batch sizes of about a thousand most of a branch's ops gain
// nothing from a second thread, so side by side every core works.
//
// Forward builds each branch's own graph from a detached copy of its input;
// one autograd node stands for them all, and its backward runs the branches'
// graphs, again side by side, and hands on their input and parameter
// gradients. Not supported: gradients of gradients (create_graph).
#pragma once

#include <mtl/detail/autocast_state.hpp>
#include <mtl/detail/side_by_side.hpp>

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <vector>

namespace mtl::detail {

/// One branch: `run(input)`, with the parameters its gradients go to and its
/// cost relative to the other branches (its parameter count will do: a dense
/// layer's multiply-adds per row); the costliest are started first.
struct Branch {
  std::function<torch::Tensor(const torch::Tensor&)> run;
  torch::Tensor input;
  std::vector<torch::Tensor> parameters;
  double cost = 1.0;
  /// A branch that draws random numbers (dropout in training) makes all run
  /// one after another, so that a seed gives the same draws every run.
  bool draws_random_numbers = false;
};

/// A branch that runs `module->forward` on `input`, its cost the module's
/// parameter count.
template <class ModuleImpl>
Branch module_branch(std::shared_ptr<ModuleImpl> module, torch::Tensor input, bool draws_random_numbers) {
  Branch branch;
  branch.parameters = module->parameters();
  for (const auto& p : branch.parameters) branch.cost += static_cast<double>(p.numel());
  branch.run = [module = std::move(module)](const torch::Tensor& x) { return module->forward(x); };
  branch.input = std::move(input);
  branch.draws_random_numbers = draws_random_numbers;
  return branch;
}

/// Set by mtl::BranchesOneAfterAnotherGuard (expert.hpp).
inline bool& branches_one_after_another() {
  thread_local bool on = false;
  return on;
}

/// The order the branches are started in: the costliest first (ties in list
/// order), so that what is left at the end is small.
inline std::vector<int64_t> branches_by_cost(const std::vector<double>& costs) {
  std::vector<int64_t> order(costs.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return costs[a] > costs[b]; });
  return order;
}

/// Calls work(i) for every branch, costliest first (`order`), each free
/// thread taking the next. A branch's results do not depend on the thread
/// that runs it.
template <class Work>
void for_each_branch_side_by_side(const std::vector<int64_t>& order, int64_t threads, const Work& work) {
  for_each_task_side_by_side(static_cast<int64_t>(order.size()), threads,
                             [&](int64_t k) { work(static_cast<size_t>(order[static_cast<size_t>(k)])); });
}

/// The branches' outputs stacked on dim 1, each copied in by the thread that
/// ran its branch as soon as it is done (while it is still in that core's
/// cache), in place of one torch::stack on one thread after all.
class OutputStack {
 public:
  explicit OutputStack(size_t branches) : branches_(static_cast<int64_t>(branches)) {}

  void put(size_t i, const torch::Tensor& output) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!stacked_.defined()) {
        TORCH_CHECK(output.dim() >= 1,
                    "run_branches_stacked expects branch outputs of at least one dimension, "
                    "but branch ",
                    i, " gave a scalar");
        auto sizes = output.sizes().vec();
        sizes.insert(sizes.begin() + 1, branches_);
        stacked_ = torch::empty(sizes, output.options().requires_grad(false));
        first_ = i;
      }
    }
    const auto slot = stacked_.select(1, static_cast<int64_t>(i));
    TORCH_CHECK(output.sizes() == slot.sizes() && output.scalar_type() == slot.scalar_type(),
                "run_branches_stacked expects every branch to give one shape and dtype, but branch ", i, " gave ",
                output.sizes(), " (", output.scalar_type(), ") where branch ", first_, " gave ", slot.sizes(), " (",
                slot.scalar_type(), ")");
    slot.copy_(output.detach());
  }

  torch::Tensor stacked() const { return stacked_; }

 private:
  int64_t branches_;
  std::mutex mutex_;
  torch::Tensor stacked_;
  size_t first_ = 0;
};

/// The branches' graphs behind one node. Inputs: each branch's input, then all
/// branches' parameters (so that the node exists even when no input needs a
/// gradient); `parameter_counts[i]` of them are branch i's.
class StackedBranches : public torch::autograd::Function<StackedBranches> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::TensorList inputs,
                                                torch::TensorList parameters, const std::vector<Branch>& branches,
                                                const std::vector<int64_t>& order, int64_t threads) {
    const size_t n = inputs.size();
    std::vector<torch::Tensor> leaves(n), outputs(n);
    for (size_t i = 0; i < n; ++i) leaves[i] = inputs[i].detach().requires_grad_(inputs[i].requires_grad());
    OutputStack stack(n);
    for_each_branch_side_by_side(order, threads, [&](size_t i) {
      {
        const at::AutoGradMode build_graph(true);
        outputs[i] = branches[i].run(leaves[i]);
      }
      stack.put(i, outputs[i]);
    });
    torch::autograd::variable_list saved = leaves;
    saved.insert(saved.end(), outputs.begin(), outputs.end());
    saved.insert(saved.end(), parameters.begin(), parameters.end());
    ctx->save_for_backward(saved);
    std::vector<int64_t> parameter_counts;
    for (const auto& branch : branches) parameter_counts.push_back(static_cast<int64_t>(branch.parameters.size()));
    ctx->saved_data["parameter_counts"] = parameter_counts;
    ctx->saved_data["order"] = order;
    ctx->saved_data["threads"] = threads;
    return {stack.stacked()};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "mtl: branches run side by side (a mixer's experts) do not support gradients of gradients "
                "(create_graph); run the forward under mtl::BranchesOneAfterAnotherGuard");
    const auto saved = ctx->get_saved_variables();
    const auto parameter_counts = ctx->saved_data["parameter_counts"].toIntVector();
    const auto order = ctx->saved_data["order"].toIntVector();
    const int64_t threads = ctx->saved_data["threads"].toInt();
    const size_t n = parameter_counts.size();
    std::vector<size_t> first_parameter(n + 1, 2 * n);
    for (size_t i = 0; i < n; ++i) first_parameter[i + 1] = first_parameter[i] + parameter_counts[i];
    // One gradient per forward input: inputs, parameters, then the three non-tensor arguments.
    torch::autograd::variable_list result(first_parameter[n] - n + 3);
    for_each_branch_side_by_side(order, threads, [&](size_t i) {
      const auto& output = saved[n + i];
      std::vector<torch::Tensor> targets;
      std::vector<size_t> slots;
      if (saved[i].requires_grad()) targets.push_back(saved[i]), slots.push_back(i);
      for (size_t p = first_parameter[i]; p < first_parameter[i + 1]; ++p)
        if (saved[p].requires_grad()) targets.push_back(saved[p]), slots.push_back(p - n);
      if (!output.requires_grad() || targets.empty()) return;
      const auto branch_grads = torch::autograd::grad({output}, targets, {grads[0].select(1, static_cast<int64_t>(i))},
                                                      /*retain_graph=*/true, /*create_graph=*/false,
                                                      /*allow_unused=*/true);
      for (size_t k = 0; k < slots.size(); ++k) result[slots[k]] = branch_grads[k];
    });
    return result;
  }
};

/// Runs every branch and stacks the outputs: [batch, branches, ...]. Side by
/// side on the CPU where there are two branches or more, two intra-op threads
/// or more, no autocast and no random draws; one after another otherwise.
inline torch::Tensor run_branches_stacked(const std::vector<Branch>& branches) {
  TORCH_CHECK(!branches.empty(), "run_branches_stacked expects at least one branch");
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), static_cast<int64_t>(branches.size()));
  const bool side_by_side = threads > 1 && !at::in_parallel_region() && !branches_one_after_another() &&
                            !autocast_enabled() && std::all_of(branches.begin(), branches.end(), [](const Branch& b) {
                              return b.input.device().is_cpu() && !b.draws_random_numbers;
                            });
  if (!side_by_side) {
    std::vector<torch::Tensor> outputs;
    for (const auto& branch : branches) outputs.push_back(branch.run(branch.input));
    return torch::stack(outputs, /*dim=*/1);
  }
  std::vector<double> costs;
  for (const auto& branch : branches) costs.push_back(branch.cost);
  const auto order = branches_by_cost(costs);
  std::vector<torch::Tensor> inputs, parameters;
  for (const auto& branch : branches) {
    inputs.push_back(branch.input);
    parameters.insert(parameters.end(), branch.parameters.begin(), branch.parameters.end());
  }
  const bool builds_graph =
      at::GradMode::is_enabled() &&
      (std::any_of(inputs.begin(), inputs.end(), [](const torch::Tensor& t) { return t.requires_grad(); }) ||
       std::any_of(parameters.begin(), parameters.end(), [](const torch::Tensor& t) { return t.requires_grad(); }));
  if (!builds_graph) {
    OutputStack stack(branches.size());
    for_each_branch_side_by_side(order, threads, [&](size_t i) { stack.put(i, branches[i].run(branches[i].input)); });
    return stack.stacked();
  }
  return StackedBranches::apply(torch::TensorList(inputs), torch::TensorList(parameters), branches, order, threads)[0];
}

}  // namespace mtl::detail
