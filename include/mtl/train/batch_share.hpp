// A rank's share of a global batch in data-parallel training: every rank
// draws the same global batch, takes its own rows, and divides its loss terms
// by the global batch's counts over the world size, so that the ranks'
// averaged gradients (replica_sync.hpp) are the gradient one process computes
// on the whole batch, up to the order of the sums.
#pragma once

#include <mtl/data/dataset.hpp>
#include <mtl/train/objective.hpp>
#include <mtl/train/replicas.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>

namespace mtl::train {

/// Rank `rank` of `world_size`'s rows of `batch` (`share_range`).
inline data::TrainingBatch share_of(const data::TrainingBatch& batch, int64_t rank, int64_t world_size) {
  const auto range = share_range(batch.size(), rank, world_size);
  const int64_t begin = range.first, rows = range.second - range.first;
  const auto take = [begin, rows](const torch::Tensor& t) { return t.defined() ? t.narrow(0, begin, rows) : t; };
  return {{take(batch.features.sparse_ids), take(batch.features.dense)}, take(batch.click), take(batch.conversion)};
}

/// What each rank's loss terms divide by: the global batch's rows and
/// clicked rows (at least 1), over the world size.
inline Objective::Denominators share_denominators(const data::TrainingBatch& batch, int64_t world_size) {
  const double clicked = std::max(1.0, batch.click.to(torch::kDouble).sum().item<double>());
  return {static_cast<double>(batch.size()) / static_cast<double>(world_size),
          clicked / static_cast<double>(world_size)};
}

}  // namespace mtl::train
