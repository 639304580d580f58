// libFuzzer target: the interview chain's config loader. The input is an
// experiment file beside the shipped base.yaml; loading and reading it into
// an ExperimentConfig must succeed or throw a c10::Error (whose message
// names the file). Any other exception or a crash is a finding.
#include "fuzz_input_file.hpp"

#include "experiment.hpp"

#include <cstdlib>
#include <filesystem>
#include <string>

#ifndef MTL_CHAIN_CONFIG_DIR
#error "MTL_CHAIN_CONFIG_DIR must name the folder of the shipped configs"
#endif

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::filesystem::copy_file(std::string(MTL_CHAIN_CONFIG_DIR) + "/base.yaml", mtl_fuzz::scratch_dir() / "base.yaml",
                             std::filesystem::copy_options::overwrite_existing);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = mtl_fuzz::write_file("case.yaml", reinterpret_cast<const char*>(data), size);
  try {
    chain::read_experiment(chain::FieldTable::load(path));
  } catch (const c10::Error& e) {
    if (std::string(e.what_without_backtrace()).find("case.yaml") == std::string::npos &&
        std::string(e.what_without_backtrace()).find("base.yaml") == std::string::npos)
      std::abort();  // an error that does not say which file
  }
  return 0;
}
