// `interview_chain export`: a run's best model, config, feature schema,
// vocabularies and test metrics as one bundle file for serving.
#pragma once

#include "common.hpp"

#include "../chain.hpp"

#include <mtl/io/checkpoint.hpp>
#include <mtl/serving/bundle.hpp>
#include <mtl/train/run_directory.hpp>
#include <mtl/version.hpp>

#include <c10/util/Exception.h>
#include <torch/version.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace chain::commands {

inline constexpr const char* kExportHelp =
    "usage: interview_chain export --run DIR --out FILE.mtl\n"
    "  writes the run's best model, its config, feature schema, vocabularies and test metrics as one bundle,\n"
    "  which `predict --bundle` and mtl::serving::Predictor load\n";

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot read '", path, "'");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline int cmd_export(int argc, char** argv) {
  auto a = parse(argc, argv, 2, {"--run", "--out"}, {}, kExportHelp);
  TORCH_CHECK(a.values.count("--run") && a.values.count("--out"), "export expects --run DIR and --out FILE\n",
              kExportHelp);
  const auto run = a.values["--run"];
  const auto config_path = mtl::train::RunDirectory(run).path(mtl::train::run_files::kConfig);
  const auto eval_path = mtl::train::RunDirectory(run).path(mtl::train::run_files::kEvaluation);
  TORCH_CHECK(fs::exists(eval_path), "'", run, "' holds no eval.json: export takes a finished run");
  auto c = chain::load_experiment(config_path, {});
  const auto features = chain::load_features(c, (fs::path(run) / "data_cache").string());
  mtl::serving::ModelBundle bundle;
  bundle.model = c.model;
  bundle.schema = features.schema;
  bundle.vocabularies = features.vocabularies;
  if (c.source != "synthetic") bundle.click_label = c.layout.click, bundle.conversion_label = c.layout.conversion;
  with_best_model(c, features.schema, run, [&](auto model) { bundle.weights = mtl::io::module_state(*model); });
  bundle.metadata = {{"experiment", c.id},
                     {"description", c.description},
                     {"run", fs::path(run).filename().string()},
                     {"data", features.description},
                     {"config_yaml", read_text(config_path)},
                     {"test_evaluation", nlohmann::json::parse(read_text(eval_path))}};
  mtl::serving::save_bundle(a.values["--out"], bundle);
  std::printf("wrote %s: %s (%s), %ld sparse and %ld dense fields, mtl %s, LibTorch %s\n", a.values["--out"].c_str(),
              c.id.c_str(), c.model.mixer.c_str(), static_cast<long>(features.schema.num_sparse()),
              static_cast<long>(features.schema.num_dense()), mtl::version(), TORCH_VERSION);
  return 0;
}

}  // namespace chain::commands
