// PLE (progressive layered extraction): shared experts plus task-private
// experts; each task's gate mixes the shared experts and its own. One level
// is "PLE-Lite" (CGC); more levels stack, with a shared gate feeding the next
// level's shared experts. Expert lists may mix kinds (heterogeneous PLE),
// aligned by an `ExpertOutputAligner` before gating.
#pragma once

#include <mtl/aligner.hpp>
#include <mtl/detail/join.hpp>
#include <mtl/expert.hpp>
#include <mtl/functional/expert_mixing.hpp>
#include <mtl/gate.hpp>
#include <mtl/mixer.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

namespace mtl {

/// Options of `PLE`.
///
/// Example (heterogeneous PLE-Lite for CTR and CVR):
///   PLE ple(PLEOptions(/*input_dim=*/144, /*num_tasks=*/2)
///               .shared_experts({ExpertOptions::mlp({128}), ExpertOptions::mlp({256, 128}),
///                                ExpertOptions::cross(2), ExpertOptions::cross(3)})
///               .task_experts({{ExpertOptions::cross(2)}, {ExpertOptions::mlp({64})}})
///               .align_outputs(true));
struct PLEOptions {
  PLEOptions(int64_t input_dim, int64_t num_tasks) : input_dim_(input_dim), num_tasks_(num_tasks) {}

  /// `num_shared` shared and `num_private` private experts per task, all of one spec.
  static PLEOptions homogeneous(int64_t input_dim, int64_t num_tasks, int64_t num_shared, int64_t num_private,
                                const ExpertOptions& spec) {
    return PLEOptions(input_dim, num_tasks)
        .shared_experts(std::vector<ExpertOptions>(num_shared, spec))
        .task_experts(
            std::vector<std::vector<ExpertOptions>>(num_tasks, std::vector<ExpertOptions>(num_private, spec)));
  }

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, num_tasks);
  /// Experts every task's gate can use; at least one.
  TORCH_ARG(std::vector<ExpertOptions>, shared_experts);
  /// One list per task of that task's private experts (a list may be empty).
  TORCH_ARG(std::vector<std::vector<ExpertOptions>>, task_experts);
  /// Common width of every expert's output.
  TORCH_ARG(int64_t, expert_dim) = 64;
  /// Extraction levels; 1 is PLE-Lite.
  TORCH_ARG(int64_t, num_levels) = 1;
  /// Put expert outputs through an `ExpertOutputAligner` before gating.
  TORCH_ARG(bool, align_outputs) = false;
  TORCH_ARG(double, aligner_dropout) = 0.0;
};

/// What one extraction level hands on.
struct PLELevelOutput {
  std::vector<torch::Tensor> tasks;  ///< per task [batch, expert_dim]
  torch::Tensor shared;              ///< [batch, expert_dim]; undefined after the last level
};

/// One extraction level (CGC). Expert order in the aligner: shared, then each
/// task's private experts; in task t's gate: shared, then task t's own.
class PLELevelImpl : public torch::nn::Cloneable<PLELevelImpl> {
 public:
  PLELevelImpl(PLEOptions options, int64_t input_dim, bool last)
      : options(std::move(options)), input_dim_(input_dim), last_(last) {
    reset();
  }

  void reset() override {
    const int64_t d = options.expert_dim();
    const auto num_shared = static_cast<int64_t>(options.shared_experts().size());
    shared_experts = register_module("shared_experts", make_experts(options.shared_experts(), input_dim_, d));
    task_experts = register_module("task_experts", torch::nn::ModuleList());
    task_gates = register_module("task_gates", torch::nn::ModuleList());
    int64_t total = num_shared;
    for (const auto& own : options.task_experts()) {
      task_experts->push_back(make_experts(own, input_dim_, d));
      task_gates->push_back(Gate(input_dim_, num_shared + static_cast<int64_t>(own.size())));
      total += static_cast<int64_t>(own.size());
    }
    if (!last_) shared_gate = register_module("shared_gate", Gate(input_dim_, total));
    // Which experts each gate mixes: task t's gate the shared ones, then t's own; the shared gate all.
    gate_choices_.clear();
    int64_t next = num_shared;
    for (const auto& own : options.task_experts()) {
      auto chosen = first_experts(num_shared);
      for (size_t e = 0; e < own.size(); ++e) chosen.push_back(next++);
      gate_choices_.push_back(chosen);
    }
    if (!last_) gate_choices_.push_back(first_experts(total));
    if (options.align_outputs())
      aligner = register_module(
          "aligner", ExpertOutputAligner(ExpertOutputAlignerOptions(total, d).dropout(options.aligner_dropout())));
  }

  PLELevelOutput forward(const std::vector<torch::Tensor>& task_inputs, const torch::Tensor& shared_input) {
    const size_t num_tasks = task_inputs.size();
    // All experts of the level at once, so that they can run side by side.
    auto experts = experts_in(*shared_experts);
    std::vector<torch::Tensor> inputs(experts.size(), shared_input);
    for (size_t t = 0; t < num_tasks; ++t) {
      const auto own = experts_in(*task_experts[t]->as<torch::nn::ModuleList>());
      experts.insert(experts.end(), own.begin(), own.end());
      inputs.insert(inputs.end(), own.size(), task_inputs[t]);
    }
    const auto all = recorder.align(run_experts(experts, inputs), aligner);

    std::vector<torch::Tensor> weights;
    for (size_t t = 0; t < num_tasks; ++t) weights.push_back(task_gates[t]->as<Gate>()->forward(task_inputs[t]));
    if (shared_gate) weights.push_back(shared_gate->forward(shared_input));
    auto mixed = mix_chosen_experts(all, weights, gate_choices_);
    PLELevelOutput out;
    out.tasks.assign(mixed.begin(), mixed.begin() + static_cast<std::ptrdiff_t>(num_tasks));
    if (shared_gate) out.shared = mixed.back();
    return out;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::PLELevel(input_dim=" << input_dim_ << ", last=" << std::boolalpha << last_ << ")";
  }

