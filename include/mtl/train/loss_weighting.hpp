// Task-loss weighting: how the objective's terms are weighed against each
// other. Fixed weights from the config; uncertainty weighting (Kendall et al.,
// CVPR 2018), one learned log-variance s per term, the term weighed exp(-s)
// and s added to the loss (twice the paper's 1/(2 sigma^2) L + log sigma, so
// that a term settles at weight 1/L); or GradNorm (Chen et al., ICML 2018),
// weights moved so that each term's gradient norm on the backbone's output
// layer approaches the mean norm times the term's relative inverse training
// rate to the power alpha. The learned values have their own Adam and
// learning rate, read the terms' values on the host every step (a device
// sync on CUDA), and are saved with the training state so that a resumed run
// continues exactly. A weighed term's coefficient in the objective
// (lambda_cvr_aux, counterfactual_weight) is absorbed by its learned weight.
#pragma once

#include <mtl/detail/adam_update.hpp>
#include <mtl/detail/join.hpp>
#include <mtl/train/objective.hpp>

#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace mtl::train {

enum class LossWeightingKind {
  fixed,        ///< each term times its configured weight (1 where none is given)
  uncertainty,  ///< exp(-s_i) * L_i + s_i, s_i learned
  gradnorm,     ///< w_i * L_i, w_i moved to balance gradient norms, sum w_i = number of weighted terms
};

/// Fixed weights by term name.
using TermWeights = std::map<std::string, double>;

/// Options of `LossWeighting`.
///
/// Example:
///   TrainerOptions("runs/e5").loss_weighting(LossWeightingOptions().kind(LossWeightingKind::uncertainty));
struct LossWeightingOptions {
  TORCH_ARG(LossWeightingKind, kind) = LossWeightingKind::fixed;
  /// Fixed weights by term name; a term without one weighs 1.
  TORCH_ARG(TermWeights, fixed_weights);
  /// The terms uncertainty or GradNorm weighs; empty: every term of the objective that cannot be negative
  /// (all but the dr counterfactual risk).
  TORCH_ARG(std::vector<std::string>, terms);
  /// Learning rate of the log-variances (uncertainty) or of the weights (GradNorm): about how far each moves
  /// per update.
  TORCH_ARG(double, lr) = 0.01;
  /// GradNorm's asymmetry: 0 pulls every norm to the mean; larger favours terms that train slower.
  TORCH_ARG(double, gradnorm_alpha) = 1.5;
  /// GradNorm moves the weights every this many steps (each move costs one backward per term).
  TORCH_ARG(int64_t, gradnorm_interval) = 25;
};

/// The weights of an objective's terms and how they move. The objective's
/// total is sum_i c_i * L_i, c_i the term's coefficient (Objective::coefficient);
/// the weighted total is sum_i w_i * c_i * L_i (plus sum_i s_i under uncertainty,
/// a constant for the model's gradient, left out of the returned tensor).
class LossWeighting {
 public:
  LossWeighting(const Objective& objective, LossWeightingOptions options)
      : options_(std::move(options)) {
    const auto kind = options_.kind();
    const auto names = objective.term_names();
    const auto require_term = [&](const std::string& name) {
      TORCH_CHECK(std::count(names.begin(), names.end(), name) > 0, "loss weighting: the objective has no term '",
                  name, "'; its terms are: ", mtl::detail::join(names));
    };
    for (const auto& [name, weight] : options_.fixed_weights()) {
      TORCH_CHECK(kind == LossWeightingKind::fixed,
                  "loss weighting: fixed weights are given, but the weighting is not fixed");
      require_term(name);
      TORCH_CHECK(std::isfinite(weight) && weight >= 0, "loss weighting: the weight of '", name,
                  "' must be a finite number >= 0, but got ", weight);
    }
    if (kind == LossWeightingKind::fixed) {
      TORCH_CHECK(options_.terms().empty(),
                  "loss weighting: the terms to weigh are listed, but fixed weights are given per term");
      for (const auto& [name, weight] : options_.fixed_weights()) add(objective, name, weight);
      return;
    }
    TORCH_CHECK(std::isfinite(options_.lr()) && options_.lr() > 0, "loss weighting: lr must be > 0, but got ",
                options_.lr());
    TORCH_CHECK(std::isfinite(options_.gradnorm_alpha()) && options_.gradnorm_alpha() >= 0,
                "loss weighting: gradnorm_alpha must be >= 0, but got ", options_.gradnorm_alpha());
    TORCH_CHECK(options_.gradnorm_interval() >= 1, "loss weighting: gradnorm_interval must be >= 1, but got ",
                options_.gradnorm_interval());
    std::vector<std::string> chosen = options_.terms();
    if (chosen.empty())
      for (const auto& name : names)
        if (!objective.can_be_negative(name)) chosen.push_back(name);
    for (const auto& name : chosen) {
      require_term(name);
      TORCH_CHECK(!objective.can_be_negative(name), "loss weighting: the term '", name,
                  "' can be negative, and a learned weight on it would grow without bound; weigh the others");
      for (const auto& w : weighted_)
        TORCH_CHECK(w.name != name, "loss weighting: the term '", name, "' is listed twice");
      add(objective, name, kind == LossWeightingKind::uncertainty ? 0.0 : 1.0);
    }
    TORCH_CHECK(weighted_.size() >= 2, "loss weighting: ",
                kind == LossWeightingKind::uncertainty ? "uncertainty" : "gradnorm",
                " weighs terms against each other and needs at least two, but got ", weighted_.size(), " (",
                mtl::detail::join(names), ")");
  }

