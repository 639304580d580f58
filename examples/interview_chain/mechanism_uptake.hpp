// How much of each designed mechanism a trained model learned, on synthetic
// data: over the test rows, the slope of the model's logit on one weighted
// term of the true logit (1: the model moves with the term as the truth does;
// 0: it ignores the term). The terms are independent of each other, so each
// slope reads one mechanism. It tells a designed answer that was not found
// because neither model learned the mechanism from one where both learned it
// alike.
#pragma once

#include "experiment.hpp"

#include <mtl/data/synthetic.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

namespace chain {

/// One head's uptake of one term.
struct TermUptake {
  std::string head;       ///< ctr | cvr
  std::string term;       ///< taste | private | cross
  std::string questions;  ///< the questions whose mechanism the term is
  double slope = NAN;     ///< of the model's logit on the weighted term
};

/// A term of a true logit whose uptake is measured: its head, its name and the questions it answers.
struct DesignedTermName {
  const char *head, *term, *questions;
  bool on_ctr_head() const { return std::string_view(head) == "ctr"; }
};

/// Every such term, in the order of the report's columns.
inline constexpr DesignedTermName kDesignedTermNames[] = {{"ctr", "taste", "Q1"},
                                                          {"ctr", "private", "Q3, Q4"},
                                                          {"ctr", "cross", "Q5"},
                                                          {"cvr", "taste", "Q1"},
                                                          {"cvr", "private", "Q3, Q4"}};

/// The weighted terms of the true logits on a synthetic test split, by head:
/// what a model's logits are regressed on.
class DesignedTerms {
 public:
  /// The terms of the test split that `c` describes; nothing (`empty()`)
  /// unless its data are synthetic under the designed scenario.
  explicit DesignedTerms(const ExperimentConfig& c) {
    using mtl::data::SyntheticGenerator;
    if (c.source != "synthetic" || c.synthetic.scenario() != mtl::data::SyntheticScenario::designed) return;
    const SyntheticGenerator generator(c.synthetic);
    using Terms = SyntheticGenerator::LogitTerms;
    for (const auto& name : kDesignedTermNames) {
      const std::string term = name.term;
      const bool ctr = name.on_ctr_head();
      const double weight = term == "taste"     ? SyntheticGenerator::kTasteWeight
                            : term == "private" ? c.synthetic.private_term_weight()
                                                : c.synthetic.dense_product_weight();
      const double Terms::*field = term == "taste"     ? (ctr ? &Terms::click_taste : &Terms::buy_taste)
                                   : term == "private" ? (ctr ? &Terms::private_click : &Terms::private_buy)
                                                       : &Terms::cross;
      if (weight != 0) columns_.push_back({name, weight, field, {}});
    }
    for (auto& k : columns_) k.values.reserve(static_cast<size_t>(c.test_rows));
    for (int64_t r = 0; r < c.test_rows; ++r) {
      const auto t = generator.logit_terms(mtl::data::Split::test, r);
      for (auto& k : columns_) k.values.push_back(k.weight * t.*k.field);
    }
  }

  bool empty() const noexcept { return columns_.empty(); }

  /// The slopes of a run's logits on every term, from its test predictions
  /// (`p_ctr` or `p_cvr` empty: a head the model lacks), in the split's row order.
  std::vector<TermUptake> uptake(const std::vector<float>& p_ctr, const std::vector<float>& p_cvr) const {
    std::vector<TermUptake> out;
    const auto ctr_logit = logits_of(p_ctr), cvr_logit = logits_of(p_cvr);
    for (const auto& k : columns_) {
      const auto& logit = k.name.on_ctr_head() ? ctr_logit : cvr_logit;
      if (logit.empty()) continue;
      TORCH_CHECK(logit.size() == k.values.size(), "mechanism uptake: ", logit.size(),
                  " test predictions, but the test split has ", k.values.size(), " rows");
      out.push_back({k.name.head, k.name.term, k.name.questions, slope_of(k.values, logit)});
    }
    return out;
  }

 private:
  struct Column {
    DesignedTermName name;
    double weight;
    const double mtl::data::SyntheticGenerator::LogitTerms::*field;  ///< the term's raw value in a row's terms
    std::vector<double> values;
  };

  /// cov(x, y) / var(x); NaN when x does not vary.
  static double slope_of(const std::vector<double>& x, const std::vector<double>& y) {
    const double n = static_cast<double>(x.size());
    double mx = 0, my = 0;
    for (size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
    mx /= n, my /= n;
    double sxy = 0, sxx = 0;
    for (size_t i = 0; i < x.size(); ++i) sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx);
    return sxx > 0 ? sxy / sxx : NAN;
  }

  static std::vector<double> logits_of(const std::vector<float>& p) {
    std::vector<double> out(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      const double q = std::min(std::max(static_cast<double>(p[i]), 1e-7), 1.0 - 1e-7);
      out[i] = std::log(q) - std::log1p(-q);
    }
    return out;
  }

  std::vector<Column> columns_;
};

/// The mean of several runs' uptakes of the same terms (one per seed), term by term.
inline std::vector<TermUptake> mean_uptake(const std::vector<std::vector<TermUptake>>& runs) {
  if (runs.empty()) return {};
  auto out = runs.front();
  for (size_t k = 0; k < out.size(); ++k) {
    double sum = 0;
    for (const auto& run : runs) sum += run.at(k).slope;
    out[k].slope = sum / static_cast<double>(runs.size());
  }
  return out;
}

}  // namespace chain
