// The step loop: trains a MultiTaskModel with the dual sparse/dense optimizer
// to max_train_steps, validates every eval_every steps, keeps the best
// checkpoint by a primary metric and a last checkpoint from which a resumed
// run continues exactly (training_state.hpp), and writes the run folder that
// run_directory.hpp defines. A non-finite loss stops the run naming the step
// and the term. With `replicas`, each rank trains on its share of every
// global batch and evaluates its share of the rows; the leader alone writes
// files.
#pragma once

#include <mtl/data/batch_loader.hpp>
#include <mtl/data/dataset.hpp>
#include <mtl/metrics/multitask_metrics.hpp>
#include <mtl/model.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/train/autocast.hpp>
#include <mtl/train/batch_share.hpp>
#include <mtl/train/evaluation.hpp>
#include <mtl/train/expert_health.hpp>
#include <mtl/train/heap_retention.hpp>
#include <mtl/train/loss_weighting.hpp>
#include <mtl/train/objective.hpp>
#include <mtl/train/replicas.hpp>
#include <mtl/train/run_directory.hpp>
#include <mtl/train/run_log.hpp>
#include <mtl/train/trainer_hooks.hpp>
#include <mtl/train/training_state.hpp>

#include <ATen/Parallel.h>
#include <fmt/core.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace mtl::train {

/// Options of `Trainer`.
///
/// Example:
///   Trainer trainer(model, optimizer_options, objective, splits.train, splits.valid, &splits.test,
///                   TrainerOptions("runs/e5").max_train_steps(40000).primary_key("auc_ctcvr"));
struct TrainerOptions {
  /* implicit */ TrainerOptions(std::string output_dir) : output_dir_(std::move(output_dir)) {}

  TORCH_ARG(std::string, output_dir);
  TORCH_ARG(int64_t, max_train_steps) = 40000;
  TORCH_ARG(int64_t, eval_every) = 2000;
  TORCH_ARG(int64_t, log_every) = 100;
  TORCH_ARG(int64_t, batch_size) = 1024;
  TORCH_ARG(int64_t, eval_batch_size) = 8192;
  TORCH_ARG(uint64_t, seed) = 20260127;
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
  /// bf16 autocast around forward and loss.
  TORCH_ARG(bool, amp) = false;
  /// Intra-op threads; 0 takes every core.
  TORCH_ARG(int, threads) = 0;
  /// The validation metric that picks the best checkpoint (higher is better).
  TORCH_ARG(std::string, primary_key) = "auc_ctcvr";
  /// Continue from ckpt_last.pt when the output folder has one.
  TORCH_ARG(bool, resume) = true;
  TORCH_ARG(int64_t, prefetch) = 2;
  /// Print nothing to stdout (the files are written all the same).
  TORCH_ARG(bool, quiet) = false;
  /// Keep freed memory in the process (`retain_freed_memory`, process-wide):
  /// saves the kernel re-zeroing pages every step.
  TORCH_ARG(bool, retain_freed_memory) = true;
  /// The ranks of a data-parallel run (null: this process alone). Every rank
  /// draws the same global batches of `batch_size` rows and trains on its
  /// share; every rank must be able to read the output folder, which only
  /// the leader writes.
  TORCH_ARG(std::shared_ptr<Replicas>, replicas) = nullptr;
  /// The sparse field whose ids group rows for GAUC (a user id field); empty: no GAUC.
  TORCH_ARG(std::string, gauc_group_field) = "";
  /// What a non-finite loss's message advises, in the caller's terms (a config's keys, say).
  TORCH_ARG(std::string, non_finite_advice) =
      "lower the dense learning rate (DualSparseDenseOptions::dense_lr), or for heterogeneous experts align their "
      "outputs (ModelSpec::align_outputs, ExpertOutputAligner)";
  /// What the data reader found and changed (rows dropped, a file without a header line), kept in eval.json.
  TORCH_ARG(nlohmann::json, data_report) = nullptr;
  /// How the objective's terms are weighed (loss_weighting.hpp); the default keeps the objective's own total.
  TORCH_ARG(LossWeightingOptions, loss_weighting);
  /// Where a test interrupts a run (trainer_hooks.hpp); the default honours MTL_CRASH_AT.
  TORCH_ARG(std::shared_ptr<TrainerHooks>, hooks) = std::make_shared<TrainerHooks>();
};

