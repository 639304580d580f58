// A resolved experiment: the typed settings read from a FieldTable, checked
// for consistency before any training (ESMM with one head, negative
// down-sampling under ESMM, a primary key the experiment cannot produce, an
// empty expert list, out-of-range values), each error naming file and line.
#pragma once

#include "config.hpp"

#include <mtl/data/layout_rules.hpp>
#include <mtl/data/synthetic.hpp>
#include <mtl/esmm.hpp>
#include <mtl/expert.hpp>
#include <mtl/train/objective.hpp>

#include <set>
#include <string>
#include <vector>

namespace chain {

struct ExperimentConfig {
  FieldTable fields;
  std::string id, description;

  // data
  std::string source, path, cache_dir;
  int64_t batch_size = 1024, min_count = 1;
  uint64_t data_seed = 0;
  mtl::data::LayoutRules layout;                     ///< CSV sources: labels, features, dense columns
  double valid_fraction = 0.1, test_fraction = 0.1;  ///< held out of training where a split's file is missing
  mtl::data::SyntheticOptions synthetic;
  int64_t train_rows = 0, valid_rows = 0, test_rows = 0;

  // model
  int64_t embedding_dim = 8;
  bool sparse_grad = true;
  std::vector<int64_t> deep_hidden_dims;
  int64_t fm_projection_dim = 16;
  std::string mtl;
  std::vector<std::string> heads;
  std::vector<std::vector<int64_t>> tower_hidden_dims;  ///< one per head
  std::vector<int64_t> shared_bottom_dims;
  std::vector<mtl::ExpertOptions> shared_experts;
  std::vector<std::vector<mtl::ExpertOptions>> task_experts;  ///< one per head (PLE)
  int64_t expert_dim = 64, num_levels = 1;
  bool hetero = false, align = false;
  double align_dropout = 0.0;

  // loss and optimisation
  bool use_esmm = false;
  mtl::ESMMVersion esmm_version = mtl::ESMMVersion::v2;
  double lambda_cvr_aux = 0.1;
  mtl::train::CvrDenominator cvr_denominator = mtl::train::CvrDenominator::clicked_rows;  ///< two heads, no ESMM
  double sparse_lr = 0.001, dense_lr = 0.0006, weight_decay = 0.0, min_lr_ratio = 0.0;
  int64_t warmup_steps = 0, total_steps = 0;

  // runtime
  uint64_t seed = 0;
  int64_t max_train_steps = 0, eval_every = 0, log_every = 100, eval_batch_size = 8192;
  bool amp = false, amp_on_cpu = false;
  std::string device = "cpu";
  int threads = 0;
  std::string primary_key;

