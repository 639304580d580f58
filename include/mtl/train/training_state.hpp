// The state from which a stopped run continues exactly: parameters,
// optimizer, learning-rate schedule, the CPU random generator, the data
// position and the best validation so far, saved as ckpt_last.pt (the one
// before kept as ckpt_prev.pt, read when the last is missing or damaged).
#pragma once

#include <mtl/data/batch_loader.hpp>
#include <mtl/io/checkpoint.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/train/run_directory.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>

namespace mtl::train {

/// The best validation a run has seen: its step (-1: none yet) and its primary metric.
struct BestSoFar {
  int64_t step = -1;
  double metric = std::nan("");
};

/// Saves what `restore_training_state` needs to continue after this step.
inline void save_training_state(const RunDirectory& dir, const torch::nn::Module& model,
                                const optim::DualSparseDenseOptimizer& optimizer, const data::BatchLoader& loader,
                                const BestSoFar& best, const torch::Tensor& loss_weighting = {}) {
  auto state = io::module_state(model, "model.");
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream bytes;
  archive.save_to(bytes);
  state.insert("optimizer", io::bytes_tensor(bytes.str()));
  state.insert("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  state.insert("step", torch::tensor(optimizer.step_count()));
  state.insert("loader_epoch", torch::tensor(loader.position().epoch));
  state.insert("loader_batch", torch::tensor(loader.position().batch));
  state.insert("best_step", torch::tensor(best.step));
  state.insert("best_metric", torch::tensor(best.metric, torch::kDouble));
  if (loss_weighting.defined()) state.insert("loss_weighting", loss_weighting);
  io::save_keeping_previous(dir.path(run_files::kLastCheckpoint), dir.path(run_files::kPreviousCheckpoint), state);
}

/// Where a restored run stands.
struct RestoredState {
  int64_t step = 0;
  BestSoFar best;
  std::string source;  ///< the checkpoint file it came from
  torch::Tensor loss_weighting;  ///< the learned loss weights' state (loss_weighting.hpp); undefined without
};

/// Loads the last checkpoint (or the one before it, calling `warn` with why
/// the last would not read) into the model, optimizer, generator and loader.
inline RestoredState restore_training_state(const RunDirectory& dir, torch::nn::Module& model,
                                            optim::DualSparseDenseOptimizer& optimizer, data::BatchLoader& loader,
                                            const std::function<void(const std::string&)>& warn) {
  auto loaded =
      io::load_first_good({dir.path(run_files::kLastCheckpoint), dir.path(run_files::kPreviousCheckpoint)}, warn);
  const auto& state = loaded.tensors;
  const auto& source = loaded.path;
  io::load_module_state(model, state, "model.", source);
  torch::serialize::InputArchive archive;
  std::istringstream bytes(io::tensor_bytes(state.at("optimizer")));
  archive.load_from(bytes);
  optimizer.load(archive);
  auto generator = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state.at("rng_cpu"));
  }
  const auto integer = [&](const char* key) { return state.at(key).item<int64_t>(); };
  loader.seek({integer("loader_epoch"), integer("loader_batch")});
  return {integer("step"), {integer("best_step"), state.at("best_metric").item<double>()}, source,
          state.contains("loss_weighting") ? state.at("loss_weighting") : torch::Tensor()};
}

}  // namespace mtl::train
