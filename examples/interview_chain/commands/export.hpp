// `interview_chain export`: a run's best model, config, feature schema,
// vocabularies and test metrics as one bundle file for serving, or the model
// and its vocabularies as an ONNX file.
#pragma once

#include "common.hpp"

#include "../chain.hpp"

#include <mtl/io/checkpoint.hpp>
#include <mtl/serving/bundle.hpp>
#ifdef MTL_CHAIN_ONNX
#include <mtl/serving/onnx_export.hpp>
#endif
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
#include <vector>

namespace chain::commands {

inline constexpr const char* kExportHelp =
    "usage: interview_chain export --run DIR --out FILE [--format bundle|onnx]\n"
    "  bundle (default): the run's best model, its config, feature schema, vocabularies and test metrics as one\n"
    "  file, which `predict --bundle` and mtl::serving::Predictor load\n"
    "  onnx: the best model and its vocabularies as an ONNX model, checked by ONNX's checker (inputs: raw ids\n"
    "  and dense values by field name, [batch] each; outputs: p_<head> for every head, and p_ctcvr where there\n"
    "  are ctr and cvr heads)\n";

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot read '", path, "'");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

#ifdef MTL_CHAIN_ONNX
inline std::string output_names(const onnx::ModelProto& proto) {
  std::vector<std::string> names;
  for (const auto& output : proto.graph().output()) names.push_back(output.name());
  return mtl::detail::join(names);
}
#endif

inline int cmd_export(int argc, char** argv) {
  auto a = parse(argc, argv, 2, {"--run", "--out", "--format"}, {}, kExportHelp);
  TORCH_CHECK(a.values.count("--run") && a.values.count("--out"), "export expects --run DIR and --out FILE\n",
              kExportHelp);
  const auto format = a.values.count("--format") ? a.values["--format"] : "bundle";
  TORCH_CHECK(format == "bundle" || format == "onnx", "--format expects bundle or onnx, got '", format, "'");
#ifndef MTL_CHAIN_ONNX
  TORCH_CHECK(format == "bundle",
              "this interview_chain was built without ONNX export: install libonnx-dev and "
              "configure again");
#endif
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
#ifdef MTL_CHAIN_ONNX
  if (format == "onnx") {
    const auto proto = mtl::serving::to_onnx(bundle);
    mtl::serving::write_onnx(proto, a.values["--out"]);
    std::printf("wrote %s: %s (%s) as ONNX (opset %ld, %d nodes), inputs %ld sparse and %ld dense fields, outputs %s\n",
                a.values["--out"].c_str(), c.id.c_str(), c.model.mixer.c_str(),
                static_cast<long>(mtl::serving::kOnnxOpset), proto.graph().node_size(),
                static_cast<long>(features.schema.num_sparse()), static_cast<long>(features.schema.num_dense()),
                output_names(proto).c_str());
    return 0;
  }
#endif
  mtl::serving::save_bundle(a.values["--out"], bundle);
  std::printf("wrote %s: %s (%s), %ld sparse and %ld dense fields, mtl %s, LibTorch %s\n", a.values["--out"].c_str(),
              c.id.c_str(), c.model.mixer.c_str(), static_cast<long>(features.schema.num_sparse()),
              static_cast<long>(features.schema.num_dense()), mtl::version(), TORCH_VERSION);
  return 0;
}

}  // namespace chain::commands
