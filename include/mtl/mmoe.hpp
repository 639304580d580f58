// MMoE (multi-gate mixture of experts): soft parameter sharing, every task
// mixes the same experts with a softmax gate of its own.
#pragma once

#include <mtl/aligner.hpp>
#include <mtl/expert.hpp>
#include <mtl/functional/expert_mixing.hpp>
#include <mtl/gate.hpp>
#include <mtl/mixer.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <string>
#include <vector>

namespace mtl {

/// Options of `MMoE`.
///
/// Example:
///   MMoE mmoe(MMoEOptions(/*input_dim=*/144, /*num_tasks=*/2)
///                 .experts(std::vector<ExpertOptions>(4, ExpertOptions::mlp({128})))
///                 .expert_dim(64));
struct MMoEOptions {
  MMoEOptions(int64_t input_dim, int64_t num_tasks) : input_dim_(input_dim), num_tasks_(num_tasks) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, num_tasks);
  /// The shared experts, of any kinds.
  TORCH_ARG(std::vector<ExpertOptions>, experts);
  /// Common width of every expert's output.
  TORCH_ARG(int64_t, expert_dim) = 64;
  /// Put expert outputs through an `ExpertOutputAligner` before gating.
  TORCH_ARG(bool, align_outputs) = false;
  TORCH_ARG(double, aligner_dropout) = 0.0;
};

class MMoEImpl : public torch::nn::Cloneable<MMoEImpl> {
 public:
  explicit MMoEImpl(MMoEOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    const auto num_experts = static_cast<int64_t>(options.experts().size());
    TORCH_CHECK(num_experts > 0, "MMoE expects at least one expert, but the expert list is empty");
    TORCH_CHECK(options.num_tasks() > 0, "MMoE expects at least one task, but got ", options.num_tasks());
    experts = register_module("experts", make_experts(options.experts(), options.input_dim(), options.expert_dim()));
    gates = register_module("gates", torch::nn::ModuleList());
    for (int64_t t = 0; t < options.num_tasks(); ++t) gates->push_back(Gate(options.input_dim(), num_experts));
    if (options.align_outputs())
      aligner = register_module(
          "aligner",
          ExpertOutputAligner(
              ExpertOutputAlignerOptions(num_experts, options.expert_dim()).dropout(options.aligner_dropout())));
  }

  /// [batch, input_dim] -> one [batch, expert_dim] per task.
  std::vector<torch::Tensor> forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 2 && x.size(1) == options.input_dim(), "MMoE expects [batch, ", options.input_dim(),
                "], but got shape ", x.sizes());
    const auto outputs = recorder_.align(run_experts(*experts, x), aligner);
    std::vector<torch::Tensor> weights;
    for (const auto& gate : *gates) weights.push_back(gate->as<Gate>()->forward(x));
    return mix_chosen_experts(outputs, weights,
                              std::vector<std::vector<int64_t>>(weights.size(), first_experts(outputs.size(1))));
  }

  int64_t output_dim() const noexcept { return options.expert_dim(); }
  int64_t num_tasks() const noexcept { return options.num_tasks(); }
  /// Per task, the gate weights of the last forward: [batch, num_experts].
  std::vector<torch::Tensor> gate_weights() const {
    std::vector<torch::Tensor> weights;
    for (const auto& gate : *gates) weights.push_back(gate->as<Gate>()->last_weights());
    return weights;
  }
  /// Per task, what each gate column mixes, e.g. "expert_0:mlp[128]".
  std::vector<std::vector<std::string>> gate_expert_names() const {
    std::vector<std::string> names;
    for (size_t e = 0; e < options.experts().size(); ++e)
      names.push_back("expert_" + std::to_string(e) + ":" + describe(options.experts()[e]));
    return std::vector<std::vector<std::string>>(options.num_tasks(), names);
  }

  /// Expert names in gate (and aligner) order.
  std::vector<std::string> expert_names() const { return gate_expert_names().front(); }

  /// Keep each forward's expert outputs (for expert-health diagnostics).
  void record_expert_outputs(bool on) { recorder_.record(on); }
  const ExpertOutputs& recorded_expert_outputs() const noexcept { return recorder_.outputs(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::MMoE(num_tasks=" << options.num_tasks() << ", experts=" << options.experts().size()
           << ", expert_dim=" << options.expert_dim() << ", aligned=" << std::boolalpha << options.align_outputs()
           << ")";
  }

  MMoEOptions options;
  torch::nn::ModuleList experts{nullptr};
  torch::nn::ModuleList gates{nullptr};
  ExpertOutputAligner aligner{nullptr};

 private:
  detail::ExpertOutputRecorder recorder_;
};
TORCH_MODULE(MMoE);

static_assert(is_gated_mixer_v<MMoEImpl>, "MMoE is a gated mixer (mixer.hpp)");

}  // namespace mtl
