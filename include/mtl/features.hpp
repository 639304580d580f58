// The feature schema (named sparse and dense fields) and the input a backbone
// takes: one batch of sparse ids and dense values.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mtl {

/// A categorical field: ids of one field live in [0, vocab_size).
struct SparseField {
  std::string name;
  int64_t vocab_size = 0;
  int64_t embedding_dim = 0;
};

/// A real-valued field, fed to the deep part and the first-order term.
struct DenseField {
  std::string name;
};

/// Names, vocabularies and embedding widths of a data set's fields, in
/// column order of the id tensor `[batch, num_sparse]` and dense tensor
/// `[batch, num_dense]`.
///
/// Example:
///   FeatureSchema schema(/*default_embedding_dim=*/8);
///   schema.add_sparse("user_id", 100000).add_sparse("item_id", 50000).add_dense("price");
class FeatureSchema {
 public:
  explicit FeatureSchema(int64_t default_embedding_dim = 8) : default_embedding_dim_(default_embedding_dim) {
    TORCH_CHECK(default_embedding_dim > 0, "FeatureSchema expects a positive default embedding dim, but got ",
                default_embedding_dim);
  }

  /// Adds a sparse field; `embedding_dim` <= 0 takes the schema's default.
  FeatureSchema& add_sparse(std::string name, int64_t vocab_size, int64_t embedding_dim = 0) {
    TORCH_CHECK(vocab_size > 0, "sparse field '", name, "' expects a positive vocabulary size, but got ", vocab_size);
    check_new_name(name);
    sparse_.push_back({std::move(name), vocab_size, embedding_dim > 0 ? embedding_dim : default_embedding_dim_});
    return *this;
  }

  FeatureSchema& add_dense(std::string name) {
    check_new_name(name);
    dense_.push_back({std::move(name)});
    return *this;
  }

  const std::vector<SparseField>& sparse_fields() const noexcept { return sparse_; }
  const std::vector<DenseField>& dense_fields() const noexcept { return dense_; }
  int64_t num_sparse() const noexcept { return static_cast<int64_t>(sparse_.size()); }
  int64_t num_dense() const noexcept { return static_cast<int64_t>(dense_.size()); }
  int64_t default_embedding_dim() const noexcept { return default_embedding_dim_; }

  /// Rows of one table holding every sparse field back to back.
  int64_t total_vocab_size() const noexcept {
    int64_t total = 0;
    for (const auto& f : sparse_) total += f.vocab_size;
    return total;
  }

  /// First row of each field in the joint table.
  std::vector<int64_t> row_offsets() const {
    std::vector<int64_t> offsets;
    offsets.reserve(sparse_.size());
    int64_t next = 0;
    for (const auto& f : sparse_) {
      offsets.push_back(next);
      next += f.vocab_size;
    }
    return offsets;
  }

  /// Column of a sparse field by name, or nullopt.
  std::optional<int64_t> sparse_index(const std::string& name) const {
    for (size_t i = 0; i < sparse_.size(); ++i)
      if (sparse_[i].name == name) return static_cast<int64_t>(i);
    return std::nullopt;
  }

 private:
  void check_new_name(const std::string& name) const {
    TORCH_CHECK(!name.empty(), "FeatureSchema expects a field name, but got an empty one");
    for (const auto& f : sparse_) TORCH_CHECK(f.name != name, "FeatureSchema already has a sparse field '", name, "'");
    for (const auto& f : dense_) TORCH_CHECK(f.name != name, "FeatureSchema already has a dense field '", name, "'");
  }

  int64_t default_embedding_dim_;
  std::vector<SparseField> sparse_;
  std::vector<DenseField> dense_;
};

/// One batch of model input: `sparse_ids` int64 `[batch, num_sparse]`,
/// `dense` floating `[batch, num_dense]` (undefined when the schema has none).
struct FeatureInputs {
  torch::Tensor sparse_ids;
  torch::Tensor dense;

  int64_t batch_size() const { return sparse_ids.size(0); }
  FeatureInputs to(const torch::Device& device, bool non_blocking = false) const {
    return {sparse_ids.to(device, non_blocking), dense.defined() ? dense.to(device, non_blocking) : dense};
  }
};

}  // namespace mtl
