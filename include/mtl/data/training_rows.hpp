// The rows a BatchLoader draws training batches from: a Dataset held in
// memory, or rows made on demand from their index (a generator keyed by row),
// so that a run over tens of millions of rows holds one batch of them at a
// time. A view: what it reads from must outlive it.
#pragma once

#include <mtl/data/dataset.hpp>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace mtl::data {

class TrainingRows {
 public:
  /// Makes the rows of the given indices, in that order, as a batch.
  using MakeRows = std::function<TrainingBatch(const std::vector<int64_t>& rows)>;

  /// The rows of `dataset` (not copied). A loader shuffles them per epoch.
  /* implicit */ TrainingRows(const Dataset& dataset)
      : num_rows_(dataset.num_rows()),
        make_([&dataset](const std::vector<int64_t>& rows) { return dataset.batch(rows); }),
        independent_rows_(false) {}

  /// `num_rows` rows made by `make` on demand. Each row must be an independent
  /// draw, so that index order is already a random order and a loader reads
  /// them in it, without a permutation of all the rows.
  TrainingRows(int64_t num_rows, MakeRows make)
      : num_rows_(num_rows), make_(std::move(make)), independent_rows_(true) {}

  int64_t num_rows() const noexcept { return num_rows_; }
  /// Whether the rows are independent draws made on demand (read in index order).
  bool independent_rows() const noexcept { return independent_rows_; }
  TrainingBatch batch(const std::vector<int64_t>& rows) const { return make_(rows); }

 private:
  int64_t num_rows_;
  MakeRows make_;
  bool independent_rows_;
};

}  // namespace mtl::data
