// Independent branches of a model (a mixer's experts) with outputs of one
// shape, run at once on the CPU, each branch on one intra-op thread, in place
// of one after another with every op split across the threads. At batch 1024
// most of a branch's ops gain nothing from a second thread on the 2-vCPU
// machines (mul on [1024, 144]: 21 us on one thread, 20-21 on two; sum(0):
// 9 us against 13), so one branch at a time leaves a core idle; side by side
// both work. E5's six experts at batch 1024, forward + backward: 3.6 + 7.9 ms
// one after another, 2.9 + 5.3 ms side by side (one thread alone: 5.1 + 9.6).
//
// Forward builds each branch's own graph from a detached copy of its input;
// one autograd node stands for them all, and its backward runs the branches'
// graphs, again side by side, and hands on their input and parameter
// gradients. Not supported: gradients of gradients (create_graph).
#pragma once

#include <mtl/autocast_state.hpp>

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

namespace mtl {

/// One branch: `run(input)`, with the parameters its gradients go to and its
/// cost relative to the other branches (its parameter count will do: a dense
/// layer's multiply-adds per row), by which the threads are balanced.
struct Branch {
  std::function<torch::Tensor(const torch::Tensor&)> run;
  torch::Tensor input;
  std::vector<torch::Tensor> parameters;
  double cost = 1.0;
  /// A branch that draws random numbers (dropout in training) makes all run
  /// one after another, so that a seed gives the same draws every run.
  bool draws_random_numbers = false;
};

namespace detail {

inline bool& branches_one_after_another() {
  thread_local bool on = false;
  return on;
}

/// Thread per branch: the costliest branch first, each to the least loaded
/// thread (ties to the lower thread), so that a set of branches always lands
/// the same way.
inline std::vector<int64_t> assign_branch_threads(const std::vector<double>& costs, int64_t threads) {
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(static_cast<size_t>(threads), 0.0);
  std::vector<int64_t> thread_of(costs.size());
  for (size_t i : order) {
    const auto least = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    thread_of[i] = static_cast<int64_t>(least);
    load[least] += costs[i];
  }
  return thread_of;
}

/// Calls work(i) for every branch, thread t running its branches in order,
/// with the caller's thread-local state (grad mode, dispatch keys). Nested
/// ATen and oneDNN work inside runs on the calling thread.
template <class Work>
void for_each_branch_on_its_thread(const std::vector<int64_t>& thread_of, int64_t threads, const Work& work) {
  const at::ThreadLocalState state;
  at::parallel_for(0, threads, /*grain_size=*/1, [&](int64_t first, int64_t end) {
    const at::ThreadLocalStateGuard guard(state);
    for (int64_t t = first; t < end; ++t)
      for (size_t i = 0; i < thread_of.size(); ++i)
        if (thread_of[i] == t) work(i);
  });
}

inline torch::Tensor stack_outputs(const std::vector<torch::Tensor>& outputs) {
  return torch::stack(outputs, /*dim=*/1);
}

/// The branches' graphs behind one node. Inputs: each branch's input, then all
/// branches' parameters (so that the node exists even when no input needs a
/// gradient); `parameter_counts[i]` of them are branch i's.
class StackedBranches : public torch::autograd::Function<StackedBranches> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::TensorList inputs,
                                                torch::TensorList parameters, const std::vector<Branch>& branches,
                                                const std::vector<int64_t>& thread_of, int64_t threads) {
    const size_t n = inputs.size();
    std::vector<torch::Tensor> leaves(n), outputs(n);
    for (size_t i = 0; i < n; ++i) leaves[i] = inputs[i].detach().requires_grad_(inputs[i].requires_grad());
    for_each_branch_on_its_thread(thread_of, threads, [&](size_t i) {
      const at::AutoGradMode build_graph(true);
      outputs[i] = branches[i].run(leaves[i]);
    });
    torch::autograd::variable_list saved = leaves;
    saved.insert(saved.end(), outputs.begin(), outputs.end());
    saved.insert(saved.end(), parameters.begin(), parameters.end());
    ctx->save_for_backward(saved);
    std::vector<int64_t> parameter_counts;
    for (const auto& branch : branches) parameter_counts.push_back(static_cast<int64_t>(branch.parameters.size()));
    ctx->saved_data["parameter_counts"] = parameter_counts;
    ctx->saved_data["thread_of"] = thread_of;
    ctx->saved_data["threads"] = threads;
    std::vector<torch::Tensor> values;
    for (const auto& output : outputs) values.push_back(output.detach());
    return {stack_outputs(values)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "mtl: branches run side by side (a mixer's experts) do not support gradients of gradients "
                "(create_graph); run the forward under mtl::BranchesOneAfterAnotherGuard");
    const auto saved = ctx->get_saved_variables();
    const auto parameter_counts = ctx->saved_data["parameter_counts"].toIntVector();
    const auto thread_of = ctx->saved_data["thread_of"].toIntVector();
    const int64_t threads = ctx->saved_data["threads"].toInt();
    const size_t n = parameter_counts.size();
    std::vector<size_t> first_parameter(n + 1, 2 * n);
    for (size_t i = 0; i < n; ++i) first_parameter[i + 1] = first_parameter[i] + parameter_counts[i];
    // One gradient per forward input: inputs, parameters, then the three non-tensor arguments.
    torch::autograd::variable_list result(first_parameter[n] - n + 3);
    for_each_branch_on_its_thread(thread_of, threads, [&](size_t i) {
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

}  // namespace detail

/// While alive, `run_branches_stacked` on this thread runs branches one after
/// another (needed for gradients of gradients; also a baseline to measure against).
class BranchesOneAfterAnotherGuard {
 public:
  BranchesOneAfterAnotherGuard() : previous_(detail::branches_one_after_another()) {
    detail::branches_one_after_another() = true;
  }
  ~BranchesOneAfterAnotherGuard() { detail::branches_one_after_another() = previous_; }
  BranchesOneAfterAnotherGuard(const BranchesOneAfterAnotherGuard&) = delete;
  BranchesOneAfterAnotherGuard& operator=(const BranchesOneAfterAnotherGuard&) = delete;

 private:
  bool previous_;
};

/// Runs every branch and stacks the outputs: [batch, branches, ...]. Side by
/// side on the CPU where there are two branches or more, two intra-op threads
/// or more, no autocast and no random draws; one after another otherwise.
inline torch::Tensor run_branches_stacked(const std::vector<Branch>& branches) {
  TORCH_CHECK(!branches.empty(), "run_branches_stacked expects at least one branch");
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), static_cast<int64_t>(branches.size()));
  const bool side_by_side =
      threads > 1 && !at::in_parallel_region() && !detail::branches_one_after_another() &&
      !detail::autocast_enabled() && std::all_of(branches.begin(), branches.end(), [](const Branch& b) {
        return b.input.device().is_cpu() && !b.draws_random_numbers;
      });
  if (!side_by_side) {
    std::vector<torch::Tensor> outputs;
    for (const auto& branch : branches) outputs.push_back(branch.run(branch.input));
    return detail::stack_outputs(outputs);
  }
  std::vector<double> costs;
  for (const auto& branch : branches) costs.push_back(branch.cost);
  const auto thread_of = detail::assign_branch_threads(costs, threads);
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
    std::vector<torch::Tensor> outputs(branches.size());
    detail::for_each_branch_on_its_thread(thread_of, threads,
                                          [&](size_t i) { outputs[i] = branches[i].run(branches[i].input); });
    return detail::stack_outputs(outputs);
  }
  return detail::StackedBranches::apply(torch::TensorList(inputs), torch::TensorList(parameters), branches,
                                        thread_of, threads)[0];
}

}  // namespace mtl
