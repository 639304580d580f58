// The training objective an experiment's task list and ESMM switch imply:
// CTR alone (BCE on all rows), CVR alone (BCE on clicked rows), both heads
// without ESMM (the two summed, the CVR term averaged over the clicked rows or
// over all rows), or ESMM v1/v2, optionally with ESCM2's counterfactual CVR
// risk (ips, or dr with a model head named "imputation"). Terms are named, so
// a non-finite loss can be traced to one.
#pragma once

#include <mtl/data/dataset.hpp>
#include <mtl/esmm.hpp>
#include <mtl/functional/losses.hpp>
#include <mtl/model.hpp>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace mtl::train {

/// What the clicked-row CVR BCE is divided by, without ESMM.
enum class CvrDenominator {
  clicked_rows,  ///< a mean over the clicked rows: each clicked row weighs about 1/CTR rows of the CTR term
  all_rows,      ///< the batch's row count: every impression weighs the same in both terms, as in ESMM's terms
};

/// Options of `Objective`.
struct ObjectiveOptions {
  TORCH_ARG(bool, use_esmm) = false;
  /// The CVR term's denominator when the model has both heads and no ESMM;
  /// a CVR-only model always averages over the clicked rows.
  TORCH_ARG(CvrDenominator, cvr_denominator) = CvrDenominator::clicked_rows;
  TORCH_ARG(ESMMVersion, esmm_version) = ESMMVersion::v2;
  TORCH_ARG(double, lambda_cvr_aux) = 0.1;
  /// ESCM2 with ESMM (esmm.hpp): dr reads the logits of the model's "imputation" head.
  TORCH_ARG(ESMMCounterfactual, counterfactual) = ESMMCounterfactual::none;
  TORCH_ARG(double, counterfactual_weight) = 0.1;
  TORCH_ARG(double, propensity_floor) = 0.05;
};

/// The head whose logits ESCM2's doubly robust risk imputes conversions from.
inline constexpr const char* kImputationHead = "imputation";

struct LossTerms {
  torch::Tensor total;
  std::vector<std::pair<std::string, torch::Tensor>> terms;

  /// The term called `name`.
  const torch::Tensor& at(const std::string& name) const {
    for (const auto& [n, t] : terms)
      if (n == name) return t;
    TORCH_CHECK(false, "the loss has no term '", name, "'");
  }
};

class Objective {
 public:
  Objective(const std::vector<std::string>& tasks, ObjectiveOptions options = {})
      : options_(options),
        esmm_(ESMMLossOptions()
                  .version(options.esmm_version())
                  .lambda_cvr_aux(options.lambda_cvr_aux())
                  .counterfactual(options.counterfactual())
                  .counterfactual_weight(options.counterfactual_weight())
                  .propensity_floor(options.propensity_floor())) {
    has_ctr_ = std::count(tasks.begin(), tasks.end(), "ctr") > 0;
    has_cvr_ = std::count(tasks.begin(), tasks.end(), "cvr") > 0;
    TORCH_CHECK(has_ctr_ || has_cvr_, "Objective expects a 'ctr' or 'cvr' task, but the model has neither");
    TORCH_CHECK(!options.use_esmm() || (has_ctr_ && has_cvr_),
                "ESMM needs both a 'ctr' and a 'cvr' head, but the model has only '", has_ctr_ ? "ctr" : "cvr", "'");
    TORCH_CHECK(options.counterfactual() == ESMMCounterfactual::none || options.use_esmm(),
                "ESCM2's counterfactual risk is an ESMM option, but ESMM is off");
    const bool imputes = std::count(tasks.begin(), tasks.end(), kImputationHead) > 0;
    const bool dr = options.counterfactual() == ESMMCounterfactual::dr;
    TORCH_CHECK(imputes == dr, dr ? "ESCM2's dr risk needs a model head named 'imputation', but the model has none"
                                  : "the model has a head named 'imputation', which only ESCM2's dr risk reads");
  }

  bool has_ctr() const noexcept { return has_ctr_; }
  bool has_cvr() const noexcept { return has_cvr_; }
  bool uses_esmm() const noexcept { return options_.use_esmm(); }

  /// The names of the terms every loss of this objective has, in order.
  std::vector<std::string> term_names() const {
    if (!options_.use_esmm()) {
      std::vector<std::string> names;
      if (has_ctr_) names.emplace_back("ctr");
      if (has_cvr_) names.emplace_back("cvr");
      return names;
    }
    std::vector<std::string> names{"ctr", "ctcvr"};
    if (options_.esmm_version() == ESMMVersion::v2) names.emplace_back("cvr_aux");
    if (options_.counterfactual() != ESMMCounterfactual::none) names.emplace_back("counterfactual");
    if (options_.counterfactual() == ESMMCounterfactual::dr) names.emplace_back("imputation");
    return names;
  }

