// Runs one experiment: loads its data, builds the model its config
// describes (DeepFM + single / shared-bottom / MMoE / PLE), trains it with
// the engine and leaves the run directory the chain reads.
#pragma once

#include "experiment.hpp"

#include <mtl/data/split_files.hpp>
#include <mtl/data/synthetic.hpp>
#include <mtl/io/checkpoint.hpp>
#include <mtl/model.hpp>
#include <mtl/model_spec.hpp>
#include <mtl/train/run_directory.hpp>
#include <mtl/train/trainer.hpp>

#include <fmt/core.h>
#include <torch/cuda.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>

namespace chain {

/// The three splits an experiment reads, shared by the experiments of a chain.
struct DataBundle {
  mtl::FeatureSchema schema;
  /// `train` is empty for synthetic data: its training rows are generated as batches are drawn.
  mtl::data::Dataset train, valid, test;
  std::string description;
  /// Raw id -> row per sparse field; empty for synthetic data, whose ids are rows.
  std::vector<mtl::data::Vocabulary> vocabularies;
  /// Synthetic data: the generator of the training rows, and how many there are.
  std::shared_ptr<const mtl::data::SyntheticGenerator> generator;
  int64_t generated_train_rows = 0;

  /// What reading the files found and changed (a file without a header line, conversions without a click),
  /// kept in each run's eval.json; null for synthetic data.
  nlohmann::json reads;

