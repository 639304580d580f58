// Scores raw requests with a model bundle: raw ids by field name go through
// the bundle's vocabularies (an id the training data did not keep takes the
// rare-id row), the model runs in eval mode without autograd, and the three
// probabilities come back. One Predictor serves many threads at once: a call
// reads the model and writes only its own tensors.
//
// Example:
//   mtl::serving::Predictor predictor("model.mtl");
//   mtl::serving::RawRows rows;
//   rows.sparse["user_id"] = {12, 7};  // one vector per field, one value per row
//   ...                            // every field of predictor.schema()
//   auto p = predictor.predict(rows);  // p.p_ctr[i], p.p_cvr[i], p.p_ctcvr[i]
#pragma once

#include <mtl/detail/join.hpp>
#include <mtl/features.hpp>
#include <mtl/io/checkpoint.hpp>
#include <mtl/model_spec.hpp>
#include <mtl/serving/bundle.hpp>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace mtl::serving {

struct PredictorOptions {
  /// Intra-op threads of each predict call, set on the calling thread (LibTorch's
  /// OpenMP setting is per thread; threads started later inherit the last value).
  /// With several concurrent callers, 1 keeps them from competing for cores;
  /// 0 leaves each calling thread's setting as it is.
  TORCH_ARG(int, threads_per_call) = 1;
};

/// A batch of raw rows by field name, one vector per field and one value per
/// row, as a CSV file holds them: integer ids for sparse fields, numbers for
/// dense fields. Every field of the model's schema must be there, no other.
struct RawRows {
  std::unordered_map<std::string, std::vector<int64_t>> sparse;
  std::unordered_map<std::string, std::vector<float>> dense;
};

/// Probabilities per row; a vector is empty where the model lacks the head
/// (p_ctcvr needs both heads: p_ctr * p_cvr).
struct Predictions {
  std::vector<float> p_ctr, p_cvr, p_ctcvr;
};

/// The probabilities of a forward's logits, for the heads among "ctr" and "cvr" the model has.
inline Predictions to_predictions(const TaskLogits& logits) {
  auto probabilities = [&](const char* task) {
    if (std::find(logits.tasks.begin(), logits.tasks.end(), task) == logits.tasks.end()) return std::vector<float>();
    const auto p = torch::sigmoid(logits.at(task)).to(torch::kFloat).contiguous();
    return std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
  };
  Predictions out{probabilities("ctr"), probabilities("cvr"), {}};
  if (!out.p_ctr.empty() && !out.p_cvr.empty()) {
    out.p_ctcvr.resize(out.p_ctr.size());
    for (size_t i = 0; i < out.p_ctr.size(); ++i) out.p_ctcvr[i] = out.p_ctr[i] * out.p_cvr[i];
  }
  return out;
}

class Predictor {
 public:
  explicit Predictor(const std::string& bundle_path, PredictorOptions options = {})
      : Predictor(load_bundle(bundle_path), options) {}

  explicit Predictor(ModelBundle bundle, PredictorOptions options = {})
      : bundle_(std::move(bundle)), options_(options) {
    TORCH_CHECK(options_.threads_per_call() >= 0, "PredictorOptions expects threads_per_call >= 0, but got ",
                options_.threads_per_call());
    with_bundle_model(bundle_, [&](auto model) {
      for (auto& p : model->parameters()) p.set_requires_grad(false);
      auto impl = model.ptr();
      module_ = impl;
      forward_ = [impl](const FeatureInputs& inputs) { return impl->forward(inputs); };
    });
    bundle_.weights = io::TensorDict();  // the model holds them now
    for (size_t j = 0; j < bundle_.schema.sparse_fields().size(); ++j)
      sparse_index_.emplace(bundle_.schema.sparse_fields()[j].name, j);
    for (size_t j = 0; j < bundle_.schema.dense_fields().size(); ++j)
      dense_index_.emplace(bundle_.schema.dense_fields()[j].name, j);
  }

  /// What the model reads: field names, in the order `encode` lays them out.
  const FeatureSchema& schema() const noexcept { return bundle_.schema; }
  /// The bundle's spec, labels and metadata (its weights live in the model).
  const ModelBundle& bundle() const noexcept { return bundle_; }
  /// The model itself, for inspection; do not change it while serving.
  const torch::nn::Module& module() const noexcept { return *module_; }

