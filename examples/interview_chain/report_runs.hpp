// Reading a chain's run folders back: each run's config, status, test metrics
// and predictions, grouped by experiment, for every report to compute from.
#pragma once

#include "chain.hpp"
#include "designed.hpp"
#include "mechanism_uptake.hpp"

#include <mtl/metrics/multitask_metrics.hpp>
#include <mtl/train/run_directory.hpp>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace chain {

/// What one run directory holds, read back.
struct RunRecord {
  std::string dir;
  RunStatus status;
  int64_t best_step = -1, max_steps = 0;
  std::string primary_key;
  int64_t parameters = -1;                       ///< the model's trainable values; -1 when unknown
  YAML::Node config;                             ///< the run's config.yaml snapshot
  std::map<std::string, double> test;            ///< defined test metrics
  std::map<std::string, std::string> undefined;  ///< test metrics without a value, and why
  std::vector<nlohmann::json> valid_records, gate_records;
  std::vector<nlohmann::json> scale_records;  ///< the test split's expert output scales (gated mixers)
  std::map<int64_t, double> primary_curve;    ///< the primary validation metric by step, where defined
  /// Each weighted loss term's weight by step (train records' weight_<term>), for a run that weighs its terms.
  std::map<std::string, std::vector<std::pair<double, double>>> loss_weights;
};

inline RunRecord read_run(const std::string& dir) {
  RunRecord r;
  r.dir = dir;
  r.status = run_status(dir);
  if (dir.empty() || !fs::exists(dir)) return r;
  const mtl::train::RunDirectory run(dir);
  if (run.has(mtl::train::run_files::kConfig)) {
    auto cfg = YAML::LoadFile(run.path(mtl::train::run_files::kConfig));
    r.config = cfg;
    r.max_steps = cfg["runtime"]["max_train_steps"].as<int64_t>(0);
    r.primary_key = cfg["runtime"]["best_selection"]["primary_key"].as<std::string>("");
  }
  r.valid_records = run.metric_records("valid");
  for (const auto& rec : r.valid_records)
    if (rec["values"].contains(r.primary_key) && !rec["values"][r.primary_key].is_null())
      r.primary_curve[rec["step"].get<int64_t>()] = rec["values"][r.primary_key].get<double>();
  for (const auto& rec : run.metric_records("train"))
    for (const auto& [key, value] : rec.items())
      if (key.rfind("weight_", 0) == 0 && value.is_number())
        r.loss_weights[key.substr(7)].emplace_back(rec["step"].get<double>(), value.get<double>());
  for (auto& j : run.expert_health_records("test"))
    if (j["record"] == "gate")
      r.gate_records.push_back(std::move(j));
    else if (j["record"] == "expert_scale")
      r.scale_records.push_back(std::move(j));
  if (r.status.finished)
    if (const auto eval = run.evaluation()) {
      r.best_step = eval->best_step;
      r.parameters = eval->parameters;
      for (const auto& [k, v] : eval->metrics)
        if (v.defined())
          r.test[k] = v.value;
        else
          r.undefined[k] = v.undefined_because;
    }
  return r;
}

/// Test predictions of one run (test_predictions.pt), or nothing for a run that did not finish.
inline std::optional<mtl::metrics::PredictionColumns> read_predictions(const RunRecord& r) {
  if (!r.status.finished) return std::nullopt;
  return mtl::train::RunDirectory(r.dir).test_predictions();
}

/// An experiment's runs (one per seed) and its description.
struct ExperimentRecord {
  std::string id, description;
  std::vector<RunRecord> runs;
  /// Test predictions of every run, by seed index (nothing for a run that did not finish), read once for every
  /// comparison and chart.
  std::vector<std::optional<mtl::metrics::PredictionColumns>> seed_predictions;
  /// On designed synthetic data, what the models learned of each mechanism: the mean over finished seeds.
  std::vector<TermUptake> uptake;

  const RunRecord* first_finished() const {
    for (const auto& r : runs)
      if (r.status.finished) return &r;
    return nullptr;
  }
  /// Test predictions of the first finished run, or nullptr.
  const mtl::metrics::PredictionColumns* first_predictions() const {
    const auto* first = first_finished();
    return first && seed_predictions[first - runs.data()] ? &*seed_predictions[first - runs.data()] : nullptr;
  }
  /// Mean and sample standard deviation of a test metric over finished seeds.
  std::optional<std::pair<double, double>> spread(const std::string& key) const {
    std::vector<double> v;
    for (const auto& r : runs)
      if (r.status.finished && r.test.count(key)) v.push_back(r.test.at(key));
    if (v.empty()) return std::nullopt;
    double mean = 0, var = 0;
    for (double x : v) mean += x;
    mean /= v.size();
    for (double x : v) var += (x - mean) * (x - mean);
    return std::make_pair(mean, v.size() > 1 ? std::sqrt(var / (v.size() - 1)) : 0.0);
  }
  int finished_count() const {
    int n = 0;
    for (const auto& r : runs) n += r.status.finished;
    return n;
  }
};

/// Each finished run's slopes on the designed terms, averaged over the seeds.
/// `terms` holds the test split's terms, rebuilt when a run's data section differs from the one they describe.
inline std::vector<TermUptake> experiment_uptake(const ExperimentRecord& e,
                                                 std::pair<std::string, std::optional<DesignedTerms>>& terms) {
  std::vector<std::vector<TermUptake>> per_seed;
  for (size_t k = 0; k < e.runs.size(); ++k) {
    const auto& r = e.runs[k];
    if (!r.status.finished || !r.config.IsMap()) continue;
    const auto data = YAML::Dump(r.config["data"]);
    if (!terms.second || terms.first != data)
      terms = {data, DesignedTerms(load_experiment(mtl::train::RunDirectory(r.dir).path(mtl::train::run_files::kConfig),
                                                   Overrides{}))};
    if (terms.second->empty()) return {};
    if (const auto& p = e.seed_predictions[k]) per_seed.push_back(terms.second->uptake(p->p_ctr, p->p_cvr));
  }
  return mean_uptake(per_seed);
}

inline std::vector<ExperimentRecord> read_chain(const std::string& output) {
  const auto state = ChainState::load(output);
  std::vector<ExperimentRecord> out;
  std::pair<std::string, std::optional<DesignedTerms>> terms;
  // The seven in chain order, then any extension experiment that was run (extension_experiments).
  std::vector<std::string> ids;
  for (const auto& [id, file] : experiments()) ids.push_back(id);
  for (const auto& [id, dirs] : state.runs)
    if (std::count(ids.begin(), ids.end(), id) == 0) ids.push_back(id);
  for (const auto& id : ids) {
    ExperimentRecord e{id, "", {}};
    auto it = state.runs.find(id);
    if (it != state.runs.end())
      for (const auto& dir : it->second) e.runs.push_back(read_run(dir));
    if (e.runs.empty()) e.runs.push_back(read_run(""));
    for (const auto& r : e.runs) e.seed_predictions.push_back(read_predictions(r));
    e.uptake = experiment_uptake(e, terms);
    for (const auto& r : e.runs)
      if (e.description.empty() && mtl::train::RunDirectory(r.dir).has(mtl::train::run_files::kConfig))
        e.description = YAML::LoadFile(mtl::train::RunDirectory(r.dir).path(
            mtl::train::run_files::kConfig))["experiment"]["description"]
                            .as<std::string>("");
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace chain
