// What the reports compute from the runs: the summaries' cells, the chain's
// comparisons with their paired tests and verdicts, and the method lines,
// notes and declared choices that the text, JSON and HTML reports share.
#pragma once

#include "report_runs.hpp"

#include <mtl/detail/join.hpp>
#include <mtl/metrics/delong.hpp>
#include <mtl/metrics/multitask_metrics.hpp>
#include <mtl/metrics/paired_seeds.hpp>
#include <mtl/train/run_directory.hpp>

#include <c10/util/Exception.h>
#include <fmt/core.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace chain {

// ---------------------------------------------------------------- summaries

inline const std::vector<std::string>& summary_metrics() {
  static const std::vector<std::string> keys{"auc_ctr", "auc_cvr", "auc_ctcvr", "loss", "auc_cvr_entire_space"};
  return keys;
}

/// Why a summary cell is empty: the experiment cannot produce it, or the run did not finish.
inline std::string missing_reason(const ExperimentRecord& e, const std::string& key) {
  const auto* r = e.first_finished();
  if (!r) return "run did not finish";
  auto it = r->undefined.find(key);
  if (it != r->undefined.end()) return it->second;
  return "not produced by this experiment's heads";
}

/// An experiment's status in the summaries: finished, partly finished (with the seeds that did), or its first run's.
inline std::string summary_status(const ExperimentRecord& e) {
  const auto* first = e.first_finished();
  std::string status = first ? "finished" : e.runs.front().status.status;
  if (first && e.finished_count() < static_cast<int>(e.runs.size()))
    status =
        "partly finished (" + std::to_string(e.finished_count()) + " of " + std::to_string(e.runs.size()) + " seeds)";
  return status;
}

/// Why an experiment's summary cells are empty, "field: reason" joined by "; ".
inline std::string summary_missing(const ExperimentRecord& e) {
  const auto* first = e.first_finished();
  const bool has_best = first && first->best_step >= 0;
  // best_step -1: no validation pass gave a defined primary metric, so the last model was tested.
  std::string missing =
      first && !has_best ? "best_step: no validation gave a defined primary metric; the last model was tested" : "";
  for (const auto& key : summary_metrics())
    if (!e.spread(key)) missing += (missing.empty() ? "" : "; ") + key + ": " + missing_reason(e, key);
  return missing;
}

// ---------------------------------------------------------------- deltas

/// One comparison of the chain: a challenger against a reference on one
/// metric. One comparison per question is primary, fixed before any run: its
/// p-value is Holm-adjusted across the chain's primaries and gives the
/// question's verdict; the others are exploratory.
struct Comparison {
  std::string question;  ///< "Q1" .. "Q5"
  std::string challenger, reference, metric;
  bool primary = false;
};

/// The chain's questions, in order.
inline const std::vector<std::pair<std::string, std::string>>& questions() {
  static const std::vector<std::pair<std::string, std::string>> list{
      {"Q1", "Does multi-task learning beat single-task learning?"},
      {"Q2", "Does ESMM relieve the sample-selection bias of CVR?"},
      {"Q3", "Does soft sharing (MMoE) beat hard sharing?"},
      {"Q4", "Does PLE's split into shared and private experts help further?"},
      {"Q5", "Do heterogeneous experts beat homogeneous ones?"},
      {"A", "Does the output aligner keep heterogeneous experts trainable (E5 against E5 without it)?"},
      {"X", "Does each extension beside the chain (configs/extensions) beat the chain config it changes?"}};
  return list;
}

/// The shipped extension experiments and the chain experiment each changes; compared where both ran.
inline const std::vector<std::pair<std::string, std::string>>& extension_bases() {
  static const std::vector<std::pair<std::string, std::string>> list{
      {"E2ips", "E2"}, {"E2dr", "E2"}, {"E2aitm", "E2"}, {"E5uw", "E5"}, {"E5gn", "E5"}};
  return list;
}

