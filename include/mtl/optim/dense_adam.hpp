// Adam for the dense parameters (MLPs, experts, gates, towers), fused: on
// the CPU every parameter is updated in one vectorised pass over its values
// (detail/adam_update.hpp), instead of the eight tensor operations per
// parameter that torch::optim::Adam runs, and all parameters in one parallel
// loop over their values end to end: most are below a loop's grain on their
// own, so one parameter at a time ran on one thread. Same update as
// torch::optim::Adam, including L2 weight decay added to the gradient.
// zero_grad() drops the gradients, so the next backward hands its fresh ones
// over without zero-filling.
#pragma once

#include <mtl/detail/adam_update.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/arg.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace mtl::optim {

struct DenseAdamOptions {
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0.0;
};

class DenseAdam {
 public:
  DenseAdam(std::vector<torch::Tensor> params, DenseAdamOptions options = {})
      : params_(std::move(params)), options_(options) {
    TORCH_CHECK(options_.lr() >= 0.0, "DenseAdam expects lr >= 0, but got ", options_.lr());
    TORCH_CHECK(options_.beta1() >= 0.0 && options_.beta1() < 1.0 && options_.beta2() >= 0.0 && options_.beta2() < 1.0,
                "DenseAdam expects betas in [0, 1), but got (", options_.beta1(), ", ", options_.beta2(), ")");
    for (const auto& p : params_) {
      exp_avg_.push_back(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
      exp_avg_sq_.push_back(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
    }
  }

  /// Drops every gradient (the next backward starts fresh ones).
  void zero_grad() {
    for (auto& p : params_) p.mutable_grad().reset();
    fused_.clear(), fused_values_ = 0;
  }

  /// One update of every parameter that has a gradient.
  void step() {
    prepare_step();
    at::parallel_for(0, fused_values(), kValuesPerThread,
                     [&](int64_t begin, int64_t end) { update_values(begin, end); });
  }

  /// step() in parts, so that other work can run beside the update
  /// (DualSparseDenseOptimizer): prepare_step() counts the step and updates
  /// the parameters off the fused CPU path; then update_values() over
  /// [0, fused_values()) updates the others, the range split any way among
  /// any threads, each value once.
  void prepare_step() {
    torch::NoGradGuard no_grad;
    ++step_;
    const double b1 = options_.beta1(), b2 = options_.beta2();
    step_size_ = options_.lr() / (1 - std::pow(b1, static_cast<double>(step_)));
    root_bias2_ = std::sqrt(1 - std::pow(b2, static_cast<double>(step_)));
    fused_.clear();
    fused_values_ = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      const auto& grad = p.grad();
      if (!grad.defined()) continue;
      TORCH_CHECK(!grad.is_sparse(), "DenseAdam expects dense gradients; parameter ", i, " has a sparse one");
      if (p.device().is_cpu() && p.is_contiguous() && p.is_floating_point() && grad.scalar_type() == p.scalar_type()) {
        fused_.push_back({i, grad.contiguous(), fused_values_});
        fused_values_ += p.numel();
        continue;
      }
      auto g = options_.weight_decay() != 0 ? grad.add(p, options_.weight_decay()) : grad;
      exp_avg_[i].mul_(b1).add_(g, 1 - b1);
      exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1 - b2);
      p.addcdiv_(exp_avg_[i], (exp_avg_sq_[i].sqrt() / root_bias2_).add_(options_.eps()), -step_size_);
    }
  }

  /// Values of this step's parameters on the fused CPU path, end to end.
  int64_t fused_values() const noexcept { return fused_values_; }

  /// Updates values [begin, end) of the fused parameters laid end to end
  /// (each thread walks the parameters its stretch covers). Every value's
  /// update is independent, so the result does not depend on the split.
  void update_values(int64_t begin, int64_t end) {
    if (begin >= end) return;
    // The last run starting at or before `begin`.
    auto run = std::upper_bound(fused_.begin(), fused_.end(), begin,
                                [](int64_t value, const FusedRun& r) { return value < r.first; }) -
               1;
    for (; run != fused_.end() && run->first < end; ++run) {
      auto& p = params_[run->param];
      const int64_t from = std::max(begin, run->first) - run->first;
      const int64_t to = std::min(end, run->first + p.numel()) - run->first;
      AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "mtl::DenseAdam", [&] {
        detail::AdamCoefficients<scalar_t> coefficients{
            static_cast<scalar_t>(options_.beta1()), static_cast<scalar_t>(options_.beta2()),
            static_cast<scalar_t>(step_size_), static_cast<scalar_t>(1 / root_bias2_),
            static_cast<scalar_t>(options_.eps())};
        coefficients.weight_decay = static_cast<scalar_t>(options_.weight_decay());
        detail::adam_update(p.data_ptr<scalar_t>() + from, exp_avg_[run->param].data_ptr<scalar_t>() + from,
                            exp_avg_sq_[run->param].data_ptr<scalar_t>() + from, run->grad.data_ptr<scalar_t>() + from,
                            to - from, coefficients);
      });
    }
  }

  /// The fused update's values per thread (a stream through memory, light arithmetic).
  static constexpr int64_t kValuesPerThread = int64_t{1} << 15;

  void set_lr(double lr) { options_.lr(lr); }
  const DenseAdamOptions& options() const noexcept { return options_; }
  const std::vector<torch::Tensor>& parameters() const noexcept { return params_; }

  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const {
    archive.write(prefix + "step", torch::tensor(step_, torch::kLong), /*is_buffer=*/true);
    for (size_t i = 0; i < params_.size(); ++i) {
      archive.write(prefix + "exp_avg_" + std::to_string(i), exp_avg_[i], /*is_buffer=*/true);
      archive.write(prefix + "exp_avg_sq_" + std::to_string(i), exp_avg_sq_[i], /*is_buffer=*/true);
    }
  }
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) {
    torch::Tensor step;
    archive.read(prefix + "step", step, /*is_buffer=*/true);
    for (size_t i = 0; i < params_.size(); ++i) {
      torch::Tensor m, v;
      archive.read(prefix + "exp_avg_" + std::to_string(i), m, /*is_buffer=*/true);
      archive.read(prefix + "exp_avg_sq_" + std::to_string(i), v, /*is_buffer=*/true);
      TORCH_CHECK(m.sizes() == params_[i].sizes() && v.sizes() == params_[i].sizes(), "DenseAdam state '", prefix,
                  "' holds moments of shape ", m.sizes(), " for parameter ", i, " of shape ", params_[i].sizes());
      exp_avg_[i] = m.to(params_[i].device()), exp_avg_sq_[i] = v.to(params_[i].device());
    }
    step_ = step.item<int64_t>();
  }

 private:
  /// A parameter on the fused CPU path: its index, its gradient (contiguous)
  /// and where its values start when all such parameters are laid end to end.
  struct FusedRun {
    size_t param;
    torch::Tensor grad;
    int64_t first;
  };

  std::vector<torch::Tensor> params_;
  DenseAdamOptions options_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
  // This step's: bias-corrected step size, sqrt(1 - beta2^step), the parameters on the fused path.
  double step_size_ = 0, root_bias2_ = 1;
  std::vector<FusedRun> fused_;
  int64_t fused_values_ = 0;
};

}  // namespace mtl::optim