  PLEOptions options;
  torch::nn::ModuleList shared_experts{nullptr};
  /// One ModuleList of private experts per task.
  torch::nn::ModuleList task_experts{nullptr};
  torch::nn::ModuleList task_gates{nullptr};
  Gate shared_gate{nullptr};
  ExpertOutputAligner aligner{nullptr};
  /// Keeps each forward's expert outputs while recording is on.
  detail::ExpertOutputRecorder recorder;

 private:
  int64_t input_dim_;
  bool last_;
  std::vector<std::vector<int64_t>> gate_choices_;  ///< per gate (tasks', then the shared one) its experts
};
TORCH_MODULE(PLELevel);

class PLEImpl : public torch::nn::Cloneable<PLEImpl> {
 public:
  explicit PLEImpl(PLEOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.num_tasks() > 0, "PLE expects at least one task, but got ", options.num_tasks());
    TORCH_CHECK(!options.shared_experts().empty(),
                "PLE expects at least one shared expert, but the shared expert list is empty");
    TORCH_CHECK(static_cast<int64_t>(options.task_experts().size()) == options.num_tasks(),
                "PLE expects one private expert list per task (", options.num_tasks(), "), but got ",
                options.task_experts().size(), " lists");
    TORCH_CHECK(options.num_levels() > 0, "PLE expects at least one level, but got ", options.num_levels());
    TORCH_CHECK(options.input_dim() > 0, "PLE expects a positive input dim, but got ", options.input_dim());
    levels = register_module("levels", torch::nn::ModuleList());
    for (int64_t l = 0; l < options.num_levels(); ++l)
      levels->push_back(PLELevel(options, l == 0 ? options.input_dim() : options.expert_dim(),
                                 /*last=*/l + 1 == options.num_levels()));
  }

  /// [batch, input_dim] -> one [batch, expert_dim] per task.
  std::vector<torch::Tensor> forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 2 && x.size(1) == options.input_dim(), "PLE expects [batch, ", options.input_dim(),
                "], but got shape ", x.sizes());
    PLELevelOutput state{std::vector<torch::Tensor>(options.num_tasks(), x), x};
    for (const auto& level : *levels) state = level->as<PLELevel>()->forward(state.tasks, state.shared);
    return state.tasks;
  }

  int64_t output_dim() const noexcept { return options.expert_dim(); }
  int64_t num_tasks() const noexcept { return options.num_tasks(); }

  /// Per task, the last level's gate weights of the last forward:
  /// [batch, num_shared + num_private(task)], shared experts first.
  std::vector<torch::Tensor> gate_weights() const { return level_gate_weights(options.num_levels() - 1); }

  std::vector<torch::Tensor> level_gate_weights(int64_t level) const {
    TORCH_CHECK(level >= 0 && level < options.num_levels(), "PLE has levels 0..", options.num_levels() - 1,
                ", but got level ", level);
    std::vector<torch::Tensor> weights;
    for (const auto& gate : *levels->ptr(level)->as<PLELevel>()->task_gates)
      weights.push_back(gate->as<Gate>()->last_weights());
    return weights;
  }

  /// Per task, what each gate column mixes, e.g. "shared_0:mlp[128]", "task1_0:mlp[64]".
  std::vector<std::vector<std::string>> gate_expert_names() const {
    std::vector<std::string> shared;
    for (size_t e = 0; e < options.shared_experts().size(); ++e)
      shared.push_back("shared_" + std::to_string(e) + ":" + describe(options.shared_experts()[e]));
    std::vector<std::vector<std::string>> names;
    for (size_t t = 0; t < options.task_experts().size(); ++t) {
      auto row = shared;
      for (size_t e = 0; e < options.task_experts()[t].size(); ++e)
        row.push_back("task" + std::to_string(t) + "_" + std::to_string(e) + ":" +
                      describe(options.task_experts()[t][e]));
      names.push_back(row);
    }
    return names;
  }

  /// Expert names of a level in aligner order: shared, then each task's own.
  std::vector<std::string> expert_names() const {
    auto names = gate_expert_names();
    std::vector<std::string> all(names.front().begin(), names.front().begin() + options.shared_experts().size());
    for (const auto& row : names) all.insert(all.end(), row.begin() + options.shared_experts().size(), row.end());
    return all;
  }

  /// Keep each forward's expert outputs of the last level (for expert-health diagnostics).
  void record_expert_outputs(bool on) { levels->ptr(options.num_levels() - 1)->as<PLELevel>()->recorder.record(on); }
  const ExpertOutputs& recorded_expert_outputs() const {
    return levels->ptr(options.num_levels() - 1)->as<PLELevel>()->recorder.outputs();
  }

  void pretty_print(std::ostream& stream) const override {
    std::vector<size_t> private_counts;
    for (const auto& own : options.task_experts()) private_counts.push_back(own.size());
    stream << "mtl::PLE(num_tasks=" << options.num_tasks() << ", levels=" << options.num_levels()
           << ", shared_experts=" << options.shared_experts().size() << ", task_experts=["
           << detail::join(private_counts) << "], expert_dim=" << options.expert_dim() << ", aligned=" << std::boolalpha
           << options.align_outputs() << ")";
  }

  PLEOptions options;
  torch::nn::ModuleList levels{nullptr};
};
TORCH_MODULE(PLE);

static_assert(is_gated_mixer_v<PLEImpl>, "PLE is a gated mixer (mixer.hpp)");

}  // namespace mtl