/// The comparisons, primaries first in each question. `entire_space`: the
/// data has counterfactual conversion labels (synthetic data), so Q2's
/// primary is the entire-space CVR AUC; on real logs it is the CVR AUC on
/// clicked rows, the only CVR measure they allow.
inline std::vector<Comparison> comparisons(bool entire_space) {
  const std::string q2 = entire_space ? "auc_cvr_entire_space" : "auc_cvr";
  std::vector<Comparison> out{{"Q1", "E1", "E0b", "auc_cvr", true},
                              {"Q1", "E1", "E0b", "auc_cvr_entire_space", false},
                              {"Q1", "E1", "E0a", "auc_ctr", false},
                              {"Q2", "E2", "E1", q2, true}};
  for (const std::string m : {"auc_cvr", "auc_cvr_entire_space", "auc_ctcvr", "auc_ctr"})
    if (m != q2) out.push_back({"Q2", "E2", "E1", m, false});
  for (const auto& [q, a, b] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"Q3", "E3", "E2"}, {"Q4", "E4", "E3"}, {"Q5", "E5", "E4"}}) {
    out.push_back({q, a, b, "auc_ctcvr", true});
    out.push_back({q, a, b, "auc_cvr_entire_space", false});
    out.push_back({q, a, b, "auc_ctr", false});
  }
  out.push_back({"A", "E5", "E5na", "auc_ctcvr", false});
  out.push_back({"A", "E5", "E5na", "auc_ctr", false});
  return out;
}

/// Seeds a comparison needs before it can call anything significant.
constexpr size_t kMinSeeds = 3;

struct DeltaRow {
  Comparison comparison;
  bool available = false;
  std::string why_not;
  double value_a = NAN, value_b = NAN;  ///< means over the paired seeds
  mtl::metrics::PairedSeedTest test;    ///< over the seeds both runs finished
  double p_adjusted = NAN;              ///< Holm across the primaries; NaN for exploratory lines
  double delong_p = NAN;                ///< DeLong on the first seed's test rows: test-row noise only
  double test_row_variance = NAN;       ///< the test rows' variance the paired seeds share, added to their spread
  double margin = NAN;                  ///< the metric's equivalence margin (the config's analysis.equivalence_margin)
  double equivalence_p = NAN;           ///< two one-sided tests against +-margin; Holm-adjusted for primaries
  double mde = NAN;                     ///< the minimum detectable effect: 80 % power at alpha, this variance and seeds
  int64_t parameters_a = -1, parameters_b = -1;  ///< the two models' trainable values
  std::string verdict;                           ///< gain | loss | equivalent | inconclusive
  std::string designed;  ///< on synthetic data, a primary's designed answer (gain | loss | none)
};

/// The per-seed values of `metric` for runs that finished with it defined, by seed index.
inline std::map<size_t, double> per_seed(const ExperimentRecord& e, const std::string& metric) {
  std::map<size_t, double> values;
  for (size_t k = 0; k < e.runs.size(); ++k)
    if (e.runs[k].status.finished && e.runs[k].test.count(metric)) values[k] = e.runs[k].test.at(metric);
  return values;
}

/// The test rows' sampling variance of the difference that the paired seeds share
/// (mtl::metrics::shared_test_row_variance): every seed is tested on the same rows, so their spread cannot
/// show it. NaN where a seed's predictions are missing or the two experiments scored different rows.
inline double shared_test_row_variance(const ExperimentRecord& a, const ExperimentRecord& b, const std::string& metric,
                                       const std::vector<size_t>& seeds) {
  std::vector<std::vector<float>> scores_a, scores_b;
  std::vector<float> labels;
  for (size_t seed : seeds) {
    const auto& pa = a.seed_predictions.at(seed);
    const auto& pb = b.seed_predictions.at(seed);
    if (!pa || !pb) return NAN;
    auto sa = mtl::metrics::ranked_rows(*pa, metric), sb = mtl::metrics::ranked_rows(*pb, metric);
    if (!sa || !sb || sa->labels != sb->labels || (!scores_a.empty() && sa->labels != labels)) return NAN;
    labels = std::move(sa->labels);
    scores_a.push_back(std::move(sa->scores)), scores_b.push_back(std::move(sb->scores));
  }
  if (scores_a.empty()) return NAN;
  const auto v = mtl::metrics::shared_test_row_variance(scores_a, scores_b, labels);
  return v.defined() ? v.shared : NAN;
}

