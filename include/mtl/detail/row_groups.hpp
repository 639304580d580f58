// The rows of a sparse gradient grouped without sorting: the ids a step
// touched (rows may repeat) become distinct rows, each with its gradients
// summed in batch order, so a run repeats bit for bit. A row's group is found
// through an open-addressing hash table at most half full and sized to the ids:
// it stays in cache, where a table-sized array would cost a random memory
// access per id.
#pragma once

#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace mtl::detail {

/// A step's distinct rows in order of first appearance, each with the sum of
/// its gradients. Kept across steps, so its buffers are reused.
class RowGroups {
 public:
  /// Groups the ids `rows` [n] by row and sums each row's gradients (grads:
  /// [n, d], in `options`' dtype T) in batch order.
  template <class T>
  void build(const int64_t* rows, const T* grads, int64_t n, int64_t d, const torch::TensorOptions& options) {
    if (sums_.numel() < n * d || sums_.dtype() != options.dtype()) sums_ = torch::empty({n, d}, options);
    int bits = 6;
    while ((int64_t{1} << bits) < 2 * n) ++bits;
    slot_group_.assign(size_t{1} << bits, -1);
    const size_t mask = slot_group_.size() - 1;
    row_.clear();
    T* sums = sums_.data_ptr<T>();
    for (int64_t j = 0; j < n; ++j) {
      // Fibonacci hashing: neighbouring rows (one field's ids) land far apart.
      size_t slot = (static_cast<uint64_t>(rows[j]) * 0x9E3779B97F4A7C15ULL) >> (64 - bits);
      while (slot_group_[slot] >= 0 && row_[slot_group_[slot]] != rows[j]) slot = (slot + 1) & mask;
      const T* g = grads + j * d;
      if (slot_group_[slot] < 0) {
        slot_group_[slot] = static_cast<int32_t>(size());
        std::copy(g, g + d, sums + size() * d);
        row_.push_back(rows[j]);
      } else {
        T* sum = sums + slot_group_[slot] * d;
        for (int64_t c = 0; c < d; ++c) sum[c] += g[c];
      }
    }
  }

  int64_t size() const noexcept { return static_cast<int64_t>(row_.size()); }
  int64_t row(int64_t group) const noexcept { return row_[group]; }
  /// The groups' gradient sums, d values per group.
  template <class T>
  const T* sums() const {
    return sums_.data_ptr<T>();
  }

 private:
  std::vector<int32_t> slot_group_;  ///< per slot: the group of the row that hashed there, or -1
  std::vector<int64_t> row_;         ///< per group: its row
  torch::Tensor sums_;               ///< per group: its gradient sum
};

}  // namespace mtl::detail
