// A multi-task model composed of a backbone (e.g. DeepFM), a mixer
// (SharedBottom, MMoE, PLE) and one tower per task. Either part can be
// swapped; one task with an identity SharedBottom is a single-task model.
#pragma once

#include <mtl/aitm.hpp>
#include <mtl/deepfm.hpp>
#include <mtl/detail/join.hpp>
#include <mtl/features.hpp>
#include <mtl/mixer.hpp>
#include <mtl/mmoe.hpp>
#include <mtl/ple.hpp>
#include <mtl/shared_bottom.hpp>
#include <mtl/tower.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace mtl {

/// The logits of one forward, one [batch] tensor per task, in task order.
struct TaskLogits {
  std::vector<std::string> tasks;
  std::vector<torch::Tensor> logits;

  /// The logits of the task called `name`.
  const torch::Tensor& at(const std::string& name) const {
    for (size_t i = 0; i < tasks.size(); ++i)
      if (tasks[i] == name) return logits[i];
    TORCH_CHECK(false, "the model has no task '", name, "'; its tasks are: ", detail::join(tasks));
  }
};

/// Options of `MultiTaskModel<Backbone, Mixer>`. The mixer's `input_dim` and
/// `num_tasks` may be left 0: the model fills them from the backbone and the
/// task list; if given, they must agree.
///
/// Example:
///   PLEModelOptions options(DeepFMOptions(schema),
///                           PLEOptions::homogeneous(/*input_dim=*/0, /*num_tasks=*/2, 4, 1,
///                           ExpertOptions::mlp({128})),
///                           {"ctr", "cvr"});
template <class Backbone, class Mixer>
struct MultiTaskModelOptions {
  using BackboneOptions = decltype(std::declval<typename Backbone::ContainedType>().options);
  using MixerOptions = decltype(std::declval<typename Mixer::ContainedType>().options);

  MultiTaskModelOptions(BackboneOptions backbone, MixerOptions mixer, std::vector<std::string> tasks)
      : backbone_(std::move(backbone)), mixer_(std::move(mixer)), tasks_(std::move(tasks)) {}

  TORCH_ARG(BackboneOptions, backbone);
  TORCH_ARG(MixerOptions, mixer);
  /// Task names, e.g. {"ctr", "cvr"}; one tower each.
  TORCH_ARG(std::vector<std::string>, tasks);
  TORCH_ARG(std::vector<int64_t>, tower_hidden_dims);
  /// One list per task, overriding `tower_hidden_dims` where given.
  TORCH_ARG(std::vector<std::vector<int64_t>>, task_tower_hidden_dims);
  TORCH_ARG(double, tower_dropout) = 0.0;
  /// AITM's adaptive information transfer (aitm.hpp) from each task's tower to the next one's, in task
  /// order, between the towers' hidden layers and their logits; every tower's last width must agree.
  TORCH_ARG(bool, adaptive_transfer) = false;
};

template <class Backbone, class Mixer>
class MultiTaskModelImpl : public torch::nn::Cloneable<MultiTaskModelImpl<Backbone, Mixer>> {
  static_assert(is_mixer_v<typename Mixer::ContainedType>,
                "MultiTaskModel's Mixer must provide forward, output_dim, num_tasks and options.input_dim / "
                "num_tasks as mixer.hpp describes");

 public:
  using Options = MultiTaskModelOptions<Backbone, Mixer>;

  explicit MultiTaskModelImpl(Options options) : options(std::move(options)) { reset(); }

