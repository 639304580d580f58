// What a chain run reports, rebuilt from its run directories alone:
// summary.csv / summary.json (one row per experiment), delta_analysis.txt
// (each comparison of the chain with both values, the difference, the DeLong
// p-value on the shared test rows, the spread over seeds and a verdict
// computed from them) and report.html (self-contained, inline SVG).
#pragma once

#include "chain.hpp"

#include <mtl/metrics/delong.hpp>
#include <mtl/train/checkpoint.hpp>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace chain {

/// What one run directory holds, read back.
struct RunRecord {
  std::string dir;
  RunStatus status;
  int64_t best_step = -1, max_steps = 0;
  std::string primary_key;
  std::map<std::string, double> test;            ///< defined test metrics
  std::map<std::string, std::string> undefined;  ///< test metrics without a value, and why
  std::vector<nlohmann::json> valid_records, gate_records;
};

inline RunRecord read_run(const std::string& dir) {
  RunRecord r;
  r.dir = dir;
  r.status = run_status(dir);
  if (dir.empty() || !fs::exists(dir)) return r;
  if (fs::exists(fs::path(dir) / "config.yaml")) {
    auto cfg = YAML::LoadFile((fs::path(dir) / "config.yaml").string());
    r.max_steps = cfg["runtime"]["max_train_steps"].as<int64_t>(0);
    r.primary_key = cfg["runtime"]["best_selection"]["primary_key"].as<std::string>("");
  }
  auto read_lines = [&](const char* name, auto&& keep) {
    std::ifstream in(fs::path(dir) / name);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) keep(nlohmann::json::parse(line));
  };
  read_lines("metrics.jsonl", [&](nlohmann::json j) {
    if (j["split"] == "valid") r.valid_records.push_back(std::move(j));
  });
  read_lines("expert_health_diag.jsonl", [&](nlohmann::json j) {
    if (j["split"] == "test" && j["record"] == "gate") r.gate_records.push_back(std::move(j));
  });
  if (r.status.finished) {
    std::ifstream in(fs::path(dir) / "eval.json");
    const auto eval = nlohmann::json::parse(in);
    r.best_step = eval.value("best_step", int64_t{-1});
    for (const auto& [k, v] : eval["values"].items())
      if (!v.is_null()) r.test[k] = v.get<double>();
    for (const auto& [k, v] : eval["undefined"].items()) r.undefined[k] = v.get<std::string>();
  }
  return r;
}

/// Test predictions of one run, read from test_predictions.pt.
struct Predictions {
  std::vector<float> p_ctr, p_cvr, click, conversion, counterfactual;
};

inline std::optional<Predictions> read_predictions(const RunRecord& r) {
  const auto file = fs::path(r.dir) / "test_predictions.pt";
  if (!r.status.finished || !fs::exists(file)) return std::nullopt;
  auto dict = mtl::train::load_tensor_dict(file.string());
  auto column = [&](const char* name) {
    std::vector<float> v;
    if (!dict.contains(name)) return v;
    auto t = dict.at(name).contiguous();
    v.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    return v;
  };
  return Predictions{column("p_ctr"), column("p_cvr"), column("click"), column("conversion"),
                     column("counterfactual_conversion")};
}

/// An experiment's runs (one per seed) and its description.
struct ExperimentRecord {
  std::string id, description;
  std::vector<RunRecord> runs;
  /// Test predictions of the first finished run, read once for every comparison and chart.
  std::optional<Predictions> predictions;

