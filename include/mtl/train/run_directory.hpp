// The folder one training run writes, and reads back: its file names, the
// writer the trainer uses and the reader a report uses, so that both sides
// agree on every name and key.
//
//   config.yaml               the caller's resolved config (optional)
//   train.log                 what the run printed
//   metrics.jsonl             a line per log step (split "train") and per validation (split "valid")
//   expert_health_diag.jsonl  gate and expert records per validation, and of the test split
//   eval.json                 the test split's metrics at the best checkpoint; present once the run finished
//   test_predictions.pt       the test split's predictions and labels (a tensor dict)
//   ckpt_best.pt, ckpt_last.pt, ckpt_prev.pt
#pragma once

#include <mtl/io/checkpoint.hpp>
#include <mtl/io/file_io.hpp>
#include <mtl/metrics/metric_value.hpp>
#include <mtl/metrics/multitask_metrics.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mtl::train {

/// The names of a run folder's files.
namespace run_files {
inline constexpr const char* kConfig = "config.yaml";
inline constexpr const char* kLog = "train.log";
inline constexpr const char* kMetrics = "metrics.jsonl";
inline constexpr const char* kExpertHealth = "expert_health_diag.jsonl";
inline constexpr const char* kEvaluation = "eval.json";
inline constexpr const char* kTestPredictions = "test_predictions.pt";
inline constexpr const char* kBestCheckpoint = "ckpt_best.pt";
inline constexpr const char* kLastCheckpoint = "ckpt_last.pt";
inline constexpr const char* kPreviousCheckpoint = "ckpt_prev.pt";
}  // namespace run_files

/// Metrics as JSON: values (null when undefined) and the reasons.
inline nlohmann::json metrics_json(const std::map<std::string, metrics::MetricValue>& m) {
  nlohmann::json values = nlohmann::json::object(), undefined = nlohmann::json::object();
  for (const auto& [k, v] : m) {
    values[k] = v.defined() ? nlohmann::json(v.value) : nlohmann::json(nullptr);
    if (!v.defined()) undefined[k] = v.undefined_because;
  }
  return {{"values", values}, {"undefined", undefined}};
}

/// The metrics `metrics_json` wrote into `record`.
inline std::map<std::string, metrics::MetricValue> metrics_from_json(const nlohmann::json& record) {
  std::map<std::string, metrics::MetricValue> m;
  for (const auto& [k, v] : record.at("values").items())
    m[k] = v.is_null() ? metrics::MetricValue::undefined(record.at("undefined").value(k, ""))
                       : metrics::MetricValue::of(v.get<double>());
  return m;
}

/// The test split's evaluation of a finished run (eval.json).
struct TestEvaluation {
  std::map<std::string, metrics::MetricValue> metrics;
  int64_t rows = 0;
  int64_t best_step = -1;
  std::string primary_key;
  int64_t parameters = -1;  ///< the model's trainable values
  /// What the caller's data reader found and changed (TrainerOptions::data_report); null: nothing to say.
  nlohmann::json data;
};

