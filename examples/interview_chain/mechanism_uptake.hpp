// How much of each designed mechanism a trained model learned, on synthetic
// data: over the test rows, each head's logit is regressed on every weighted
// term of the true logits at once, and a term's coefficient is its uptake
// (1: the model moves with the term as the truth does; 0: it ignores it).
// The click and conversion tastes correlate (task_relatedness), so only a
// joint fit tells the shared taste from a task's own. It tells a designed
// answer that was not found because neither model learned the mechanism from
// one where both learned it alike.
#pragma once

#include "experiment.hpp"

#include <mtl/data/synthetic.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chain {

/// One head's uptake of one term.
struct TermUptake {
  std::string head;       ///< ctr | cvr
  std::string term;       ///< taste | private | cross
  std::string questions;  ///< the questions whose mechanism the term is
  double slope = NAN;     ///< the term's coefficient in the joint regression of the head's logit
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
    centre_columns();
  }

  bool empty() const noexcept { return columns_.empty(); }

  /// Each head's coefficients on its own terms, from a run's test predictions
  /// (`p_ctr` or `p_cvr` empty: a head the model lacks), in the split's row order.
  std::vector<TermUptake> uptake(const std::vector<float>& p_ctr, const std::vector<float>& p_cvr) const {
    std::vector<TermUptake> out;
    const auto ctr_logit = logits_of(p_ctr), cvr_logit = logits_of(p_cvr);
    std::vector<double> ctr_fit, cvr_fit;
    for (auto [logit, fit] : {std::pair{&ctr_logit, &ctr_fit}, std::pair{&cvr_logit, &cvr_fit}})
      if (!logit->empty()) {
        TORCH_CHECK(logit->size() == columns_.front().values.size(), "mechanism uptake: ", logit->size(),
                    " test predictions, but the test split has ", columns_.front().values.size(), " rows");
        *fit = joint_coefficients(*logit);
      }
    for (size_t j = 0; j < columns_.size(); ++j) {
      const auto& k = columns_[j];
      const auto& fit = k.name.on_ctr_head() ? ctr_fit : cvr_fit;
      if (!fit.empty()) out.push_back({k.name.head, k.name.term, k.name.questions, fit[j]});
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

  /// The least-squares coefficients of `y` on every column at once (with an
  /// intercept, not returned), one per column; NaN where the columns are collinear.
  std::vector<double> joint_coefficients(const std::vector<double>& y) const {
    const size_t k = columns_.size(), n = y.size();
    // Centred normal equations: S b = s, with S the columns' covariances (the same for every run, so computed
    // once) and s their covariances with y.
    double mean_y = 0;
    for (size_t i = 0; i < n; ++i) mean_y += y[i];
    mean_y /= static_cast<double>(n);
    auto system = cross_products_;
    for (auto& row : system) row.push_back(0.0);
    for (size_t i = 0; i < n; ++i)
      for (size_t a = 0; a < k; ++a) system[a][k] += (columns_[a].values[i] - means_[a]) * (y[i] - mean_y);
    return solve(system);
  }

  /// The columns' means and their centred cross products, which every run's regression shares.
  void centre_columns() {
    const size_t k = columns_.size(), n = k > 0 ? columns_.front().values.size() : 0;
    means_.assign(k, 0.0);
    for (size_t i = 0; i < n; ++i)
      for (size_t a = 0; a < k; ++a) means_[a] += columns_[a].values[i];
    for (auto& m : means_) m /= static_cast<double>(n);
    cross_products_.assign(k, std::vector<double>(k, 0.0));
    for (size_t i = 0; i < n; ++i)
      for (size_t a = 0; a < k; ++a) {
        const double xa = columns_[a].values[i] - means_[a];
        for (size_t b = 0; b < k; ++b) cross_products_[a][b] += xa * (columns_[b].values[i] - means_[b]);
      }
  }

  /// Gaussian elimination with partial pivoting of an augmented k x (k + 1) system.
  static std::vector<double> solve(std::vector<std::vector<double>> m) {
    const size_t k = m.size();
    double scale = 0;
    for (size_t c = 0; c < k; ++c) scale = std::max(scale, std::abs(m[c][c]));
    for (size_t c = 0; c < k; ++c) {
      size_t pivot = c;
      for (size_t r = c + 1; r < k; ++r)
        if (std::abs(m[r][c]) > std::abs(m[pivot][c])) pivot = r;
      if (!(std::abs(m[pivot][c]) > 1e-12 * scale)) return std::vector<double>(k, NAN);
      std::swap(m[c], m[pivot]);
      for (size_t r = 0; r < k; ++r) {
        if (r == c) continue;
        const double f = m[r][c] / m[c][c];
        for (size_t j = c; j <= k; ++j) m[r][j] -= f * m[c][j];
      }
    }
    std::vector<double> out(k);
    for (size_t c = 0; c < k; ++c) out[c] = m[c][k] / m[c][c];
    return out;
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
  std::vector<double> means_;
  std::vector<std::vector<double>> cross_products_;
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
