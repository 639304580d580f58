// The mixer contract: what MultiTaskModel and the Trainer ask of the part
// between the backbone and the task towers (SharedBottom, MMoE, PLE, or a
// user's own), written once and checked at compile time.
//
// A mixer is a module `M` (a TORCH_MODULE holder) whose `MImpl` provides
//   std::vector<torch::Tensor> forward(const torch::Tensor& x)
//       x [batch, input_dim] -> one [batch, output_dim()] per task;
//   int64_t output_dim() const;
//   int64_t num_tasks() const;
//   an `options` member with `input_dim()` and `num_tasks()`, each readable
//       and settable (MultiTaskModel fills them from the backbone and tasks).
// A gated mixer (MMoE, PLE) also provides, for expert-health diagnostics:
//   std::vector<torch::Tensor> gate_weights() const
//       per task, the gate weights of the last forward [batch, experts];
//   std::vector<std::vector<std::string>> gate_expert_names() const
//       per task, what each gate column mixes;
//   std::vector<std::string> expert_names() const
//       every expert, in the order of the recorded outputs;
//   void record_expert_outputs(bool on);
//   const ExpertOutputs& recorded_expert_outputs() const.
// A mixer without gates provides none of these: diagnostics say it has none.
#pragma once

#include <mtl/aligner.hpp>
#include <mtl/expert.hpp>

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace mtl {

namespace detail {

template <class Impl, class = void>
struct has_mixer_members : std::false_type {};

template <class Impl>
struct has_mixer_members<
    Impl,
    std::void_t<decltype(std::declval<Impl&>().forward(std::declval<const torch::Tensor&>())),
                decltype(std::declval<const Impl&>().output_dim()), decltype(std::declval<const Impl&>().num_tasks()),
                decltype(std::declval<Impl&>().options.input_dim(int64_t{0})),
                decltype(std::declval<Impl&>().options.num_tasks(int64_t{0}))>>
    : std::bool_constant<std::is_same_v<decltype(std::declval<Impl&>().forward(std::declval<const torch::Tensor&>())),
                                        std::vector<torch::Tensor>> &&
                         std::is_convertible_v<decltype(std::declval<const Impl&>().output_dim()), int64_t> &&
                         std::is_convertible_v<decltype(std::declval<const Impl&>().num_tasks()), int64_t> &&
                         std::is_convertible_v<decltype(std::declval<const Impl&>().options.input_dim()), int64_t> &&
                         std::is_convertible_v<decltype(std::declval<const Impl&>().options.num_tasks()), int64_t>> {};

template <class Impl, class = void>
struct has_gate_members : std::false_type {};

template <class Impl>
struct has_gate_members<Impl, std::void_t<decltype(std::declval<const Impl&>().gate_weights()),
                                          decltype(std::declval<const Impl&>().gate_expert_names()),
                                          decltype(std::declval<const Impl&>().expert_names()),
                                          decltype(std::declval<Impl&>().record_expert_outputs(true)),
                                          decltype(std::declval<const Impl&>().recorded_expert_outputs())>>
    : std::bool_constant<
          std::is_same_v<decltype(std::declval<const Impl&>().gate_weights()), std::vector<torch::Tensor>> &&
          std::is_same_v<decltype(std::declval<const Impl&>().gate_expert_names()),
                         std::vector<std::vector<std::string>>> &&
          std::is_same_v<decltype(std::declval<const Impl&>().expert_names()), std::vector<std::string>> &&
          std::is_convertible_v<decltype(std::declval<const Impl&>().recorded_expert_outputs()),
                                const ExpertOutputs&>> {};

/// Keeps a mixer's expert outputs of each forward while recording is on,
/// before and after its aligner (for expert-health diagnostics).
class ExpertOutputRecorder {
 public:
  /// Turns recording on or off and forgets what was kept.
  void record(bool on) {
    on_ = on;
    outputs_ = {};
  }

  /// `raw` [batch, experts, dim] through `aligner` where there is one; both kept while recording.
  torch::Tensor align(const torch::Tensor& raw, ExpertOutputAligner& aligner) {
    if (on_) outputs_.raw = raw.detach();
    if (!aligner) return raw;
    auto aligned = aligner->forward(raw);
    if (on_) outputs_.aligned = aligned.detach();
    return aligned;
  }

  const ExpertOutputs& outputs() const noexcept { return outputs_; }

 private:
  bool on_ = false;
  ExpertOutputs outputs_;
};

}  // namespace detail

/// Whether the module implementation `Impl` (e.g. `PLEImpl`) is a mixer.
template <class Impl>
inline constexpr bool is_mixer_v = detail::has_mixer_members<Impl>::value;

/// Whether the mixer implementation `Impl` has gates to diagnose.
template <class Impl>
inline constexpr bool is_gated_mixer_v = is_mixer_v<Impl>&& detail::has_gate_members<Impl>::value;

}  // namespace mtl