inline DeltaRow compare(const ExperimentRecord& a, const ExperimentRecord& b, const Comparison& c) {
  DeltaRow row{c};
  if (!a.first_finished() || !b.first_finished()) {
    row.why_not = (!a.first_finished() ? a.id : b.id) + " did not finish";
    return row;
  }
  const auto va = per_seed(a, c.metric), vb = per_seed(b, c.metric);
  if (va.empty() || vb.empty()) {
    row.why_not = "not produced by " + (va.empty() ? a.id : b.id);
    return row;
  }
  std::vector<double> differences;
  std::vector<size_t> paired;
  double sum_a = 0, sum_b = 0;
  for (const auto& [seed, value] : va) {
    auto it = vb.find(seed);
    if (it == vb.end()) continue;
    differences.push_back(value - it->second), sum_a += value, sum_b += it->second;
    paired.push_back(seed);
  }
  if (differences.empty()) {
    row.why_not = "no seed finished in both";
    return row;
  }
  row.available = true;
  row.value_a = sum_a / differences.size(), row.value_b = sum_b / differences.size();
  // DeLong on the first seed's predictions: test-row noise alone, shown where the seeds cannot make a test.
  if (a.first_predictions() && b.first_predictions()) {
    auto sa = mtl::metrics::ranked_rows(*a.first_predictions(), c.metric);
    auto sb = mtl::metrics::ranked_rows(*b.first_predictions(), c.metric);
    if (sa && sb && sa->labels == sb->labels) {
      const auto t = mtl::metrics::delong_test(sa->scores, sb->scores, sa->labels);
      if (t.defined()) row.delong_p = t.p_value;
    }
  }
  row.test_row_variance = shared_test_row_variance(a, b, c.metric, paired);
  row.test = mtl::metrics::paired_seed_test(differences, /*confidence=*/0.95, kMinSeeds,
                                            std::isnan(row.test_row_variance) ? 0.0 : row.test_row_variance);
  row.parameters_a = a.first_finished()->parameters, row.parameters_b = b.first_finished()->parameters;
  return row;
}

/// The budget the designed scenario's answers hold for, as the end of a sentence on them ("The answers are ...").
inline std::string designed_answers_budget() {
  return fmt::format(
      "set for the quick preset's budget ({} steps); with more steps the models learn more of every "
      "mechanism and an answer can change.",
      kQuickPresetSteps);
}

/// The first run of the chain with a config snapshot, or nullptr.
inline const RunRecord* first_configured_run(const std::vector<ExperimentRecord>& chain) {
  for (const auto& e : chain)
    for (const auto& r : e.runs)
      if (r.config.IsDefined() && r.config.IsMap()) return &r;
  return nullptr;
}

/// The equivalence margin the chain's config declares for `metric` (analysis.equivalence_margin), or NaN.
inline double equivalence_margin(const std::vector<ExperimentRecord>& chain, const std::string& metric) {
  const auto* run = first_configured_run(chain);
  if (!run || !run->config["analysis"].IsMap() || !run->config["analysis"]["equivalence_margin"].IsMap()) return NAN;
  const auto v = run->config["analysis"]["equivalence_margin"][metric];
  return v.IsDefined() && v.IsScalar() ? v.as<double>() : NAN;
}

/// The synthetic scenario of the chain's runs, or nothing when their data is not synthetic.
inline std::optional<std::string> chain_scenario(const std::vector<ExperimentRecord>& chain) {
  const auto* run = first_configured_run(chain);
  return run ? synthetic_scenario(run->config) : std::nullopt;
}

