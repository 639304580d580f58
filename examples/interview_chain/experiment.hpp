// A resolved experiment: the library's option types (ModelSpec,
// TrainerOptions, the optimizer's, the objective's, the synthetic data's),
// filled from a FieldTable by one table of fields, each with its setter, and
// checked for consistency before any training (ESMM with one head, negative
// down-sampling under ESMM, a primary key the experiment cannot produce, an
// empty expert list, out-of-range values), each error naming file and line.
#pragma once

#include "config.hpp"

#include <mtl/data/csv_reader.hpp>
#include <mtl/data/layout_rules.hpp>
#include <mtl/data/synthetic.hpp>
#include <mtl/esmm.hpp>
#include <mtl/expert.hpp>
#include <mtl/model_spec.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/train/objective.hpp>
#include <mtl/train/trainer.hpp>

#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace chain {

/// A resolved experiment: the library's option types, filled by the field table below.
struct ExperimentConfig {
  FieldTable fields;
  std::string id, description;

  // The data.
  std::string source, path, cache_dir;
  int64_t min_count = 1;
  int64_t embedding_dim = 8;
  mtl::data::LayoutRules layout;  ///< CSV sources: labels, features, dense columns
  /// CSV sources: a split file without a header line is detected by default; conversions without a click refused.
  mtl::data::CsvReadOptions csv_read = [] {
    mtl::data::CsvReadOptions o;
    o.header = mtl::data::HeaderLine::detect;
    o.conversion_without_click_advice = "in the config, data.labels.conversion_without_click: drop or as_click";
    return o;
  }();
  double valid_fraction = 0.1, test_fraction = 0.1;  ///< held out of training where a split's file is missing
  mtl::data::SyntheticOptions synthetic;
  int64_t train_rows = 2'000'000, valid_rows = 200'000, test_rows = 200'000;
  double neg_keep_prob_train = 1.0;
  std::string negative_sampling = "none";

  // What is trained, and how.
  mtl::ModelSpec model;
  mtl::train::ObjectiveOptions objective;
  mtl::optim::DualSparseDenseOptions optimizer;
  /// The trainer's options but the output folder, set per run (experiment_runner.hpp).
  mtl::train::TrainerOptions trainer{std::string()};
  bool amp_on_cpu = false;

  /// The sections of the mixer kinds, read into `model` once the kind is known (`read_experiment`).
  struct MixerSections {
    int64_t mmoe_experts = 4, mmoe_expert_dim = 64;
    std::vector<int64_t> mmoe_expert_hidden_dims{128};
    bool ple_hetero = false;
    int64_t ple_expert_dim = 64, ple_levels = 1, ple_shared_experts = 4, ple_private_experts = 1;
    std::vector<int64_t> ple_expert_hidden_dims{128};
    std::vector<mtl::ExpertOptions> ple_shared, ple_ctr, ple_cvr;
    std::optional<bool> align_outputs;  ///< unset: on for heterogeneous PLE experts, off otherwise
    std::map<std::string, std::vector<int64_t>> tower_hidden_dims;
  } sections;

  uint64_t data_seed() const { return synthetic.seed(); }
  uint64_t seed() const { return trainer.seed(); }
  /// Which draw of the synthetic training rows this seed reads: runtime.seed's offset from data.seed (0, the
  /// training split's own rows, where they are equal; --seeds' k-th seed reads draw k). Real data is reshuffled
  /// by runtime.seed instead.
  uint64_t training_draw() const { return seed() - data_seed(); }
  bool on_cuda() const { return trainer.device().is_cuda(); }
};

/// The metrics an experiment with these heads produces (what a primary key may name).
inline std::set<std::string> producible_aucs(const std::vector<std::string>& heads, bool synthetic) {
  const bool ctr = std::count(heads.begin(), heads.end(), "ctr") > 0;
  const bool cvr = std::count(heads.begin(), heads.end(), "cvr") > 0;
  std::set<std::string> keys;
  if (ctr) keys.insert({"auc_ctr", "gauc_ctr"});
  if (cvr) keys.insert("auc_cvr");
  if (cvr && synthetic) keys.insert("auc_cvr_entire_space");
  if (ctr && cvr) keys.insert("auc_ctcvr");
  return keys;
}

