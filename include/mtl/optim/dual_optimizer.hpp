// The `dual_sparse_dense` optimizer: SparseAdam for every embedding table
// with sparse gradients, Adam for every other parameter, both driven by one
// cosine-with-warmup schedule from their own base learning rates.
#pragma once

#include <mtl/detail/side_by_side.hpp>
#include <mtl/embedding.hpp>
#include <mtl/optim/cosine_schedule.hpp>
#include <mtl/optim/dense_adam.hpp>
#include <mtl/optim/sparse_adam.hpp>

#include <ATen/Parallel.h>

#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace mtl::optim {

/// Options of `DualSparseDenseOptimizer`.
///
/// Example:
///   DualSparseDenseOptimizer opt(*model, DualSparseDenseOptions().sparse_lr(1e-3).dense_lr(6e-4)
///                                            .total_steps(40000).warmup_steps(1000));
struct DualSparseDenseOptions {
  TORCH_ARG(double, sparse_lr) = 1e-3;
  TORCH_ARG(double, dense_lr) = 6e-4;
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, dense_weight_decay) = 0.0;
  TORCH_ARG(int64_t, total_steps) = 40000;
  TORCH_ARG(int64_t, warmup_steps) = 1000;
  /// The schedule's floor, as a fraction of each base rate.
  TORCH_ARG(double, min_lr_ratio) = 0.0;
};

class DualSparseDenseOptimizer {
 public:
  DualSparseDenseOptimizer(torch::nn::Module& model, DualSparseDenseOptions options = {})
      : options_(options), schedule_(options.total_steps(), options.warmup_steps(), options.min_lr_ratio()) {
    TORCH_CHECK(options.sparse_lr() >= 0.0 && options.dense_lr() >= 0.0,
                "DualSparseDenseOptimizer expects learning rates >= 0, but got sparse ", options.sparse_lr(),
                " and dense ", options.dense_lr());
    std::set<const void*> sparse_tables;
    for (const auto& module : model.modules(/*include_self=*/true)) {
      auto embedding = std::dynamic_pointer_cast<SparseEmbeddingImpl>(module);
      if (!embedding || !embedding->options.sparse_grad()) continue;
      sparse_.push_back(std::make_unique<SparseAdam>(embedding->weight, SparseAdamOptions()
                                                                            .lr(options.sparse_lr())
                                                                            .beta1(options.beta1())
                                                                            .beta2(options.beta2())
                                                                            .eps(options.eps())));
      sparse_tables.insert(embedding->weight.unsafeGetTensorImpl());
    }
    std::vector<torch::Tensor> dense;
    for (const auto& p : model.parameters())
      if (!sparse_tables.count(p.unsafeGetTensorImpl())) dense.push_back(p);
    dense_ = std::make_unique<DenseAdam>(dense, DenseAdamOptions()
                                                    .lr(options.dense_lr())
                                                    .beta1(options.beta1())
                                                    .beta2(options.beta2())
                                                    .eps(options.eps())
                                                    .weight_decay(options.dense_weight_decay()));
    apply_schedule();
  }

  void zero_grad() {
    dense_->zero_grad();
    for (auto& s : sparse_) s->zero_grad();
  }

  /// One update of every parameter at the current step's learning rates,
  /// then the schedule moves to the next step.
  ///
  /// Each table's rows are grouped on one thread (in parallel both threads
  /// would read every id); the dense update, a stream through memory in chunks, runs
  /// beside it on the other threads, and a thread done grouping takes chunks
  /// too, so no thread waits through the grouping. Then every thread updates
  /// the tables' rows. Each value's update is independent, so the order
  /// changes nothing.
  void step() {
    dense_->prepare_step();
    const auto tables = static_cast<int64_t>(sparse_.size());
    const int64_t values = dense_->fused_values(), chunk = DenseAdam::kValuesPerThread;
    detail::for_each_task_side_by_side(tables + (values + chunk - 1) / chunk, at::get_num_threads(), [&](int64_t task) {
      if (task < tables) {
        sparse_[static_cast<size_t>(task)]->prepare_step();
        return;
      }
      const int64_t first = (task - tables) * chunk;
      dense_->update_values(first, std::min(values, first + chunk));
    });
    for (auto& s : sparse_) s->finish_step();
    ++step_;
    apply_schedule();
  }

  /// Steps taken so far.
  int64_t step_count() const noexcept { return step_; }
  double sparse_lr() const { return options_.sparse_lr() * schedule_.factor(step_); }
  double dense_lr() const { return options_.dense_lr() * schedule_.factor(step_); }
  size_t num_sparse_tables() const noexcept { return sparse_.size(); }
  size_t num_dense_parameters() const { return dense_->parameters().size(); }

  void save(torch::serialize::OutputArchive& archive) const {
    archive.write("step", torch::tensor(step_, torch::kLong), /*is_buffer=*/true);
    for (size_t i = 0; i < sparse_.size(); ++i) sparse_[i]->save(archive, "sparse_" + std::to_string(i) + "_");
    dense_->save(archive, "dense_");
  }

  void load(torch::serialize::InputArchive& archive) {
    torch::Tensor step;
    archive.read("step", step, /*is_buffer=*/true);
    for (size_t i = 0; i < sparse_.size(); ++i) sparse_[i]->load(archive, "sparse_" + std::to_string(i) + "_");
    dense_->load(archive, "dense_");
    step_ = step.item<int64_t>();
    apply_schedule();
  }

 private:
  void apply_schedule() {
    for (auto& s : sparse_) s->set_lr(sparse_lr());
    dense_->set_lr(dense_lr());
  }

  DualSparseDenseOptions options_;
  CosineWarmupSchedule schedule_;
  std::vector<std::unique_ptr<SparseAdam>> sparse_;
  std::unique_ptr<DenseAdam> dense_;
  int64_t step_ = 0;
};

}  // namespace mtl::optim
