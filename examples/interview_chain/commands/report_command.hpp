// `interview_chain report`: rebuilds the summaries and the report of a chain's
// output folder from the run directories it names.
#pragma once

#include "common.hpp"

#include <c10/util/Exception.h>

#include <filesystem>

namespace chain::commands {

inline constexpr const char* kReportHelp =
    "usage: interview_chain report DIR\n"
    "  rebuilds summary.csv, summary.json, delta_analysis.txt, delta_analysis.json and report.html in DIR from the\n"
    "  run directories that DIR/chain_state.json names\n";

inline int cmd_report(int argc, char** argv) {
  auto a = parse(argc, argv, 2, {}, {}, kReportHelp);
  TORCH_CHECK(a.positional.size() == 1, "report expects one folder\n", kReportHelp);
  TORCH_CHECK(fs::exists(fs::path(a.positional[0]) / "chain_state.json"), "'", a.positional[0],
              "' has no chain_state.json: is it a chain's --output folder?");
  write_reports(a.positional[0]);
  return 0;
}

}  // namespace chain::commands
