// A trained model in one file: what it is (a ModelSpec), what it reads (the
// feature schema and the label names), how raw ids become embedding rows
// (the vocabularies), its weights, and metadata (versions, metrics, the
// training config). The file is a torch.save-compatible dict of tensors with
// a checksum, written atomically, so Python's torch.load reads it and a
// damaged file is refused.
#pragma once

#include <mtl/data/vocabulary.hpp>
#include <mtl/features.hpp>
#include <mtl/io/checkpoint.hpp>
#include <mtl/model_spec.hpp>
#include <mtl/version.hpp>

#include <c10/util/Exception.h>
#include <torch/version.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace mtl::serving {

/// The layout of the file; a bundle of another format is refused.
inline constexpr int kBundleFormat = 1;

struct ModelBundle {
  ModelSpec model;
  FeatureSchema schema;
  /// Raw id -> embedding row, one per sparse field. Empty when the training
  /// data's ids were rows already (synthetic data): then an id in
  /// [0, vocab_size) is its own row and any other id takes row 0.
  std::vector<data::Vocabulary> vocabularies;
  /// The label columns of the data the model was trained on.
  std::string click_label = "click", conversion_label = "conversion";
  /// The model's parameters and buffers by name.
  io::TensorDict weights;
  /// Free-form facts: the resolved training config, metrics, where it came from.
  nlohmann::json metadata = nlohmann::json::object();
  /// Set by `load_bundle`: the versions that wrote the file.
  std::string written_by_mtl, written_by_libtorch;
};

namespace detail {
inline constexpr const char* kBundleHeaderKey = "bundle.json";
inline constexpr const char* kWeightPrefix = "weight/";
inline constexpr const char* kVocabularyPrefix = "vocabulary/";

inline nlohmann::json schema_to_json(const FeatureSchema& schema) {
  auto sparse = nlohmann::json::array(), dense = nlohmann::json::array();
  for (const auto& f : schema.sparse_fields())
    sparse.push_back({{"name", f.name}, {"vocab_size", f.vocab_size}, {"embedding_dim", f.embedding_dim}});
  for (const auto& f : schema.dense_fields()) dense.push_back(f.name);
  return {{"default_embedding_dim", schema.default_embedding_dim()}, {"sparse", sparse}, {"dense", dense}};
}

inline FeatureSchema schema_from_json(const nlohmann::json& j) {
  FeatureSchema schema(j.at("default_embedding_dim").get<int64_t>());
  for (const auto& f : j.at("sparse"))
    schema.add_sparse(f.at("name").get<std::string>(), f.at("vocab_size").get<int64_t>(),
                      f.at("embedding_dim").get<int64_t>());
  for (const auto& name : j.at("dense")) schema.add_dense(name.get<std::string>());
  return schema;
}
}  // namespace detail

/// Writes `bundle` to `path` atomically (a kill leaves no half-written file).
inline void save_bundle(const std::string& path, const ModelBundle& bundle) {
  TORCH_CHECK(
      bundle.vocabularies.empty() || static_cast<int64_t>(bundle.vocabularies.size()) == bundle.schema.num_sparse(),
      "save_bundle expects one vocabulary per sparse field (", bundle.schema.num_sparse(), "), but got ",
      bundle.vocabularies.size());
  const nlohmann::json header{{"format", kBundleFormat},
                              {"mtl_version", version()},
                              {"libtorch_version", TORCH_VERSION},
                              {"model", to_json(bundle.model)},
                              {"schema", detail::schema_to_json(bundle.schema)},
                              {"identity_vocabularies", bundle.vocabularies.empty()},
                              {"labels", {{"click", bundle.click_label}, {"conversion", bundle.conversion_label}}},
                              {"metadata", bundle.metadata}};
  io::TensorDict entries;
  entries.insert(detail::kBundleHeaderKey, io::bytes_tensor(header.dump()));
  for (size_t j = 0; j < bundle.vocabularies.size(); ++j) {
    entries.insert(detail::kVocabularyPrefix + bundle.schema.sparse_fields()[j].name,
                   torch::tensor(bundle.vocabularies[j].ids(), torch::kLong));
  }
  for (const auto& w : bundle.weights) entries.insert(detail::kWeightPrefix + w.key(), w.value());
  io::save_tensor_dict(path, entries);
}

/// Reads a bundle; refuses, naming the file, one that is damaged, of another
/// format, or inconsistent (a vocabulary whose size differs from its field's).
inline ModelBundle load_bundle(const std::string& path) {
  io::TensorDict entries;
  try {
    entries = io::load_tensor_dict(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "cannot load model bundle '", path, "': ", e.what_without_backtrace());
  }
  TORCH_CHECK(entries.contains(detail::kBundleHeaderKey), "'", path,
              "' is not an mtl model bundle (it has no bundle.json entry; a checkpoint is exported to a bundle by "
              "`interview_chain export`)");
  ModelBundle bundle;
  try {
    const auto header = nlohmann::json::parse(io::tensor_bytes(entries.at(detail::kBundleHeaderKey)));
    const int format = header.at("format").get<int>();
    bundle.written_by_mtl = header.at("mtl_version").get<std::string>();
    bundle.written_by_libtorch = header.at("libtorch_version").get<std::string>();
    TORCH_CHECK(format == kBundleFormat, "model bundle '", path, "' has format ", format, " (written by mtl ",
                bundle.written_by_mtl, "), but mtl ", version(), " reads format ", kBundleFormat,
                "; export it again with this version");
    bundle.model = model_spec_from_json(header.at("model"));
    bundle.schema = detail::schema_from_json(header.at("schema"));
    bundle.click_label = header.at("labels").at("click").get<std::string>();
    bundle.conversion_label = header.at("labels").at("conversion").get<std::string>();
    bundle.metadata = header.at("metadata");
    if (!header.at("identity_vocabularies").get<bool>()) {
      for (const auto& field : bundle.schema.sparse_fields()) {
        const auto key = detail::kVocabularyPrefix + field.name;
        TORCH_CHECK(entries.contains(key), "model bundle '", path, "' has no vocabulary for field '", field.name, "'");
        const auto ids = entries.at(key).contiguous();
        TORCH_CHECK(ids.scalar_type() == torch::kLong && ids.dim() == 1 && ids.numel() + 1 == field.vocab_size,
                    "model bundle '", path, "': the vocabulary of field '", field.name, "' holds ", ids.numel(),
                    " ids, but the field has ", field.vocab_size, " rows (ids + the rare-id row)");
        data::Vocabulary vocabulary;
        vocabulary.set_ids(std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()));
        bundle.vocabularies.push_back(std::move(vocabulary));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "model bundle '", path, "' has a header that does not read: ", e.what());
  }
  const std::string prefix = detail::kWeightPrefix;
  for (const auto& entry : entries)
    if (entry.key().compare(0, prefix.size(), prefix) == 0)
      bundle.weights.insert(entry.key().substr(prefix.size()), entry.value());
  return bundle;
}

/// Builds the bundle's model, loads its weights, puts it in eval mode and hands
/// it to `fn` (one of the model types `with_model` builds).
template <class Fn>
void with_bundle_model(const ModelBundle& bundle, Fn&& fn) {
  with_model(bundle.model, bundle.schema, [&](auto model) {
    io::load_module_state(*model, bundle.weights, "", "model bundle");
    model->eval();
    fn(model);
  });
}

}  // namespace mtl::serving
