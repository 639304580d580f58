// Expert health over an evaluation pass: per task and expert, the mean gate
// weight; the Gini coefficient and entropy of each task's utilisation; the
// mean entropy of each row's gate weights, and how far it lies below the
// entropy of the mean weights (the information the gate takes from its input:
// 0 for a gate that gives every row the same weights); dead experts (far
// below a uniform share) and monopolising ones; each expert's output RMS
// before and after the aligner. A healthy mixture has Gini < 0.5, no dead or
// monopolising expert, and a gate that depends on its input.
#pragma once

#include <mtl/expert.hpp>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace mtl::train {

/// Gini coefficient of non-negative shares: 0 when equal, (n - 1) / n when one takes all.
inline double gini(std::vector<double> shares) {
  const double n = static_cast<double>(shares.size()), total = std::accumulate(shares.begin(), shares.end(), 0.0);
  if (shares.empty() || total <= 0) return 0.0;
  std::sort(shares.begin(), shares.end());
  double weighted = 0;
  for (size_t i = 0; i < shares.size(); ++i) weighted += static_cast<double>(i + 1) * shares[i];
  return 2.0 * weighted / (n * total) - (n + 1.0) / n;
}

/// Shannon entropy (nats) of shares that sum to 1.
inline double entropy(const std::vector<double>& shares) {
  double h = 0;
  for (double p : shares)
    if (p > 0) h -= p * std::log(p);
  return h;
}

struct ExpertHealthOptions {
  /// An expert whose mean weight is below this fraction of the uniform share 1/E is dead.
  double dead_fraction_of_uniform = 0.25;
  /// An expert whose mean weight is above this is monopolising.
  double monopoly_share = 0.9;
  double healthy_gini = 0.5;
  /// A gate whose rows' weights carry less information about the input than
  /// this (nats: entropy of the mean weights - mean entropy of a row's) ignores its input.
  double min_input_dependence = 0.01;
};

/// Accumulates gate weights and expert outputs over batches.
class ExpertHealth {
 public:
  ExpertHealth(std::vector<std::string> tasks, std::vector<std::vector<std::string>> gate_names,
               std::vector<std::string> expert_names, ExpertHealthOptions options = {})
      : tasks_(std::move(tasks)),
        gate_names_(std::move(gate_names)),
        expert_names_(std::move(expert_names)),
        options_(options) {
    gate_sums_.resize(gate_names_.size());
    row_entropy_sums_.assign(gate_names_.size(), 0.0);
    for (size_t t = 0; t < gate_names_.size(); ++t) gate_sums_[t].assign(gate_names_[t].size(), 0.0);
    raw_sq_.assign(expert_names_.size(), 0.0), aligned_sq_.assign(expert_names_.size(), 0.0);
  }

  /// Adds one batch: per-task gate weights [batch, experts] and the recorded expert outputs.
  void add(const std::vector<torch::Tensor>& gate_weights, const ExpertOutputs& outputs) {
    TORCH_CHECK(gate_weights.size() == gate_sums_.size(), "ExpertHealth expects gate weights of ", gate_sums_.size(),
                " tasks, but got ", gate_weights.size());
    for (size_t t = 0; t < gate_weights.size(); ++t) {
      auto sums = gate_weights[t].to(torch::kDouble).sum(0).cpu();
      TORCH_CHECK(sums.numel() == static_cast<int64_t>(gate_sums_[t].size()), "ExpertHealth: task ", tasks_[t], " has ",
                  gate_sums_[t].size(), " experts, but its gate weighs ", sums.numel());
      for (int64_t e = 0; e < sums.numel(); ++e) gate_sums_[t][e] += sums[e].item<double>();
      const auto w = gate_weights[t].to(torch::kDouble);
      row_entropy_sums_[t] -= (w * w.clamp_min(1e-300).log()).sum().item<double>();
    }
    if (!gate_weights.empty()) rows_ += gate_weights.front().size(0);
    accumulate_squares(outputs.raw, raw_sq_, raw_count_);
    accumulate_squares(outputs.aligned, aligned_sq_, aligned_count_);
  }

