// What a chain run reports, rebuilt from its run directories alone: the
// entry points that write the summaries and the delta analysis (the HTML
// report is report_html.hpp's).
#pragma once

#include "report_json.hpp"
#include "report_runs.hpp"
#include "report_statistics.hpp"
#include "report_text.hpp"

#include <string>
#include <vector>

namespace chain {

/// summary.csv and summary.json: one row per experiment.
inline void write_summaries(const std::string& output, const std::vector<ExperimentRecord>& chain) {
  write_summary_csv(output, chain);
  write_summary_json(output, chain);
}

/// delta_analysis.txt and delta_analysis.json: each comparison of the chain, its paired test and verdict. Returns
/// the analysis, which report.html shows too.
inline DeltaAnalysis write_delta_analysis(const std::string& output, const std::vector<ExperimentRecord>& chain,
                                          double alpha) {
  auto analysis = delta_analysis(chain, alpha);
  write_delta_analysis_text(output, chain, analysis);
  write_delta_analysis_json(output, chain, analysis, alpha);
  return analysis;
}

}  // namespace chain