/// Every comparison with its test, the primaries Holm-adjusted together, and the verdicts.
inline std::vector<DeltaRow> delta_rows(const std::vector<ExperimentRecord>& chain, double alpha) {
  auto find = [&](const std::string& id) -> const ExperimentRecord& {
    for (const auto& e : chain)
      if (e.id == id) return e;
    TORCH_CHECK(false, "no experiment ", id);
  };
  bool entire_space = false;
  for (const auto& e : chain)
    for (const auto& r : e.runs) entire_space = entire_space || r.test.count("auc_cvr_entire_space") > 0;
  const auto scenario = chain_scenario(chain);
  std::vector<DeltaRow> rows;
  for (const auto& c : comparisons(entire_space)) {
    rows.push_back(compare(find(c.challenger), find(c.reference), c));
    if (scenario && c.primary) rows.back().designed = designed_answer(c.question, *scenario);
  }
  // The extensions that ran, against their base: exploratory, on the chain's primary CTCVR metric and its CVR one.
  const auto ran = [&](const std::string& id) {
    for (const auto& e : chain)
      if (e.id == id) return e.finished_count() > 0;
    return false;
  };
  for (const auto& [extension, base] : extension_bases())
    if (ran(extension))
      for (const std::string metric : {"auc_ctcvr", entire_space ? "auc_cvr_entire_space" : "auc_cvr"}) {
        const Comparison c{"X", extension, base, metric, false};
        rows.push_back(compare(find(extension), find(base), c));
      }
  std::vector<double> primary_p, primary_equivalence_p;
  for (auto& r : rows) {
    if (!r.available) continue;
    r.margin = equivalence_margin(chain, r.comparison.metric);
    const auto equivalence = mtl::metrics::equivalence_test(r.test, r.margin);
    if (equivalence.defined()) r.equivalence_p = equivalence.p_value;
    r.mde = mtl::metrics::minimum_detectable_effect(r.test, alpha);
  }
  for (const auto& r : rows)
    if (r.comparison.primary) {
      primary_p.push_back(r.available && r.test.defined() ? r.test.p_value : NAN);
      primary_equivalence_p.push_back(r.equivalence_p);
    }
  const auto adjusted = mtl::metrics::holm_adjusted(primary_p);
  const auto adjusted_equivalence = mtl::metrics::holm_adjusted(primary_equivalence_p);
  size_t k = 0;
  for (auto& r : rows) {
    if (r.comparison.primary) r.p_adjusted = adjusted[k], r.equivalence_p = adjusted_equivalence[k], ++k;
    if (!r.available) continue;
    const double p = r.comparison.primary ? r.p_adjusted : r.test.p_value;
    // A difference both significant and shown inside the margin is real but negligible: equivalent.
    const bool differs = !std::isnan(p) && p < alpha;
    const bool within_margin = !std::isnan(r.equivalence_p) && r.equivalence_p < alpha;
    r.verdict = within_margin ? "equivalent" : differs ? (r.test.mean > 0 ? "gain" : "loss") : "inconclusive";
  }
  return rows;
}

/// "=0.0123", "<1e-16" below what double precision resolves, "n/a" without a test.
inline std::string format_p(double p) {
  if (std::isnan(p)) return " n/a";
  return p < 1e-16 ? "<1e-16" : fmt::format("={:.3g}", p);
}

/// How many seeds the comparisons paired: the fewest over the available rows.
inline size_t paired_seeds(const std::vector<DeltaRow>& rows) {
  size_t n = 0;
  bool any = false;
  for (const auto& r : rows)
    if (r.available) n = any ? std::min(n, r.test.differences.size()) : r.test.differences.size(), any = true;
  return n;
}

/// A run's gain in its primary validation metric per 1000 steps over the end of
/// training: from the last validation at or before 90 % of its steps (or the one
/// before the last) to the last one. NaN without two validations.
inline double final_gain_per_1000_steps(const RunRecord& r) {
  const auto& curve = r.primary_curve;
  if (curve.size() < 2) return NAN;
  const auto last = std::prev(curve.end());
  auto from = curve.upper_bound(r.max_steps * 9 / 10);
  from = from == curve.begin() ? from : std::prev(from);
  if (from == last) from = std::prev(last);
  return (last->second - from->second) / static_cast<double>(last->first - from->first) * 1000.0;
}

/// The gain per 1000 steps at the end of training above which a run is still learning: 4000 more steps (a tenth
/// of the full preset's) at that rate would move it by 0.0004, a fifth of the smallest equivalence margin.
constexpr double kStillLearningPer1000Steps = 0.0001;