/// One run's folder: where each file lives, and how each is written and read.
class RunDirectory {
 public:
  explicit RunDirectory(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const noexcept { return dir_; }
  std::string path(const char* file) const { return (std::filesystem::path(dir_) / file).string(); }
  bool has(const char* file) const { return std::filesystem::exists(path(file)); }
  /// Whether the run finished: it wrote its test evaluation.
  bool finished() const { return has(run_files::kEvaluation); }
  bool has_resume_checkpoint() const { return has(run_files::kLastCheckpoint) || has(run_files::kPreviousCheckpoint); }

  // ---- writing

  void create() const { io::create_output_dir(dir_), io::remove_stale_temporaries(dir_); }
  void write_config(const std::string& yaml) const { io::atomic_write(path(run_files::kConfig), yaml); }
  /// Empties the record files for a run that starts from step 0.
  void start_records() const {
    io::atomic_write(path(run_files::kMetrics), std::string());
    io::atomic_write(path(run_files::kExpertHealth), std::string());
  }
  void append_log(const std::string& line) const { io::append_line(path(run_files::kLog), line); }
  void append_metrics(const nlohmann::json& record) const { io::append_line(path(run_files::kMetrics), record.dump()); }
  void append_expert_health(const nlohmann::json& record) const {
    io::append_line(path(run_files::kExpertHealth), record.dump());
  }
  /// Keeps the records of steps up to `step`, dropping the test-split records
  /// a finished run wrote (finishing writes them again): a resumed run runs
  /// the later steps again.
  void truncate_records_after(int64_t step) const {
    for (const char* name : {run_files::kMetrics, run_files::kExpertHealth}) {
      std::string kept;
      for_each_line(name, [&](const std::string& line, const nlohmann::json& j) {
        if (j.value("step", int64_t{0}) <= step && j.value("split", "") != "test") kept += line + "\n";
      });
      io::atomic_write(path(name), kept);
    }
  }
  void write_evaluation(const TestEvaluation& e) const {
    nlohmann::json eval = metrics_json(e.metrics);
    eval["split"] = "test";
    eval["rows"] = e.rows;
    eval["best_step"] = e.best_step;
    eval["primary_key"] = e.primary_key;
    eval["parameters"] = e.parameters;
    if (!e.data.is_null()) eval["data"] = e.data;
    io::atomic_write(path(run_files::kEvaluation), eval.dump(2) + "\n");
  }
  /// The prediction and label columns (the truth columns but the counterfactual conversion are not kept).
  void write_test_predictions(const metrics::PredictionColumns& c) const {
    io::TensorDict columns;
    auto put = [&](const char* name, const std::vector<float>& v) {
      if (!v.empty()) columns.insert(name, torch::tensor(v));
    };
    put("p_ctr", c.p_ctr), put("p_cvr", c.p_cvr);
    put("click", c.click), put("conversion", c.conversion);
    put("counterfactual_conversion", c.counterfactual_conversion);
    io::save_tensor_dict(path(run_files::kTestPredictions), columns);
  }

  // ---- reading

  /// Every record of metrics.jsonl of `split` ("train" or "valid"; empty: both), in order.
  std::vector<nlohmann::json> metric_records(const std::string& split = "") const {
    return records(run_files::kMetrics,
                   [&](const nlohmann::json& j) { return split.empty() || j.value("split", "") == split; });
  }
  /// The validation metrics at `step`, if metrics.jsonl has them.
  std::optional<std::map<std::string, metrics::MetricValue>> validation_at(int64_t step) const {
    std::optional<std::map<std::string, metrics::MetricValue>> found;
    for (const auto& j : metric_records("valid"))
      if (j.value("step", int64_t{-1}) == step) found = metrics_from_json(j);
    return found;
  }
  /// The gate and expert records of `split` ("valid" or "test").
  std::vector<nlohmann::json> expert_health_records(const std::string& split) const {
    return records(run_files::kExpertHealth, [&](const nlohmann::json& j) { return j.value("split", "") == split; });
  }
  /// eval.json, or nothing before the run finished.
  std::optional<TestEvaluation> evaluation() const {
    if (!finished()) return std::nullopt;
    std::ifstream in(path(run_files::kEvaluation));
    const auto j = nlohmann::json::parse(in);
    TestEvaluation e;
    e.metrics = metrics_from_json(j);
    e.rows = j.value("rows", int64_t{0});
    e.best_step = j.value("best_step", int64_t{-1});
    e.primary_key = j.value("primary_key", "");
    e.parameters = j.value("parameters", int64_t{-1});
    if (j.contains("data")) e.data = j.at("data");
    return e;
  }
  /// test_predictions.pt, or nothing when the run wrote none.
  std::optional<metrics::PredictionColumns> test_predictions() const {
    if (!has(run_files::kTestPredictions)) return std::nullopt;
    auto dict = io::load_tensor_dict(path(run_files::kTestPredictions));
    auto column = [&](const char* name) {
      std::vector<float> v;
      if (!dict.contains(name)) return v;
      auto t = dict.at(name).contiguous();
      v.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
      return v;
    };
    metrics::PredictionColumns c;
    c.p_ctr = column("p_ctr"), c.p_cvr = column("p_cvr");
    c.click = column("click"), c.conversion = column("conversion");
    c.counterfactual_conversion = column("counterfactual_conversion");
    return c;
  }

 private:
  void for_each_line(const char* name, const std::function<void(const std::string&, const nlohmann::json&)>& fn) const {
    std::ifstream in(path(name));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) fn(line, nlohmann::json::parse(line));
  }
  std::vector<nlohmann::json> records(const char* name, const std::function<bool(const nlohmann::json&)>& keep) const {
    std::vector<nlohmann::json> out;
    for_each_line(name, [&](const std::string&, const nlohmann::json& j) {
      if (keep(j)) out.push_back(j);
    });
    return out;
  }

  std::string dir_;
};

}  // namespace mtl::train
