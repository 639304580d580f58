// A DeepFM-backbone multi-task model described by plain values (mixer kind,
// layer widths, experts, heads), so that a model can be written to a file as
// JSON and built again from it: the trainer's config and a serving bundle
// describe the same model the same way.
#pragma once

#include <mtl/expert.hpp>
#include <mtl/features.hpp>
#include <mtl/model.hpp>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace mtl {

struct ModelSpec {
  /// "single" (one tower per head on the backbone), "sharedbottom", "mmoe" or "ple".
  std::string mixer = "ple";
  std::vector<int64_t> deep_hidden_dims{256, 128};
  int64_t fm_projection_dim = 16;
  bool sparse_grad = true;
  std::vector<std::string> heads{"ctr", "cvr"};
  std::vector<std::vector<int64_t>> tower_hidden_dims;   ///< one per head
  std::vector<int64_t> shared_bottom_dims;               ///< sharedbottom
  std::vector<ExpertOptions> shared_experts;             ///< mmoe, ple
  std::vector<std::vector<ExpertOptions>> task_experts;  ///< ple: one list per head
  int64_t expert_dim = 64;
  int64_t num_levels = 1;
  /// An `ExpertOutputAligner` on each expert's output (mmoe, ple) or on the bottom's output (single, sharedbottom).
  bool align_outputs = false;
  double aligner_dropout = 0.0;
  /// AITM's adaptive information transfer between the towers, in head order (MultiTaskModelOptions).
  bool adaptive_transfer = false;
};

namespace detail {
inline nlohmann::json expert_to_json(const ExpertOptions& e) {
  if (e.kind() == ExpertKind::mlp) return {{"kind", "mlp"}, {"hidden_dims", e.hidden_dims()}, {"dropout", e.dropout()}};
  return {{"kind", "cross"}, {"layers", e.cross_layers()}, {"low_rank", e.low_rank()}, {"dropout", e.dropout()}};
}

inline ExpertOptions expert_from_json(const nlohmann::json& j) {
  const auto kind = j.at("kind").get<std::string>();
  TORCH_CHECK(kind == "mlp" || kind == "cross", "a model spec's expert has kind '", kind, "', expected mlp or cross");
  auto e = kind == "mlp" ? ExpertOptions::mlp(j.at("hidden_dims").get<std::vector<int64_t>>())
                         : ExpertOptions::cross(j.at("layers").get<int64_t>(), j.at("low_rank").get<int64_t>());
  return e.dropout(j.at("dropout").get<double>());
}

inline nlohmann::json experts_to_json(const std::vector<ExpertOptions>& experts) {
  auto list = nlohmann::json::array();
  for (const auto& e : experts) list.push_back(expert_to_json(e));
  return list;
}

inline std::vector<ExpertOptions> experts_from_json(const nlohmann::json& j) {
  std::vector<ExpertOptions> experts;
  for (const auto& e : j) experts.push_back(expert_from_json(e));
  return experts;
}
}  // namespace detail

inline nlohmann::json to_json(const ModelSpec& s) {
  auto task_experts = nlohmann::json::array();
  for (const auto& list : s.task_experts) task_experts.push_back(detail::experts_to_json(list));
  return {{"mixer", s.mixer},
          {"deep_hidden_dims", s.deep_hidden_dims},
          {"fm_projection_dim", s.fm_projection_dim},
          {"sparse_grad", s.sparse_grad},
          {"heads", s.heads},
          {"tower_hidden_dims", s.tower_hidden_dims},
          {"shared_bottom_dims", s.shared_bottom_dims},
          {"shared_experts", detail::experts_to_json(s.shared_experts)},
          {"task_experts", task_experts},
          {"expert_dim", s.expert_dim},
          {"num_levels", s.num_levels},
          {"align_outputs", s.align_outputs},
          {"aligner_dropout", s.aligner_dropout},
          {"adaptive_transfer", s.adaptive_transfer}};
}

