// The step loop: trains a MultiTaskModel with the dual sparse/dense optimizer
// to max_train_steps, validates every eval_every steps, keeps the best
// checkpoint by a primary metric and a last checkpoint (parameters,
// optimizer, schedule, RNG, data position) from which a resumed run continues
// exactly; writes train.log, metrics.jsonl, eval.json (test split, best
// checkpoint), test_predictions.pt and expert_health_diag.jsonl. A non-finite
// loss stops the run naming the step and the term. With `replicas`, each rank
// trains on its share of every global batch and evaluates its share of the
// rows; the leader alone writes files.
#pragma once

#include <mtl/data/batch_loader.hpp>
#include <mtl/data/dataset.hpp>
#include <mtl/detail/crash_points.hpp>
#include <mtl/distributed/batch_share.hpp>
#include <mtl/metrics/multitask_metrics.hpp>
#include <mtl/model.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/train/autocast.hpp>
#include <mtl/train/checkpoint.hpp>
#include <mtl/train/expert_health.hpp>
#include <mtl/train/heap_retention.hpp>
#include <mtl/train/objective.hpp>
#include <mtl/train/replicas.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/core.h>
#include <torch/types.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
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

/// A one-element tensor's value (a plain function: inside templates
/// `t.item<T>()` would need the `template` keyword).
inline double scalar(const torch::Tensor& t) { return t.item<double>(); }
inline int64_t integer(const torch::Tensor& t) { return t.item<int64_t>(); }
inline double json_number(const nlohmann::json& j) { return j.get<double>(); }

