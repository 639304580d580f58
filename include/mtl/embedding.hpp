// All sparse fields in one embedding table: a batch is one gather, and the
// gradient is sparse (only the rows the batch touched). Each row also carries
// the field value's first-order (linear) weight, so FM's linear term needs no
// second lookup.
#pragma once

#include <mtl/detail/huge_pages.hpp>
#include <mtl/detail/row_gather.hpp>
#include <mtl/features.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <ostream>

namespace mtl {

/// Options of `SparseEmbedding`.
///
/// Example:
///   SparseEmbedding emb(SparseEmbeddingOptions(schema).sparse_grad(true));
struct SparseEmbeddingOptions {
  /* implicit */ SparseEmbeddingOptions(FeatureSchema schema) : schema_(std::move(schema)) {}

  /// The fields; every sparse field must share one embedding dim.
  TORCH_ARG(FeatureSchema, schema);
  /// Backward yields a sparse COO gradient with only the touched rows.
  TORCH_ARG(bool, sparse_grad) = true;
  /// Standard deviation of the normal initialisation of embedding columns.
  TORCH_ARG(double, init_std) = 0.01;
  /// Check every id against its field's vocabulary (one host sync per batch).
  TORCH_ARG(bool, check_ids) = true;
};

/// What one lookup returns.
struct SparseLookup {
  torch::Tensor embeddings;   ///< [batch, num_sparse, embedding_dim]
  torch::Tensor first_order;  ///< [batch, num_sparse]: each id's linear weight
};

/// One table of `total_vocab_size` rows and `embedding_dim + 1` columns; the
/// last column is the first-order weight. Field f's id i lives at row
/// `row_offsets[f] + i`.
class SparseEmbeddingImpl : public torch::nn::Cloneable<SparseEmbeddingImpl> {
 public:
  explicit SparseEmbeddingImpl(SparseEmbeddingOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    const auto& schema = options.schema();
    TORCH_CHECK(schema.num_sparse() > 0, "SparseEmbedding expects at least one sparse field, but the schema has none");
    dim_ = schema.sparse_fields().front().embedding_dim;
    for (const auto& f : schema.sparse_fields())
      TORCH_CHECK(f.embedding_dim == dim_, "SparseEmbedding keeps one table of one width: field '", f.name,
                  "' has embedding dim ", f.embedding_dim, " but field '", schema.sparse_fields().front().name,
                  "' has ", dim_);
    weight = register_parameter("weight", detail::zeros_on_huge_pages({schema.total_vocab_size(), dim_ + 1}, {}));
    reset_parameters();
    // Plain members, not buffers: Module::to(dtype) would cast buffers to float.
    offsets_ = torch::tensor(schema.row_offsets(), torch::kLong);
    std::vector<int64_t> vocab;
    for (const auto& f : schema.sparse_fields()) vocab.push_back(f.vocab_size);
    vocab_sizes_ = torch::tensor(vocab, torch::kLong);
  }

  void reset_parameters() {
    torch::NoGradGuard no_grad;
    weight.narrow(1, 0, dim_).normal_(0.0, options.init_std());
    weight.narrow(1, dim_, 1).zero_();
  }

  /// `ids` int64 [batch, num_sparse] with field-local ids.
  SparseLookup forward(const torch::Tensor& ids) {
    const auto& schema = options.schema();
    TORCH_CHECK(ids.dim() == 2, "SparseEmbedding expects ids of shape [batch, ", schema.num_sparse(), "], but got a ",
                ids.dim(), "-D tensor");
    TORCH_CHECK(ids.scalar_type() == torch::kLong, "SparseEmbedding expects int64 ids, but got ", ids.scalar_type());
    TORCH_CHECK(ids.size(1) == schema.num_sparse(), "SparseEmbedding expects ", schema.num_sparse(),
                " id columns (one per sparse field), but got ", ids.size(1));
    if (offsets_.device() != ids.device()) {
      offsets_ = offsets_.to(ids.device());
      vocab_sizes_ = vocab_sizes_.to(ids.device());
    }
    auto rows = detail::gather_rows(weight, table_rows(ids), options.sparse_grad());
    return {rows.embeddings.view({ids.size(0), ids.size(1), dim_}), rows.first_order.view({ids.size(0), ids.size(1)})};
  }

