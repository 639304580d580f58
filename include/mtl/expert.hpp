// One expert interface over two kinds, MLP and CrossNet-v2, each projected to
// the mixer's common width so that a gate can mix experts of any kind.
#pragma once

#include <mtl/cross_net_v2.hpp>
#include <mtl/detail/join.hpp>
#include <mtl/detail/stacked_branches.hpp>
#include <mtl/mlp.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <sstream>
#include <string>
#include <vector>

namespace mtl {

enum class ExpertKind { mlp, cross };

/// Options of `Expert`. A mixer fills in `input_dim` and `output_dim`; a user
/// describes the kind with one of the factories.
///
/// Example:
///   auto deep = ExpertOptions::mlp({256, 128});
///   auto cross = ExpertOptions::cross(/*num_layers=*/3, /*low_rank=*/0);
struct ExpertOptions {
  ExpertOptions() = default;
  static ExpertOptions mlp(std::vector<int64_t> hidden_dims) {
    return ExpertOptions().kind(ExpertKind::mlp).hidden_dims(std::move(hidden_dims));
  }
  static ExpertOptions cross(int64_t num_layers, int64_t low_rank = 0) {
    return ExpertOptions().kind(ExpertKind::cross).cross_layers(num_layers).low_rank(low_rank);
  }

  TORCH_ARG(ExpertKind, kind) = ExpertKind::mlp;
  TORCH_ARG(int64_t, input_dim) = 0;
  /// The common width every expert of a mixer is projected to.
  TORCH_ARG(int64_t, output_dim) = 0;
  /// MLP expert: layer widths.
  TORCH_ARG(std::vector<int64_t>, hidden_dims);
  /// Cross expert: number of cross layers and rank (0 = full rank).
  TORCH_ARG(int64_t, cross_layers) = 0;
  TORCH_ARG(int64_t, low_rank) = 0;
  TORCH_ARG(double, dropout) = 0.0;
};

/// A short name of an expert's kind and shape, e.g. "mlp[256,128]" or "cross(3)".
inline std::string describe(const ExpertOptions& o) {
  std::ostringstream s;
  if (o.kind() == ExpertKind::mlp) {
    s << "mlp[" << detail::join(o.hidden_dims(), ",") << "]";
  } else {
    s << "cross(" << o.cross_layers();
    if (o.low_rank() > 0) s << ",r=" << o.low_rank();
    s << ")";
  }
  return s.str();
}

class ExpertImpl : public torch::nn::Cloneable<ExpertImpl> {
 public:
  explicit ExpertImpl(ExpertOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.input_dim() > 0, "Expert ", describe(options), " expects a positive input dim, but got ",
                options.input_dim());
    TORCH_CHECK(options.output_dim() > 0, "Expert ", describe(options), " expects a positive output dim, but got ",
                options.output_dim());
    if (options.kind() == ExpertKind::mlp) {
      TORCH_CHECK(!options.hidden_dims().empty(), "an MLP expert expects at least one hidden layer, but got none");
      mlp = register_module("mlp",
                            MLP(MLPOptions(options.input_dim(), options.hidden_dims()).dropout(options.dropout())));
    } else {
      cross = register_module(
          "cross",
          CrossNetV2(CrossNetV2Options(options.input_dim(), options.cross_layers()).low_rank(options.low_rank())));
    }
    projection = register_module("projection", torch::nn::Linear(natural_dim(), options.output_dim()));
  }

  /// [batch, input_dim] -> [batch, output_dim]
  torch::Tensor forward(const torch::Tensor& x) {
    if (options.kind() == ExpertKind::mlp) return mlp->forward_with_head(x, projection);
    return detail::linear_forward(projection, cross->forward(x));
  }

  /// Width before the projection: the MLP's last layer, or the cross input width.
  int64_t natural_dim() const {
    return options.kind() == ExpertKind::mlp ? options.hidden_dims().back() : options.input_dim();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "mtl::Expert(" << describe(options) << ", input_dim=" << options.input_dim()
           << ", output_dim=" << options.output_dim() << ")";
  }

  ExpertOptions options;
  MLP mlp{nullptr};
  CrossNetV2 cross{nullptr};
  torch::nn::Linear projection{nullptr};
};
TORCH_MODULE(Expert);

/// While alive, the experts of a mixer and the towers of a model run one after
/// another on this thread instead of side by side: needed for gradients of
/// gradients (create_graph), and a baseline to measure against.
class BranchesOneAfterAnotherGuard {
 public:
  BranchesOneAfterAnotherGuard() : previous_(detail::branches_one_after_another()) {
    detail::branches_one_after_another() = true;
  }
  ~BranchesOneAfterAnotherGuard() { detail::branches_one_after_another() = previous_; }
  BranchesOneAfterAnotherGuard(const BranchesOneAfterAnotherGuard&) = delete;
  BranchesOneAfterAnotherGuard& operator=(const BranchesOneAfterAnotherGuard&) = delete;

 private:
  bool previous_;
};

/// The outputs of a mixer's experts in its last forward, kept for
/// diagnostics when recording is on: [batch, num_experts, dim] each.
struct ExpertOutputs {
  torch::Tensor raw;      ///< as the experts emitted them
  torch::Tensor aligned;  ///< after the ExpertOutputAligner; undefined without one
};

/// Builds one `Expert` per spec, all reading `input_dim` and emitting `output_dim`.
inline torch::nn::ModuleList make_experts(const std::vector<ExpertOptions>& specs, int64_t input_dim,
                                          int64_t output_dim) {
  torch::nn::ModuleList experts;
  for (auto spec : specs) experts->push_back(Expert(spec.input_dim(input_dim).output_dim(output_dim)));
  return experts;
}

/// Runs expert i on `inputs[i]`, side by side on the intra-op threads where
/// they can (detail/stacked_branches.hpp): [batch, num_experts, output_dim].
inline torch::Tensor run_experts(const std::vector<Expert>& experts, const std::vector<torch::Tensor>& inputs) {
  TORCH_CHECK(experts.size() == inputs.size(), "run_experts expects one input per expert, but got ", experts.size(),
              " experts and ", inputs.size(), " inputs");
  std::vector<detail::Branch> branches;
  for (size_t e = 0; e < experts.size(); ++e)
    branches.push_back(detail::module_branch(experts[e].ptr(), inputs[e],
                                             experts[e]->is_training() && experts[e]->options.dropout() > 0.0));
  return detail::run_branches_stacked(branches);
}

/// The experts of a list `make_experts` built, as `Expert` handles.
inline std::vector<Expert> experts_in(const torch::nn::ModuleListImpl& list) {
  std::vector<Expert> experts;
  for (const auto& module : list) experts.emplace_back(std::dynamic_pointer_cast<ExpertImpl>(module));
  return experts;
}

/// Runs every expert of `experts` on `x`: [batch, num_experts, output_dim].
inline torch::Tensor run_experts(const torch::nn::ModuleListImpl& experts, const torch::Tensor& x) {
  const auto list = experts_in(experts);
  return run_experts(list, std::vector<torch::Tensor>(list.size(), x));
}

}  // namespace mtl