  const RunRecord* first_finished() const {
    for (const auto& r : runs)
      if (r.status.finished) return &r;
    return nullptr;
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

inline std::vector<ExperimentRecord> read_chain(const std::string& output) {
  const auto state = ChainState::load(output);
  std::vector<ExperimentRecord> out;
  for (const auto& [id, file] : experiments()) {
    ExperimentRecord e{id, "", {}};
    auto it = state.runs.find(id);
    if (it != state.runs.end())
      for (const auto& dir : it->second) e.runs.push_back(read_run(dir));
    if (e.runs.empty()) e.runs.push_back(read_run(""));
    if (const auto* first = e.first_finished()) e.predictions = read_predictions(*first);
    for (const auto& r : e.runs)
      if (e.description.empty() && fs::exists(fs::path(r.dir) / "config.yaml"))
        e.description =
            YAML::LoadFile((fs::path(r.dir) / "config.yaml").string())["experiment"]["description"].as<std::string>("");
    out.push_back(std::move(e));
  }
  return out;
}

// ---------------------------------------------------------------- summaries

inline const std::vector<std::string>& summary_metrics() {
  static const std::vector<std::string> keys{"auc_ctr", "auc_cvr", "auc_ctcvr", "loss", "auc_cvr_entire_space"};
  return keys;
}

inline std::string csv_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

/// Why a summary cell is empty: the experiment cannot produce it, or the run did not finish.
inline std::string missing_reason(const ExperimentRecord& e, const std::string& key) {
  const auto* r = e.first_finished();
  if (!r) return "run did not finish";
  auto it = r->undefined.find(key);
  if (it != r->undefined.end()) return it->second;
  return "not produced by this experiment's heads";
}

inline void write_summaries(const std::string& output, const std::vector<ExperimentRecord>& chain) {
  std::ostringstream csv;
  csv << "exp_id,description,status,best_step,auc_ctr,auc_cvr,auc_ctcvr,loss,auc_cvr_entire_space,auc_primary,"
         "primary_key,seeds_finished,missing\n";
  nlohmann::json json = nlohmann::json::array();
  for (const auto& e : chain) {
    const auto* first = e.first_finished();
    std::string status = first ? "finished" : e.runs.front().status.status;
    if (first && e.finished_count() < static_cast<int>(e.runs.size()))
      status =
          "partly finished (" + std::to_string(e.finished_count()) + " of " + std::to_string(e.runs.size()) + " seeds)";
    // best_step -1: no validation pass gave a defined primary metric, so the last model was tested.
    const bool has_best = first && first->best_step >= 0;
    csv << e.id << "," << csv_quote(e.description) << "," << csv_quote(status) << ","
        << (has_best ? std::to_string(first->best_step) : "") << ",";
    std::string missing =
        first && !has_best ? "best_step: no validation gave a defined primary metric; the last model was tested" : "";
    nlohmann::json row{{"exp_id", e.id}, {"description", e.description}, {"status", status}};
    for (const auto& key : summary_metrics()) {
      auto s = e.spread(key);
      csv << (s ? fmt::format("{:.6f}", s->first) : "") << ",";
      row[key] = s ? nlohmann::json(s->first) : nlohmann::json(nullptr);
      if (s && e.runs.size() > 1) row[key + "_std"] = s->second;
      if (!s) missing += (missing.empty() ? "" : "; ") + key + ": " + missing_reason(e, key);
    }
    const std::string primary = first ? first->primary_key : "";
    auto p = primary.empty() ? std::nullopt : e.spread(primary);
    csv << (p ? fmt::format("{:.6f}", p->first) : "") << "," << primary << "," << e.finished_count() << ","
        << csv_quote(missing) << "\n";
    row["auc_primary"] = p ? nlohmann::json(p->first) : nlohmann::json(nullptr);
    row["primary_key"] = primary;
    row["best_step"] = has_best ? nlohmann::json(first->best_step) : nlohmann::json(nullptr);
    row["missing"] = missing;
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& r : e.runs)
      runs.push_back({{"run_dir", r.dir}, {"status", r.status.status}, {"best_step", r.best_step}, {"test", r.test}});
    row["runs"] = runs;
    json.push_back(row);
  }
  mtl::train::atomic_write((fs::path(output) / "summary.csv").string(), csv.str());
  mtl::train::atomic_write((fs::path(output) / "summary.json").string(), json.dump(2) + "\n");
}

// ---------------------------------------------------------------- deltas

/// The scores and labels a metric ranks, or nothing if the run lacks the head.
inline std::optional<std::pair<std::vector<float>, std::vector<float>>> ranked(const Predictions& p,
                                                                               const std::string& key) {
  std::vector<float> s, y;
  if (key == "auc_ctr" && !p.p_ctr.empty()) return std::make_pair(p.p_ctr, p.click);
  if (key == "auc_cvr" && !p.p_cvr.empty()) {
    for (size_t i = 0; i < p.click.size(); ++i)
      if (p.click[i] > 0.5f) s.push_back(p.p_cvr[i]), y.push_back(p.conversion[i]);
    return std::make_pair(s, y);
  }
  if (key == "auc_cvr_entire_space" && !p.p_cvr.empty() && !p.counterfactual.empty())
    return std::make_pair(p.p_cvr, p.counterfactual);
  if (key == "auc_ctcvr" && !p.p_ctr.empty() && !p.p_cvr.empty()) {
    for (size_t i = 0; i < p.click.size(); ++i)
      s.push_back(p.p_ctr[i] * p.p_cvr[i]), y.push_back(p.click[i] * p.conversion[i]);
    return std::make_pair(s, y);
  }
  return std::nullopt;
}

struct Comparison {
  std::string question, a, b;  ///< a is the challenger, b the reference
  std::vector<std::string> metrics;
};

inline std::vector<Comparison> comparisons() {
  return {{"Q1 Does multi-task learning beat single-task learning? (CTR)", "E1", "E0a", {"auc_ctr"}},
          {"Q1 Does multi-task learning beat single-task learning? (CVR)",
           "E1",
           "E0b",
           {"auc_cvr", "auc_cvr_entire_space"}},
          {"Q2 Does ESMM relieve the sample-selection bias of CVR? (the entire-space CVR AUC answers it)",
           "E2",
           "E1",
           {"auc_cvr_entire_space", "auc_cvr", "auc_ctcvr"}},
          {"Q3 Does soft sharing (MMoE) beat hard sharing?", "E3", "E2", {"auc_ctcvr", "auc_cvr_entire_space"}},
          {"Q4 Does PLE's split into shared and private experts help further?",
           "E4",
           "E3",
           {"auc_ctcvr", "auc_cvr_entire_space"}},
          {"Q5 Do heterogeneous experts beat homogeneous ones?", "E5", "E4", {"auc_ctcvr", "auc_cvr_entire_space"}}};
}

struct DeltaRow {
  std::string a, b, metric;
  bool available = false;
  std::string why_not;
  double value_a = NAN, value_b = NAN, p_value = NAN, se_a = NAN, se_b = NAN;
  std::optional<std::pair<double, double>> spread_a, spread_b, spread_diff;
  int seeds = 0;
  std::string verdict;
};

inline DeltaRow compare(const ExperimentRecord& a, const ExperimentRecord& b, const std::string& metric, double alpha) {
  DeltaRow row{a.id, b.id, metric};
  const auto* ra = a.first_finished();
  const auto* rb = b.first_finished();
  if (!ra || !rb) {
    row.why_not = (!ra ? a.id : b.id) + " did not finish";
    return row;
  }
  if (!a.predictions || !b.predictions) {
    row.why_not = "test predictions are missing";
    return row;
  }
  auto sa = ranked(*a.predictions, metric), sb = ranked(*b.predictions, metric);
  if (!sa || !sb) {
    row.why_not = "not produced by " + (!sa ? a.id : b.id);
    return row;
  }
  if (sa->second != sb->second) {
    row.why_not = "the two runs were tested on different rows";
    return row;
  }
  auto t = mtl::metrics::delong_test(sa->first, sb->first, sa->second);
  if (!t.defined()) {
    row.why_not = t.undefined_because;
    return row;
  }
  row.available = true;
  row.value_a = t.auc_a, row.value_b = t.auc_b, row.p_value = t.p_value, row.se_a = t.se_a, row.se_b = t.se_b;
  // Over seeds: each side's mean and spread, and the spread of the paired differences.
  row.spread_a = a.spread(metric), row.spread_b = b.spread(metric);
  std::vector<double> diffs;
  for (size_t k = 0; k < std::min(a.runs.size(), b.runs.size()); ++k)
    if (a.runs[k].test.count(metric) && b.runs[k].test.count(metric))
      diffs.push_back(a.runs[k].test.at(metric) - b.runs[k].test.at(metric));
  row.seeds = static_cast<int>(diffs.size());
  if (diffs.size() > 1) {
    double mean = 0, var = 0;
    for (double d : diffs) mean += d;
    mean /= diffs.size();
    for (double d : diffs) var += (d - mean) * (d - mean);
    row.spread_diff = std::make_pair(mean, std::sqrt(var / (diffs.size() - 1)));
  }
  const double diff = row.value_a - row.value_b;
  row.verdict =
      row.p_value < alpha ? (diff > 0 ? "significant gain" : "significant loss") : "no significant difference";
  if (row.spread_diff) {
    int same_sign = 0;
    for (double d : diffs) same_sign += (d > 0) == (diff > 0);
    row.verdict += fmt::format(" (same sign in {} of {} seeds)", same_sign, diffs.size());
  }
  return row;
}

inline std::vector<std::pair<Comparison, std::vector<DeltaRow>>> delta_rows(const std::vector<ExperimentRecord>& chain,
                                                                            double alpha) {
  auto find = [&](const std::string& id) -> const ExperimentRecord& {
    for (const auto& e : chain)
      if (e.id == id) return e;
    TORCH_CHECK(false, "no experiment ", id);
  };
  std::vector<std::pair<Comparison, std::vector<DeltaRow>>> out;
  for (const auto& c : comparisons()) {
    std::vector<DeltaRow> rows;
    for (const auto& m : c.metrics) rows.push_back(compare(find(c.a), find(c.b), m, alpha));
    out.emplace_back(c, rows);
  }
  return out;
}

/// "=0.0123", or "<1e-16" below what erfc resolves in double precision.
inline std::string format_p(double p) { return p < 1e-16 ? "<1e-16" : fmt::format("={:.3g}", p); }

inline void write_delta_analysis(const std::string& output, const std::vector<ExperimentRecord>& chain, double alpha) {
  std::ostringstream out;
  out << "Interview chain: delta analysis\n"
      << "Each line compares two experiments on the test split (best checkpoint of each run). p is the two-sided\n"
      << "DeLong test of the two correlated AUCs on the same test rows (first seed); the verdict is 'significant'\n"
      << fmt::format("when p < {}. With several seeds, mean +- standard deviation over seeds follow.\n\n", alpha);
  for (const auto& [c, rows] : delta_rows(chain, alpha)) {
    out << c.question << "\n";
    for (const auto& r : rows) {
      out << fmt::format("  {} vs {}  {:<21}", r.a, r.b, r.metric);
      if (!r.available) {
        out << "not available: " << r.why_not << "\n";
        continue;
      }
      const double diff = r.value_a - r.value_b;
      out << fmt::format("{}={:.5f}  {}={:.5f}  diff={:+.5f}  rel={:+.2f}%  p{}  -> {}\n", r.a, r.value_a, r.b,
                         r.value_b, diff, 100.0 * diff / r.value_b, format_p(r.p_value), r.verdict);
      if (r.spread_diff)
        out << fmt::format("      over {} seeds: {} {:.5f} +- {:.5f}, {} {:.5f} +- {:.5f}, diff {:+.5f} +- {:.5f}\n",
                           r.seeds, r.a, r.spread_a->first, r.spread_a->second, r.b, r.spread_b->first,
                           r.spread_b->second, r.spread_diff->first, r.spread_diff->second);
    }
    out << "\n";
  }
  // E5 not beating E4: convergence and expert health say why.
  for (const auto& e : chain) {
    const auto* r = e.first_finished();
    if (!r || r->max_steps <= 0) continue;
    if (r->best_step >= r->max_steps * 9 / 10)
      out << fmt::format("note: {} picked its best checkpoint at step {} of {}: it may not have converged.\n", e.id,
                         r->best_step, r->max_steps);
    for (const auto& g : r->gate_records)
      if (!g["healthy"].get<bool>())
        out << fmt::format("note: {} task {}: gate Gini {:.2f}, dead experts {}, monopolising {}.\n", e.id,
                           g["task"].get<std::string>(), g["gini"].get<double>(), g["dead_experts"].dump(),
                           g["monopolising_experts"].dump());
  }
  mtl::train::atomic_write((fs::path(output) / "delta_analysis.txt").string(), out.str());
}

}  // namespace chain