  /// Whether the weights are all 1 and never move: the objective's total is used as it is.
  bool is_identity() const {
    for (const auto& w : weighted_)
      if (options_.kind() != LossWeightingKind::fixed || w.value != 1.0) return false;
    return true;
  }

  LossWeightingKind kind() const { return options_.kind(); }

  /// Whether the weights are learned, so that the training state must keep them (`state`).
  bool learns() const { return options_.kind() != LossWeightingKind::fixed; }

  /// The current weight of each weighted term (exp(-s) under uncertainty).
  std::vector<std::pair<std::string, double>> weights() const {
    std::vector<std::pair<std::string, double>> out;
    for (const auto& w : weighted_) out.emplace_back(w.name, weight(w));
    return out;
  }

  /// The weighted total of `loss`, whose terms are the objective's: `loss.total` itself where no weight differs
  /// from 1.
  torch::Tensor total(const LossTerms& loss) const {
    auto total = loss.total;
    for (const auto& w : weighted_) {
      const double change = weight(w) - 1.0;
      if (change != 0.0) total = total + (change * w.coefficient) * loss.at(w.name);
    }
    return total;
  }

  /// Whether GradNorm moves the weights after `step` (1-based), so needs the gradient norms of this step.
  bool needs_gradient_norms(int64_t step) const {
    return options_.kind() == LossWeightingKind::gradnorm && (step - 1) % options_.gradnorm_interval() == 0;
  }

  /// Each weighted term's unweighted gradient grad_W c_i L_i over `shared` (the backbone's output layer's
  /// weights), flattened, as CPU doubles side by side [terms, numel]. The graph is kept for the step's backward.
  torch::Tensor term_gradients(const LossTerms& loss, const std::vector<torch::Tensor>& shared) const {
    TORCH_CHECK(!shared.empty(), "GradNorm needs the weights of a layer every task shares, but got none");
    std::vector<torch::Tensor> rows;
    for (const auto& w : weighted_) {
      auto grads = torch::autograd::grad({w.coefficient * loss.at(w.name)}, shared, {}, /*retain_graph=*/true,
                                         /*create_graph=*/false, /*allow_unused=*/true);
      std::vector<torch::Tensor> flat;
      for (size_t k = 0; k < grads.size(); ++k)
        flat.push_back((grads[k].defined() ? grads[k] : torch::zeros_like(shared[k])).reshape(-1));
      rows.push_back(torch::cat(flat).to(torch::kCPU, torch::kDouble));
    }
    return torch::stack(rows);
  }

  /// Moves the learned values after a step. `terms` are the step's term values (averaged over the ranks
  /// with replicas, so that every rank moves alike); `gradients` is `term_gradients` (summed and averaged
  /// over the ranks) on a GradNorm step, undefined otherwise.
  void update(const LossTerms& terms, const torch::Tensor& gradients = {}) {
    if (options_.kind() == LossWeightingKind::uncertainty) {
      // d/ds [exp(-s) c L + s] = 1 - exp(-s) c L.
      std::vector<double> g;
      for (const auto& w : weighted_) g.push_back(1.0 - std::exp(-w.value) * w.coefficient * value(terms, w.name));
      adam_step(g);
    } else if (options_.kind() == LossWeightingKind::gradnorm && gradients.defined()) {
      gradnorm_step(terms, gradients);
    }
  }

  /// The learned state as one tensor, for the training state: which weighting over which terms (the kind and
  /// a checksum of the terms' names), the Adam step, then each term's value, moments and initial loss.
  torch::Tensor state() const {
    std::vector<double> flat{static_cast<double>(options_.kind()), identity(), static_cast<double>(adam_steps_)};
    for (const auto& w : weighted_) flat.insert(flat.end(), {w.value, w.m, w.v, w.initial_loss});
    return torch::tensor(flat, torch::kDouble);
  }