/// Whether a run gaining `gain_per_1000_steps` at the end (NaN: unknown) is still learning.
inline bool still_learning(double gain_per_1000_steps) { return gain_per_1000_steps > kStillLearningPer1000Steps; }

/// How far the primary validation metric must fall after its peak for a run to be flagged as overfitting.
constexpr double kOverfitDrop = 0.005;

/// Notes on how to read the runs, over every finished seed: still learning at
/// the end (the validation curve's slope over the last tenth), overfitting
/// (validation peaked before half the steps and fell after), and unhealthy gates
/// (first finished seed).
inline std::vector<std::string> run_notes(const std::vector<ExperimentRecord>& chain) {
  std::vector<std::string> notes;
  for (const auto& e : chain) {
    std::vector<std::string> learning, overfitting;
    int finished = 0;
    for (size_t k = 0; k < e.runs.size(); ++k) {
      const auto& run = e.runs[k];
      if (!run.status.finished || run.max_steps <= 0) continue;
      ++finished;
      if (const double gain = final_gain_per_1000_steps(run); still_learning(gain))
        learning.push_back(fmt::format("seed {} {:+.5f}", k, gain));
      const auto& curve = run.primary_curve;
      if (curve.empty()) continue;
      const auto peak = std::max_element(curve.begin(), curve.end(),
                                         [](const auto& a, const auto& b) { return a.second < b.second; });
      const auto last = std::prev(curve.end());
      if (peak->first * 2 <= run.max_steps && last->first > peak->first && peak->second - last->second > kOverfitDrop)
        overfitting.push_back(fmt::format("seed {}: {:.4f} at step {} of {}, {:.4f} at step {}", k, peak->second,
                                          peak->first, run.max_steps, last->second, last->first));
    }
    const auto* r = e.first_finished();
    if (!r) continue;
    if (!learning.empty())
      notes.push_back(fmt::format(
          "{} was still learning at the end in {} of {} seed(s): validation {} gained more than {} per 1000 steps over "
          "the last tenth ({}); more steps could change its results.",
          e.id, learning.size(), finished, r->primary_key, kStillLearningPer1000Steps,
          mtl::detail::join(learning, ", ")));
    if (!overfitting.empty())
      notes.push_back(fmt::format(
          "{} overfits in {} of {} seed(s): validation {} peaked early and fell by more than {} "
          "({}); its test metrics are the peak's models'.",
          e.id, overfitting.size(), finished, r->primary_key, kOverfitDrop, mtl::detail::join(overfitting, "; ")));
    for (const auto& g : r->gate_records)
      if (!g["healthy"].get<bool>())
        notes.push_back(
            fmt::format("{} task {}: gate not healthy: Gini {:.2f}, input dependence {:.3f} nats, dead experts {}, "
                        "monopolising {}.",
                        e.id, g["task"].get<std::string>(), g["gini"].get<double>(), g.value("input_dependence", 0.0),
                        g["dead_experts"].dump(), g["monopolising_experts"].dump()));
  }
  return notes;
}

