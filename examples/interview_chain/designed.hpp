// The answers the built-in synthetic data is designed to give: per question
// of the chain, the mechanism the generator plants (include/mtl/data/
// synthetic.hpp), the knob that sets its strength and the verdict the
// question's primary comparison should reach. Under the null scenario every
// mechanism is off and every designed answer is "none".
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
      {"Q1", "the two tasks' taste terms share a component (their correlation is the knob)", "task_relatedness", "gain",
       "the CTR task has about 1/CTR (here 16) times the CVR task's labels; sharing embeddings and a layer with it "
       "teaches the CVR head the shared taste that its clicked rows alone hardly show"},
      {"Q2",
       "a per-impression latent no model sees raises the click logit and lowers the conversion logit (missing not at "
       "random)",
       "selection_latent_weight", "none",
       "ESMM's p_cvr = p_ctcvr / p_ctr converges to P(conversion | x, click), the quantity a clicked-rows CVR model "
       "estimates, so an unseen selection latent biases both alike over the entire space (the argument of ESCM2, Wang "
       "et al. 2022); the bias is there (P(conversion | x, click) ranks the entire space worse than P(conversion | x), "
       "a test measures by how much), but ESMM does not remove it"},
      {"Q3", "each task has a non-linear term of its own (profile group x category, an independent table per task)",
       "private_signal", "gain",
       "each task's gate weights the experts that carry its own term; one shared layer must carry both terms to both "
       "towers"},
      {"Q4", "each task has a non-linear term of its own (as in Q3)", "private_signal", "gain",
       "PLE adds, per task, an expert that only that task trains, beside the shared ones"},
      {"Q5", "a three-way product of centred dense features in the click logit", "cross_signal", "gain",
       "a cross layer forms products of its inputs exactly; an MLP expert of similar size only approximates them"}};
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
                       : knob == "private_signal"          ? defaults.private_signal()
                                                           : defaults.cross_signal();
  return fmt::format("{}", value);
}

/// What the primary comparison of `question` should find under `scenario`.
inline std::string designed_answer(const std::string& question, const std::string& scenario) {
  return scenario == "null" ? "none" : designed_mechanism(question).answer;
}

/// A verdict as an answer: "significant gain" -> "gain", "significant loss" -> "loss", anything else -> "none".
inline std::string found_answer(const std::string& verdict) {
  return verdict == "significant gain" ? "gain" : verdict == "significant loss" ? "loss" : "none";
}

}  // namespace chain
