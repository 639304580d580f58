// An in-memory columnar data set (ids, dense values, labels) and the batch
// type training reads. Ground-truth columns, which only synthetic data has,
// live beside the training columns: a `TrainingBatch` cannot carry them.
#pragma once

#include <mtl/features.hpp>

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace mtl::data {

/// What the training path sees of a batch: features and the two labels.
struct TrainingBatch {
  FeatureInputs features;
  torch::Tensor click;       ///< float [batch], 0/1
  torch::Tensor conversion;  ///< float [batch], 0/1, never 1 where click is 0

  int64_t size() const { return click.size(0); }
  TrainingBatch to(const torch::Device& device, bool non_blocking = false) const {
    return {features.to(device, non_blocking), click.to(device, non_blocking), conversion.to(device, non_blocking)};
  }
};

/// Synthetic data only: what generated each row. Evaluation reads it; training cannot.
struct GroundTruth {
  std::vector<float> p_click;  ///< true P(click | impression)
  std::vector<float> p_cvr;    ///< true P(conversion | click), for every impression
  /// A conversion drawn from p_cvr for every impression, clicked or not;
  /// `conversion` = click * this.
  std::vector<float> counterfactual_conversion;

  bool empty() const noexcept { return p_click.empty(); }
};

/// Rows in columns: ids row-major [rows, num_sparse] as int32 (half the
/// memory of int64; widened per batch), dense row-major [rows, num_dense].
class Dataset {
 public:
  explicit Dataset(FeatureSchema schema) : schema_(std::move(schema)) {}

  const FeatureSchema& schema() const noexcept { return schema_; }
  int64_t num_rows() const noexcept { return static_cast<int64_t>(click.size()); }

  /// The rows `rows` as a training batch (CPU tensors).
  TrainingBatch batch(const std::vector<int64_t>& rows) const {
    const int64_t n = static_cast<int64_t>(rows.size()), f = schema_.num_sparse(), d = schema_.num_dense();
    auto id_tensor = torch::empty({n, f}, torch::kLong);
    auto dense_tensor = torch::empty({n, d}, torch::kFloat);
    auto click_tensor = torch::empty({n}, torch::kFloat), conversion_tensor = torch::empty({n}, torch::kFloat);
    auto* id_out = id_tensor.data_ptr<int64_t>();
    auto* dense_out = dense_tensor.data_ptr<float>();
    auto* click_out = click_tensor.data_ptr<float>();
    auto* conversion_out = conversion_tensor.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = rows[i];
      TORCH_CHECK(r >= 0 && r < num_rows(), "Dataset::batch expects rows in [0, ", num_rows(), "), but got ", r);
      for (int64_t j = 0; j < f; ++j) id_out[i * f + j] = ids[r * f + j];
      for (int64_t j = 0; j < d; ++j) dense_out[i * d + j] = dense[r * d + j];
      click_out[i] = click[r];
      conversion_out[i] = conversion[r];
    }
    return {{id_tensor, d > 0 ? dense_tensor : torch::Tensor()}, click_tensor, conversion_tensor};
  }

  /// Rows [begin, end) in order.
  TrainingBatch slice(int64_t begin, int64_t end) const {
    std::vector<int64_t> rows;
    for (int64_t r = begin; r < end; ++r) rows.push_back(r);
    return batch(rows);
  }

  /// Makes room for `rows` more rows.
  void reserve(int64_t rows) {
    ids.reserve(static_cast<size_t>(rows * schema_.num_sparse()));
    dense.reserve(static_cast<size_t>(rows * schema_.num_dense()));
    click.reserve(static_cast<size_t>(rows));
    conversion.reserve(static_cast<size_t>(rows));
  }

  std::vector<int32_t> ids;
  std::vector<float> dense;
  std::vector<float> click, conversion;
  GroundTruth truth;

 private:
  FeatureSchema schema_;
};

}  // namespace mtl::data
