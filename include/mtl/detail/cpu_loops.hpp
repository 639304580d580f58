// Where the library's own loops over a tensor's rows take the place of ATen
// ops, and how those loops split the rows among threads. The loops are
// written for CPU tensors of float or double; other devices and dtypes
// (CUDA, bf16 under autocast) keep the ATen ops. Every fast path asks
// `cpu_loops_take` first, then checks the shapes it needs.
#pragma once

#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

namespace mtl::detail {

/// Whether the library's own CPU loops take these tensors: all on the CPU,
/// of float or double, of one dtype. Undefined tensors are refused.
inline bool cpu_loops_take(std::initializer_list<torch::Tensor> tensors) {
  const auto& first = *tensors.begin();
  if (!first.defined()) return false;
  const auto type = first.scalar_type();
  if (type != torch::kFloat && type != torch::kDouble) return false;
  return std::all_of(tensors.begin(), tensors.end(), [&](const torch::Tensor& t) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == type;
  });
}

/// Whether these are contiguous 2-D tensors of one shape (a one-pass loop
/// reads them row by row with one stride).
inline bool contiguous_matrices_of_one_shape(std::initializer_list<torch::Tensor> matrices) {
  const auto& first = *matrices.begin();
  return std::all_of(matrices.begin(), matrices.end(), [&](const torch::Tensor& t) {
    return t.dim() == 2 && t.sizes() == first.sizes() && t.is_contiguous();
  });
}

/// The grain of an at::parallel_for over rows of `row_width` values, or over
/// blocks of `rows_per_item` such rows: each thread gets at least
/// `values_per_thread` values. A second thread pays for itself only from tens
/// of thousands of values up, depending on the work per value.
inline int64_t row_grain(int64_t row_width, int64_t values_per_thread, int64_t rows_per_item = 1) {
  return std::max<int64_t>(1,
                           values_per_thread / (std::max<int64_t>(row_width, 1) * std::max<int64_t>(rows_per_item, 1)));
}

/// Values per thread for a loop of one pass with little arithmetic per value
/// (a bias and a ReLU, their gradients, the cross layers' passes): below
/// about a million values, a second thread costs more than it saves.
constexpr int64_t kOnePassValuesPerThread = int64_t{1} << 20;

}  // namespace mtl::detail