  /// Whether the term `name` can be negative: ESCM2's dr risk (an imputed error plus a propensity-weighted
  /// correction); every other term is a cross-entropy.
  bool can_be_negative(const std::string& name) const {
    return name == "counterfactual" && options_.counterfactual() == ESMMCounterfactual::dr;
  }

  /// The weight of the term `name` in the loss's total: lambda_cvr_aux for cvr_aux, counterfactual_weight
  /// for ESCM2's terms, 1 for the others.
  double coefficient(const std::string& name) const {
    if (name == "cvr_aux") return options_.lambda_cvr_aux();
    if (name == "counterfactual" || name == "imputation") return options_.counterfactual_weight();
    return 1.0;
  }

  /// What the terms' sums are divided by. Zero: the batch's own count (rows,
  /// or clicked rows, at least 1). A rank of a data-parallel group passes its
  /// share of the global batch's counts (distributed/batch_share.hpp), so that
  /// the ranks' averaged gradients are the global batch's gradient.
  struct Denominators {
    double rows = 0;
    double clicked_rows = 0;
  };

  /// The loss of one batch, computed in fp32 whatever precision the logits came in.
  LossTerms operator()(const TaskLogits& logits, const data::TrainingBatch& batch) const {
    return unscaled(logits, batch);
  }

  /// The loss of one batch with each term's sum divided by `denominators`
  /// instead of the batch's own counts.
  LossTerms operator()(const TaskLogits& logits, const data::TrainingBatch& batch,
                       const Denominators& denominators) const {
    auto out = unscaled(logits, batch);
    const double own_rows = static_cast<double>(batch.size());
    const double own_clicked = std::max(1.0, batch.click.to(torch::kDouble).sum().item<double>());
    const double per_row = denominators.rows > 0 ? own_rows / denominators.rows : 1.0;
    const double per_clicked = denominators.clicked_rows > 0 ? own_clicked / denominators.clicked_rows : 1.0;
    // The clicked-row CVR terms divide by clicked rows; the others (and E1's all_rows CVR term) by rows.
    // The total is the terms' weighted sum (cvr_aux weighs lambda_cvr_aux): it is scaled per row, then
    // each clicked-row term's share of it moves to the clicked-row factor.
    out.total = per_row * out.total;
    for (auto& [name, term] : out.terms) {
      const bool clicked = name == "cvr_aux" ||
                           (name == "cvr" && (!has_ctr_ || options_.cvr_denominator() == CvrDenominator::clicked_rows));
      if (clicked) out.total = out.total + (per_clicked - per_row) * coefficient(name) * term;
      term = (clicked ? per_clicked : per_row) * term;
    }
    return out;
  }

 private:
  LossTerms unscaled(const TaskLogits& logits, const data::TrainingBatch& batch) const {
    LossTerms out;
    const auto ctr = has_ctr_ ? logits.at("ctr").to(torch::kFloat) : torch::Tensor();
    const auto cvr = has_cvr_ ? logits.at("cvr").to(torch::kFloat) : torch::Tensor();
    if (options_.use_esmm()) {
      const bool dr = options_.counterfactual() == ESMMCounterfactual::dr;
      auto t = esmm_->forward(ctr, cvr, batch.click, batch.conversion,
                              dr ? logits.at(kImputationHead).to(torch::kFloat) : torch::Tensor());
      out.terms = {{"ctr", t.ctr}, {"ctcvr", t.ctcvr}};
      if (options_.esmm_version() == ESMMVersion::v2) out.terms.emplace_back("cvr_aux", t.cvr_aux);
      if (options_.counterfactual() != ESMMCounterfactual::none)
        out.terms.emplace_back("counterfactual", t.counterfactual);
      if (dr) out.terms.emplace_back("imputation", t.imputation);
      out.total = t.total;
      return out;
    }
    if (has_ctr_) out.terms.emplace_back("ctr", binary_cross_entropy_loss(ctr, batch.click));
    if (has_cvr_) {
      auto cvr_term = clicked_cvr_loss(cvr, batch.conversion, batch.click);
      // The clicked-row mean times clicked / rows is the clicked rows' sum over all rows (0 without a click).
      if (has_ctr_ && options_.cvr_denominator() == CvrDenominator::all_rows)
        cvr_term = cvr_term * (batch.click.to(torch::kFloat).sum().clamp_min(1.0) / static_cast<double>(cvr.size(0)));
      out.terms.emplace_back("cvr", cvr_term);
    }
    out.total = out.terms.front().second;
    for (size_t i = 1; i < out.terms.size(); ++i) out.total = out.total + out.terms[i].second;
    return out;
  }

  ObjectiveOptions options_;
  mutable ESMMLoss esmm_;  // stateless; forward is not const
  bool has_ctr_ = false, has_cvr_ = false;
};

}  // namespace mtl::train
