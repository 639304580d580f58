// The answers the built-in synthetic data is designed to give: per question
// of the chain, the mechanism the generator plants (include/mtl/data/
// synthetic.hpp), the knob that sets its strength and the verdict the
// question's primary comparison should reach at the quick preset's budget
// (at the full preset's the models learn more of every term and the answers
// can differ). Under the null scenario every mechanism is off and every
// designed answer is "none".
#pragma once

#include <mtl/data/synthetic.hpp>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace chain {

struct DesignedMechanism {
  std::string question;   ///< "Q1" .. "Q5"
  std::string mechanism;  ///< what the generator plants
  std::string knob;       ///< the field under data.synthetic that sets its strength
  std::string answer;     ///< gain | loss | none: what the primary comparison should find
  std::string why;        ///< why the mechanism gives that answer
};

inline const std::vector<DesignedMechanism>& designed_mechanisms() {
  static const std::vector<DesignedMechanism> list{
      {"Q1",
       "the tasks share part of their taste (task_relatedness, 0.8) and each has structure of its own: the rest of "
       "its taste, a private non-linear term (private_term_weight), and in the conversion logit purchase power minus "
       "price",
       "private_term_weight", "loss",
       "the CTR task, with about 1/CTR (16) times the labels, shapes the shared embeddings and layer; the CVR head of "
       "the shared-bottom model then lacks the conversion-only structure that a dedicated CVR model keeps (negative "
       "transfer). With the tasks' tastes equal and no private terms (task_relatedness 1, private_term_weight 0) the "
       "direction turns: sharing then lifts CVR a little"},
      {"Q2",
       "clicks are rare (ctr_bias -4.8: about 6% of impressions), so a clicked-rows CVR head learns from few rows; "
       "a per-impression latent no model sees also raises the click logit and lowers the conversion logit",
       "ctr_bias", "gain",
       "ESMM trains p_cvr on every impression through p_ctcvr = p_ctr x p_cvr, where E1's CVR head learns from the "
       "clicked rows alone (the data sparsity ESMM names), so ESMM ranks the entire space better. That is what E2 vs "
       "E1 "
       "measures, not relief of the latent's missing-not-at-random bias: ESMM's p_ctcvr / p_ctr and E1's head both "
       "estimate P(conversion | x, click), and the latent moves the entire-space ranking of that estimate by about "
       "0.0007 AUC (the argument of ESCM2, Wang et al. 2022)"},
      {"Q3", "each task has a non-linear term of its own (profile group x category, an independent table per task)",
       "private_term_weight", "loss",
       "MMoE's softmax gates do not learn to route here (their input dependence stays under 0.01 nats), so each task "
       "reads a near-uniform average of four 64-wide experts, which learns more slowly than one normalised 128-wide "
       "shared layer in the same steps; the private terms, which each task's tower can carry, give no gate a reason "
       "to specialise"},
      {"Q4", "each task has a non-linear term of its own (as in Q3)", "private_term_weight", "none",
       "with every expert's output normalised, MMoE's per-task gates can already give each task experts of its own; "
       "PLE's private experts add capacity only one task trains, which the towers already provide"},
      {"Q5",
       "a product of four centred dense features (user-category affinity, shop score, two context values of the "
       "impression) in the click logit, scaled to unit variance: nothing of it lies in any one, two or three of them",
       "dense_product_weight", "none",
       "the cross experts read the shared backbone's 144-wide ReLU output, which learns the planted product in both "
       "arms alike (cross uptake 0.41 in E4 and E5 at the quick preset, 0.81 at the full); E5's experts hold about "
       "1.8 times E4's expert parameters and still do not lead, so the expert kind adds nothing the backbone has not "
       "already learned (the comparison line gives both models' trainable values)"}};
  return list;
}

/// The synthetic scenario of a run's config ("designed" or "null"), or nothing when its data is not synthetic.
inline std::optional<std::string> synthetic_scenario(const YAML::Node& config) {
  if (!config.IsDefined() || !config.IsMap() || !config["data"].IsMap()) return std::nullopt;
  if (config["data"]["source"].as<std::string>("synthetic") != "synthetic") return std::nullopt;
  const auto synthetic = config["data"]["synthetic"];
  return synthetic.IsMap() ? synthetic["scenario"].as<std::string>("designed") : std::string("designed");
}

/// The designed mechanism of `question`.
inline const DesignedMechanism& designed_mechanism(const std::string& question) {
  for (const auto& m : designed_mechanisms())
    if (m.question == question) return m;
  throw std::out_of_range("no designed mechanism for question " + question);
}

/// The value of a mechanism's knob in a run's config, or the generator's default where the config leaves it out.
inline std::string knob_value(const YAML::Node& config, const std::string& knob) {
  if (config.IsDefined() && config.IsMap() && config["data"].IsMap() && config["data"]["synthetic"].IsMap()) {
    const auto value = config["data"]["synthetic"][knob];
    if (value.IsDefined() && value.IsScalar()) return value.as<std::string>();
  }
  const mtl::data::SyntheticOptions defaults;
  const double value = knob == "task_relatedness"          ? defaults.task_relatedness()
                       : knob == "selection_latent_weight" ? defaults.selection_latent_weight()
                       : knob == "private_term_weight"     ? defaults.private_term_weight()
                       : knob == "ctr_bias"                ? defaults.ctr_bias()
                                                           : defaults.dense_product_weight();
  return fmt::format("{}", value);
}

/// What the primary comparison of `question` should find under `scenario`.
inline std::string designed_answer(const std::string& question, const std::string& scenario) {
  return scenario == "null" ? "none" : designed_mechanism(question).answer;
}

/// A verdict as an answer: gain and loss as they are, "equivalent" -> "none" (a "none" is found only when the
/// difference is shown to lie inside the margin), "inconclusive" as it is.
inline std::string found_answer(const std::string& verdict) { return verdict == "equivalent" ? "none" : verdict; }

}  // namespace chain