  /// The rows training draws its batches from; synthetic data reads draw `redraw` of its training rows.
  mtl::data::TrainingRows training_rows(uint64_t redraw) const {
    return generator ? generator->rows_on_demand(mtl::data::Split::train, generated_train_rows, redraw)
                     : mtl::data::TrainingRows(train);
  }
  /// Synthetic data: the training rows, generated in memory.
  mtl::data::Dataset generated_train(uint64_t redraw) const;
};

inline mtl::FeatureSchema with_embedding_dim(const mtl::FeatureSchema& schema, int64_t dim) {
  mtl::FeatureSchema out(dim);
  for (const auto& f : schema.sparse_fields()) out.add_sparse(f.name, f.vocab_size);
  for (const auto& f : schema.dense_fields()) out.add_dense(f.name);
  return out;
}

/// The same rows under another schema (the embedding width comes from the config).
inline mtl::data::Dataset rebind(mtl::data::Dataset&& ds, const mtl::FeatureSchema& schema) {
  mtl::data::Dataset out(schema);
  out.ids = std::move(ds.ids), out.dense = std::move(ds.dense);
  out.click = std::move(ds.click), out.conversion = std::move(ds.conversion);
  out.truth = std::move(ds.truth);
  return out;
}

inline DataBundle load_data(const ExperimentConfig& c, const std::string& cache_dir) {
  using namespace mtl::data;
  if (c.source == "synthetic") {
    auto gen = std::make_shared<const SyntheticGenerator>(c.synthetic);
    const auto schema = with_embedding_dim(gen->schema(), c.embedding_dim);
    DataBundle data{schema,
                    Dataset(schema),
                    rebind(gen->generate(Split::valid, c.valid_rows), schema),
                    rebind(gen->generate(Split::test, c.test_rows), schema),
                    "synthetic (seed " + std::to_string(c.data_seed()) + "): " + std::to_string(c.train_rows) +
                        " train rows (generated as batches are drawn) / " + std::to_string(c.valid_rows) + " valid / " +
                        std::to_string(c.test_rows) + " test rows",
                    {},
                    gen,
                    c.train_rows};
    return data;
  }
  const auto files = find_split_files(c.path);
  EncodeOptions options;
  options.min_count = c.min_count, options.embedding_dim = c.embedding_dim;
  options.valid_fraction = c.valid_fraction, options.test_fraction = c.test_fraction;
  auto splits = load_csv_splits(files, c.layout, options, c.cache_dir.empty() ? cache_dir : c.cache_dir, c.csv_read);
  // What reading changed, said once in the description and kept per file for eval.json.
  std::string changes;
  nlohmann::json reads = nlohmann::json::object();
  const auto name = [](const std::string& file) { return std::filesystem::path(file).filename().string(); };
  for (const auto& [file, read] : splits.reads) {
    if (!read.header_line)
      changes += "; " + name(file) + " has no header line; using " + name(files.train) + "'s columns";
    if (read.conversions_without_click_dropped > 0)
      changes += fmt::format("; {}: {} conversion(s) without a click dropped", name(file),
                             read.conversions_without_click_dropped);
    if (read.conversions_without_click_as_click > 0)
      changes += fmt::format("; {}: {} conversion(s) without a click counted as clicks", name(file),
                             read.conversions_without_click_as_click);
    reads[name(file)] = {{"rows", read.rows},
                         {"header_line", read.header_line},
                         {"conversions_without_click_dropped", read.conversions_without_click_dropped},
                         {"conversions_without_click_as_click", read.conversions_without_click_as_click}};
  }
  auto held_out = [&](const std::string& file, const char* split, double share) {
    return file.empty()
               ? std::string(" (no ") + split + " file: " + std::to_string(static_cast<int>(share * 100 + 0.5)) +
                     "% of the training file's rows, chosen by a hash of their position)"
               : std::string();
  };
  const auto desc = c.source + " from " + c.path + ": " + std::to_string(splits.train.num_rows()) + " train / " +
                    std::to_string(splits.valid.num_rows()) + " valid" +
                    held_out(files.valid, "validation", c.valid_fraction) + " / " +
                    std::to_string(splits.test.num_rows()) + " test rows" +
                    held_out(files.test, "test", c.test_fraction) + "; " + std::to_string(splits.schema.num_sparse()) +
                    " sparse and " + std::to_string(splits.schema.num_dense()) + " dense fields" + changes;
  DataBundle data{splits.schema, std::move(splits.train),       std::move(splits.valid), std::move(splits.test),
                  desc,          std::move(splits.vocabularies)};
  data.reads = std::move(reads);
  return data;
}

inline mtl::data::Dataset DataBundle::generated_train(uint64_t redraw) const {
  TORCH_CHECK(generator, "generated_train: the data is not synthetic");
  return rebind(generator->generate(mtl::data::Split::train, generated_train_rows, 0, redraw), schema);
}

/// What a model reads of an experiment's data: the schema and, for files, the vocabularies.
struct FeatureSet {
  mtl::FeatureSchema schema;
  std::vector<mtl::data::Vocabulary> vocabularies;  ///< empty for synthetic data, whose ids are rows
  std::string description;
};

/// The features of an experiment's data; synthetic data is not generated for it.
inline FeatureSet load_features(const ExperimentConfig& c, const std::string& cache_dir) {
  if (c.source == "synthetic")
    return {with_embedding_dim(mtl::data::SyntheticGenerator(c.synthetic).schema(), c.embedding_dim),
            {},
            "synthetic (seed " + std::to_string(c.data_seed()) + ")"};
  auto data = load_data(c, cache_dir);
  return {data.schema, std::move(data.vocabularies), data.description};
}

/// Builds the experiment's model, initialised from its seed, and hands it to `fn`.
template <class Fn>
void with_model(const ExperimentConfig& c, const mtl::FeatureSchema& schema, Fn&& fn) {
  torch::manual_seed(c.seed());
  mtl::with_model(c.model, schema, std::forward<Fn>(fn));
}

/// Ali-CCP's user id field, which the synthetic data names alike: GAUC groups rows by it where a layout has it.
inline constexpr const char* kUserField = "101";

/// What a non-finite loss's message advises, in this program's config keys.
inline constexpr const char* kNonFiniteAdvice =
    "lower optim.dense.lr, or for heterogeneous experts turn on model.align_outputs";

inline mtl::train::TrainerOptions trainer_options(const ExperimentConfig& c, const std::string& run_dir, bool quiet,
                                                  std::shared_ptr<mtl::train::Replicas> replicas = nullptr,
                                                  nlohmann::json data_report = nullptr) {
  auto options = c.trainer;
  return options.output_dir(run_dir)
      .amp(c.trainer.amp() && (c.on_cuda() || c.amp_on_cpu))
      .gauc_group_field(kUserField)
      .non_finite_advice(kNonFiniteAdvice)
      .data_report(data_report)
      .quiet(quiet)
      .replicas(std::move(replicas));
}

/// Trains one experiment into `run_dir` (continuing from its last checkpoint
/// if there is one); with `replicas`, as one rank of a data-parallel group.
inline mtl::train::TrainResult run_experiment(const ExperimentConfig& c, const DataBundle& data,
                                              const std::string& run_dir, bool quiet,
                                              std::shared_ptr<mtl::train::Replicas> replicas = nullptr) {
  if (!replicas || replicas->leader()) {
    mtl::io::create_output_dir(run_dir);
    mtl::train::RunDirectory(run_dir).write_config(c.fields.to_yaml());
  }
  TORCH_CHECK(!c.on_cuda() || torch::cuda::is_available(),
              "runtime.device is cuda, but this LibTorch sees no CUDA device");
  mtl::train::TrainResult result;
  with_model(c, data.schema, [&](auto model) {
    using Model = decltype(model);
    mtl::train::Trainer<Model> trainer(
        model, c.optimizer, mtl::train::Objective(c.model.heads, c.objective), data.training_rows(c.training_draw()),
        data.valid, &data.test,
        trainer_options(c, run_dir, quiet, replicas,
                        data.reads.is_null() ? nlohmann::json(nullptr) : nlohmann::json{{"reads", data.reads}}));
    result = trainer.run();
  });
  return result;
}

}  // namespace chain
