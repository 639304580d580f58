// Where the library's own loops over a tensor's rows take the place of ATen
// ops, and how those loops split the rows among threads. The loops are
// written for CPU tensors of float or double; other devices and dtypes
// (CUDA, bf16 under autocast) keep the ATen ops.
#pragma once

#include <torch/types.h>

#include <algorithm>
#include <cstdint>

namespace mtl::detail {

/// Whether `t` is a CPU tensor of float or double.
inline bool cpu_float_or_double(const torch::Tensor& t) {
  const auto type = t.scalar_type();
  return t.device().is_cpu() && (type == torch::kFloat || type == torch::kDouble);
}

/// The grain of an at::parallel_for over rows of `row_width` values: each
/// thread gets at least `values_per_thread` values. On the 2-vCPU machines a
/// second thread pays for itself only from tens of thousands of values up,
/// depending on the work per value.
inline int64_t row_grain(int64_t row_width, int64_t values_per_thread) {
  return std::max<int64_t>(1, values_per_thread / std::max<int64_t>(row_width, 1));
}

/// Values per thread for a loop of one pass with little arithmetic per value
/// (a bias and a ReLU, their gradients, the cross layers' passes): below
/// about a million values, two threads took longer than one on the 2-vCPU
/// machines.
constexpr int64_t kOnePassValuesPerThread = int64_t{1} << 20;

}  // namespace mtl::detail
