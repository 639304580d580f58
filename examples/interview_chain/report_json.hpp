// The JSON outputs: summary.json (one object per experiment, with its runs)
// and delta_analysis.json (each comparison's numbers, the method and notes).
#pragma once

#include "report_runs.hpp"
#include "report_statistics.hpp"

#include <mtl/io/file_io.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace chain {

inline void write_summary_json(const std::string& output, const std::vector<ExperimentRecord>& chain) {
  nlohmann::json json = nlohmann::json::array();
  for (const auto& e : chain) {
    const auto* first = e.first_finished();
    const bool has_best = first && first->best_step >= 0;
    nlohmann::json row{{"exp_id", e.id}, {"description", e.description}, {"status", summary_status(e)}};
    for (const auto& key : summary_metrics()) {
      auto s = e.spread(key);
      row[key] = s ? nlohmann::json(s->first) : nlohmann::json(nullptr);
      if (s && e.runs.size() > 1) row[key + "_std"] = s->second;
    }
    const std::string primary = first ? first->primary_key : "";
    auto p = primary.empty() ? std::nullopt : e.spread(primary);
    const int64_t parameters = first ? first->parameters : -1;
    row["parameters"] = parameters >= 0 ? nlohmann::json(parameters) : nlohmann::json(nullptr);
    row["auc_primary"] = p ? nlohmann::json(p->first) : nlohmann::json(nullptr);
    row["primary_key"] = primary;
    row["best_step"] = has_best ? nlohmann::json(first->best_step) : nlohmann::json(nullptr);
    row["missing"] = summary_missing(e);
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& r : e.runs)
      runs.push_back({{"run_dir", r.dir}, {"status", r.status.status}, {"best_step", r.best_step}, {"test", r.test}});
    row["runs"] = runs;
    json.push_back(row);
  }
  mtl::io::atomic_write((fs::path(output) / "summary.json").string(), json.dump(2) + "\n");
}

/// One comparison's object in delta_analysis.json.
inline nlohmann::json comparison_json(const DeltaRow& r) {
  const auto& c = r.comparison;
  nlohmann::json j{{"question", c.question}, {"challenger", c.challenger}, {"reference", c.reference},
                   {"metric", c.metric},     {"primary", c.primary},       {"available", r.available}};
  if (!r.available) {
    j["why_not"] = r.why_not;
    return j;
  }
  const auto number = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  const auto& t = r.test;
  j.update({{"challenger_value", r.value_a},
            {"reference_value", r.value_b},
            {"per_seed_differences", t.differences},
            {"mean_difference", t.mean},
            {"interval_95",
             t.defined() ? nlohmann::json::array({t.interval_low, t.interval_high}) : nlohmann::json(nullptr)},
            {"p", number(t.p_value)},
            {"p_adjusted", number(r.p_adjusted)},
            {"verdict", r.verdict},
            {"margin", number(r.margin)},
            {"equivalence_p", number(r.equivalence_p)},
            {"mde", number(r.mde)},
            {"challenger_parameters", r.parameters_a},
            {"reference_parameters", r.parameters_b},
            {"delong_p_first_seed", number(r.delong_p)},
            {"test_row_variance", number(r.test_row_variance)},
            {"designed", r.designed.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.designed)}});
  if (!t.defined()) j["why_untested"] = t.undefined_because;
  return j;
}

inline void write_delta_analysis_json(const std::string& output, const std::vector<ExperimentRecord>& chain,
                                      const DeltaAnalysis& analysis, double alpha) {
  const auto& rows = analysis.rows;
  const auto& scenario = analysis.scenario;
  nlohmann::json json = nlohmann::json::array();
  for (const auto& [q, title] : questions())
    for (const auto& r : rows)
      if (r.comparison.question == q) json.push_back(comparison_json(r));
  nlohmann::json uptake_json = nullptr;
  if (any_uptake(chain)) {
    uptake_json = nlohmann::json::object();
    for (const auto& e : chain)
      for (const auto& t : e.uptake)
        uptake_json[e.id].push_back(
            {{"head", t.head}, {"term", t.term}, {"questions", t.questions}, {"slope", t.slope}});
  }
  mtl::io::atomic_write(
      (fs::path(output) / "delta_analysis.json").string(),
      nlohmann::json{{"alpha", alpha},
                     {"paired_seeds", paired_seeds(rows)},
                     {"min_seeds_for_a_verdict", kMinSeeds},
                     {"method", analysis.method},
                     {"comparisons", json},
                     {"declared_choices", analysis.choices},
                     {"mechanism_uptake", uptake_json},
                     {"scenario", scenario ? nlohmann::json(*scenario) : nlohmann::json(nullptr)},
                     {"notes", analysis.notes},
                     {"aligner_claim", analysis.aligner ? nlohmann::json(*analysis.aligner) : nlohmann::json(nullptr)}}
              .dump(2) +
          "\n");
}

}  // namespace chain