  void load_state(const torch::Tensor& state) {
    const auto n = static_cast<int64_t>(weighted_.size());
    auto s = state.to(torch::kDouble).contiguous();
    const double* p = s.data_ptr<double>();
    TORCH_CHECK(s.dim() == 1 && s.numel() == 3 + 4 * n && p[0] == static_cast<double>(options_.kind()) &&
                    p[1] == identity(),
                "the checkpoint's learned loss weights are of another weighting or other terms than this run's (",
                mtl::detail::join(weighted_names()), ")");
    adam_steps_ = static_cast<int64_t>(p[2]);
    for (int64_t i = 0; i < n; ++i) {
      auto& w = weighted_[i];
      w.value = p[3 + 4 * i], w.m = p[4 + 4 * i], w.v = p[5 + 4 * i], w.initial_loss = p[6 + 4 * i];
    }
  }

 private:
  struct Weighted {
    std::string name;
    double coefficient;  ///< the term's weight in the objective's own total
    double value;        ///< fixed and GradNorm: the weight; uncertainty: s = log sigma^2
    double m = 0, v = 0;
    double initial_loss = std::nan("");  ///< GradNorm: c L at its first update
  };

  std::vector<std::string> weighted_names() const {
    std::vector<std::string> names;
    for (const auto& w : weighted_) names.push_back(w.name);
    return names;
  }

  /// FNV-1a over the weighted terms' names, 32 bits (exact in a double).
  double identity() const {
    uint32_t h = 2166136261u;
    for (const auto& name : weighted_names())
      for (const char c : name + ",") h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
    return static_cast<double>(h);
  }

  void add(const Objective& objective, const std::string& name, double value) {
    weighted_.push_back({name, objective.coefficient(name), value});
  }

  double weight(const Weighted& w) const {
    return options_.kind() == LossWeightingKind::uncertainty ? std::exp(-w.value) : w.value;
  }

  static double value(const LossTerms& loss, const std::string& name) {
    return loss.at(name).detach().to(torch::kDouble).item<double>();
  }

  void adam_step(const std::vector<double>& g) {
    ++adam_steps_;
    const double beta1 = 0.9, beta2 = 0.999;
    const mtl::detail::AdamCoefficients<double> k{
        beta1, beta2, options_.lr() / (1 - std::pow(beta1, static_cast<double>(adam_steps_))),
        1 / std::sqrt(1 - std::pow(beta2, static_cast<double>(adam_steps_))), 1e-8};
    for (size_t i = 0; i < weighted_.size(); ++i) {
      auto& w = weighted_[i];
      mtl::detail::adam_update(&w.value, &w.m, &w.v, &g[i], 1, k);
    }
  }

  /// One GradNorm move: G_i = w_i ||g_i||, target_i = mean(G) * r_i^alpha with r_i the term's loss ratio
  /// L_i / L_i(first) over its mean; the gradient of sum_i |G_i - target_i| (targets held constant) in w_i
  /// is sign(G_i - target_i) ||g_i||. The weights stay positive and are renormalised to sum to their count.
  void gradnorm_step(const LossTerms& terms, const torch::Tensor& gradients) {
    const size_t n = weighted_.size();
    std::vector<double> norm(n), g_norm(n), ratio(n);
    double mean_g = 0, mean_ratio = 0;
    for (size_t i = 0; i < n; ++i) {
      auto& w = weighted_[i];
      norm[i] = gradients[static_cast<int64_t>(i)].norm().item<double>();
      g_norm[i] = w.value * norm[i];
      const double loss = w.coefficient * value(terms, w.name);
      if (std::isnan(w.initial_loss)) w.initial_loss = loss;
      ratio[i] = w.initial_loss > 0 ? loss / w.initial_loss : 1.0;
      mean_g += g_norm[i] / n, mean_ratio += ratio[i] / n;
    }
    std::vector<double> g(n);
    for (size_t i = 0; i < n; ++i) {
      const double target = mean_g * std::pow(mean_ratio > 0 ? ratio[i] / mean_ratio : 1.0, options_.gradnorm_alpha());
      g[i] = g_norm[i] > target ? norm[i] : g_norm[i] < target ? -norm[i] : 0.0;
    }
    adam_step(g);
    double sum = 0;
    for (auto& w : weighted_) sum += (w.value = std::max(w.value, 1e-3));
    for (auto& w : weighted_) w.value *= static_cast<double>(n) / sum;
  }

  LossWeightingOptions options_;
  std::vector<Weighted> weighted_;
  int64_t adam_steps_ = 0;
};

}  // namespace mtl::train