/// Metrics as JSON: values (null when undefined) and the reasons.
inline nlohmann::json metrics_json(const std::map<std::string, metrics::MetricValue>& m) {
  nlohmann::json values = nlohmann::json::object(), undefined = nlohmann::json::object();
  for (const auto& [k, v] : m) {
    values[k] = v.defined() ? nlohmann::json(v.value) : nlohmann::json(nullptr);
    if (!v.defined()) undefined[k] = v.undefined_because;
  }
  return {{"values", values}, {"undefined", undefined}};
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
        optimizer_options_(optimizer_options) {
    TORCH_CHECK(options_.max_train_steps() > 0, "Trainer expects max_train_steps > 0, but got ",
                options_.max_train_steps());
    TORCH_CHECK(options_.eval_every() > 0 && options_.log_every() > 0,
                "Trainer expects eval_every and log_every > 0, but got ", options_.eval_every(), " and ",
                options_.log_every());
    TORCH_CHECK(!options_.output_dir().empty(), "Trainer expects an output folder");
    TORCH_CHECK(!options_.replicas() || options_.batch_size() >= options_.replicas()->world_size(),
                "Trainer expects a batch_size of at least one row per rank, but got ", options_.batch_size(),
                " rows for ", options_.replicas() ? options_.replicas()->world_size() : 1, " ranks");
  }

  const std::string& dir() const { return options_.output_dir(); }
  std::string path(const std::string& name) const { return (std::filesystem::path(dir()) / name).string(); }

  TrainResult run() {
    if (leader()) create_output_dir(dir()), remove_stale_temporaries(dir());
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
    TrainResult result;
    if (resuming()) {
      restore(optimizer, loader, result);
      if (replicas()) replicas()->check_equal(*model_);
    } else {
      torch::manual_seed(options_.seed());
      if (replicas()) replicas()->broadcast_parameters(*model_);
      if (leader()) {
        atomic_write(path("metrics.jsonl"), std::string());
        atomic_write(path("expert_health_diag.jsonl"), std::string());
      }
      log(fmt::format("training {} steps, batch {}, on {}{}; {} train / {} valid rows", options_.max_train_steps(),
                      options_.batch_size(), options_.device().str(), options_.amp() ? " with bf16 autocast" : "",
                      train_.num_rows(), valid_.num_rows()));
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
      if (mtl::detail::stop_after_steps() > 0 && steps_this_run == mtl::detail::stop_after_steps()) {
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
          const auto share = distributed::share_of(batch, replicas()->rank(), replicas()->world_size());
          loss = objective_(model_->forward(share.features), share,
                            distributed::share_denominators(batch, replicas()->world_size()));
        } else {
          loss = objective_(model_->forward(batch.features), batch);
        }
      }
      const auto reported = replicas() ? averaged_over_ranks(loss) : loss;
      window_loss += reported.total.detach().to(torch::kDouble);
      ++window_steps, ++steps_this_run;
      const bool log_now = step % options_.log_every() == 0;
      if (check_every_step || log_now) {
        if (!std::isfinite(scalar(window_loss))) {
          std::string terms;
          for (const auto& [name, t] : reported.terms) {
            const double value = scalar(t);  // a NaN's sign bit depends on the arithmetic: show it as "nan"
            terms += std::isnan(value) ? fmt::format(" {}=nan", name) : fmt::format(" {}={}", name, value);
          }
          const auto when = check_every_step || window_first == step
                                ? fmt::format("at step {}", step)
                                : fmt::format("between steps {} and {}", window_first, step);
          result.stopped_because = fmt::format("the loss went non-finite {} (terms at step {}:{}); {}", when, step,
                                               terms, non_finite_advice());
          log("stopped: " + result.stopped_because);
          result.steps = step - 1;
          return result;
        }
      }
      optimizer.zero_grad();
      loss.total.backward();
      if (replicas()) replicas()->average_gradients(*model_);
      optimizer.step();

      if (log_now) {
        const auto now = std::chrono::steady_clock::now();
        const double seconds = std::chrono::duration<double>(now - window_start).count();
        const double mean_loss = scalar(window_loss) / window_steps;
        nlohmann::json record{{"step", step},
                              {"split", "train"},
                              {"loss", mean_loss},
                              {"lr_dense", optimizer.dense_lr()},
                              {"lr_sparse", optimizer.sparse_lr()},
                              {"samples_per_s", window_steps * options_.batch_size() / std::max(seconds, 1e-9)}};
        for (const auto& [name, t] : reported.terms) record["loss_" + name] = scalar(t);
        if (leader()) append_line(path("metrics.jsonl"), record.dump());
        progress(step, json_number(record["samples_per_s"]), mean_loss,
                 std::chrono::duration<double>(now - start).count(), step - first_step);
        window_loss.zero_(), window_steps = 0, window_start = now, window_first = step + 1;
      }
      if (step % options_.eval_every() == 0 || step == options_.max_train_steps()) {
        validate(step, result);
        mtl::detail::crash_point("after_validation");
        if (leader()) save_last(optimizer, loader, result);
      }
    }
    if (!quiet() && isatty(STDOUT_FILENO)) std::printf("\n");
    finish(result);
    result.steps = optimizer.step_count();
    return result;
  }

  /// Metrics (and mean loss) of the current model on `dataset`, computed in
  /// fp32 whatever the training precision (bf16 scores would tie many rows);
  /// feeds `health` with gate weights when given. With replicas, every rank
  /// must call it: each scores its share of the rows, and every rank gets the
  /// metrics of all of them (`health` sees this rank's share).
  std::map<std::string, metrics::MetricValue> evaluate(const data::Dataset& dataset, ExpertHealth* health = nullptr,
                                                       metrics::PredictionColumns* keep = nullptr) {
    torch::NoGradGuard no_grad;
    model_->eval();
    record_expert_outputs(health != nullptr);
    metrics::PredictionColumns columns;
    double loss_sum = 0;
    const auto [begin, end] = replicas() ? share_range(dataset.num_rows(), replicas()->rank(), replicas()->world_size())
                                         : std::pair<int64_t, int64_t>{0, dataset.num_rows()};
    data::for_each_batch(dataset, begin, end, options_.eval_batch_size(),
                         [&](const data::TrainingBatch& cpu_batch, int64_t) {
                           auto batch = cpu_batch.to(options_.device());
                           TaskLogits logits;
                           LossTerms loss;
                           logits = model_->forward(batch.features);  // no autocast: fp32
                           loss = objective_(logits, batch);
                           loss_sum += scalar(loss.total) * static_cast<double>(batch.size());
                           if (objective_.has_ctr())
                             append(columns.p_ctr, torch::sigmoid(logits.at("ctr").to(torch::kFloat)));
                           if (objective_.has_cvr())
                             append(columns.p_cvr, torch::sigmoid(logits.at("cvr").to(torch::kFloat)));
                           if (health) add_gates(*health);
                         });
    record_expert_outputs(false);
    model_->train();
    if (replicas()) {  // every rank gets every rank's predictions, and so the same metrics
      if (objective_.has_ctr()) columns.p_ctr = replicas()->gather(columns.p_ctr);
      if (objective_.has_cvr()) columns.p_cvr = replicas()->gather(columns.p_cvr);
      auto total = torch::tensor({loss_sum}, torch::kDouble);
      replicas()->sum(total);
      loss_sum = scalar(total);
    }
    columns.click = dataset.click;
    columns.conversion = dataset.conversion;
    if (!dataset.truth.empty()) {
      columns.true_p_click = dataset.truth.p_click;
      columns.true_p_cvr = dataset.truth.p_cvr;
      columns.counterfactual_conversion = dataset.truth.counterfactual_conversion;
    }
    if (auto user = dataset.schema().sparse_index("101")) {
      const int64_t f = dataset.schema().num_sparse();
      for (int64_t r = 0; r < dataset.num_rows(); ++r) columns.user.push_back(dataset.ids[r * f + *user]);
    }
    auto m = metrics::evaluate_predictions(columns);
    m["loss"] = dataset.num_rows() > 0 ? metrics::MetricValue::of(loss_sum / dataset.num_rows())
                                       : metrics::MetricValue::undefined("no rows");
    if (keep) *keep = std::move(columns);
    return m;
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
  bool quiet() const { return options_.quiet() || !leader(); }

  /// Whether the run continues from a checkpoint: the leader's answer, which
  /// every rank follows (a rank that cannot read the checkpoint then fails).
  bool resuming() {
    bool found = options_.resume() &&
                 (std::filesystem::exists(path("ckpt_last.pt")) || std::filesystem::exists(path("ckpt_prev.pt")));
    if (!replicas()) return found;
    auto flag = torch::tensor({leader() && found ? 1.0 : 0.0}, torch::kDouble);
    replicas()->sum(flag);
    return scalar(flag) > 0;
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

  static void append(std::vector<float>& out, const torch::Tensor& t) {
    auto c = t.detach().cpu().contiguous();
    out.insert(out.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }

  std::string non_finite_advice() const {
    return "lower optim.dense.lr, or for heterogeneous experts turn on model.ple.expert_output_align";
  }

  using MixerImpl = typename decltype(std::declval<Model&>()->mixer)::ContainedType;

  ExpertHealth make_health() const {
    if constexpr (is_gated_mixer_v<MixerImpl>)
      return ExpertHealth(model_->options.tasks(), model_->mixer->gate_expert_names(), model_->mixer->expert_names());
    else
      return ExpertHealth(model_->options.tasks(), {}, {});
  }

  void record_expert_outputs(bool on) {
    if constexpr (is_gated_mixer_v<MixerImpl>) model_->mixer->record_expert_outputs(on);
  }

  // The last forward's gate weights and expert outputs into `health`; a mixer without gates has none.
  void add_gates(ExpertHealth& health) {
    if constexpr (is_gated_mixer_v<MixerImpl>)
      health.add(model_->mixer->gate_weights(), model_->mixer->recorded_expert_outputs());
  }

  void validate(int64_t step, TrainResult& result) {
    auto health = make_health();
    auto m = evaluate(valid_, &health);
    nlohmann::json record = metrics_json(m);
    record["step"] = step;
    record["split"] = "valid";
    if (leader()) {
      append_line(path("metrics.jsonl"), record.dump());
      for (auto r : health.records(step)) {
        r["split"] = "valid";
        append_line(path("expert_health_diag.jsonl"), r.dump());
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
      if (leader()) save_tensor_dict(path("ckpt_best.pt"), module_state(*model_));
      line += fmt::format("  (best {} so far: saved ckpt_best.pt)", options_.primary_key());
    }
    log(line);
    if (replicas()) replicas()->check_equal(*model_);
  }

  void save_last(const optim::DualSparseDenseOptimizer& optimizer, const data::BatchLoader& loader,
                 const TrainResult& result) {
    auto state = module_state(*model_, "model.");
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    state.insert("optimizer", bytes_tensor(bytes.str()));
    state.insert("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
    state.insert("step", torch::tensor(optimizer.step_count()));
    state.insert("loader_epoch", torch::tensor(loader.position().epoch));
    state.insert("loader_batch", torch::tensor(loader.position().batch));
    state.insert("best_step", torch::tensor(result.best_step));
    state.insert("best_metric", torch::tensor(result.best_metric, torch::kDouble));
    save_keeping_previous(path("ckpt_last.pt"), path("ckpt_prev.pt"), state);
  }

  void restore(optim::DualSparseDenseOptimizer& optimizer, data::BatchLoader& loader, TrainResult& result) {
    // The last checkpoint, or the one before it when the last is missing or damaged.
    auto [state, source] = load_first_good({path("ckpt_last.pt"), path("ckpt_prev.pt")}, [&](const std::string& why) {
      log("warning: " + why + "; trying the previous checkpoint");
    });
    load_module_state(*model_, state, "model.", source);
    torch::serialize::InputArchive archive;
    std::istringstream bytes(tensor_bytes(state.at("optimizer")));
    archive.load_from(bytes);
    optimizer.load(archive);
    auto generator = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(state.at("rng_cpu"));
    }
    loader.seek({integer(state.at("loader_epoch")), integer(state.at("loader_batch"))});
    result.best_step = integer(state.at("best_step"));
    result.best_metric = scalar(state.at("best_metric"));
    // Records written after the checkpoint belong to steps that will run again.
    const int64_t step = integer(state.at("step"));
    log(fmt::format("resumed from {} at step {}", source, step));
    if (leader())
      for (const char* name : {"metrics.jsonl", "expert_health_diag.jsonl"}) truncate_after(path(name), step);
    if (result.best_step >= 0) {
      std::ifstream in(path("metrics.jsonl"));
      std::string line;
      while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line);
        if (j["split"] == "valid" && j["step"] == result.best_step)
          for (const auto& [k, v] : j["values"].items())
            result.best_valid[k] = v.is_null() ? metrics::MetricValue::undefined(j["undefined"].value(k, ""))
                                               : metrics::MetricValue::of(json_number(v));
      }
    }
  }

  /// Keeps the JSON lines of `file` from steps up to `step`, dropping the
  /// test-split records a finished run wrote (finishing writes them again).
  static void truncate_after(const std::string& file, int64_t step) {
    std::ifstream in(file);
    std::string line, kept;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t{0}) <= step && j.value("split", "") != "test") kept += line + "\n";
    }
    atomic_write(file, kept);
  }

  void finish(TrainResult& result) {
    if (replicas()) replicas()->barrier();  // the leader has written ckpt_best.pt
    if (result.best_step >= 0) {
      load_module_state(*model_, load_tensor_dict(path("ckpt_best.pt")), "", path("ckpt_best.pt"));
    } else {
      log(fmt::format("no validation gave a defined {}; ckpt_best.pt holds the last model", options_.primary_key()));
      if (leader()) save_tensor_dict(path("ckpt_best.pt"), module_state(*model_));
    }
    result.finished = true;
    if (!test_) return;
    auto health = make_health();
    metrics::PredictionColumns predictions;
    result.test = evaluate(*test_, &health, &predictions);
    if (!leader()) return;
    nlohmann::json eval = metrics_json(result.test);
    eval["split"] = "test";
    eval["rows"] = test_->num_rows();
    eval["best_step"] = result.best_step;
    eval["primary_key"] = options_.primary_key();
    eval["parameters"] = parameter_count();
    atomic_write(path("eval.json"), eval.dump(2) + "\n");
    for (auto r : health.records(result.best_step)) {
      r["split"] = "test";
      append_line(path("expert_health_diag.jsonl"), r.dump());
    }
    TensorDict columns;
    auto put = [&](const char* name, const std::vector<float>& v) {
      if (!v.empty()) columns.insert(name, torch::tensor(v));
    };
    put("p_ctr", predictions.p_ctr), put("p_cvr", predictions.p_cvr);
    put("click", predictions.click), put("conversion", predictions.conversion);
    put("counterfactual_conversion", predictions.counterfactual_conversion);
    save_tensor_dict(path("test_predictions.pt"), columns);
    std::string line = "test (best checkpoint, step " + std::to_string(result.best_step) + "):";
    for (const auto& [k, v] : result.test)
      if (v.defined()) line += fmt::format(" {}={:.5f}", k, v.value);
    log(line);
  }

  void log(const std::string& line) {
    if (!leader()) return;
    append_line(path("train.log"), line);
    if (!quiet()) {
      if (isatty(STDOUT_FILENO)) std::printf("\r\033[K");
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  }

  /// A progress bar on a terminal, a plain line otherwise.
  void progress(int64_t step, double samples_per_s, double loss, double elapsed, int64_t steps_done) {
    if (quiet()) return;
    const double eta = steps_done > 0 ? elapsed / steps_done * (options_.max_train_steps() - step) : 0.0;
    const auto text =
        fmt::format("step {}/{} | {:.0f} samples/s | ETA {}m{:02d}s | loss {:.5f}", step, options_.max_train_steps(),
                    samples_per_s, static_cast<int64_t>(eta) / 60, static_cast<int64_t>(eta) % 60, loss);
    if (isatty(STDOUT_FILENO)) {
      std::printf("\r\033[K%s", text.c_str());
    } else {
      std::printf("%s\n", text.c_str());
    }
    std::fflush(stdout);
  }

  Model model_;
  Objective objective_;
  data::TrainingRows train_;
  const data::Dataset& valid_;
  const data::Dataset* test_;
  TrainerOptions options_;
  optim::DualSparseDenseOptions optimizer_options_;
};

}  // namespace mtl::train