  /// Raw rows as model input: ids through the vocabularies, columns in schema
  /// order. A missing or unknown field, or fields of different lengths, is an
  /// error naming them.
  FeatureInputs encode(const RawRows& rows) const {
    const int64_t n = num_rows(rows);
    const auto& sparse_fields = bundle_.schema.sparse_fields();
    const auto& dense_fields = bundle_.schema.dense_fields();
    const int64_t f = static_cast<int64_t>(sparse_fields.size()), d = static_cast<int64_t>(dense_fields.size());
    auto ids = torch::empty({n, f}, torch::kLong);
    auto* id_out = ids.data_ptr<int64_t>();
    std::vector<const std::vector<int64_t>*> columns;
    for (const auto& field : sparse_fields) columns.push_back(&rows.sparse.at(field.name));
    // Fields on the call's intra-op threads where the request is large enough to gain.
    const int64_t grain = n * f >= kRowsFieldsPerThread ? 1 : f;
    at::parallel_for(0, f, grain, [&](int64_t first, int64_t end) {
      for (int64_t j = first; j < end; ++j) {
        const auto& values = *columns[j];
        const int64_t vocab_size = sparse_fields[j].vocab_size;
        if (bundle_.vocabularies.empty()) {
          for (int64_t i = 0; i < n; ++i) id_out[i * f + j] = values[i] >= 0 && values[i] < vocab_size ? values[i] : 0;
        } else {
          const auto& vocabulary = bundle_.vocabularies[j];
          for (int64_t i = 0; i < n; ++i) id_out[i * f + j] = vocabulary.encode(values[i]);
        }
      }
    });
    torch::Tensor dense;
    if (d > 0) {
      dense = torch::empty({n, d}, torch::kFloat);
      auto* dense_out = dense.data_ptr<float>();
      for (int64_t j = 0; j < d; ++j) {
        const auto& values = rows.dense.at(dense_fields[j].name);
        for (int64_t i = 0; i < n; ++i) dense_out[i * d + j] = values[i];
      }
    }
    return {ids, dense};
  }

  /// Scores raw rows.
  Predictions predict(const RawRows& rows) const { return predict(encode(rows)); }

  /// Scores rows already encoded (ids are embedding rows, as `encode` gives).
  Predictions predict(const FeatureInputs& inputs) const {
    if (options_.threads_per_call() > 0 && at::get_num_threads() != options_.threads_per_call())
      at::set_num_threads(options_.threads_per_call());
    const c10::InferenceMode inference;
    return to_predictions(forward_(inputs));
  }

 private:
  static constexpr int64_t kRowsFieldsPerThread = 4096;

  /// The request's row count, after checking its fields against the schema.
  int64_t num_rows(const RawRows& rows) const {
    std::vector<std::string> missing, unknown;
    for (const auto& f : bundle_.schema.sparse_fields())
      if (!rows.sparse.count(f.name)) missing.push_back(f.name);
    for (const auto& f : bundle_.schema.dense_fields())
      if (!rows.dense.count(f.name)) missing.push_back(f.name);
    for (const auto& [name, values] : rows.sparse)
      if (!sparse_index_.count(name)) unknown.push_back(name + (dense_index_.count(name) ? " (a dense field)" : ""));
    for (const auto& [name, values] : rows.dense)
      if (!dense_index_.count(name)) unknown.push_back(name + (sparse_index_.count(name) ? " (a sparse field)" : ""));
    TORCH_CHECK(missing.empty() && unknown.empty(), "the request does not match the model's fields:",
                missing.empty() ? "" : " missing " + mtl::detail::join(missing),
                missing.empty() || unknown.empty() ? "" : ";",
                unknown.empty() ? "" : " not read by the model: " + mtl::detail::join(unknown),
                "; the model reads sparse fields ", mtl::detail::join(field_names(bundle_.schema.sparse_fields())),
                " and dense fields ",
                bundle_.schema.num_dense() ? mtl::detail::join(field_names(bundle_.schema.dense_fields())) : "(none)");
    int64_t n = -1;
    std::string first;
    auto check_length = [&](const std::string& name, size_t size) {
      if (n < 0) n = static_cast<int64_t>(size), first = name;
      TORCH_CHECK(static_cast<int64_t>(size) == n, "the request's fields differ in length: '", first, "' holds ", n,
                  " values, '", name, "' holds ", size);
    };
    for (const auto& f : bundle_.schema.sparse_fields()) check_length(f.name, rows.sparse.at(f.name).size());
    for (const auto& f : bundle_.schema.dense_fields()) check_length(f.name, rows.dense.at(f.name).size());
    TORCH_CHECK(n > 0, "the request holds no rows");
    return n;
  }

  template <class Fields>
  static std::vector<std::string> field_names(const Fields& fields) {
    std::vector<std::string> names;
    for (const auto& f : fields) names.push_back(f.name);
    return names;
  }

  ModelBundle bundle_;
  PredictorOptions options_;
  std::shared_ptr<torch::nn::Module> module_;
  std::function<TaskLogits(const FeatureInputs&)> forward_;
  std::unordered_map<std::string, size_t> sparse_index_, dense_index_;
};

}  // namespace mtl::serving
