// Runs one experiment: loads its data, builds the model its config
// describes (DeepFM + single / shared-bottom / MMoE / PLE), trains it with
// the engine and leaves the run directory the chain reads.
#pragma once

#include "experiment.hpp"

#include <mtl/data/split_files.hpp>
#include <mtl/data/synthetic.hpp>
#include <mtl/model.hpp>
#include <mtl/train/checkpoint.hpp>
#include <mtl/train/trainer.hpp>

#include <torch/cuda.h>

#include <string>

namespace chain {

/// The three splits an experiment reads, shared by the experiments of a chain.
struct DataBundle {
  mtl::FeatureSchema schema;
  mtl::data::Dataset train, valid, test;
  std::string description;
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
    SyntheticGenerator gen(c.synthetic);
    const auto schema = with_embedding_dim(gen.schema(), c.embedding_dim);
    return {schema, rebind(gen.generate(Split::train, c.train_rows), schema),
            rebind(gen.generate(Split::valid, c.valid_rows), schema),
            rebind(gen.generate(Split::test, c.test_rows), schema),
            "synthetic (seed " + std::to_string(c.data_seed) + "): " + std::to_string(c.train_rows) + " train / " +
                std::to_string(c.valid_rows) + " valid / " + std::to_string(c.test_rows) + " test rows"};
  }
  const auto layout = c.source == "aliccp" ? CsvLayout::aliccp() : CsvLayout::aliexpress();
  auto splits = load_csv_splits(find_split_files(c.path), layout, {c.min_count, c.embedding_dim, 0.1},
                                c.cache_dir.empty() ? cache_dir : c.cache_dir);
  TORCH_CHECK(splits.test.num_rows() > 0, "data folder '", c.path,
              "' has no test split (a CSV whose name holds 'test')");
  const auto desc = c.source + " from " + c.path + ": " + std::to_string(splits.train.num_rows()) + " train / " +
                    std::to_string(splits.valid.num_rows()) + " valid / " + std::to_string(splits.test.num_rows()) +
                    " test rows";
  return {splits.schema, std::move(splits.train), std::move(splits.valid), std::move(splits.test), desc};
}

/// Builds the experiment's model and hands it to `fn` (each mixer is its own type).
template <class Fn>
void with_model(const ExperimentConfig& c, const mtl::FeatureSchema& schema, Fn&& fn) {
  using namespace mtl;
  torch::manual_seed(c.seed);
  const auto backbone = DeepFMOptions(schema)
                            .deep_hidden_dims(c.deep_hidden_dims)
                            .fm_projection_dim(c.fm_projection_dim)
                            .sparse_grad(c.sparse_grad);
  if (c.mtl == "single" || c.mtl == "sharedbottom") {
    const auto dims = c.mtl == "single" ? std::vector<int64_t>{} : c.shared_bottom_dims;
    fn(SharedBottomModel(SharedBottomModelOptions(backbone, SharedBottomOptions(0, 0).hidden_dims(dims), c.heads)
                             .task_tower_hidden_dims(c.tower_hidden_dims)));
  } else if (c.mtl == "mmoe") {
    fn(MMoEModel(
        MMoEModelOptions(backbone, MMoEOptions(0, 0).experts(c.shared_experts).expert_dim(c.expert_dim), c.heads)
            .task_tower_hidden_dims(c.tower_hidden_dims)));
  } else {
    fn(PLEModel(PLEModelOptions(backbone,
                                PLEOptions(0, 0)
                                    .shared_experts(c.shared_experts)
                                    .task_experts(c.task_experts)
                                    .expert_dim(c.expert_dim)
                                    .num_levels(c.num_levels)
                                    .align_outputs(c.align)
                                    .aligner_dropout(c.align_dropout),
                                c.heads)
                    .task_tower_hidden_dims(c.tower_hidden_dims)));
  }
}

inline mtl::train::TrainerOptions trainer_options(const ExperimentConfig& c, const std::string& run_dir, bool quiet) {
  return mtl::train::TrainerOptions(run_dir)
      .max_train_steps(c.max_train_steps)
      .eval_every(c.eval_every)
      .log_every(c.log_every)
      .batch_size(c.batch_size)
      .eval_batch_size(c.eval_batch_size)
      .seed(c.seed)
      .device(torch::Device(c.device))
      .amp(c.amp_effective())
      .threads(c.threads)
      .primary_key(c.primary_key)
      .quiet(quiet);
}

/// Trains one experiment into `run_dir` (continuing from its last checkpoint if there is one).
inline mtl::train::TrainResult run_experiment(const ExperimentConfig& c, const DataBundle& data,
                                              const std::string& run_dir, bool quiet) {
  mtl::train::create_output_dir(run_dir);
  mtl::train::atomic_write((std::filesystem::path(run_dir) / "config.yaml").string(), c.fields.to_yaml());
  TORCH_CHECK(c.device != "cuda" || torch::cuda::is_available(),
              "runtime.device is cuda, but this LibTorch sees no CUDA device");
  mtl::train::TrainResult result;
  with_model(c, data.schema, [&](auto model) {
    using Model = decltype(model);
    mtl::train::Trainer<Model> trainer(model,
                                       mtl::optim::DualSparseDenseOptions()
                                           .sparse_lr(c.sparse_lr)
                                           .dense_lr(c.dense_lr)
                                           .dense_weight_decay(c.weight_decay)
                                           .total_steps(c.total_steps)
                                           .warmup_steps(c.warmup_steps)
                                           .min_lr_ratio(c.min_lr_ratio),
                                       mtl::train::Objective(c.heads, mtl::train::ObjectiveOptions()
                                                                          .use_esmm(c.use_esmm)
                                                                          .cvr_denominator(c.cvr_denominator)
                                                                          .esmm_version(c.esmm_version)
                                                                          .lambda_cvr_aux(c.lambda_cvr_aux)),
                                       data.train, data.valid, &data.test, trainer_options(c, run_dir, quiet));
    result = trainer.run();
  });
  return result;
}

}  // namespace chain