namespace detail {

inline mtl::ExpertOptions read_expert(const YAML::Node& item, const FieldValue& where) {
  const std::string at = FieldTable::place(where);
  try {  // every read of the expert's YAML inside: a key that is a list is a YAML::Exception too
    for (const auto& entry : item) {
      const auto key = entry.first.as<std::string>();
      TORCH_CHECK(key == "type" || key == "hidden_dims" || key == "layers" || key == "low_rank", at,
                  ": an expert has an unknown key '", key, "' (expected type, hidden_dims, layers, low_rank)");
    }
    const auto type = item["type"].as<std::string>();
    if (type == "mlp") {
      TORCH_CHECK(item["hidden_dims"] && item["hidden_dims"].IsSequence() && item["hidden_dims"].size() > 0, at,
                  ": an mlp expert needs hidden_dims, a non-empty list of widths");
      auto dims = item["hidden_dims"].as<std::vector<int64_t>>();
      for (auto d : dims) TORCH_CHECK(d > 0, at, ": expert widths must be positive, got ", d);
      return mtl::ExpertOptions::mlp(dims);
    }
    if (type == "cross") {
      const auto layers = item["layers"] ? item["layers"].as<int64_t>() : 0;
      TORCH_CHECK(layers >= 1, at, ": a cross expert needs layers >= 1, got ", layers);
      return mtl::ExpertOptions::cross(layers, item["low_rank"] ? item["low_rank"].as<int64_t>() : 0);
    }
    TORCH_CHECK(false, at, ": expert type '", type, "' is unknown (expected mlp or cross)");
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, at, ": an expert's value has the wrong type (", e.msg, ")");
  }
}

/// A field's value as T; a value that T cannot hold (a negative seed, say) fails naming the field.
template <class T>
T value(const FieldValue& v) {
  try {
    return v.node.as<T>();
  } catch (const YAML::Exception&) {
    YAML::Emitter shown;
    shown << YAML::Flow << v.node;
    TORCH_CHECK(false, FieldTable::place(v), ": field '", v.key, "' expects ", describe(known_fields().at(v.key)->type),
                ", got '", shown.c_str(), "'");
  }
}

/// Fails with the field's place, its key and `message` unless `ok`.
inline void require(bool ok, const FieldValue& v, const std::string& message) {
  TORCH_CHECK(ok, FieldTable::place(v), ": field '", v.key, "': ", message);
}

inline int64_t at_least_one(const FieldValue& v, const char* what) {
  const auto n = value<int64_t>(v);
  require(n >= 1, v, std::string("expected at least one ") + what + ", got " + std::to_string(n));
  return n;
}

inline int64_t positive(const FieldValue& v, const char* what) {
  const auto n = value<int64_t>(v);
  require(n > 0, v, std::string("expected a positive ") + what + ", got " + std::to_string(n));
  return n;
}

inline std::vector<mtl::ExpertOptions> experts(const FieldValue& v) {
  std::vector<mtl::ExpertOptions> out;
  for (const auto& item : v.node) out.push_back(read_expert(item, v));
  return out;
}

inline std::vector<int64_t> layers(const FieldValue& v) {
  auto dims = value<std::vector<int64_t>>(v);
  require(!dims.empty(), v, "expected at least one layer");
  return dims;
}

inline double share(const FieldValue& v) {
  const auto x = value<double>(v);
  require(x > 0 && x < 0.5, v, "expected a share of the training rows in (0, 0.5)");
  return x;
}

/// A field under analysis.equivalence_margin, checked: the report reads it from each run's config snapshot.
inline void check_margin(ExperimentConfig&, const FieldValue& v) {
  const auto margin = value<double>(v);
  require(margin > 0 && margin < 0.5, v, "expected an AUC difference in (0, 0.5)");
}

/// A field under loss.weights: the fixed weight of the term its key ends in.
inline void fixed_weight(ExperimentConfig& c, const FieldValue& v) {
  const auto weight = value<double>(v);
  require(std::isfinite(weight) && weight >= 0, v, "expected a weight >= 0");
  c.trainer.loss_weighting().fixed_weights()[v.key.substr(v.key.rfind('.') + 1)] = weight;
}

}  // namespace detail

