// `interview_chain validate`: whether the controlled fields agree across the
// seven configs and the extension configs beside them.
#pragma once

#include "common.hpp"

#include "../chain.hpp"

#include <iostream>
#include <string>
#include <vector>

namespace chain::commands {

inline constexpr const char* kValidateHelp =
    "usage: interview_chain validate [--configs DIR] [--preset P] [--device D] [--data SRC]\n"
    "  prints a pass or fail mark per controlled field (the seven configs and DIR/extensions) and each\n"
    "  differing value with its file;\n"
    "  exits 1 when a field differs or a config has an error\n";

inline int cmd_validate(int argc, char** argv) {
  auto a = parse(argc, argv, 2, with(kOverrideOptions, {"--configs"}), {}, kValidateHelp);
  const auto dir = a.values.count("--configs") ? a.values["--configs"] : MTL_CHAIN_CONFIG_DIR;
  std::vector<std::string> extensions;
  for (const auto& [id, file] : chain::extension_experiments(dir)) extensions.push_back(id);
  const auto configs = chain::load_chain(dir, overrides(a), extensions);
  return chain::validate_controlled(configs, std::cout) ? 0 : 1;
}

}  // namespace chain::commands
