// A model as an ONNX file that ONNX Runtime, Triton or any ONNX server runs
// without mtl: the graph takes raw ids and dense values by field name, maps
// ids to embedding rows with the bundle's vocabularies (ai.onnx.ml
// LabelEncoder; an id the training data did not keep takes the rare-id row),
// and returns each head's probability (p_<head>, every head of the model) and
// p_ctcvr, as `Predictor` does for the ctr and cvr heads.
// Needs ONNX's C++ library (Debian's libonnx-dev; the CMake target
// mtl::onnx), which also checks the model before it is written.
//
// Example:
//   auto bundle = mtl::serving::load_bundle("model.mtl");
//   mtl::serving::write_onnx(bundle, "model.onnx");
//   // inputs: one int64 [batch] per sparse field, one float [batch] per dense field
//   // outputs: p_ctr, p_cvr, p_ctcvr, float [batch]
#pragma once

#include <mtl/data/vocabulary.hpp>
#include <mtl/detail/onnx_graph.hpp>
#include <mtl/detail/onnx_modules.hpp>
#include <mtl/features.hpp>
#include <mtl/io/file_io.hpp>
#include <mtl/model.hpp>
#include <mtl/model_spec.hpp>
#include <mtl/serving/bundle.hpp>
#include <mtl/version.hpp>

// <sys/mman.h> defines MAP_TYPE, a name ONNX's parser header uses for an enumerator.
#pragma push_macro("MAP_TYPE")
#undef MAP_TYPE
#include <onnx/checker.h>
#pragma pop_macro("MAP_TYPE")
#include <onnx/onnx_pb.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>
#include <string>
#include <type_traits>
#include <vector>