  int64_t embedding_dim() const noexcept { return dim_; }
  /// First table row of each field, int64 [num_sparse].
  const torch::Tensor& row_offsets() const noexcept { return offsets_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::SparseEmbedding(fields=" << options.schema().num_sparse()
           << ", rows=" << options.schema().total_vocab_size() << ", dim=" << dim_ << ", sparse_grad=" << std::boolalpha
           << options.sparse_grad() << ")";
  }

  SparseEmbeddingOptions options;
  torch::Tensor weight;

 private:
  /// The table row of every id, flattened: id + its field's first row. With
  /// check_ids, every id is checked against its field's vocabulary. On the CPU
  /// one loop does both (as tensor ops the check costs a host sync).
  torch::Tensor table_rows(const torch::Tensor& ids) const {
    if (!ids.device().is_cpu()) {
      if (options.check_ids() && ids.numel() > 0) {
        auto bad = (ids < 0).logical_or(ids >= vocab_sizes_);
        if (bad.any().item<bool>()) {
          auto where = bad.nonzero()[0].cpu();
          refuse_id(ids, where[0].item<int64_t>(), where[1].item<int64_t>());
        }
      }
      return (ids + offsets_).reshape({-1});
    }
    const auto local = ids.contiguous();
    auto rows = torch::empty({local.numel()}, local.options());
    const int64_t* id = local.data_ptr<int64_t>();
    const int64_t* first_row = offsets_.data_ptr<int64_t>();
    const int64_t* vocab = vocab_sizes_.data_ptr<int64_t>();
    int64_t* row = rows.data_ptr<int64_t>();
    const int64_t fields = local.size(1);
    bool in_range = true;
    for (int64_t i = 0; i < local.size(0); ++i)
      for (int64_t f = 0; f < fields; ++f) {
        const int64_t k = i * fields + f;
        in_range &= id[k] >= 0 && id[k] < vocab[f];
        row[k] = id[k] + first_row[f];
      }
    if (options.check_ids() && !in_range)
      for (int64_t k = 0; k < local.numel(); ++k)
        if (id[k] < 0 || id[k] >= vocab[k % fields]) refuse_id(local, k / fields, k % fields);
    return rows;
  }

  [[noreturn]] void refuse_id(const torch::Tensor& ids, int64_t row, int64_t col) const {
    const auto& field = options.schema().sparse_fields()[col];
    TORCH_CHECK(false, "SparseEmbedding expects ids of field '", field.name, "' in [0, ", field.vocab_size,
                "), but got ", ids[row][col].item<int64_t>(), " at batch row ", row);
  }

  int64_t dim_ = 0;
  torch::Tensor offsets_;
  torch::Tensor vocab_sizes_;
};
TORCH_MODULE(SparseEmbedding);

/// Checks a dense feature tensor against the schema; an undefined tensor is
/// accepted only for a schema without dense fields.
inline void check_dense_input(const torch::Tensor& dense, const FeatureSchema& schema, int64_t batch_size,
                              const char* who) {
  if (schema.num_dense() == 0) {
    TORCH_CHECK(!dense.defined() || dense.numel() == 0, who,
                " has no dense fields in its schema, but got dense values of shape ", dense.sizes());
    return;
  }
  TORCH_CHECK(dense.defined(), who, " expects dense values [batch, ", schema.num_dense(), "], but got none");
  TORCH_CHECK(dense.dim() == 2 && dense.size(1) == schema.num_dense(), who, " expects dense values [batch, ",
              schema.num_dense(), "], but got shape ", dense.sizes());
  TORCH_CHECK(dense.size(0) == batch_size, who, " expects ", batch_size, " dense rows (one per id row), but got ",
              dense.size(0));
  TORCH_CHECK(dense.is_floating_point(), who, " expects floating dense values, but got ", dense.scalar_type());
}

}  // namespace mtl