  /// One JSON record per task (gate utilisation) and one per expert (output scale).
  std::vector<nlohmann::json> records(int64_t step) const {
    std::vector<nlohmann::json> out;
    if (gate_sums_.empty())
      out.push_back({{"record", "no_gates"}, {"step", step}, {"note", "this model's mixer has no gates to diagnose"}});
    for (size_t t = 0; t < gate_sums_.size(); ++t) {
      std::vector<double> share(gate_sums_[t].size());
      for (size_t e = 0; e < share.size(); ++e) share[e] = rows_ > 0 ? gate_sums_[t][e] / rows_ : 0.0;
      const double uniform = 1.0 / static_cast<double>(share.size());
      std::vector<std::string> dead, monopolising;
      for (size_t e = 0; e < share.size(); ++e) {
        if (share[e] < options_.dead_fraction_of_uniform * uniform) dead.push_back(gate_names_[t][e]);
        if (share[e] > options_.monopoly_share) monopolising.push_back(gate_names_[t][e]);
      }
      const double g = gini(share);
      const double row_entropy = rows_ > 0 ? row_entropy_sums_[t] / rows_ : 0.0;
      const double input_dependence = entropy(share) - row_entropy;
      out.push_back({{"record", "gate"},
                     {"step", step},
                     {"task", tasks_[t]},
                     {"rows", rows_},
                     {"experts", gate_names_[t]},
                     {"mean_gate_weight", share},
                     {"gini", g},
                     {"entropy", entropy(share)},
                     {"max_entropy", std::log(static_cast<double>(share.size()))},
                     {"mean_row_entropy", row_entropy},
                     {"input_dependence", input_dependence},
                     {"dead_experts", dead},
                     {"monopolising_experts", monopolising},
                     {"healthy", g < options_.healthy_gini && dead.empty() && monopolising.empty() &&
                                     input_dependence >= options_.min_input_dependence}});
    }
    for (size_t e = 0; e < expert_names_.size() && raw_count_ > 0; ++e) {
      nlohmann::json r{{"record", "expert_scale"},
                       {"step", step},
                       {"expert", expert_names_[e]},
                       {"rms_before_aligner", std::sqrt(raw_sq_[e] / raw_count_)}};
      r["rms_after_aligner"] =
          aligned_count_ > 0 ? nlohmann::json(std::sqrt(aligned_sq_[e] / aligned_count_)) : nlohmann::json(nullptr);
      out.push_back(r);
    }
    return out;
  }

 private:
  void accumulate_squares(const torch::Tensor& outputs, std::vector<double>& sums, double& count) const {
    if (!outputs.defined()) return;
    TORCH_CHECK(outputs.dim() == 3 && outputs.size(1) == static_cast<int64_t>(sums.size()),
                "ExpertHealth expects expert outputs [batch, ", sums.size(), ", dim], but got ", outputs.sizes());
    auto sq = outputs.to(torch::kDouble).pow(2).sum(torch::IntArrayRef{0, 2}).cpu();
    for (size_t e = 0; e < sums.size(); ++e) sums[e] += sq[e].item<double>();
    count += static_cast<double>(outputs.size(0) * outputs.size(2));
  }

  std::vector<std::string> tasks_;
  std::vector<std::vector<std::string>> gate_names_;
  std::vector<std::string> expert_names_;
  ExpertHealthOptions options_;
  std::vector<std::vector<double>> gate_sums_;
  std::vector<double> row_entropy_sums_;  ///< per task, the rows' gate entropies summed
  std::vector<double> raw_sq_, aligned_sq_;
  double raw_count_ = 0, aligned_count_ = 0;
  int64_t rows_ = 0;
};

}  // namespace mtl::train
