// Calls one of the library's autograd functions. While autograd records, through
// `apply`, which builds the graph node; otherwise (no_grad, inference mode) its
// forward runs directly, without the node, context and output wrapping that
// `apply` builds even when nothing needs a gradient: on a serving path of small
// batches that bookkeeping costs more than the arithmetic.
#pragma once

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <utility>

namespace mtl::detail {

template <class Function, class... Args>
torch::autograd::variable_list apply_function(Args&&... args) {
  if (at::GradMode::is_enabled()) return Function::apply(std::forward<Args>(args)...);
  torch::autograd::AutogradContext unused;  // what forward saves for a backward that never comes
  return Function::forward(&unused, std::forward<Args>(args)...);
}

}  // namespace mtl::detail
