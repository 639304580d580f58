// A model's metrics on a dataset, computed in fp32 whatever the training
// precision (bf16 scores would tie many rows): one pass of predictions, the
// mean loss, and for a gated mixer its gate weights and expert outputs. With
// replicas, every rank scores its share of the rows and gets the metrics of
// all of them.
#pragma once

#include <mtl/data/batch_loader.hpp>
#include <mtl/data/dataset.hpp>
#include <mtl/metrics/multitask_metrics.hpp>
#include <mtl/mixer.hpp>
#include <mtl/train/expert_health.hpp>
#include <mtl/train/objective.hpp>
#include <mtl/train/replicas.hpp>

#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace mtl::train {

struct EvaluationOptions {
  torch::Device device = torch::Device(torch::kCPU);
  int64_t batch_size = 8192;
  /// The sparse field whose ids group rows for GAUC (a user id); empty, or a field the schema lacks: no GAUC.
  std::string gauc_group_field;
  /// The ranks that share the rows (null: this process alone).
  Replicas* replicas = nullptr;
};

namespace detail {
template <class Model>
using MixerOf = typename decltype(std::declval<Model&>()->mixer)::ContainedType;

inline void append_column(std::vector<float>& out, const torch::Tensor& t) {
  auto c = t.detach().cpu().contiguous();
  out.insert(out.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}
}  // namespace detail

/// A record of the model's gates and experts; a mixer without gates has none.
template <class Model>
ExpertHealth make_expert_health(Model& model) {
  if constexpr (is_gated_mixer_v<detail::MixerOf<Model>>)
    return ExpertHealth(model->options.tasks(), model->mixer->gate_expert_names(), model->mixer->expert_names());
  else
    return ExpertHealth(model->options.tasks(), {}, {});
}

/// Metrics (and mean loss) of `model` on `dataset`; feeds `health` with gate
/// weights when given (with replicas, this rank's share) and keeps the
/// prediction columns in `keep` when given. With replicas, every rank must call it.
template <class Model>
std::map<std::string, metrics::MetricValue> evaluate(Model& model, const Objective& objective,
                                                     const data::Dataset& dataset, const EvaluationOptions& options,
                                                     ExpertHealth* health = nullptr,
                                                     metrics::PredictionColumns* keep = nullptr) {
  using Mixer = detail::MixerOf<Model>;
  torch::NoGradGuard no_grad;
  model->eval();
  if constexpr (is_gated_mixer_v<Mixer>) model->mixer->record_expert_outputs(health != nullptr);
  metrics::PredictionColumns columns;
  double loss_sum = 0;
  Replicas* replicas = options.replicas;
  const auto [begin, end] = replicas ? share_range(dataset.num_rows(), replicas->rank(), replicas->world_size())
                                     : std::pair<int64_t, int64_t>{0, dataset.num_rows()};
  data::for_each_batch(dataset, begin, end, options.batch_size, [&](const data::TrainingBatch& cpu_batch, int64_t) {
    auto batch = cpu_batch.to(options.device);
    const TaskLogits logits = model->forward(batch.features);  // no autocast: fp32
    const LossTerms loss = objective(logits, batch);
    loss_sum += loss.total.template item<double>() * static_cast<double>(batch.size());
    if (objective.has_ctr()) detail::append_column(columns.p_ctr, torch::sigmoid(logits.at("ctr").to(torch::kFloat)));
    if (objective.has_cvr()) detail::append_column(columns.p_cvr, torch::sigmoid(logits.at("cvr").to(torch::kFloat)));
    if constexpr (is_gated_mixer_v<Mixer>)
      if (health) health->add(model->mixer->gate_weights(), model->mixer->recorded_expert_outputs());
  });
  if constexpr (is_gated_mixer_v<Mixer>) model->mixer->record_expert_outputs(false);
  model->train();
  if (replicas) {  // every rank gets every rank's predictions, and so the same metrics
    if (objective.has_ctr()) columns.p_ctr = replicas->gather(columns.p_ctr);
    if (objective.has_cvr()) columns.p_cvr = replicas->gather(columns.p_cvr);
    auto total = torch::tensor({loss_sum}, torch::kDouble);
    replicas->sum(total);
    loss_sum = total.item<double>();
  }
  columns.click = dataset.click;
  columns.conversion = dataset.conversion;
  if (!dataset.truth.empty()) {
    columns.true_p_click = dataset.truth.p_click;
    columns.true_p_cvr = dataset.truth.p_cvr;
    columns.counterfactual_conversion = dataset.truth.counterfactual_conversion;
  }
  if (!options.gauc_group_field.empty())
    if (auto group = dataset.schema().sparse_index(options.gauc_group_field)) {
      const int64_t f = dataset.schema().num_sparse();
      for (int64_t r = 0; r < dataset.num_rows(); ++r) columns.user.push_back(dataset.ids[r * f + *group]);
    }
  auto m = metrics::evaluate_predictions(columns);
  m["loss"] = dataset.num_rows() > 0 ? metrics::MetricValue::of(loss_sum / dataset.num_rows())
                                     : metrics::MetricValue::undefined("no rows");
  if (keep) *keep = std::move(columns);
  return m;
}

}  // namespace mtl::train
