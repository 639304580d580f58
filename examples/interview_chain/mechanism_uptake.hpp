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

#include <cmath>
#include <string>
#include <vector>

namespace chain {

/// One head's uptake of one term.
struct TermUptake {
  std::string head;       ///< ctr | cvr
  std::string term;       ///< taste | private | cross
  std::string questions;  ///< the questions whose mechanism the term is
  double slope = NAN;     ///< of the model's logit on the weighted term
};

namespace detail {

/// cov(x, y) / var(x); NaN when x does not vary.
inline double slope_of(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
  mx /= n, my /= n;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i) sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx);
  return sxx > 0 ? sxy / sxx : NAN;
}

inline std::vector<double> logits_of(const std::vector<float>& p) {
  std::vector<double> out(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double q = std::min(std::max(static_cast<double>(p[i]), 1e-7), 1.0 - 1e-7);
    out[i] = std::log(q) - std::log1p(-q);
  }
  return out;
}

}  // namespace detail

/// The uptake of every designed term by a run whose config is `c` and whose
/// test predictions are `p_ctr` and `p_cvr` (either may be empty: a head the
/// model lacks), in the order of the test split's rows. Empty unless the data
/// is synthetic under the designed scenario.
inline std::vector<TermUptake> mechanism_uptake(const ExperimentConfig& c, const std::vector<float>& p_ctr,
                                                const std::vector<float>& p_cvr) {
  using mtl::data::SyntheticGenerator;
  if (c.source != "synthetic" || c.synthetic.scenario() != mtl::data::SyntheticScenario::designed) return {};
  const size_t rows = std::max(p_ctr.size(), p_cvr.size());
  TORCH_CHECK(rows <= static_cast<size_t>(c.test_rows), "mechanism_uptake: ", rows,
              " test predictions, but the config's test split has ", c.test_rows, " rows");
  const SyntheticGenerator generator(c.synthetic);
  const auto& o = c.synthetic;
  struct Term {
    const char *head, *term, *questions;
    double weight;
    double SyntheticGenerator::LogitTerms::*value;
  };
  const std::vector<Term> terms{
      {"ctr", "taste", "Q1", SyntheticGenerator::kTasteWeight, &SyntheticGenerator::LogitTerms::click_taste},
      {"ctr", "private", "Q3, Q4", o.private_signal(), &SyntheticGenerator::LogitTerms::private_click},
      {"ctr", "cross", "Q5", o.cross_signal(), &SyntheticGenerator::LogitTerms::cross},
      {"cvr", "taste", "Q1", SyntheticGenerator::kTasteWeight, &SyntheticGenerator::LogitTerms::buy_taste},
      {"cvr", "private", "Q3, Q4", o.private_signal(), &SyntheticGenerator::LogitTerms::private_buy}};
  std::vector<SyntheticGenerator::LogitTerms> truth;
  truth.reserve(rows);
  for (size_t r = 0; r < rows; ++r)
    truth.push_back(generator.logit_terms(mtl::data::Split::test, static_cast<int64_t>(r)));
  const auto ctr_logit = detail::logits_of(p_ctr), cvr_logit = detail::logits_of(p_cvr);
  std::vector<TermUptake> out;
  for (const auto& t : terms) {
    const auto& logit = std::string(t.head) == "ctr" ? ctr_logit : cvr_logit;
    if (logit.size() != rows || t.weight == 0) continue;
    std::vector<double> weighted(rows);
    for (size_t r = 0; r < rows; ++r) weighted[r] = t.weight * truth[r].*t.value;
    out.push_back({t.head, t.term, t.questions, detail::slope_of(weighted, logit)});
  }
  return out;
}

}  // namespace chain