struct TrainResult {
  bool finished = false;
  std::string stopped_because;  ///< empty when finished
  int64_t steps = 0;
  int64_t best_step = -1;
  double best_metric = std::nan("");
  std::map<std::string, metrics::MetricValue> best_valid;
  std::map<std::string, metrics::MetricValue> test;
};

namespace detail {
template <class Model, class = void>
struct HasOutputLayerWeights : std::false_type {};
template <class Model>
struct HasOutputLayerWeights<Model, std::void_t<decltype(std::declval<Model&>()->backbone->output_layer_weights())>>
    : std::true_type {};
}  // namespace detail

/// The weights where GradNorm measures each term's gradient: the backbone's output layer
/// (DeepFM::output_layer_weights), which every task shares whatever the mixer (for MMoE and PLE the last
/// layer all tasks share; a shared bottom's hidden layers come after it).
template <class Model>
std::vector<torch::Tensor> last_shared_weights(Model& model) {
  if constexpr (detail::HasOutputLayerWeights<Model>::value)
    return model->backbone->output_layer_weights();
  else
    TORCH_CHECK(false, "GradNorm needs a backbone with output_layer_weights(), a layer all its tasks share");
}

template <class Model>
class Trainer {
 public:
  Trainer(Model model, optim::DualSparseDenseOptions optimizer_options, Objective objective, data::TrainingRows train,
          const data::Dataset& valid, const data::Dataset* test, TrainerOptions options)
      : model_(std::move(model)),
        objective_(std::move(objective)),
        train_(std::move(train)),
        valid_(valid),
        test_(test),
        options_(std::move(options)),
        optimizer_options_(optimizer_options),
        dir_(options_.output_dir()),
        log_(dir_, leader(), options_.quiet()) {
    TORCH_CHECK(options_.max_train_steps() > 0, "Trainer expects max_train_steps > 0, but got ",
                options_.max_train_steps());
    TORCH_CHECK(options_.eval_every() > 0 && options_.log_every() > 0,
                "Trainer expects eval_every and log_every > 0, but got ", options_.eval_every(), " and ",
                options_.log_every());
    TORCH_CHECK(!options_.output_dir().empty(), "Trainer expects an output folder");
    TORCH_CHECK(!options_.replicas() || options_.batch_size() >= options_.replicas()->world_size(),
                "Trainer expects a batch_size of at least one row per rank, but got ", options_.batch_size(),
                " rows for ", options_.replicas() ? options_.replicas()->world_size() : 1, " ranks");
    TORCH_CHECK(options_.hooks(), "Trainer expects hooks (the default TrainerHooks when no test needs its own)");
    LossWeighting(objective_, options_.loss_weighting());  // its options' checks, before any run
  }

  const std::string& dir() const { return options_.output_dir(); }
  const RunDirectory& run_directory() const { return dir_; }

