// Each module's forward in eval mode as ONNX nodes (dropout is the identity
// there): one function per module, reading the module's own parameters, so
// that the graph computes what `forward` computes. A module without a rule
// stops the export with its name.
#pragma once

#include <mtl/aligner.hpp>
#include <mtl/cross_net_v2.hpp>
#include <mtl/deepfm.hpp>
#include <mtl/detail/onnx_graph.hpp>
#include <mtl/expert.hpp>
#include <mtl/functional/expert_mixing.hpp>
#include <mtl/gate.hpp>
#include <mtl/mlp.hpp>
#include <mtl/mmoe.hpp>
#include <mtl/ple.hpp>
#include <mtl/shared_bottom.hpp>
#include <mtl/tower.hpp>

#include <torch/nn/modules/linear.h>

#include <string>
#include <utility>
#include <vector>

namespace mtl::detail {

inline std::string onnx_linear(OnnxGraph& g, const torch::nn::LinearImpl& layer, const std::string& x,
                               const std::string& hint) {
  return g.gemm(x, layer.weight, layer.options.bias() ? layer.bias : torch::Tensor(), hint);
}

inline std::string onnx_mlp(OnnxGraph& g, const MLPImpl& mlp, std::string x, const std::string& hint) {
  const size_t n = mlp.layers->size();
  for (size_t i = 0; i < n; ++i) {
    const auto at = hint + ".layers." + std::to_string(i);
    x = onnx_linear(g, *mlp.layers->ptr(i)->as<torch::nn::Linear>(), x, at);
    if (i + 1 < n || mlp.options.activate_last()) x = g.node("Relu", {x}, at + ".relu");
  }
  return x;
}

/// x_{l+1} = x0 * (W_l x_l + b_l) + x_l, W_l = U_l V_l^T when low rank.
inline std::string onnx_cross_net(OnnxGraph& g, const CrossNetV2Impl& cross, const std::string& x0,
                                  const std::string& hint) {
  std::string x = x0;
  for (int64_t l = 0; l < cross.options.num_layers(); ++l) {
    const auto at = hint + ".layers." + std::to_string(l);
    std::string h = x;
    if (cross.options.low_rank() > 0) h = onnx_linear(g, *cross.down->ptr(l)->as<torch::nn::Linear>(), x, at + ".down");
    const auto u = onnx_linear(g, *cross.up->ptr(l)->as<torch::nn::Linear>(), h, at + ".up");
    x = g.node("Add", {g.node("Mul", {x0, u}, at + ".cross"), x}, at);
  }
  return x;
}

inline std::string onnx_expert(OnnxGraph& g, const ExpertImpl& expert, const std::string& x, const std::string& hint) {
  const auto natural = expert.options.kind() == ExpertKind::mlp ? onnx_mlp(g, *expert.mlp, x, hint + ".mlp")
                                                                : onnx_cross_net(g, *expert.cross, x, hint + ".cross");
  return onnx_linear(g, *expert.projection, natural, hint + ".projection");
}

/// Expert i on inputs[i], stacked: [batch, num_experts, dim].
inline std::string onnx_experts(OnnxGraph& g, const std::vector<Expert>& experts,
                                const std::vector<std::string>& inputs, const std::vector<std::string>& hints,
                                const std::string& hint) {
  std::vector<std::string> columns;
  for (size_t e = 0; e < experts.size(); ++e)
    columns.push_back(g.unsqueeze(onnx_expert(g, *experts[e], inputs[e], hints[e]), 1, hints[e] + ".column"));
  return g.concat(columns, 1, hint);
}

/// LayerNorm over the last axis without affine terms, times each expert's scale.
inline std::string onnx_aligner(OnnxGraph& g, const ExpertOutputAlignerImpl& aligner, const std::string& outputs,
                                const std::string& hint) {
  const int64_t dim = aligner.options.dim(), experts = aligner.options.num_experts();
  const auto normalized =
      g.node("LayerNormalization",
             {outputs, g.initializer(hint + ".unit_scale", torch::ones({dim})),
              g.initializer(hint + ".zero_bias", torch::zeros({dim}))},
             hint + ".normalized", {{"axis", int64_t{-1}}, {"epsilon", static_cast<float>(aligner.options.eps())}});
  return g.node(
      "Mul",
      {normalized, g.initializer(hint + ".scale", aligner.scale.detach().to(torch::kFloat).view({1, experts, 1}))},
      hint);
}

inline std::string onnx_align_if(OnnxGraph& g, const ExpertOutputAligner& aligner, const std::string& outputs,
                                 const std::string& hint) {
  return aligner ? onnx_aligner(g, *aligner, outputs, hint) : outputs;
}

inline std::string onnx_gate(OnnxGraph& g, const GateImpl& gate, const std::string& x, const std::string& hint) {
  return g.node("Softmax", {onnx_linear(g, *gate.scorer, x, hint + ".scorer")}, hint, {{"axis", int64_t{1}}});
}

/// Gate weights [batch, K] over experts `chosen` of `experts` [batch, E, dim] -> [batch, dim].
inline std::string onnx_mix(OnnxGraph& g, const std::string& experts, int64_t num_experts, const std::string& weights,
                            const std::vector<int64_t>& chosen, const std::string& hint) {
  std::string picked = experts;
  if (chosen != first_experts(num_experts))
    picked = g.node("Gather", {experts, g.ints(hint + ".experts", chosen)}, hint + ".picked", {{"axis", int64_t{1}}});
  const auto weighted = g.node("Mul", {picked, g.unsqueeze(weights, 2, hint + ".weights")}, hint + ".weighted");
  return g.reduce_sum(weighted, 1, /*keep_dims=*/false, hint);
}

// Mixers: x [batch, input_dim] -> one [batch, output_dim] per task.

inline std::vector<std::string> onnx_mixer(OnnxGraph& g, const SharedBottomImpl& mixer, const std::string& x) {
  auto out = onnx_mlp(g, *mixer.bottom, x, "mixer.bottom");
  if (mixer.aligner)
    out = g.squeeze(onnx_aligner(g, *mixer.aligner, g.unsqueeze(out, 1, "mixer.bottom.column"), "mixer.aligner"), 1,
                    "mixer.aligned");
  return std::vector<std::string>(mixer.num_tasks(), out);
}

inline std::vector<std::string> onnx_mixer(OnnxGraph& g, const MMoEImpl& mixer, const std::string& x) {
  const auto experts = experts_in(*mixer.experts);
  std::vector<std::string> hints;
  for (size_t e = 0; e < experts.size(); ++e) hints.push_back("mixer.experts." + std::to_string(e));
  const auto num_experts = static_cast<int64_t>(experts.size());
  const auto outputs = onnx_align_if(
      g, mixer.aligner, onnx_experts(g, experts, std::vector<std::string>(experts.size(), x), hints, "mixer.experts"),
      "mixer.aligner");
  std::vector<std::string> mixed;
  for (size_t t = 0; t < mixer.gates->size(); ++t) {
    const auto at = "mixer.gates." + std::to_string(t);
    mixed.push_back(onnx_mix(g, outputs, num_experts, onnx_gate(g, *mixer.gates->ptr(t)->as<Gate>(), x, at),
                             first_experts(num_experts), at + ".mixed"));
  }
  return mixed;
}

/// One PLE level; the experts and gates in the order `PLELevelImpl::forward` runs them.
inline std::pair<std::vector<std::string>, std::string> onnx_ple_level(OnnxGraph& g, const PLELevelImpl& level,
                                                                       const std::vector<std::string>& task_inputs,
                                                                       const std::string& shared_input,
                                                                       const std::string& hint) {
  auto experts = experts_in(*level.shared_experts);
  const auto num_shared = static_cast<int64_t>(experts.size());
  std::vector<std::string> inputs(experts.size(), shared_input), hints;
  for (int64_t e = 0; e < num_shared; ++e) hints.push_back(hint + ".shared_experts." + std::to_string(e));
  std::vector<std::vector<int64_t>> chosen;
  for (size_t t = 0; t < task_inputs.size(); ++t) {
    const auto own = experts_in(*level.task_experts->ptr(t)->as<torch::nn::ModuleList>());
    auto gate_experts = first_experts(num_shared);
    for (size_t e = 0; e < own.size(); ++e) {
      gate_experts.push_back(static_cast<int64_t>(experts.size()));
      experts.push_back(own[e]);
      inputs.push_back(task_inputs[t]);
      hints.push_back(hint + ".task_experts." + std::to_string(t) + "." + std::to_string(e));
    }
    chosen.push_back(gate_experts);
  }
  const auto total = static_cast<int64_t>(experts.size());
  const auto outputs =
      onnx_align_if(g, level.aligner, onnx_experts(g, experts, inputs, hints, hint + ".experts"), hint + ".aligner");
  std::vector<std::string> tasks;
  for (size_t t = 0; t < task_inputs.size(); ++t) {
    const auto at = hint + ".task_gates." + std::to_string(t);
    tasks.push_back(onnx_mix(g, outputs, total, onnx_gate(g, *level.task_gates->ptr(t)->as<Gate>(), task_inputs[t], at),
                             chosen[t], at + ".mixed"));
  }
  std::string shared;
  if (level.shared_gate)
    shared = onnx_mix(g, outputs, total, onnx_gate(g, *level.shared_gate, shared_input, hint + ".shared_gate"),
                      first_experts(total), hint + ".shared_gate.mixed");
  return {tasks, shared};
}

inline std::vector<std::string> onnx_mixer(OnnxGraph& g, const PLEImpl& mixer, const std::string& x) {
  std::vector<std::string> tasks(mixer.num_tasks(), x);
  std::string shared = x;
  for (size_t l = 0; l < mixer.levels->size(); ++l)
    std::tie(tasks, shared) =
        onnx_ple_level(g, *mixer.levels->ptr(l)->as<PLELevel>(), tasks, shared, "mixer.levels." + std::to_string(l));
  return tasks;
}

/// A mixer without a rule: the export stops, naming it.
template <class Mixer>
std::vector<std::string> onnx_mixer(OnnxGraph&, const Mixer& mixer, const std::string&) {
  TORCH_CHECK(false, "ONNX export has no rule for the mixer ", mixer.name(),
              "; mtl exports SharedBottom, MMoE and PLE");
}

/// DeepFM on embedding rows [batch, fields] (each field's own row, before its
/// offset in the joint table) and dense values [batch, dense] ("" when none).
inline std::string onnx_deepfm(OnnxGraph& g, const DeepFMImpl& deepfm, const std::string& rows,
                               const std::string& dense) {
  const auto& schema = deepfm.options.schema();
  const int64_t fields = schema.num_sparse(), dim = deepfm.embedding->embedding_dim();
  const auto table_rows =
      g.node("Add", {rows, g.ints("backbone.embedding.row_offsets", schema.row_offsets())}, "backbone.embedding.rows");
  const auto looked_up =
      g.node("Gather", {g.initializer("backbone.embedding.weight", deepfm.embedding->weight), table_rows},
             "backbone.embedding.lookup", {{"axis", int64_t{0}}});
  const auto embeddings = g.slice(looked_up, 2, 0, dim, "backbone.embedding.vectors");
  auto first_order = g.reduce_sum(g.slice(looked_up, 2, dim, dim + 1, "backbone.embedding.first_order"), 1,
                                  /*keep_dims=*/false, "backbone.first_order.sparse");
  if (!dense.empty())
    first_order = g.node("Add", {first_order, onnx_linear(g, *deepfm.dense_linear, dense, "backbone.dense_linear")},
                         "backbone.first_order");
  // FM: 0.5 * ((sum_f v_f)^2 - sum_f v_f^2), per embedding column.
  const auto sum = g.reduce_sum(embeddings, 1, false, "backbone.fm.sum");
  const auto squares = g.reduce_sum(g.node("Mul", {embeddings, embeddings}, "backbone.fm.squares"), 1, false,
                                    "backbone.fm.sum_of_squares");
  const auto second_order = g.node(
      "Mul",
      {g.node("Sub", {g.node("Mul", {sum, sum}, "backbone.fm.square_of_sum"), squares}, "backbone.fm.difference"),
       g.initializer("backbone.fm.half", torch::tensor(0.5f))},
      "backbone.fm.second_order");
  auto deep_input = g.node("Reshape", {embeddings, g.ints("backbone.deep.input_shape", {0, fields * dim})},
                           "backbone.deep.embeddings");
  if (!dense.empty()) deep_input = g.concat({deep_input, dense}, 1, "backbone.deep.input");
  const auto deep = onnx_mlp(g, *deepfm.deep, deep_input, "backbone.deep");
  const auto fm_vector = g.concat({first_order, second_order}, 1, "backbone.fm.vector");
  return g.concat({deep, onnx_linear(g, *deepfm.fm_projection, fm_vector, "backbone.fm_projection")}, 1,
                  "backbone.representation");
}

/// A tower's probability [batch].
inline std::string onnx_tower(OnnxGraph& g, const TowerImpl& tower, const std::string& x, const std::string& hint) {
  const auto logit = onnx_linear(g, *tower.logit, onnx_mlp(g, *tower.hidden, x, hint + ".hidden"), hint + ".logit");
  return g.squeeze(g.node("Sigmoid", {logit}, hint + ".probability"), 1, hint + ".p");
}

}  // namespace mtl::detail
