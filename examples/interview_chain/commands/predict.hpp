// `interview_chain predict`: scores a data split with a run's best checkpoint,
// or the rows of a CSV file with an exported bundle.
#pragma once

#include "common.hpp"

#include "../chain.hpp"

#include <mtl/data/batch_loader.hpp>
#include <mtl/data/csv_layout.hpp>
#include <mtl/data/csv_reader.hpp>
#include <mtl/data/dataset.hpp>
#include <mtl/metrics/multitask_metrics.hpp>
#include <mtl/serving/predictor.hpp>
#include <mtl/train/run_directory.hpp>

#include <c10/util/Exception.h>
#include <fmt/core.h>
#include <torch/utils.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <string>
#include <vector>

namespace chain::commands {

inline constexpr const char* kPredictHelp =
    "usage: interview_chain predict --run DIR --out FILE.csv [--data SRC] [--split train|valid|test]\n"
    "       interview_chain predict --bundle FILE.mtl --data FILE.csv --out FILE.csv\n"
    "  scores a split (default test) with the run's best checkpoint, or every row of a CSV file with an exported\n"
    "  bundle (raw ids under the bundle's field names; label columns optional); writes p_ctr, p_cvr, p_ctcvr and\n"
    "  the labels per row\n";

/// The predictions file's header: probabilities, then the labels where known.
inline void write_prediction_header(std::ostream& out, bool labelled) {
  out << "row,p_ctr,p_cvr,p_ctcvr" << (labelled ? ",click,conversion" : "") << "\n";
}

/// One CSV line per row: row, p_ctr, p_cvr, p_ctcvr (empty where the model
/// lacks a head), then the labels when `click` is given.
inline void write_prediction_rows(std::ostream& out, int64_t first, const mtl::serving::Predictions& p,
                                  const float* click, const float* conversion) {
  const size_t rows = std::max({p.p_ctr.size(), p.p_cvr.size()});
  auto cell = [](const std::vector<float>& v, size_t i) {
    return v.empty() ? std::string() : fmt::format("{:.7g}", v[i]);
  };
  for (size_t i = 0; i < rows; ++i) {
    out << first + static_cast<int64_t>(i) << "," << cell(p.p_ctr, i) << "," << cell(p.p_cvr, i) << ","
        << cell(p.p_ctcvr, i);
    if (click) out << "," << click[i] << "," << conversion[i];
    out << "\n";
  }
}

inline std::ofstream open_output(const std::string& path) {
  std::ofstream out(path);
  TORCH_CHECK(out.good(), "cannot write '", path, "'");
  return out;
}

/// Scores the rows of a CSV file with a bundle, streaming them in chunks.
inline int predict_with_bundle(const std::string& bundle_path, const std::string& csv, const std::string& out_path) {
  const mtl::serving::Predictor predictor(bundle_path, mtl::serving::PredictorOptions().threads_per_call(0));
  const auto& bundle = predictor.bundle();
  mtl::data::CsvLayout layout;
  layout.name = "the bundle's";
  for (const auto& f : predictor.schema().sparse_fields()) layout.sparse.push_back(f.name);
  for (const auto& f : predictor.schema().dense_fields()) layout.dense.push_back(f.name);
  const auto header = mtl::data::read_csv_header(csv);
  const bool labelled = std::count(header.begin(), header.end(), bundle.click_label) > 0 &&
                        std::count(header.begin(), header.end(), bundle.conversion_label) > 0;
  layout.click = labelled ? bundle.click_label : "";
  layout.conversion = labelled ? bundle.conversion_label : "";
  auto out = open_output(out_path);
  write_prediction_header(out, labelled);
  constexpr size_t kChunk = 8192;
  mtl::serving::RawRows chunk;
  std::vector<float> click, conversion;
  int64_t written = 0;
  // The chunk's columns in layout order (a map's values stay where they are).
  std::vector<std::vector<int64_t>*> sparse_columns;
  std::vector<std::vector<float>*> dense_columns;
  for (const auto& name : layout.sparse) sparse_columns.push_back(&chunk.sparse[name]);
  for (const auto& name : layout.dense) dense_columns.push_back(&chunk.dense[name]);
  auto flush = [&] {
    if (click.empty()) return;
    write_prediction_rows(out, written, predictor.predict(chunk), labelled ? click.data() : nullptr, conversion.data());
    written += static_cast<int64_t>(click.size());
    for (auto* column : sparse_columns) column->clear();
    for (auto* column : dense_columns) column->clear();
    click.clear(), conversion.clear();
  };
  mtl::data::read_csv(csv, layout, [&](const mtl::data::ParsedRow& row) {
    for (size_t j = 0; j < sparse_columns.size(); ++j) sparse_columns[j]->push_back(row.sparse[j]);
    for (size_t j = 0; j < dense_columns.size(); ++j) dense_columns[j]->push_back(row.dense[j]);
    click.push_back(row.click), conversion.push_back(row.conversion);
    if (click.size() == kChunk) flush();
  });
  flush();
  out.flush();
  TORCH_CHECK(out.good(), "writing '", out_path, "' failed");
  std::printf("wrote %ld rows of %s to %s\n", static_cast<long>(written), csv.c_str(), out_path.c_str());
  return 0;
}

inline int cmd_predict(int argc, char** argv) {
  auto a = parse(argc, argv, 2, {"--run", "--bundle", "--out", "--data", "--split"}, {}, kPredictHelp);
  TORCH_CHECK(a.values.count("--run") + a.values.count("--bundle") == 1 && a.values.count("--out"),
              "predict expects --run DIR or --bundle FILE, and --out FILE\n", kPredictHelp);
  if (a.values.count("--bundle")) {
    TORCH_CHECK(a.values.count("--data") && !a.values.count("--split"),
                "predict --bundle expects --data FILE.csv (and no --split)\n", kPredictHelp);
    return predict_with_bundle(a.values["--bundle"], a.values["--data"], a.values["--out"]);
  }
  const auto run = a.values["--run"];
  chain::Overrides o;
  if (a.values.count("--data")) o.data = a.values["--data"];
  auto c = chain::load_experiment(mtl::train::RunDirectory(run).path(mtl::train::run_files::kConfig), o);
  const auto data = chain::load_data(c, (fs::path(run) / "data_cache").string());
  const auto split = a.values.count("--split") ? a.values["--split"] : "test";
  TORCH_CHECK(split == "train" || split == "valid" || split == "test", "--split expects train, valid or test, got '",
              split, "'");
  mtl::data::Dataset generated(data.schema);  // synthetic training rows exist only when generated
  if (split == "train" && data.generator) generated = data.generated_train(c.training_draw());
  const auto& rows = split == "valid"  ? data.valid
                     : split == "test" ? data.test
                     : data.generator  ? generated
                                       : data.train;
  auto out = open_output(a.values["--out"]);
  write_prediction_header(out, true);
  mtl::metrics::PredictionColumns columns;  // the split's metrics, read as the trainer reads them
  with_best_model(c, data.schema, run, [&](auto model) {
    torch::NoGradGuard no_grad;
    mtl::data::for_each_batch(rows, 8192, [&](const mtl::data::TrainingBatch& b, int64_t first) {
      const auto p = mtl::serving::to_predictions(model->forward(b.features));
      write_prediction_rows(out, first, p, b.click.data_ptr<float>(), b.conversion.data_ptr<float>());
      columns.p_ctr.insert(columns.p_ctr.end(), p.p_ctr.begin(), p.p_ctr.end());
      columns.p_cvr.insert(columns.p_cvr.end(), p.p_cvr.begin(), p.p_cvr.end());
    });
  });
  std::printf("wrote %ld rows of the %s split to %s\n", static_cast<long>(rows.num_rows()), split.c_str(),
              a.values["--out"].c_str());
  columns.click = rows.click, columns.conversion = rows.conversion;
  columns.counterfactual_conversion = rows.truth.counterfactual_conversion;
  const auto metrics = mtl::metrics::evaluate_predictions(columns);
  std::string aucs;
  for (const char* key : {"auc_ctr", "auc_cvr", "auc_ctcvr", "auc_cvr_entire_space"})
    if (auto it = metrics.find(key); it != metrics.end())
      aucs += it->second.defined() ? fmt::format(" {}={:.5f}", key, it->second.value)
                                   : fmt::format(" {}=n/a ({})", key, it->second.undefined_because);
  if (!aucs.empty()) std::printf("%s split:%s\n", split.c_str(), aucs.c_str());
  return 0;
}

}  // namespace chain::commands