namespace mtl::serving {

/// ONNX operator set versions the graph is written for.
inline constexpr int64_t kOnnxOpset = 17;
inline constexpr int64_t kOnnxMlOpset = 3;
/// The IR version of opset 17, the oldest that runtimes must read for this graph.
inline constexpr int64_t kOnnxIrVersion = 8;

namespace detail {

/// Raw ids [batch] of one field -> its embedding rows: through the vocabulary,
/// or (no vocabulary: ids are rows) ids outside [0, vocab_size) to row 0.
inline std::string onnx_field_rows(mtl::detail::OnnxGraph& g, const SparseField& field,
                                   const data::Vocabulary* vocabulary) {
  const auto hint = "rows." + field.name;
  if (vocabulary == nullptr) {
    const auto zero = g.ints(hint + ".zero", {0});
    const auto inside = g.node(
        "And",
        {g.node("GreaterOrEqual", {field.name, zero}, hint + ".from_zero"),
         g.node("Less", {field.name, g.ints(hint + ".vocab_size", {field.vocab_size})}, hint + ".below_vocab_size")},
        hint + ".in_vocabulary");
    return g.node("Where", {inside, field.name, zero}, hint);
  }
  if (vocabulary->ids().empty()) return g.node("Sub", {field.name, field.name}, hint);  // every id is rare
  std::vector<int64_t> rows(vocabulary->ids().size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i + 1);
  return g.node("LabelEncoder", {field.name}, hint,
                {{"keys_int64s", vocabulary->ids()}, {"values_int64s", rows}, {"default_int64", int64_t{0}}},
                "ai.onnx.ml");
}

}  // namespace detail

/// `model` (eval-mode forward, float32 weights) as an ONNX model. `schema` names
/// the inputs; `vocabularies` (one per sparse field, or none when the ids are
/// rows already) map raw ids to rows. A model with a module that has no ONNX
/// rule is refused, naming the module.
template <class Backbone, class Mixer>
onnx::ModelProto to_onnx(const MultiTaskModel<Backbone, Mixer>& model, const FeatureSchema& schema,
                         const std::vector<data::Vocabulary>& vocabularies) {
  TORCH_CHECK(vocabularies.empty() || static_cast<int64_t>(vocabularies.size()) == schema.num_sparse(),
              "ONNX export expects one vocabulary per sparse field (", schema.num_sparse(), ") or none, but got ",
              vocabularies.size());
  for (size_t f = 0; f < vocabularies.size(); ++f)
    TORCH_CHECK(vocabularies[f].size() == schema.sparse_fields()[f].vocab_size,
                "ONNX export: the vocabulary of field '", schema.sparse_fields()[f].name, "' maps to ",
                vocabularies[f].size(), " rows, but the field has ", schema.sparse_fields()[f].vocab_size);
  for (const auto& p : model->parameters())
    TORCH_CHECK(p.scalar_type() == torch::kFloat, "ONNX export writes float32 weights, but the model holds ",
                p.scalar_type(), " ones");
  onnx::ModelProto proto;
  proto.set_ir_version(kOnnxIrVersion);
  proto.set_producer_name("mtl");
  proto.set_producer_version(version());
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  auto* ml = proto.add_opset_import();
  ml->set_domain("ai.onnx.ml");
  ml->set_version(kOnnxMlOpset);
  auto& graph = *proto.mutable_graph();
  graph.set_name("mtl");
  mtl::detail::OnnxGraph g(graph);

  // Every input first, so that no value made on the way takes an input's name.
  for (const auto& field : schema.sparse_fields()) g.input(field.name, onnx::TensorProto::INT64, {-1});
  for (const auto& field : schema.dense_fields()) g.input(field.name, onnx::TensorProto::FLOAT, {-1});
  std::vector<std::string> rows, dense;
  for (size_t f = 0; f < schema.sparse_fields().size(); ++f) {
    const auto& field = schema.sparse_fields()[f];
    rows.push_back(g.unsqueeze(detail::onnx_field_rows(g, field, vocabularies.empty() ? nullptr : &vocabularies[f]), 1,
                               "rows." + field.name + ".column"));
  }
  for (const auto& field : schema.dense_fields())
    dense.push_back(g.unsqueeze(field.name, 1, "dense." + field.name + ".column"));
  const auto& impl = *model;
  std::string representation;
  if constexpr (std::is_same_v<typename Backbone::ContainedType, DeepFMImpl>)
    representation = mtl::detail::onnx_deepfm(g, *impl.backbone, g.concat(rows, 1, "rows"),
                                              dense.empty() ? std::string() : g.concat(dense, 1, "dense"));
  else
    TORCH_CHECK(false, "ONNX export has no rule for the backbone ", impl.backbone->name(), "; mtl exports DeepFM");
  TORCH_CHECK(!impl.transfer, "ONNX export has no rule for the towers' adaptive information transfer (AITM)");
  const auto per_task = mtl::detail::onnx_mixer(g, *impl.mixer, representation);
  const auto& tasks = impl.options.tasks();
  std::string p_ctr, p_cvr;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const auto p = mtl::detail::onnx_tower(g, *impl.towers->ptr(t)->template as<TowerImpl>(), per_task[t],
                                           "towers." + std::to_string(t));
    g.output(p, "p_" + tasks[t], onnx::TensorProto::FLOAT, {-1});
    if (tasks[t] == "ctr") p_ctr = "p_" + tasks[t];
    if (tasks[t] == "cvr") p_cvr = "p_" + tasks[t];
  }
  if (!p_ctr.empty() && !p_cvr.empty())
    g.output(g.node("Mul", {p_ctr, p_cvr}, "p_ctcvr"), "p_ctcvr", onnx::TensorProto::FLOAT, {-1});
  return proto;
}

/// The bundle's model as an ONNX model (see `to_onnx` above), its spec and
/// label names in the model's metadata.
inline onnx::ModelProto to_onnx(const ModelBundle& bundle) {
  onnx::ModelProto proto;
  with_bundle_model(bundle, [&](auto model) { proto = to_onnx(model, bundle.schema, bundle.vocabularies); });
  auto add_metadata = [&](const std::string& key, const std::string& value) {
    auto* entry = proto.add_metadata_props();
    entry->set_key(key);
    entry->set_value(value);
  };
  add_metadata("mtl.model", to_json(bundle.model).dump());
  add_metadata("mtl.labels",
               nlohmann::json{{"click", bundle.click_label}, {"conversion", bundle.conversion_label}}.dump());
  if (bundle.metadata.contains("experiment")) add_metadata("mtl.experiment", bundle.metadata["experiment"].dump());
  return proto;
}

/// Checks `proto` with ONNX's checker and writes it to `path` atomically.
inline void write_onnx(const onnx::ModelProto& proto, const std::string& path) {
  try {
    onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "ONNX's checker refuses the exported model: ", e.what());
  }
  const auto bytes = proto.ByteSizeLong();
  TORCH_CHECK(bytes <= static_cast<size_t>(INT_MAX), "the ONNX model is ", bytes,
              " bytes, but one ONNX protobuf file holds at most 2 GiB");
  io::atomic_write(path, proto.SerializeAsString());
}

inline void write_onnx(const ModelBundle& bundle, const std::string& path) { write_onnx(to_onnx(bundle), path); }

}  // namespace mtl::serving