  TrainResult run() {
    if (leader()) dir_.create();
    if (options_.retain_freed_memory()) retain_freed_memory();
    at::set_num_threads(options_.threads() > 0 ? options_.threads()
                                               : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    model_->to(options_.device());
    optim::DualSparseDenseOptimizer optimizer(*model_, optimizer_options_);
    data::BatchLoader loader(train_, data::LoaderOptions()
                                         .batch_size(options_.batch_size())
                                         .seed(options_.seed())
                                         .prefetch(options_.prefetch())
                                         .device(options_.device()));
    LossWeighting weighting(objective_, options_.loss_weighting());
    const auto shared_weights =
        weighting.kind() == LossWeightingKind::gradnorm ? last_shared_weights(model_) : std::vector<torch::Tensor>();
    TrainResult result;
    if (resuming()) {
      restore(optimizer, loader, weighting, result);
      if (replicas()) replicas()->check_equal(*model_);
    } else {
      torch::manual_seed(options_.seed());
      if (replicas()) replicas()->broadcast_parameters(*model_);
      if (leader()) dir_.start_records();
      log_.line(fmt::format("training {} steps, batch {}, on {}{}; {} train / {} valid rows",
                            options_.max_train_steps(), options_.batch_size(), options_.device().str(),
                            options_.amp() ? " with bf16 autocast" : "", train_.num_rows(), valid_.num_rows()));
    }

    model_->train();
    const auto start = std::chrono::steady_clock::now();
    const int64_t first_step = optimizer.step_count();
    // The loss stays on the device between log steps: on CUDA, reading it
    // every step would wait for the GPU every step.
    const bool check_every_step = !options_.device().is_cuda();
    torch::Tensor window_loss =
        torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(options_.device()));
    int64_t window_steps = 0, steps_this_run = 0, window_first = first_step + 1;
    auto window_start = start;
    while (optimizer.step_count() < options_.max_train_steps()) {
      if (options_.hooks()->stop_before_step(steps_this_run)) {
        result.stopped_because = "stopped after " + std::to_string(steps_this_run) + " steps as asked";
        result.steps = optimizer.step_count();
        return result;
      }
      const int64_t step = optimizer.step_count() + 1;
      auto batch = loader.next();
      LossTerms loss;
      {
        AutocastGuard autocast(options_.device(), options_.amp());
        if (replicas()) {
          const auto share = share_of(batch, replicas()->rank(), replicas()->world_size());
          loss =
              objective_(model_->forward(share.features), share, share_denominators(batch, replicas()->world_size()));
        } else {
          loss = objective_(model_->forward(batch.features), batch);
        }
      }
      const auto reported = replicas() ? averaged_over_ranks(loss) : loss;
      window_loss += reported.total.detach().to(torch::kDouble);
      ++window_steps, ++steps_this_run;
      const bool log_now = step % options_.log_every() == 0;
      if ((check_every_step || log_now) && !std::isfinite(window_loss.template item<double>())) {
        result.stopped_because = non_finite_message(reported, step,
                                                    check_every_step || window_first == step
                                                        ? fmt::format("at step {}", step)
                                                        : fmt::format("between steps {} and {}", window_first, step));
        log_.line("stopped: " + result.stopped_because);
        result.steps = step - 1;
        return result;
      }
      torch::Tensor term_gradients;
      if (weighting.needs_gradient_norms(step)) {
        term_gradients = weighting.term_gradients(loss, shared_weights);
        if (replicas()) {
          replicas()->sum(term_gradients);
          term_gradients.div_(replicas()->world_size());
        }
      }
      optimizer.zero_grad();
      weighting.total(loss).backward();
      if (replicas()) replicas()->average_gradients(*model_);
      optimizer.step();
      weighting.update(reported, term_gradients);

      if (log_now) {
        const auto now = std::chrono::steady_clock::now();
        const double seconds = std::chrono::duration<double>(now - window_start).count();
        const double mean_loss = window_loss.template item<double>() / window_steps;
        const double samples_per_s = window_steps * options_.batch_size() / std::max(seconds, 1e-9);
        nlohmann::json record{{"step", step},
                              {"split", "train"},
                              {"loss", mean_loss},
                              {"lr_dense", optimizer.dense_lr()},
                              {"lr_sparse", optimizer.sparse_lr()},
                              {"samples_per_s", samples_per_s}};
        for (const auto& [name, t] : reported.terms) record["loss_" + name] = t.template item<double>();
        if (!weighting.is_identity())
          for (const auto& [name, w] : weighting.weights()) record["weight_" + name] = w;
        if (leader()) dir_.append_metrics(record);
        log_.progress(step, options_.max_train_steps(), samples_per_s, mean_loss,
                      std::chrono::duration<double>(now - start).count(), step - first_step);
        window_loss.zero_(), window_steps = 0, window_start = now, window_first = step + 1;
      }
      if (step % options_.eval_every() == 0 || step == options_.max_train_steps()) {
        validate(step, result);
        options_.hooks()->after_validation();
        if (leader())
          save_training_state(dir_, *model_, optimizer, loader, {result.best_step, result.best_metric},
                              weighting.learns() ? weighting.state() : torch::Tensor());
      }
    }
    log_.end_progress();
    finish(result);
    result.steps = optimizer.step_count();
    return result;
  }

