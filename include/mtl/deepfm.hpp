// DeepFM backbone: first-order + FM second-order + deep MLP over the field
// embeddings. The multi-task part receives a representation, not a logit:
// the deep output joined with a projection of the FM vector.
#pragma once

#include <mtl/detail/join.hpp>
#include <mtl/embedding.hpp>
#include <mtl/features.hpp>
#include <mtl/functional/fm.hpp>
#include <mtl/mlp.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <vector>

namespace mtl {

/// Options of `DeepFM`.
///
/// Example:
///   DeepFM backbone(DeepFMOptions(schema).deep_hidden_dims({256, 128}).fm_projection_dim(16));
struct DeepFMOptions {
  /* implicit */ DeepFMOptions(FeatureSchema schema) : schema_(std::move(schema)) {}

  TORCH_ARG(FeatureSchema, schema);
  TORCH_ARG(std::vector<int64_t>, deep_hidden_dims) = std::vector<int64_t>{256, 128};
  /// Width the FM vector (first-order sum + second-order vector) is projected to.
  TORCH_ARG(int64_t, fm_projection_dim) = 16;
  TORCH_ARG(double, dropout) = 0.0;
  /// Sparse embedding gradients (only touched rows).
  TORCH_ARG(bool, sparse_grad) = true;
  /// Check ids against their vocabularies on every forward.
  TORCH_ARG(bool, check_ids) = true;
};

/// The parts of one DeepFM forward, before they are joined.
struct DeepFMParts {
  torch::Tensor deep;          ///< [batch, deep_hidden_dims.back()]
  torch::Tensor first_order;   ///< [batch, 1]: sparse and dense linear terms summed
  torch::Tensor second_order;  ///< [batch, embedding_dim]: FM pairwise-interaction vector
};

class DeepFMImpl : public torch::nn::Cloneable<DeepFMImpl> {
 public:
  explicit DeepFMImpl(DeepFMOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    const auto& schema = options.schema();
    TORCH_CHECK(options.fm_projection_dim() > 0, "DeepFM expects a positive fm_projection_dim, but got ",
                options.fm_projection_dim());
    TORCH_CHECK(!options.deep_hidden_dims().empty(), "DeepFM expects at least one deep hidden layer, but got none");
    embedding = register_module(
        "embedding",
        SparseEmbedding(
            SparseEmbeddingOptions(schema).sparse_grad(options.sparse_grad()).check_ids(options.check_ids())));
    const int64_t d = embedding->embedding_dim();
    if (schema.num_dense() > 0)
      dense_linear = register_module("dense_linear", torch::nn::Linear(schema.num_dense(), 1));
    deep =
        register_module("deep", MLP(MLPOptions(schema.num_sparse() * d + schema.num_dense(), options.deep_hidden_dims())
                                        .dropout(options.dropout())));
    fm_projection = register_module("fm_projection", torch::nn::Linear(d + 1, options.fm_projection_dim()));
  }

  DeepFMParts forward_parts(const FeatureInputs& input) {
    const auto& schema = options.schema();
    auto lookup = embedding->forward(input.sparse_ids);
    const int64_t batch = input.sparse_ids.size(0);
    check_dense_input(input.dense, schema, batch, "DeepFM");

    auto first_order = lookup.first_order.sum(1, /*keepdim=*/true);
    torch::Tensor dense;
    if (schema.num_dense() > 0) {
      dense = input.dense.to(lookup.embeddings.scalar_type());
      first_order = first_order + detail::linear_forward(dense_linear, dense);
    }
    const auto fm_and_deep = fm_second_order_and_deep_input(lookup.embeddings, dense);
    return {deep->forward(fm_and_deep.deep_input), first_order, fm_and_deep.second_order};
  }

  /// Representation [batch, output_dim()]: deep output joined with the
  /// projected FM vector.
  torch::Tensor forward(const FeatureInputs& input) {
    auto parts = forward_parts(input);
    auto fm_vector = torch::cat({parts.first_order, parts.second_order}, 1);
    return torch::cat({parts.deep, detail::linear_forward(fm_projection, fm_vector)}, 1);
  }

  int64_t output_dim() const { return deep->output_dim() + options.fm_projection_dim(); }

  /// The weights of the layers that emit the representation, the deep part's last layer and the FM
  /// projection: a layer every task shares whatever the mixer (GradNorm's W).
  std::vector<torch::Tensor> output_layer_weights() const {
    const auto& layers = *deep->layers;
    return {layers.ptr<torch::nn::LinearImpl>(layers.size() - 1)->weight, fm_projection->weight};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::DeepFM(sparse_fields=" << options.schema().num_sparse()
           << ", dense_fields=" << options.schema().num_dense() << ", embedding_dim=" << embedding->embedding_dim()
           << ", deep_hidden_dims=[" << detail::join(options.deep_hidden_dims())
           << "], fm_projection_dim=" << options.fm_projection_dim() << ")";
  }

  DeepFMOptions options;
  SparseEmbedding embedding{nullptr};
  torch::nn::Linear dense_linear{nullptr};
  MLP deep{nullptr};
  torch::nn::Linear fm_projection{nullptr};
};
TORCH_MODULE(DeepFM);

}  // namespace mtl