/// What each experiment holds fixed or changes beside its named step, read
/// from the runs' configs, so that a reader sees every difference a comparison
/// carries: depth, loss weighting, the aligner, the parameter count.
inline std::vector<std::string> declared_choices(const std::vector<ExperimentRecord>& chain) {
  std::vector<std::string> lines;
  // A run's config, where the run has one (an experiment left out by --only has none).
  const auto config_of = [&](const std::string& id) -> const RunRecord* {
    for (const auto& e : chain)
      if (e.id == id && !e.runs.empty() && e.runs.front().config.IsDefined() && e.runs.front().config.IsMap())
        return &e.runs.front();
    return nullptr;
  };
  // The value at a dotted path of a config, in YAML's flow style, or "(unset)".
  const auto text = [](const YAML::Node& config, const std::vector<std::string>& path) {
    std::vector<YAML::Node> nodes{config};
    for (const auto& key : path) {
      const YAML::Node& node = nodes.back();
      if (!node.IsDefined() || !node.IsMap()) return std::string("(unset)");
      nodes.push_back(node[key]);
    }
    if (!nodes.back().IsDefined() || nodes.back().IsNull()) return std::string("(unset)");
    YAML::Emitter out;
    out << YAML::Flow << nodes.back();
    return std::string(out.c_str());
  };
  if (const auto* e1 = config_of("E1")) {
    lines.push_back(fmt::format(
        "E1 and E2 put a shared layer model.shared_bottom.hidden_dims={} under their towers, which the single-task "
        "E0a and E0b do not have: Q1 compares that depth too.",
        text(e1->config, {"model", "shared_bottom", "hidden_dims"})));
    const bool all_rows = text(e1->config, {"loss", "cvr_denominator"}) == "all_rows";
    lines.push_back(fmt::format(
        "E1's loss is the CTR BCE (mean over all rows) plus the clicked rows' CVR BCE {} (loss.cvr_denominator); "
        "ESMM (E2-E5) takes ctr and ctcvr as means over all rows plus lambda_cvr_aux x the clicked-row CVR mean.",
        all_rows ? "summed and divided by all rows, so every impression weighs the same in both terms"
                 : "averaged over the clicked rows, so a clicked row weighs about 1/CTR times a CTR row"));
  }
  // Whether a run normalises what its towers read, as its config snapshot resolves (the predict command's reading).
  const auto normalised = [](const RunRecord& r) {
    return load_experiment(mtl::train::RunDirectory(r.dir).path(mtl::train::run_files::kConfig), Overrides{})
        .model.align_outputs;
  };
  std::string which;
  std::set<bool> seen;
  for (const auto& e : chain)
    if (const auto* r = config_of(e.id)) {
      const bool on = normalised(*r);
      seen.insert(on);
      which += fmt::format("{}{} {}", which.empty() ? "" : ", ", e.id, on ? "on" : "off");
    }
  if (!which.empty())
    lines.push_back(fmt::format(
        "Output normalisation (LayerNorm and a learnable scale on the shared layer's or each expert's output, "
        "model.align_outputs): {}{}.",
        which,
        seen.size() == 1 ? "; the same in every experiment, so no comparison carries it"
                         : "; a comparison of one with it and one without compares the normalisation too"));
  std::string counts;
  for (const auto& e : chain)
    if (const auto* r = e.first_finished(); r && r->parameters >= 0)
      counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", e.id, r->parameters);
  if (!counts.empty()) lines.push_back("Trainable values (embedding rows and dense weights): " + counts + ".");
  return lines;
}

/// Whether any finished run of the chain was still learning at the end.
inline bool some_run_still_learning(const std::vector<ExperimentRecord>& chain) {
  for (const auto& e : chain)
    for (const auto& r : e.runs)
      if (r.status.finished && r.max_steps > 0 && still_learning(final_gain_per_1000_steps(r))) return true;
  return false;
}