  /// Metrics (and mean loss) of the current model on `dataset` (evaluation.hpp).
  /// With replicas, every rank must call it.
  std::map<std::string, metrics::MetricValue> evaluate(const data::Dataset& dataset, ExpertHealth* health = nullptr,
                                                       metrics::PredictionColumns* keep = nullptr) {
    return train::evaluate(model_, objective_, dataset, evaluation_options(), health, keep);
  }

  Model& model() { return model_; }

  /// Whether this process writes the output folder: the only process, or the leader of the ranks.
  bool leader() const { return !replicas() || replicas()->leader(); }

  /// The model's trainable values: embedding rows and dense weights alike.
  int64_t parameter_count() const {
    int64_t count = 0;
    for (const auto& p : model_->parameters()) count += p.numel();
    return count;
  }

 private:
  Replicas* replicas() const { return options_.replicas().get(); }

  EvaluationOptions evaluation_options() const {
    EvaluationOptions o;
    o.device = options_.device();
    o.batch_size = options_.eval_batch_size();
    o.gauc_group_field = options_.gauc_group_field();
    o.replicas = replicas();
    return o;
  }

  /// Whether the run continues from a checkpoint: the leader's answer, which
  /// every rank follows (a rank that cannot read the checkpoint then fails).
  bool resuming() {
    bool found = options_.resume() && dir_.has_resume_checkpoint();
    if (!replicas()) return found;
    auto flag = torch::tensor({leader() && found ? 1.0 : 0.0}, torch::kDouble);
    replicas()->sum(flag);
    return flag.template item<double>() > 0;
  }

  /// The loss terms' means over the ranks (each rank's terms are of its share
  /// of the global batch, scaled so that their mean is the global batch's).
  LossTerms averaged_over_ranks(const LossTerms& loss) const {
    std::vector<torch::Tensor> values{loss.total.detach()};
    for (const auto& term : loss.terms) values.push_back(term.second.detach());
    auto stacked = torch::stack(values).to(torch::kCPU, torch::kDouble);
    replicas()->sum(stacked);
    stacked.div_(static_cast<double>(replicas()->world_size()));
    LossTerms out;
    out.total = stacked[0];
    for (size_t i = 0; i < loss.terms.size(); ++i)
      out.terms.emplace_back(loss.terms[i].first, stacked[static_cast<int64_t>(i) + 1]);
    return out;
  }

  std::string non_finite_message(const LossTerms& reported, int64_t step, const std::string& when) const {
    std::string terms;
    for (const auto& [name, t] : reported.terms) {
      const double value = t.template item<double>();  // a NaN's sign bit depends on the arithmetic: show it as "nan"
      terms += std::isnan(value) ? fmt::format(" {}=nan", name) : fmt::format(" {}={}", name, value);
    }
    return fmt::format("the loss went non-finite {} (terms at step {}:{}); {}", when, step, terms,
                       options_.non_finite_advice());
  }