inline const std::vector<FieldSpec>& field_specs() {
  using T = FieldType;
  using C = ExperimentConfig;
  using V = const FieldValue&;
  using namespace detail;
  // Each row: key, type, required, controlled across the seven, choices, setter; laid out as a table.
  // clang-format off
  static const std::vector<FieldSpec> specs{
      {"base", T::text},
      {"experiment.id", T::text, true, false, {}, [](C& c, V v) { c.id = value<std::string>(v); }},
      {"experiment.description", T::text, true, false, {}, [](C& c, V v) { c.description = value<std::string>(v); }},
      {"data.source", T::text, true, true, {"synthetic", "aliccp", "aliexpress"},
       [](C& c, V v) {
         c.source = value<std::string>(v);
         c.layout = c.source == "aliexpress" ? mtl::data::LayoutRules::aliexpress() : mtl::data::LayoutRules::aliccp();
       }},
      {"data.path", T::text, false, true, {}, [](C& c, V v) { c.path = value<std::string>(v); }},
      {"data.batch_size", T::integer, true, true, {},
       [](C& c, V v) { c.trainer.batch_size(positive(v, "batch size")); }},
      {"data.seed", T::integer, true, true, {}, [](C& c, V v) { c.synthetic.seed(value<uint64_t>(v)); }},
      {"data.neg_keep_prob_train", T::number, true, true, {},
       [](C& c, V v) {
         c.neg_keep_prob_train = value<double>(v);
         require(c.neg_keep_prob_train > 0 && c.neg_keep_prob_train <= 1, v,
                 "expected a probability in (0, 1]");
       }},
      {"data.min_count", T::integer, false, true, {},
       [](C& c, V v) {
         c.min_count = value<int64_t>(v);
         require(c.min_count >= 1, v, "expected >= 1");
       }},
      {"data.cache_dir", T::text, false, false, {}, [](C& c, V v) { c.cache_dir = value<std::string>(v); }},
      {"data.valid_fraction", T::number, false, true, {}, [](C& c, V v) { c.valid_fraction = share(v); }},
      {"data.test_fraction", T::number, false, true, {}, [](C& c, V v) { c.test_fraction = share(v); }},
      {"data.header", T::text, false, true, {"detect", "first_line", "from_train"},
       [](C& c, V v) {
         const auto h = value<std::string>(v);
         c.csv_read.header = h == "first_line"   ? mtl::data::HeaderLine::first_line
                             : h == "from_train" ? mtl::data::HeaderLine::absent
                                                 : mtl::data::HeaderLine::detect;
       }},
      {"data.labels.conversion_without_click", T::text, false, true, {"error", "drop", "as_click"},
       [](C& c, V v) {
         const auto policy = value<std::string>(v);
         c.csv_read.conversion_without_click = policy == "drop"       ? mtl::data::ConversionWithoutClick::drop
                                               : policy == "as_click" ? mtl::data::ConversionWithoutClick::as_click
                                                                      : mtl::data::ConversionWithoutClick::error;
       }},
      {"data.labels.click", T::text, false, true, {}, [](C& c, V v) { c.layout.click = value<std::string>(v); }},
      {"data.labels.conversion", T::text, false, true, {},
       [](C& c, V v) { c.layout.conversion = value<std::string>(v); }},
      {"data.features.sparse", T::text_list, false, true, {},
       [](C& c, V v) { c.layout.sparse = value<std::vector<std::string>>(v); }},
      {"data.features.dense", T::text_list, false, true, {},
       [](C& c, V v) { c.layout.dense = value<std::vector<std::string>>(v); }},
      {"data.features.ignored", T::text_list, false, true, {},
       [](C& c, V v) { c.layout.ignored = value<std::vector<std::string>>(v); }},
      {"data.synthetic.scenario", T::text, false, true, {"designed", "null"},
       [](C& c, V v) {
         c.synthetic.scenario(value<std::string>(v) == "null" ? mtl::data::SyntheticScenario::null
                                                               : mtl::data::SyntheticScenario::designed);
       }},
      {"data.synthetic.train_rows", T::integer, false, true, {},
       [](C& c, V v) { c.train_rows = positive(v, "row count"); }},
      {"data.synthetic.valid_rows", T::integer, false, true, {},
       [](C& c, V v) { c.valid_rows = positive(v, "row count"); }},
      {"data.synthetic.test_rows", T::integer, false, true, {},
       [](C& c, V v) { c.test_rows = positive(v, "row count"); }},
      {"data.synthetic.num_users", T::integer, false, true, {},
       [](C& c, V v) { c.synthetic.num_users(value<int64_t>(v)); }},
      {"data.synthetic.num_items", T::integer, false, true, {},
       [](C& c, V v) { c.synthetic.num_items(value<int64_t>(v)); }},
      {"data.synthetic.task_relatedness", T::number, false, true, {},
       [](C& c, V v) { c.synthetic.task_relatedness(value<double>(v)); }},
      {"data.synthetic.selection_latent_weight", T::number, false, true, {},
       [](C& c, V v) { c.synthetic.selection_latent_weight(value<double>(v)); }},
      {"data.synthetic.private_term_weight", T::number, false, true, {},
       [](C& c, V v) { c.synthetic.private_term_weight(value<double>(v)); }},
      {"data.synthetic.dense_product_weight", T::number, false, true, {},
       [](C& c, V v) { c.synthetic.dense_product_weight(value<double>(v)); }},
      {"data.synthetic.ctr_bias", T::number, false, true, {},
       [](C& c, V v) { c.synthetic.ctr_bias(value<double>(v)); }},
      {"data.synthetic.cvr_bias", T::number, false, true, {},
       [](C& c, V v) { c.synthetic.cvr_bias(value<double>(v)); }},
      {"data.synthetic.label_noise", T::number, false, true, {},
       [](C& c, V v) { c.synthetic.label_noise(value<double>(v)); }},
      {"sampling.negative_sampling", T::text, true, true, {"none", "random"},
       [](C& c, V v) { c.negative_sampling = value<std::string>(v); }},
      {"embedding.default_embedding_dim", T::integer, true, true, {},
       [](C& c, V v) { c.embedding_dim = positive(v, "width"); }},
      {"embedding.sparse_grad", T::boolean, true, true, {}, [](C& c, V v) { c.model.sparse_grad = value<bool>(v); }},
      {"model.backbone", T::text, true, true, {"deepfm"}},
      {"model.deep_hidden_dims", T::integer_list, true, true, {},
       [](C& c, V v) { c.model.deep_hidden_dims = layers(v); }},
      {"model.fm_projection_dim", T::integer, true, true, {},
       [](C& c, V v) { c.model.fm_projection_dim = positive(v, "width"); }},
      {"model.mixer", T::text, true, false, {"single", "sharedbottom", "mmoe", "ple"},
       [](C& c, V v) { c.model.mixer = value<std::string>(v); }},
      {"model.enabled_heads", T::text_list, true, false, {},
       [](C& c, V v) { c.model.heads = value<std::vector<std::string>>(v); }},
      {"model.tasks.ctr.tower_hidden_dims", T::integer_list, false, false, {},
       [](C& c, V v) { c.sections.tower_hidden_dims["ctr"] = value<std::vector<int64_t>>(v); }},
      {"model.tasks.cvr.tower_hidden_dims", T::integer_list, false, false, {},
       [](C& c, V v) { c.sections.tower_hidden_dims["cvr"] = value<std::vector<int64_t>>(v); }},
      {"model.tasks.imputation.tower_hidden_dims", T::integer_list, false, false, {},
       [](C& c, V v) { c.sections.tower_hidden_dims["imputation"] = value<std::vector<int64_t>>(v); }},
      {"model.shared_bottom.hidden_dims", T::integer_list, false, false, {},
       [](C& c, V v) { c.model.shared_bottom_dims = value<std::vector<int64_t>>(v); }},
      {"model.mmoe.num_experts", T::integer, false, false, {},
       [](C& c, V v) { c.sections.mmoe_experts = at_least_one(v, "expert"); }},
      {"model.mmoe.expert_hidden_dims", T::integer_list, false, false, {},
       [](C& c, V v) { c.sections.mmoe_expert_hidden_dims = layers(v); }},
      {"model.mmoe.expert_dim", T::integer, false, false, {},
       [](C& c, V v) { c.sections.mmoe_expert_dim = positive(v, "width"); }},
      {"model.ple.hetero_enabled", T::boolean, false, false, {},
       [](C& c, V v) { c.sections.ple_hetero = value<bool>(v); }},
      {"model.ple.num_levels", T::integer, false, false, {},
       [](C& c, V v) { c.sections.ple_levels = at_least_one(v, "level"); }},
      {"model.ple.expert_dim", T::integer, false, false, {},
       [](C& c, V v) { c.sections.ple_expert_dim = positive(v, "width"); }},
      {"model.ple.shared_experts", T::integer, false, false, {},
       [](C& c, V v) { c.sections.ple_shared_experts = at_least_one(v, "shared expert"); }},
      {"model.ple.private_experts_per_task", T::integer, false, false, {},
       [](C& c, V v) {
         c.sections.ple_private_experts = value<int64_t>(v);
         require(c.sections.ple_private_experts >= 0, v, "expected >= 0");
       }},
      {"model.ple.expert_hidden_dims", T::integer_list, false, false, {},
       [](C& c, V v) { c.sections.ple_expert_hidden_dims = layers(v); }},
      {"model.ple.experts.shared", T::expert_list, false, false, {},
       [](C& c, V v) { c.sections.ple_shared = experts(v); }},
      {"model.ple.experts.ctr", T::expert_list, false, false, {}, [](C& c, V v) { c.sections.ple_ctr = experts(v); }},
      {"model.ple.experts.cvr", T::expert_list, false, false, {}, [](C& c, V v) { c.sections.ple_cvr = experts(v); }},
      {"model.align_outputs", T::boolean, false, false, {},
       [](C& c, V v) { c.sections.align_outputs = value<bool>(v); }},
      {"model.aligner_dropout", T::number, false, false, {},
       [](C& c, V v) { c.model.aligner_dropout = value<double>(v); }},
      {"model.adaptive_transfer", T::boolean, false, false, {},
       [](C& c, V v) { c.model.adaptive_transfer = value<bool>(v); }},
      {"use_esmm", T::boolean, true, false, {}, [](C& c, V v) { c.objective.use_esmm(value<bool>(v)); }},
      {"loss.cvr_denominator", T::text, false, false, {"clicked_rows", "all_rows"},
       [](C& c, V v) {
         c.objective.cvr_denominator(value<std::string>(v) == "all_rows" ? mtl::train::CvrDenominator::all_rows
                                                                          : mtl::train::CvrDenominator::clicked_rows);
       }},
      {"loss.weighting", T::text, false, false, {"fixed", "uncertainty", "gradnorm"},
       [](C& c, V v) {
         const auto kind = value<std::string>(v);
         c.trainer.loss_weighting().kind(kind == "uncertainty" ? mtl::train::LossWeightingKind::uncertainty
                                         : kind == "gradnorm"  ? mtl::train::LossWeightingKind::gradnorm
                                                               : mtl::train::LossWeightingKind::fixed);
       }},
      {"loss.weights.ctr", T::number, false, false, {}, fixed_weight},
      {"loss.weights.cvr", T::number, false, false, {}, fixed_weight},
      {"loss.weights.ctcvr", T::number, false, false, {}, fixed_weight},
      {"loss.weights.cvr_aux", T::number, false, false, {}, fixed_weight},
      {"loss.weights.counterfactual", T::number, false, false, {}, fixed_weight},
      {"loss.weights.imputation", T::number, false, false, {}, fixed_weight},
      {"loss.weighted_terms", T::text_list, false, false, {},
       [](C& c, V v) { c.trainer.loss_weighting().terms(value<std::vector<std::string>>(v)); }},
      {"loss.weighting_lr", T::number, false, false, {},
       [](C& c, V v) {
         c.trainer.loss_weighting().lr(value<double>(v));
         require(c.trainer.loss_weighting().lr() > 0, v, "expected a learning rate > 0");
       }},
      {"loss.gradnorm_alpha", T::number, false, false, {},
       [](C& c, V v) {
         c.trainer.loss_weighting().gradnorm_alpha(value<double>(v));
         require(c.trainer.loss_weighting().gradnorm_alpha() >= 0, v, "expected alpha >= 0");
       }},
      {"loss.gradnorm_interval", T::integer, false, false, {},
       [](C& c, V v) { c.trainer.loss_weighting().gradnorm_interval(positive(v, "step count")); }},
      {"esmm.version", T::text, false, false, {"v1", "v2"},
       [](C& c, V v) {
         c.objective.esmm_version(value<std::string>(v) == "v1" ? mtl::ESMMVersion::v1 : mtl::ESMMVersion::v2);
       }},
      {"esmm.lambda_cvr_aux", T::number, false, false, {},
       [](C& c, V v) {
         c.objective.lambda_cvr_aux(value<double>(v));
         require(c.objective.lambda_cvr_aux() >= 0, v, "expected lambda >= 0");
       }},
      {"esmm.counterfactual", T::text, false, false, {"none", "ips", "dr"},
       [](C& c, V v) {
         const auto kind = value<std::string>(v);
         c.objective.counterfactual(kind == "ips"  ? mtl::ESMMCounterfactual::ips
                                    : kind == "dr" ? mtl::ESMMCounterfactual::dr
                                                   : mtl::ESMMCounterfactual::none);
       }},
      {"esmm.counterfactual_weight", T::number, false, false, {},
       [](C& c, V v) {
         c.objective.counterfactual_weight(value<double>(v));
         require(c.objective.counterfactual_weight() >= 0, v, "expected a weight >= 0");
       }},
      {"esmm.propensity_floor", T::number, false, false, {},
       [](C& c, V v) {
         c.objective.propensity_floor(value<double>(v));
         require(c.objective.propensity_floor() > 0 && c.objective.propensity_floor() <= 1, v,
                 "expected a floor in (0, 1]");
       }},
      {"optim.type", T::text, true, true, {"dual_sparse_dense"}},
      {"optim.sparse.lr", T::number, true, true, {},
       [](C& c, V v) {
         c.optimizer.sparse_lr(value<double>(v));
         require(c.optimizer.sparse_lr() >= 0, v, "expected a learning rate >= 0");
       }},
      {"optim.dense.lr", T::number, true, true, {},
       [](C& c, V v) {
         c.optimizer.dense_lr(value<double>(v));
         require(c.optimizer.dense_lr() >= 0, v, "expected a learning rate >= 0");
       }},
      {"optim.dense.weight_decay", T::number, false, false, {},
       [](C& c, V v) { c.optimizer.dense_weight_decay(value<double>(v)); }},
      {"lr_scheduler.type", T::text, true, true, {"cosine_warmup"}},
      {"lr_scheduler.warmup_steps", T::integer, true, true, {},
       [](C& c, V v) { c.optimizer.warmup_steps(value<int64_t>(v)); }},
      {"lr_scheduler.total_steps", T::integer, true, true, {},
       [](C& c, V v) { c.optimizer.total_steps(positive(v, "step count")); }},
      {"lr_scheduler.min_lr_ratio", T::number, false, false, {},
       [](C& c, V v) { c.optimizer.min_lr_ratio(value<double>(v)); }},
      {"runtime.seed", T::integer, true, true, {}, [](C& c, V v) { c.trainer.seed(value<uint64_t>(v)); }},
      {"runtime.max_train_steps", T::integer, true, true, {},
       [](C& c, V v) { c.trainer.max_train_steps(positive(v, "step count")); }},
      {"runtime.amp", T::boolean, true, true, {}, [](C& c, V v) { c.trainer.amp(value<bool>(v)); }},
      {"runtime.amp_on_cpu", T::boolean, false, false, {}, [](C& c, V v) { c.amp_on_cpu = value<bool>(v); }},
      {"runtime.eval_every", T::integer, true, false, {},
       [](C& c, V v) { c.trainer.eval_every(positive(v, "step count")); }},
      {"runtime.log_every", T::integer, false, false, {},
       [](C& c, V v) { c.trainer.log_every(positive(v, "step count")); }},
      {"runtime.eval_batch_size", T::integer, false, false, {},
       [](C& c, V v) { c.trainer.eval_batch_size(value<int64_t>(v)); }},
      {"runtime.device", T::text, false, false, {"cpu", "cuda"},
       [](C& c, V v) { c.trainer.device(torch::Device(value<std::string>(v))); }},
      {"runtime.threads", T::integer, false, false, {},
       [](C& c, V v) { c.trainer.threads(static_cast<int>(value<int64_t>(v))); }},
      {"runtime.best_selection.primary_key", T::text, true, false, {},
       [](C& c, V v) { c.trainer.primary_key(value<std::string>(v)); }},
      {"analysis.equivalence_margin.auc_ctr", T::number, false, true, {}, check_margin},
      {"analysis.equivalence_margin.auc_cvr", T::number, false, true, {}, check_margin},
      {"analysis.equivalence_margin.auc_ctcvr", T::number, false, true, {}, check_margin},
      {"analysis.equivalence_margin.auc_cvr_entire_space", T::number, false, true, {}, check_margin},
      // Renamed keys, refused with their new names.
      {"model.mtl", T::text, false, false, {}, nullptr, "model.mixer"},
      {"data.synthetic.private_signal", T::number, false, false, {}, nullptr, "data.synthetic.private_term_weight"},
      {"data.synthetic.cross_signal", T::number, false, false, {}, nullptr, "data.synthetic.dense_product_weight"},
      {"model.shared_bottom.output_align.enabled", T::boolean, false, false, {}, nullptr, "model.align_outputs"},
      {"model.mmoe.expert_output_align.enabled", T::boolean, false, false, {}, nullptr, "model.align_outputs"},
      {"model.mmoe.expert_output_align.dropout", T::number, false, false, {}, nullptr, "model.aligner_dropout"},
      {"model.ple.expert_output_align.enabled", T::boolean, false, false, {}, nullptr, "model.align_outputs"},
      {"model.ple.expert_output_align.dropout", T::number, false, false, {}, nullptr, "model.aligner_dropout"},
  };
  // clang-format on
  return specs;
}