/// The method paragraph that heads the text and the HTML report, computed from the runs.
inline std::vector<std::string> method_lines(const std::vector<DeltaRow>& rows,
                                             const std::vector<ExperimentRecord>& chain, double alpha) {
  const size_t seeds = paired_seeds(rows);
  std::vector<std::string> lines{
      fmt::format("Each comparison pairs the two experiments' runs by seed and takes the per-seed difference of a test "
                  "metric (best checkpoint of each run); here {} seed(s) were paired.",
                  seeds),
      fmt::format("The verdict is the paired t-test of those differences, so it includes the variation between "
                  "training runs; it needs {} seeds or more. Every seed is tested on the same rows, so the part of the "
                  "test rows' sampling variance that the seeds share is added to the seeds' s^2/n, with "
                  "Welch-Satterthwaite degrees of freedom: DeLong's variance of the seed-averaged difference less "
                  "what differs between seeds, which their spread already holds; where DeLong is undefined the "
                  "seeds' spread stands alone.",
                  kMinSeeds),
      fmt::format("One comparison per question is primary, fixed in advance; the primaries' p-values are Holm-adjusted "
                  "across the chain (family-wise alpha {}). The other lines are exploratory: unadjusted, and not an "
                  "answer to the question.",
                  alpha),
      fmt::format("Four verdicts: equivalent where two one-sided tests (alpha {}, Holm-adjusted for the primaries) "
                  "place the difference inside the metric's margin (analysis.equivalence_margin: the largest "
                  "difference a ranking team would call negligible), even if the difference is also significant; "
                  "gain or loss where the test finds a difference outside that; inconclusive otherwise. Each kind of "
                  "claim over the primaries holds its family-wise alpha (both kinds together, at most twice it). 'No "
                  "significant difference' is not 'no difference': mde is the smallest difference the test finds "
                  "with 80 % power at its measured variance and seed count (at alpha, before Holm).",
                  alpha)};
  if (seeds < kMinSeeds)
    lines.push_back(fmt::format(
        "With {} seed(s) the variation between training runs cannot be measured, so nothing is called significant. "
        "DeLong's p on the first seed's test rows is shown for reference only: it measures test-row noise, not "
        "whether a difference survives retraining. Run with --seeds {} or more for verdicts.",
        seeds, kMinSeeds));
  if (some_run_still_learning(chain))
    lines.push_back(fmt::format(
        "Some runs were still learning at the end of training (validation gaining more than {} per 1000 steps over "
        "the last tenth; see the notes): their comparisons describe this budget, and more steps could change them.",
        kStillLearningPer1000Steps));
  return lines;
}

/// One line of the designed-vs-found table: a primary comparison on synthetic data.
struct DesignedVsFound {
  std::string question, comparison, knob, knob_value, designed, found;
  bool as_designed = false;
  std::string why_not_found;  ///< why there is no verdict to hold against the design ("n/a")

  /// "as designed", "NOT as designed", or why neither can be said.
  std::string outcome() const {
    return !why_not_found.empty() ? "n/a: " + why_not_found : as_designed ? "as designed" : "NOT as designed";
  }
};

/// The primaries' designed answers beside their verdicts; empty when the data is not synthetic.
inline std::vector<DesignedVsFound> designed_vs_found(const std::vector<DeltaRow>& rows,
                                                      const std::vector<ExperimentRecord>& chain) {
  std::vector<DesignedVsFound> out;
  const RunRecord* run = first_configured_run(chain);
  for (const auto& r : rows) {
    if (r.designed.empty()) continue;
    const auto& m = designed_mechanism(r.comparison.question);
    DesignedVsFound d{r.comparison.question,
                      r.comparison.challenger + " vs " + r.comparison.reference + " " + r.comparison.metric,
                      m.knob,
                      knob_value(run ? run->config : YAML::Node(), m.knob),
                      r.designed,
                      r.available && r.test.defined() ? found_answer(r.verdict) : "n/a"};
    d.as_designed = d.designed == d.found;
    if (!r.available)
      d.why_not_found = r.why_not;
    else if (!r.test.defined())
      d.why_not_found = r.test.undefined_because;
    out.push_back(d);
  }
  return out;
}

/// The heading of the uptake table, in the text and the HTML report.
inline constexpr const char* kUptakeHeading =
    "What the models learned of each mechanism (synthetic data, test rows, mean over the seeds): the coefficient of "
    "each weighted term of the true logits when the head's logit is regressed on all of them at once (the tastes "
    "correlate); 1 when the model moves with the term as the truth does, 0 when it ignores it";

/// Which question each term's mechanism answers, under the uptake table.
inline constexpr const char* kUptakeLegend = "taste: Q1; private: Q3, Q4; cross: Q5";

/// Whether any experiment reports what it learned of the mechanisms (designed synthetic data).
inline bool any_uptake(const std::vector<ExperimentRecord>& chain) {
  return std::any_of(chain.begin(), chain.end(), [](const ExperimentRecord& e) { return !e.uptake.empty(); });
}

/// An experiment's slope on one term, if its model has that head.
inline std::optional<TermUptake> uptake_of(const ExperimentRecord& e, const DesignedTermName& name) {
  for (const auto& t : e.uptake)
    if (t.head == name.head && t.term == name.term) return t;
  return std::nullopt;
}

