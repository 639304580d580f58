// Hard parameter sharing: one bottom network whose output every task tower
// reads. With no hidden layers it is the identity, which makes a single-task
// model the same composition as a multi-task one.
#pragma once

#include <mtl/aligner.hpp>
#include <mtl/mixer.hpp>
#include <mtl/mlp.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <utility>
#include <vector>

namespace mtl {

/// Options of `SharedBottom`.
///
/// Example:
///   SharedBottom bottom(SharedBottomOptions(/*input_dim=*/144, /*num_tasks=*/2).hidden_dims({128}));
struct SharedBottomOptions {
  SharedBottomOptions(int64_t input_dim, int64_t num_tasks) : input_dim_(input_dim), num_tasks_(num_tasks) {}

  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, num_tasks);
  /// Layers of the shared bottom; empty passes the input through.
  TORCH_ARG(std::vector<int64_t>, hidden_dims);
  TORCH_ARG(double, dropout) = 0.0;
  /// Put the bottom's output through an `ExpertOutputAligner` of one expert
  /// (LayerNorm and a learnable scale), as MMoE and PLE may do to each
  /// expert's output: a comparison with them then compares the sharing alone.
  TORCH_ARG(bool, align_outputs) = false;
};

class SharedBottomImpl : public torch::nn::Cloneable<SharedBottomImpl> {
 public:
  explicit SharedBottomImpl(SharedBottomOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.num_tasks() > 0, "SharedBottom expects at least one task, but got ", options.num_tasks());
    bottom = register_module("bottom",
                             MLP(MLPOptions(options.input_dim(), options.hidden_dims()).dropout(options.dropout())));
    if (options.align_outputs())
      aligner = register_module("aligner", ExpertOutputAligner(ExpertOutputAlignerOptions(1, output_dim())));
  }

  /// [batch, input_dim] -> one [batch, output_dim()] per task (the same tensor).
  std::vector<torch::Tensor> forward(const torch::Tensor& x) {
    auto out = bottom->forward(x);
    if (aligner) out = aligner->forward(out.unsqueeze(1)).squeeze(1);
    return std::vector<torch::Tensor>(options.num_tasks(), out);
  }

  int64_t output_dim() const { return bottom->output_dim(); }
  int64_t num_tasks() const noexcept { return options.num_tasks(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::SharedBottom(num_tasks=" << options.num_tasks() << ", input_dim=" << options.input_dim()
           << ", output_dim=" << output_dim() << ")";
  }

  SharedBottomOptions options;
  MLP bottom{nullptr};
  ExpertOutputAligner aligner{nullptr};
};
TORCH_MODULE(SharedBottom);

static_assert(is_mixer_v<SharedBottomImpl> && !is_gated_mixer_v<SharedBottomImpl>,
              "SharedBottom is a mixer without gates (mixer.hpp)");

}  // namespace mtl