/// Fails with the place of `path` (or the file) and `message`.
inline void refuse_if(bool bad, const FieldTable& f, const std::string& path, const std::string& message) {
  if (!bad) return;
  const std::string where = f.has(path) ? FieldTable::place(f.at(path)) : f.fields().begin()->second.file;
  TORCH_CHECK(false, where, ": field '", path, "': ", message);
}

/// The experiment `f` describes: every field through its setter, then the
/// mixer's section into the model and the checks that span several fields.
inline ExperimentConfig read_experiment(const FieldTable& f) {
  ExperimentConfig c;
  c.fields = f;
  for (const auto& spec : field_specs())  // in table order: data.source sets the layout its later keys adjust
    if (spec.set && f.has(spec.key)) spec.set(c, f.at(spec.key));

  refuse_if(c.source != "synthetic" && c.path.empty(), f, "data.source",
            "data.source '" + c.source + "' needs data.path, the folder of its CSV files");
  const bool all_negatives = c.neg_keep_prob_train >= 1.0 && c.negative_sampling == "none";
  refuse_if(c.objective.use_esmm() && !all_negatives, f, "use_esmm",
            "ESMM models the entire impression space and needs every negative: set data.neg_keep_prob_train: 1.0 "
            "and sampling.negative_sampling: none");
  refuse_if(!all_negatives, f, "sampling.negative_sampling",
            "negative down-sampling is not implemented by this trainer; use none and neg_keep_prob_train 1.0");

  auto& m = c.model;
  const auto& s = c.sections;
  refuse_if(m.heads.empty(), f, "model.enabled_heads", "expected at least one head");
  std::set<std::string> seen;
  const bool imputes = c.objective.counterfactual() == mtl::ESMMCounterfactual::dr;
  for (const auto& h : m.heads) {
    refuse_if(h != "ctr" && h != "cvr" && !(imputes && h == mtl::train::kImputationHead), f, "model.enabled_heads",
              std::string("expected heads ctr and/or cvr") + (imputes ? " and imputation" : "") + ", got '" + h + "'");
    refuse_if(!seen.insert(h).second, f, "model.enabled_heads", "head '" + h + "' appears twice");
    m.tower_hidden_dims.push_back(s.tower_hidden_dims.count(h) ? s.tower_hidden_dims.at(h) : std::vector<int64_t>{});
  }
  refuse_if(m.mixer == "single" && m.heads.size() != 1, f, "model.mixer", "'single' expects exactly one head");
  refuse_if(c.objective.use_esmm() && !(seen.count("ctr") && seen.count("cvr")), f, "use_esmm",
            "ESMM needs both a ctr and a cvr head, but model.enabled_heads has only " + m.heads.front());
  refuse_if(c.objective.counterfactual() != mtl::ESMMCounterfactual::none && !c.objective.use_esmm(), f,
            "esmm.counterfactual", "ESCM2's counterfactual risk is an ESMM option: set use_esmm: true");
  refuse_if(imputes && !seen.count(mtl::train::kImputationHead), f, "model.enabled_heads",
            "esmm.counterfactual: dr needs a head named imputation (its imputation tower)");
  refuse_if(f.has("loss.cvr_denominator") &&
                c.objective.cvr_denominator() != mtl::train::CvrDenominator::clicked_rows &&
                (c.objective.use_esmm() || m.heads.size() != 2),
            f, "loss.cvr_denominator",
            "applies to a model with ctr and cvr heads without ESMM; ESMM's terms are fixed by its version");

  if (m.mixer == "mmoe") {
    m.shared_experts.assign(s.mmoe_experts, mtl::ExpertOptions::mlp(s.mmoe_expert_hidden_dims));
    m.expert_dim = s.mmoe_expert_dim;
  }
  if (m.mixer == "ple") {
    m.expert_dim = s.ple_expert_dim;
    m.num_levels = s.ple_levels;
    if (s.ple_hetero) {
      m.shared_experts = s.ple_shared;
      refuse_if(m.shared_experts.empty(), f, "model.ple.experts.shared",
                "hetero_enabled needs a non-empty list of shared experts");
      for (const auto& h : m.heads) m.task_experts.push_back(h == "ctr" ? s.ple_ctr : s.ple_cvr);
    } else {
      const auto expert = mtl::ExpertOptions::mlp(s.ple_expert_hidden_dims);
      m.shared_experts.assign(s.ple_shared_experts, expert);
      m.task_experts.assign(m.heads.size(), std::vector<mtl::ExpertOptions>(s.ple_private_experts, expert));
    }
  }
  m.align_outputs = s.align_outputs.value_or(m.mixer == "ple" && s.ple_hetero);
  for (const auto& dims : m.tower_hidden_dims)
    refuse_if(m.adaptive_transfer && (m.heads.size() < 2 || dims.empty() || dims.back() != m.tower_hidden_dims[0].back()),
              f, "model.adaptive_transfer",
              "AITM's transfer passes each tower's state to the next: it needs two heads or more whose towers "
              "(model.tasks.*.tower_hidden_dims) end in layers of one width");

  try {  // the weighting's own checks, against this experiment's terms
    mtl::train::LossWeighting(mtl::train::Objective(m.heads, c.objective), c.trainer.loss_weighting());
  } catch (const c10::Error& e) {
    std::string key = "model.enabled_heads";  // the weighting's own field where the config has one
    for (const auto& spec : field_specs())
      if (spec.key.rfind("loss.weight", 0) == 0 && f.has(spec.key)) key = spec.key;
    if (f.has("loss.weighting")) key = "loss.weighting";
    refuse_if(true, f, key, e.what_without_backtrace());
  }

  const auto warmup = c.optimizer.warmup_steps(), total = c.optimizer.total_steps();
  refuse_if(warmup < 0 || warmup > total, f, "lr_scheduler.warmup_steps",
            "expected 0 <= warmup_steps <= total_steps (" + std::to_string(total) + ")");
  const auto& key = c.trainer.primary_key();
  const auto producible = producible_aucs(m.heads, c.source == "synthetic");
  std::string allowed;
  for (const auto& k : producible) allowed += (allowed.empty() ? "" : ", ") + k;
  refuse_if(!producible.count(key), f, "runtime.best_selection.primary_key",
            "this experiment (heads " + f.text("model.enabled_heads") + ") cannot produce '" + key +
                "'; it can select on " + allowed);
  return c;
}

}  // namespace chain
