// Column sums taken during a pass over a matrix's rows (a layer's bias
// gradient while its other gradients are written), the same whatever the
// number of threads: rows in blocks of fixed size, each block summed apart,
// then the blocks added in order.
#pragma once

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>

namespace mtl::detail {

template <class T>
void add_row(const T* __restrict values, T* __restrict sums, int64_t n) {
  for (int64_t c = 0; c < n; ++c) sums[c] += values[c];
}

/// Calls `pass_rows(first_row, end_row, sums)` block by block over `rows`
/// rows (`block_rows` a block, `grain` blocks at least per thread); `sums`
/// ([columns], zeroed) is the block's own, to which `pass_rows` adds its rows'
/// values. Returns the columns' sums [columns], of type T.
template <class T, class PassRows>
torch::Tensor blocked_column_sums(int64_t rows, int64_t block_rows, int64_t columns, int64_t grain,
                                  const torch::TensorOptions& options, const PassRows& pass_rows) {
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  auto block_sums = torch::zeros({std::max<int64_t>(blocks, 1), columns}, options);
  T* sums = block_sums.template data_ptr<T>();
  at::parallel_for(0, blocks, grain, [&](int64_t first_block, int64_t end_block) {
    for (int64_t b = first_block; b < end_block; ++b)
      pass_rows(b * block_rows, std::min(rows, (b + 1) * block_rows), sums + b * columns);
  });
  for (int64_t b = 1; b < blocks; ++b) add_row(sums + b * columns, sums, columns);
  return block_sums[0];
}

}  // namespace mtl::detail