  bool amp_effective() const { return amp && (device == "cuda" || amp_on_cpu); }
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

inline mtl::ExpertOptions read_expert(const YAML::Node& item, const FieldValue& where, const std::string& path) {
  const std::string at = FieldTable::place(where) + ": field '" + path + "'";
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

inline std::vector<mtl::ExpertOptions> read_experts(const FieldTable& f, const std::string& path) {
  std::vector<mtl::ExpertOptions> out;
  if (!f.has(path)) return out;
  for (const auto& item : f.at(path).node) out.push_back(read_expert(item, f.at(path), path));
  return out;
}

/// Fails with the place of `path` (or the file) and `message`.
inline void refuse_if(bool bad, const FieldTable& f, const std::string& path, const std::string& message) {
  if (!bad) return;
  const std::string where = f.has(path) ? FieldTable::place(f.at(path)) : f.fields().begin()->second.file;
  TORCH_CHECK(false, where, ": field '", path, "': ", message);
}

}  // namespace detail

inline ExperimentConfig read_experiment(const FieldTable& f) {
  using detail::refuse_if;
  ExperimentConfig c;
  c.fields = f;
  c.id = f.get<std::string>("experiment.id");
  c.description = f.get<std::string>("experiment.description");

  c.source = f.get<std::string>("data.source");
  c.path = f.get<std::string>("data.path", "");
  c.cache_dir = f.get<std::string>("data.cache_dir", "");
  c.batch_size = f.get<int64_t>("data.batch_size");
  refuse_if(c.batch_size <= 0, f, "data.batch_size",
            "expected a positive batch size, got " + std::to_string(c.batch_size));
  c.data_seed = f.get<uint64_t>("data.seed");
  c.min_count = f.get<int64_t>("data.min_count", 1);
  refuse_if(c.min_count < 1, f, "data.min_count", "expected >= 1");
  refuse_if(c.source != "synthetic" && c.path.empty(), f, "data.source",
            "data.source '" + c.source + "' needs data.path, the folder of its CSV files");
  c.layout = c.source == "aliexpress" ? mtl::data::LayoutRules::aliexpress() : mtl::data::LayoutRules::aliccp();
  c.layout.click = f.get<std::string>("data.labels.click", c.layout.click);
  c.layout.conversion = f.get<std::string>("data.labels.conversion", c.layout.conversion);
  c.layout.sparse = f.get<std::vector<std::string>>("data.features.sparse", {});
  c.layout.dense = f.get<std::vector<std::string>>("data.features.dense", {});
  c.layout.ignored = f.get<std::vector<std::string>>("data.features.ignored", c.layout.ignored);
  const std::pair<const char*, double*> shares[] = {{"data.valid_fraction", &c.valid_fraction},
                                                    {"data.test_fraction", &c.test_fraction}};
  for (const auto& [key, share] : shares) {
    *share = f.get<double>(key, *share);
    refuse_if(*share <= 0 || *share >= 0.5, f, key, "expected a share of the training rows in (0, 0.5)");
  }
  auto& s = c.synthetic;
  s.seed(c.data_seed)
      .scenario(f.get<std::string>("data.synthetic.scenario", "designed") == "null"
                    ? mtl::data::SyntheticScenario::null
                    : mtl::data::SyntheticScenario::designed)
      .num_users(f.get<int64_t>("data.synthetic.num_users", s.num_users()))
      .num_items(f.get<int64_t>("data.synthetic.num_items", s.num_items()))
      .task_relatedness(f.get<double>("data.synthetic.task_relatedness", s.task_relatedness()))
      .selection_latent_weight(f.get<double>("data.synthetic.selection_latent_weight", s.selection_latent_weight()))
      .private_signal(f.get<double>("data.synthetic.private_signal", s.private_signal()))
      .cross_signal(f.get<double>("data.synthetic.cross_signal", s.cross_signal()))
      .ctr_bias(f.get<double>("data.synthetic.ctr_bias", s.ctr_bias()))
      .cvr_bias(f.get<double>("data.synthetic.cvr_bias", s.cvr_bias()))
      .label_noise(f.get<double>("data.synthetic.label_noise", s.label_noise()));
  c.train_rows = f.get<int64_t>("data.synthetic.train_rows", 2'000'000);
  c.valid_rows = f.get<int64_t>("data.synthetic.valid_rows", 200'000);
  c.test_rows = f.get<int64_t>("data.synthetic.test_rows", 200'000);
  for (const char* key : {"data.synthetic.train_rows", "data.synthetic.valid_rows", "data.synthetic.test_rows"})
    refuse_if(f.get<int64_t>(key, 1) <= 0, f, key, "expected a positive row count");

  const double keep = f.get<double>("data.neg_keep_prob_train");
  const auto sampling = f.get<std::string>("sampling.negative_sampling");
  refuse_if(keep <= 0 || keep > 1, f, "data.neg_keep_prob_train", "expected a probability in (0, 1]");
  c.use_esmm = f.get<bool>("use_esmm");
  refuse_if(c.use_esmm && (keep < 1.0 || sampling != "none"), f, "use_esmm",
            "ESMM models the entire impression space and needs every negative: set data.neg_keep_prob_train: 1.0 "
            "and sampling.negative_sampling: none");
  refuse_if(keep < 1.0 || sampling != "none", f, "sampling.negative_sampling",
            "negative down-sampling is not implemented by this trainer; use none and neg_keep_prob_train 1.0");

  c.embedding_dim = f.get<int64_t>("embedding.default_embedding_dim");
  refuse_if(c.embedding_dim <= 0, f, "embedding.default_embedding_dim", "expected a positive width");
  c.sparse_grad = f.get<bool>("embedding.sparse_grad");
  c.deep_hidden_dims = f.get<std::vector<int64_t>>("model.deep_hidden_dims");
  refuse_if(c.deep_hidden_dims.empty(), f, "model.deep_hidden_dims", "expected at least one layer");
  c.fm_projection_dim = f.get<int64_t>("model.fm_projection_dim");
  refuse_if(c.fm_projection_dim <= 0, f, "model.fm_projection_dim", "expected a positive width");

  c.mtl = f.get<std::string>("model.mtl");
  c.heads = f.get<std::vector<std::string>>("model.enabled_heads");
  refuse_if(c.heads.empty(), f, "model.enabled_heads", "expected at least one head");
  std::set<std::string> seen;
  for (const auto& h : c.heads) {
    refuse_if(h != "ctr" && h != "cvr", f, "model.enabled_heads", "expected heads ctr and/or cvr, got '" + h + "'");
    refuse_if(!seen.insert(h).second, f, "model.enabled_heads", "head '" + h + "' appears twice");
    c.tower_hidden_dims.push_back(f.get<std::vector<int64_t>>("model.tasks." + h + ".tower_hidden_dims", {}));
  }
  refuse_if(c.mtl == "single" && c.heads.size() != 1, f, "model.mtl", "'single' expects exactly one head");
  refuse_if(c.use_esmm && c.heads.size() != 2, f, "use_esmm",
            "ESMM needs both a ctr and a cvr head, but model.enabled_heads has only " + c.heads.front());
  if (c.use_esmm) {
    c.esmm_version = f.get<std::string>("esmm.version", "v2") == "v1" ? mtl::ESMMVersion::v1 : mtl::ESMMVersion::v2;
    c.lambda_cvr_aux = f.get<double>("esmm.lambda_cvr_aux", 0.1);
    refuse_if(c.lambda_cvr_aux < 0, f, "esmm.lambda_cvr_aux", "expected lambda >= 0");
  }

  const auto denominator = f.get<std::string>("loss.cvr_denominator", "clicked_rows");
  refuse_if(denominator != "clicked_rows" && (c.use_esmm || c.heads.size() != 2), f, "loss.cvr_denominator",
            "applies to a model with ctr and cvr heads without ESMM; ESMM's terms are fixed by its version");
  if (denominator == "all_rows") c.cvr_denominator = mtl::train::CvrDenominator::all_rows;

  c.shared_bottom_dims = f.get<std::vector<int64_t>>("model.shared_bottom.hidden_dims", {});
  if (c.mtl == "single" || c.mtl == "sharedbottom")
    c.align = f.get<bool>("model.shared_bottom.output_align.enabled", false);
  if (c.mtl == "mmoe") {
    const auto n = f.get<int64_t>("model.mmoe.num_experts", 4);
    refuse_if(n < 1, f, "model.mmoe.num_experts", "expected at least one expert, got " + std::to_string(n));
    const auto dims = f.get<std::vector<int64_t>>("model.mmoe.expert_hidden_dims", {128});
    refuse_if(dims.empty(), f, "model.mmoe.expert_hidden_dims", "expected at least one layer");
    c.shared_experts.assign(n, mtl::ExpertOptions::mlp(dims));
    c.expert_dim = f.get<int64_t>("model.mmoe.expert_dim", 64);
    c.align = f.get<bool>("model.mmoe.expert_output_align.enabled", false);
    c.align_dropout = f.get<double>("model.mmoe.expert_output_align.dropout", 0.0);
  }
  if (c.mtl == "ple") {
    c.hetero = f.get<bool>("model.ple.hetero_enabled", false);
    c.expert_dim = f.get<int64_t>("model.ple.expert_dim", 64);
    c.num_levels = f.get<int64_t>("model.ple.num_levels", 1);
    refuse_if(c.num_levels < 1, f, "model.ple.num_levels", "expected at least one level");
    c.align = f.get<bool>("model.ple.expert_output_align.enabled", c.hetero);
    c.align_dropout = f.get<double>("model.ple.expert_output_align.dropout", 0.0);
    if (c.hetero) {
      c.shared_experts = detail::read_experts(f, "model.ple.experts.shared");
      refuse_if(c.shared_experts.empty(), f, "model.ple.experts.shared",
                "hetero_enabled needs a non-empty list of shared experts");
      for (const auto& h : c.heads) c.task_experts.push_back(detail::read_experts(f, "model.ple.experts." + h));
    } else {
      const auto n = f.get<int64_t>("model.ple.shared_experts", 4);
      const auto p = f.get<int64_t>("model.ple.private_experts_per_task", 1);
      refuse_if(n < 1, f, "model.ple.shared_experts", "expected at least one shared expert, got " + std::to_string(n));
      refuse_if(p < 0, f, "model.ple.private_experts_per_task", "expected >= 0");
      const auto dims = f.get<std::vector<int64_t>>("model.ple.expert_hidden_dims", {128});
      refuse_if(dims.empty(), f, "model.ple.expert_hidden_dims", "expected at least one layer");
      c.shared_experts.assign(n, mtl::ExpertOptions::mlp(dims));
      c.task_experts.assign(c.heads.size(), std::vector<mtl::ExpertOptions>(p, mtl::ExpertOptions::mlp(dims)));
    }
  }
  refuse_if(c.expert_dim <= 0, f, c.mtl == "mmoe" ? "model.mmoe.expert_dim" : "model.ple.expert_dim",
            "expected a positive width");

  c.sparse_lr = f.get<double>("optim.sparse.lr");
  c.dense_lr = f.get<double>("optim.dense.lr");
  refuse_if(c.sparse_lr < 0, f, "optim.sparse.lr", "expected a learning rate >= 0");
  refuse_if(c.dense_lr < 0, f, "optim.dense.lr", "expected a learning rate >= 0");
  c.weight_decay = f.get<double>("optim.dense.weight_decay", 0.0);
  c.warmup_steps = f.get<int64_t>("lr_scheduler.warmup_steps");
  c.total_steps = f.get<int64_t>("lr_scheduler.total_steps");
  c.min_lr_ratio = f.get<double>("lr_scheduler.min_lr_ratio", 0.0);
  refuse_if(c.total_steps <= 0, f, "lr_scheduler.total_steps", "expected a positive step count");
  refuse_if(c.warmup_steps < 0 || c.warmup_steps > c.total_steps, f, "lr_scheduler.warmup_steps",
            "expected 0 <= warmup_steps <= total_steps (" + std::to_string(c.total_steps) + ")");

  c.seed = f.get<uint64_t>("runtime.seed");
  c.max_train_steps = f.get<int64_t>("runtime.max_train_steps");
  refuse_if(c.max_train_steps <= 0, f, "runtime.max_train_steps", "expected a positive step count");
  c.eval_every = f.get<int64_t>("runtime.eval_every");
  refuse_if(c.eval_every <= 0, f, "runtime.eval_every", "expected a positive step count");
  c.log_every = f.get<int64_t>("runtime.log_every", 100);
  refuse_if(c.log_every <= 0, f, "runtime.log_every", "expected a positive step count");
  c.eval_batch_size = f.get<int64_t>("runtime.eval_batch_size", 8192);
  c.amp = f.get<bool>("runtime.amp");
  c.amp_on_cpu = f.get<bool>("runtime.amp_on_cpu", false);
  c.device = f.get<std::string>("runtime.device", "cpu");
  c.threads = static_cast<int>(f.get<int64_t>("runtime.threads", 0));
  c.primary_key = f.get<std::string>("runtime.best_selection.primary_key");
  const auto producible = producible_aucs(c.heads, c.source == "synthetic");
  std::string allowed;
  for (const auto& k : producible) allowed += (allowed.empty() ? "" : ", ") + k;
  refuse_if(!producible.count(c.primary_key), f, "runtime.best_selection.primary_key",
            "this experiment (heads " + f.text("model.enabled_heads") + ") cannot produce '" + c.primary_key +
                "'; it can select on " + allowed);
  return c;
}

}  // namespace chain
