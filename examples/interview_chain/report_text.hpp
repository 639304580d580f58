// The text outputs: summary.csv (one row per experiment) and
// delta_analysis.txt (each comparison, its per-seed differences and verdict).
#pragma once

#include "report_runs.hpp"
#include "report_statistics.hpp"

#include <mtl/io/file_io.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace chain {

inline std::string csv_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

inline void write_summary_csv(const std::string& output, const std::vector<ExperimentRecord>& chain) {
  std::ostringstream csv;
  csv << "exp_id,description,status,best_step,auc_ctr,auc_cvr,auc_ctcvr,loss,auc_cvr_entire_space,auc_primary,"
         "primary_key,seeds_finished,missing,parameters\n";
  for (const auto& e : chain) {
    const auto* first = e.first_finished();
    // best_step -1: no validation pass gave a defined primary metric, so the last model was tested.
    const bool has_best = first && first->best_step >= 0;
    csv << e.id << "," << csv_quote(e.description) << "," << csv_quote(summary_status(e)) << ","
        << (has_best ? std::to_string(first->best_step) : "") << ",";
    for (const auto& key : summary_metrics()) {
      auto s = e.spread(key);
      csv << (s ? fmt::format("{:.6f}", s->first) : "") << ",";
    }
    const std::string primary = first ? first->primary_key : "";
    auto p = primary.empty() ? std::nullopt : e.spread(primary);
    const int64_t parameters = first ? first->parameters : -1;
    csv << (p ? fmt::format("{:.6f}", p->first) : "") << "," << primary << "," << e.finished_count() << ","
        << csv_quote(summary_missing(e)) << "," << (parameters >= 0 ? std::to_string(parameters) : "") << "\n";
  }
  mtl::io::atomic_write((fs::path(output) / "summary.csv").string(), csv.str());
}

inline void write_delta_analysis_text(const std::string& output, const std::vector<ExperimentRecord>& chain,
                                      const DeltaAnalysis& analysis) {
  const auto& rows = analysis.rows;
  const auto& scenario = analysis.scenario;
  std::ostringstream out;
  out << "Interview chain: delta analysis\n";
  for (const auto& line : analysis.method) out << line << "\n";
  out << "\n";
  for (const auto& [q, title] : questions()) {
    if (std::none_of(rows.begin(), rows.end(), [&](const DeltaRow& r) { return r.comparison.question == q; }))
      continue;  // the extensions' question, where none ran
    out << q << " " << title << "\n";
    for (const auto& r : rows) {
      const auto& c = r.comparison;
      if (c.question != q) continue;
      out << fmt::format("  {:<11}  {} vs {:<3}  {:<21}  ", c.primary ? "primary" : "exploratory", c.challenger,
                         c.reference, c.metric);
      if (!r.available) {
        out << "not available: " << r.why_not << "\n";
        continue;
      }
      const auto& t = r.test;
      out << fmt::format("{}={:.5f}  {}={:.5f}  diff={:+.5f}", c.challenger, r.value_a, c.reference, r.value_b, t.mean);
      if (t.defined()) out << fmt::format(" [{:+.5f}, {:+.5f}]", t.interval_low, t.interval_high);
      out << fmt::format("  rel={:+.2f}%  p{}", 100.0 * t.mean / r.value_b, format_p(t.p_value));
      if (c.primary) out << fmt::format("  p_holm{}", format_p(r.p_adjusted));
      if (t.defined())
        out << fmt::format("  margin={:.4f} p_equiv{}  mde={:.5f}", r.margin, format_p(r.equivalence_p), r.mde);
      out << "  -> " << r.verdict;
      if (!r.designed.empty()) out << " (designed: " << r.designed << ")";
      out << "\n";
      std::string seeds_text;
      for (double d : t.differences) seeds_text += fmt::format(" {:+.5f}", d);
      out << fmt::format("      per seed:{}", seeds_text);
      if (!t.defined())
        out << fmt::format("  (DeLong p on seed 0's test rows{}, test-row noise only)", format_p(r.delong_p));
      if (r.parameters_a >= 0 && r.parameters_b >= 0)
        out << fmt::format("  trainable values {} {} / {} {}", c.challenger, r.parameters_a, c.reference,
                           r.parameters_b);
      out << "\n";
    }
    out << "\n";
  }
  const auto designed = designed_vs_found(rows, chain);
  if (!designed.empty()) {
    out << "Designed vs found (synthetic data, " << *scenario << " scenario; primary comparisons)\n";
    if (*scenario == "designed") out << "  The designed answers are " << designed_answers_budget() << "\n";
    size_t width = 0;
    for (const auto& d : designed) width = std::max(width, d.comparison.size() + d.knob.size() + d.knob_value.size());
    for (const auto& d : designed)
      out << fmt::format("  {}  {}, {}={}{:<{}}  designed {:<4}  found {:<12}  {}\n", d.question, d.comparison, d.knob,
                         d.knob_value, "", width - d.comparison.size() - d.knob.size() - d.knob_value.size(),
                         d.designed, d.found, d.outcome());
    out << "\n";
  }
  if (analysis.aligner) out << *analysis.aligner << "\n\n";
  if (any_uptake(chain)) {
    out << kUptakeHeading << "\n      ";
    for (const auto& name : kDesignedTermNames)
      out << fmt::format("  {:>11}", std::string(name.head) + " " + name.term);
    out << "\n";
    for (const auto& e : chain) {
      if (e.uptake.empty()) continue;
      std::string line = fmt::format("  {:<4}", e.id);
      for (const auto& name : kDesignedTermNames) {
        const auto t = uptake_of(e, name);
        line += t ? fmt::format("  {:>11.3f}", t->slope) : fmt::format("  {:>11}", "");
      }
      out << line.substr(0, line.find_last_not_of(' ') + 1) << "\n";
    }
    out << "  (" << kUptakeLegend << ")\n\n";
  }
  out << "Declared choices\n";
  for (const auto& line : analysis.choices) out << "  " << line << "\n";
  out << "\n";
  for (const auto& note : analysis.notes) out << "note: " << note << "\n";
  mtl::io::atomic_write((fs::path(output) / "delta_analysis.txt").string(), out.str());
}

}  // namespace chain