  void reset() override {
    const auto& tasks = options.tasks();
    TORCH_CHECK(!tasks.empty(), "MultiTaskModel expects at least one task, but the task list is empty");
    for (size_t i = 0; i < tasks.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        TORCH_CHECK(tasks[i] != tasks[j], "MultiTaskModel expects distinct task names, but '", tasks[i],
                    "' appears twice");
    backbone = this->register_module("backbone", Backbone(options.backbone()));

    auto mixer_options = options.mixer();
    const int64_t rep_dim = backbone->output_dim(), num_tasks = static_cast<int64_t>(tasks.size());
    if (mixer_options.input_dim() == 0) mixer_options.input_dim(rep_dim);
    if (mixer_options.num_tasks() == 0) mixer_options.num_tasks(num_tasks);
    TORCH_CHECK(mixer_options.input_dim() == rep_dim, "MultiTaskModel: the mixer expects input dim ",
                mixer_options.input_dim(), ", but the backbone emits ", rep_dim);
    TORCH_CHECK(mixer_options.num_tasks() == num_tasks, "MultiTaskModel: the mixer is set for ",
                mixer_options.num_tasks(), " tasks, but the model has ", num_tasks, " tasks");
    mixer = this->register_module("mixer", Mixer(mixer_options));

    const auto& per_task = options.task_tower_hidden_dims();
    TORCH_CHECK(per_task.empty() || per_task.size() == tasks.size(),
                "MultiTaskModel expects one tower layout per task (", tasks.size(), "), but got ", per_task.size());
    towers = this->register_module("towers", torch::nn::ModuleList());
    for (size_t t = 0; t < tasks.size(); ++t)
      towers->push_back(Tower(TowerOptions(mixer->output_dim())
                                  .hidden_dims(per_task.empty() ? options.tower_hidden_dims() : per_task[t])
                                  .dropout(options.tower_dropout())));
    if (options.adaptive_transfer()) {
      const int64_t width = towers->template ptr<TowerImpl>(0)->hidden->output_dim();
      for (size_t t = 1; t < tasks.size(); ++t)
        TORCH_CHECK(towers->template ptr<TowerImpl>(t)->hidden->output_dim() == width,
                    "MultiTaskModel's adaptive transfer needs towers of one width, but task '", tasks[0], "' emits ",
                    width, " and task '", tasks[t], "' ", towers->template ptr<TowerImpl>(t)->hidden->output_dim());
      transfer = this->register_module(
          "transfer", AdaptiveTransfer(AdaptiveTransferOptions(width, static_cast<int64_t>(tasks.size()))));
    }
  }

  TaskLogits forward(const FeatureInputs& input) {
    auto per_task = mixer->forward(backbone->forward(input));
    if (transfer) return {options.tasks(), forward_with_transfer(per_task)};
    // The towers side by side (detail/stacked_branches.hpp), each on one
    // thread: their products and passes are too small to gain from a second one.
    std::vector<detail::Branch> branches;
    for (size_t t = 0; t < per_task.size(); ++t)
      branches.push_back(branch(towers->template ptr<TowerImpl>(t), per_task[t]));
    return {options.tasks(), detail::run_branches_stacked(branches).unbind(1)};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::MultiTaskModel(tasks=[" << detail::join(options.tasks()) << "])";
  }

  Options options;
  Backbone backbone{nullptr};
  Mixer mixer{nullptr};
  torch::nn::ModuleList towers{nullptr};
  AdaptiveTransfer transfer{nullptr};  ///< with `adaptive_transfer` only

 private:
  /// A tower (or its hidden layers) as a branch run side by side; one that draws dropout makes all run in order.
  template <class ModuleImpl>
  static detail::Branch branch(std::shared_ptr<ModuleImpl> module, const torch::Tensor& input) {
    const bool draws = module->is_training() && module->options.dropout() > 0.0;
    return detail::module_branch(std::move(module), input, draws);
  }

  /// The towers' hidden layers side by side, the transfer between their states in task order, then the logits.
  std::vector<torch::Tensor> forward_with_transfer(const std::vector<torch::Tensor>& per_task) {
    std::vector<detail::Branch> branches;
    for (size_t t = 0; t < per_task.size(); ++t)
      branches.push_back(branch(towers->template ptr<TowerImpl>(t)->hidden.ptr(), per_task[t]));
    auto mixed = transfer->forward(detail::run_branches_stacked(branches).unbind(1));
    std::vector<torch::Tensor> logits;
    for (size_t t = 0; t < mixed.size(); ++t)
      logits.push_back(detail::linear_forward(towers->template ptr<TowerImpl>(t)->logit, mixed[t]).squeeze(1));
    return logits;
  }
};

/// Holder of `MultiTaskModelImpl<Backbone, Mixer>` (what TORCH_MODULE makes
/// for a non-template module).
template <class Backbone, class Mixer>
class MultiTaskModel : public torch::nn::ModuleHolder<MultiTaskModelImpl<Backbone, Mixer>> {
 public:
  using torch::nn::ModuleHolder<MultiTaskModelImpl<Backbone, Mixer>>::ModuleHolder;
};

// Convenience aliases: DeepFM under each mixer.
using SharedBottomModel =
    MultiTaskModel<DeepFM, SharedBottom>;        ///< shared-bottom (or, with one task, single-task) model
using MMoEModel = MultiTaskModel<DeepFM, MMoE>;  ///< MMoE model
using PLEModel = MultiTaskModel<DeepFM, PLE>;    ///< PLE model, homogeneous or heterogeneous experts
using SharedBottomModelOptions = MultiTaskModelOptions<DeepFM, SharedBottom>;
using MMoEModelOptions = MultiTaskModelOptions<DeepFM, MMoE>;
using PLEModelOptions = MultiTaskModelOptions<DeepFM, PLE>;

}  // namespace mtl