/// The spec written by `to_json`; a missing or mistyped entry is an error naming it.
inline ModelSpec model_spec_from_json(const nlohmann::json& j) {
  try {
    ModelSpec s;
    s.mixer = j.at("mixer").get<std::string>();
    TORCH_CHECK(s.mixer == "single" || s.mixer == "sharedbottom" || s.mixer == "mmoe" || s.mixer == "ple",
                "a model spec's mixer is '", s.mixer, "', expected single, sharedbottom, mmoe or ple");
    s.deep_hidden_dims = j.at("deep_hidden_dims").get<std::vector<int64_t>>();
    s.fm_projection_dim = j.at("fm_projection_dim").get<int64_t>();
    s.sparse_grad = j.at("sparse_grad").get<bool>();
    s.heads = j.at("heads").get<std::vector<std::string>>();
    s.tower_hidden_dims = j.at("tower_hidden_dims").get<std::vector<std::vector<int64_t>>>();
    s.shared_bottom_dims = j.at("shared_bottom_dims").get<std::vector<int64_t>>();
    s.shared_experts = detail::experts_from_json(j.at("shared_experts"));
    for (const auto& list : j.at("task_experts")) s.task_experts.push_back(detail::experts_from_json(list));
    s.expert_dim = j.at("expert_dim").get<int64_t>();
    s.num_levels = j.at("num_levels").get<int64_t>();
    s.align_outputs = j.at("align_outputs").get<bool>();
    s.aligner_dropout = j.at("aligner_dropout").get<double>();
    s.adaptive_transfer = j.value("adaptive_transfer", false);  // optional: a spec without it has no transfer
    return s;
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "a model spec does not read: ", e.what());
  }
}

/// Builds the model `spec` describes on `schema` and hands it to `fn` (each
/// mixer is its own model type, so `fn` is called with one of three).
template <class Fn>
void with_model(const ModelSpec& spec, const FeatureSchema& schema, Fn&& fn) {
  const auto backbone = DeepFMOptions(schema)
                            .deep_hidden_dims(spec.deep_hidden_dims)
                            .fm_projection_dim(spec.fm_projection_dim)
                            .sparse_grad(spec.sparse_grad);
  if (spec.mixer == "single" || spec.mixer == "sharedbottom") {
    const auto dims = spec.mixer == "single" ? std::vector<int64_t>{} : spec.shared_bottom_dims;
    fn(SharedBottomModel(
        SharedBottomModelOptions(
            backbone, SharedBottomOptions(0, 0).hidden_dims(dims).align_outputs(spec.align_outputs), spec.heads)
            .task_tower_hidden_dims(spec.tower_hidden_dims)
            .adaptive_transfer(spec.adaptive_transfer)));
  } else if (spec.mixer == "mmoe") {
    fn(MMoEModel(MMoEModelOptions(backbone,
                                  MMoEOptions(0, 0)
                                      .experts(spec.shared_experts)
                                      .expert_dim(spec.expert_dim)
                                      .align_outputs(spec.align_outputs)
                                      .aligner_dropout(spec.aligner_dropout),
                                  spec.heads)
                     .task_tower_hidden_dims(spec.tower_hidden_dims)
                     .adaptive_transfer(spec.adaptive_transfer)));
  } else {
    TORCH_CHECK(spec.mixer == "ple", "ModelSpec's mixer is '", spec.mixer,
                "', expected single, sharedbottom, mmoe or ple");
    fn(PLEModel(PLEModelOptions(backbone,
                                PLEOptions(0, 0)
                                    .shared_experts(spec.shared_experts)
                                    .task_experts(spec.task_experts)
                                    .expert_dim(spec.expert_dim)
                                    .num_levels(spec.num_levels)
                                    .align_outputs(spec.align_outputs)
                                    .aligner_dropout(spec.aligner_dropout),
                                spec.heads)
                    .task_tower_hidden_dims(spec.tower_hidden_dims)
                    .adaptive_transfer(spec.adaptive_transfer)));
  }
}

}  // namespace mtl