/// What delta_analysis.txt and delta_analysis.json hold, computed once from the runs.
/// The aligner's claim (experts of different kinds emit outputs on different scales; without
/// ExpertOutputAligner the heterogeneous model can diverge, with it it trains stably), answered in one line from
/// E5 and E5na's runs: the experts' output scales before alignment, the runs a non-finite loss stopped, the gates'
/// Gini and the primary metric. Nothing when the chain did not run both.
inline std::optional<std::string> aligner_claim(const std::vector<ExperimentRecord>& chain,
                                                const std::vector<DeltaRow>& rows) {
  const ExperimentRecord *aligned = nullptr, *plain = nullptr;
  for (const auto& e : chain) {
    if (e.id == "E5") aligned = &e;
    if (e.id == kAlignerAblation) plain = &e;
  }
  if (!aligned || !plain || !aligned->first_finished() || !plain->first_finished()) return std::nullopt;
  struct Summary {
    double scale_ratio = NAN, gini = NAN;
    int diverged = 0, runs = 0;
  };
  const auto summarise = [](const ExperimentRecord& e) {
    Summary s;
    double ratios = 0, ginis = 0;
    int ratio_runs = 0, gates = 0;
    for (const auto& r : e.runs) {
      if (r.dir.empty()) continue;
      ++s.runs;
      s.diverged += r.status.status.rfind("failed: the loss went non-finite", 0) == 0;
      double loudest = 0, quietest = INFINITY;
      for (const auto& rec : r.scale_records) {
        const double rms = rec["rms_before_aligner"].get<double>();
        loudest = std::max(loudest, rms), quietest = std::min(quietest, rms);
      }
      if (!r.scale_records.empty() && quietest > 0) ratios += loudest / quietest, ++ratio_runs;
      for (const auto& g : r.gate_records) ginis += g["gini"].get<double>(), ++gates;
    }
    if (ratio_runs > 0) s.scale_ratio = ratios / ratio_runs;
    if (gates > 0) s.gini = ginis / gates;
    return s;
  };
  const auto a = summarise(*aligned), b = summarise(*plain);
  const DeltaRow* primary = nullptr;
  for (const auto& r : rows)
    if (r.comparison.question == "A" && r.comparison.metric == "auc_ctcvr") primary = &r;
  const std::string metric = primary && primary->available
                                 ? fmt::format("auc_ctcvr E5 - E5na {:+.5f} ({})", primary->test.mean, primary->verdict)
                                 : std::string("auc_ctcvr not compared");
  const std::string answer =
      b.diverged > 0
          ? fmt::format("without the aligner {} of {} run(s) diverged: the claim holds here.", b.diverged, b.runs)
          : "without the aligner every run trained to its end: the divergence the claim warns of did not occur at "
            "this budget, and what the aligner changes is the metric above.";
  return fmt::format(
      "The aligner's claim (experts of different kinds emit outputs on different scales; without the aligner the "
      "heterogeneous model can diverge): loudest / quietest expert output RMS before alignment E5 {:.2f}, E5na {:.2f} "
      "(mean over seeds, test rows); runs stopped by a non-finite loss E5 {} of {}, E5na {} of {}; gate Gini (mean "
      "over "
      "tasks and seeds) E5 {:.2f}, E5na {:.2f}; {}; {}",
      a.scale_ratio, b.scale_ratio, a.diverged, a.runs, b.diverged, b.runs, a.gini, b.gini, metric, answer);
}

struct DeltaAnalysis {
  std::vector<DeltaRow> rows;
  std::vector<std::string> method, choices, notes;
  std::optional<std::string> scenario;
  std::optional<std::string> aligner;  ///< the aligner's claim, answered where E5na ran
};

inline DeltaAnalysis delta_analysis(const std::vector<ExperimentRecord>& chain, double alpha) {
  DeltaAnalysis a;
  a.rows = delta_rows(chain, alpha);
  a.method = method_lines(a.rows, chain, alpha);
  a.choices = declared_choices(chain);
  a.notes = run_notes(chain);
  a.scenario = chain_scenario(chain);
  a.aligner = aligner_claim(chain, a.rows);
  return a;
}

}  // namespace chain