  void validate(int64_t step, TrainResult& result) {
    auto health = make_expert_health(model_);
    auto m = evaluate(valid_, &health);
    nlohmann::json record = metrics_json(m);
    record["step"] = step;
    record["split"] = "valid";
    if (leader()) {
      dir_.append_metrics(record);
      for (auto r : health.records(step)) {
        r["split"] = "valid";
        dir_.append_expert_health(r);
      }
    }
    auto it = m.find(options_.primary_key());
    TORCH_CHECK(it != m.end(), "the primary key '", options_.primary_key(),
                "' is not a metric this experiment produces");
    std::string line = fmt::format("step {} valid:", step);
    for (const auto& [k, v] : m)
      if (v.defined()) line += fmt::format(" {}={:.5f}", k, v.value);
    if (it->second.defined() && (result.best_step < 0 || it->second.value > result.best_metric)) {
      result.best_step = step, result.best_metric = it->second.value, result.best_valid = m;
      if (leader()) io::save_tensor_dict(dir_.path(run_files::kBestCheckpoint), io::module_state(*model_));
      line += fmt::format("  (best {} so far: saved {})", options_.primary_key(), run_files::kBestCheckpoint);
    }
    log_.line(line);
    if (replicas()) replicas()->check_equal(*model_);
  }

  void restore(optim::DualSparseDenseOptimizer& optimizer, data::BatchLoader& loader, LossWeighting& weighting,
               TrainResult& result) {
    const auto restored = restore_training_state(dir_, *model_, optimizer, loader, [&](const std::string& why) {
      log_.line("warning: " + why + "; trying the previous checkpoint");
    });
    TORCH_CHECK(restored.loss_weighting.defined() == weighting.learns(), "cannot resume from ", restored.source,
                weighting.learns() ? ": it has no learned loss weights, but this run learns them"
                                   : ": it has learned loss weights, but this run's weighting is fixed");
    if (weighting.learns()) weighting.load_state(restored.loss_weighting);
    result.best_step = restored.best.step;
    result.best_metric = restored.best.metric;
    log_.line(fmt::format("resumed from {} at step {}", restored.source, restored.step));
    // Records written after the checkpoint belong to steps that will run again.
    if (leader()) dir_.truncate_records_after(restored.step);
    if (result.best_step >= 0)
      if (auto best = dir_.validation_at(result.best_step)) result.best_valid = std::move(*best);
  }

  void finish(TrainResult& result) {
    if (replicas()) replicas()->barrier();  // the leader has written ckpt_best.pt
    const auto best_checkpoint = dir_.path(run_files::kBestCheckpoint);
    if (result.best_step >= 0) {
      io::load_module_state(*model_, io::load_tensor_dict(best_checkpoint), "", best_checkpoint);
    } else {
      log_.line(fmt::format("no validation gave a defined {}; {} holds the last model", options_.primary_key(),
                            run_files::kBestCheckpoint));
      if (leader()) io::save_tensor_dict(best_checkpoint, io::module_state(*model_));
    }
    result.finished = true;
    if (!test_) return;
    auto health = make_expert_health(model_);
    metrics::PredictionColumns predictions;
    result.test = evaluate(*test_, &health, &predictions);
    if (!leader()) return;
    dir_.write_evaluation({result.test, test_->num_rows(), result.best_step, options_.primary_key(), parameter_count(),
                           options_.data_report()});
    for (auto r : health.records(result.best_step)) {
      r["split"] = "test";
      dir_.append_expert_health(r);
    }
    dir_.write_test_predictions(predictions);
    std::string line = "test (best checkpoint, step " + std::to_string(result.best_step) + "):";
    for (const auto& [k, v] : result.test)
      if (v.defined()) line += fmt::format(" {}={:.5f}", k, v.value);
    log_.line(line);
  }

  Model model_;
  Objective objective_;
  data::TrainingRows train_;
  const data::Dataset& valid_;
  const data::Dataset* test_;
  TrainerOptions options_;
  optim::DualSparseDenseOptions optimizer_options_;
  RunDirectory dir_;
  RunLog log_;
};

}  // namespace mtl::train
