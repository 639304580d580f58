// Shared fixtures of the module tests: a small schema, random inputs, and the
// checks every module goes through (gradients reach all parameters, clones
// are independent).
#pragma once

#include <mtl/features.hpp>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace mtl_test {

/// Matches a c10::Error (what TORCH_CHECK throws) whose message contains `text`.
class ErrorMessageContains : public Catch::MatcherBase<c10::Error> {
 public:
  explicit ErrorMessageContains(std::string text) : text_(std::move(text)) {}
  bool match(const c10::Error& error) const override {
    return std::string(error.what_without_backtrace()).find(text_) != std::string::npos;
  }
  std::string describe() const override { return "is a c10::Error whose message contains \"" + text_ + "\""; }

 private:
  std::string text_;
};

/// The shared libraries mapped into this process whose file name contains one of `names`.
inline std::set<std::string> loaded_libraries(const std::vector<std::string>& names) {
  std::set<std::string> found;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string file = path.substr(path.rfind('/') + 1);
    for (const auto& name : names)
      if (file.find(name) != std::string::npos) found.insert(path);
  }
  return found;
}

/// LibTorch's intra-op threads set to `threads` for a scope.
class IntraOpThreads {
 public:
  explicit IntraOpThreads(int threads) : before_(at::get_num_threads()) { at::set_num_threads(threads); }
  ~IntraOpThreads() { at::set_num_threads(before_); }
  IntraOpThreads(const IntraOpThreads&) = delete;
  IntraOpThreads& operator=(const IntraOpThreads&) = delete;

 private:
  int before_;
};

/// What a module's pretty_print writes.
template <class Holder>
std::string printed(const Holder& module) {
  std::ostringstream s;
  module->pretty_print(s);
  return s.str();
}

/// A scratch folder per test case, removed at the end.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("mtl_test_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() { std::filesystem::remove_all(path); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  /// Writes `content` to `name` in the folder and returns its path.
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(path / name, std::ios::binary) << content;
    return (path / name).string();
  }
};

/// Three sparse fields of different vocabularies (dim 4) and two dense fields.
inline mtl::FeatureSchema small_schema() {
  mtl::FeatureSchema schema(/*default_embedding_dim=*/4);
  schema.add_sparse("user", 10).add_sparse("item", 20).add_sparse("ctx", 5);
  schema.add_dense("price").add_dense("age");
  return schema;
}

/// Uniform random ids within each field's vocabulary, and normal dense values.
inline mtl::FeatureInputs random_inputs(const mtl::FeatureSchema& schema, int64_t batch) {
  std::vector<torch::Tensor> columns;
  for (const auto& f : schema.sparse_fields())
    columns.push_back(torch::randint(f.vocab_size, {batch, 1}, torch::kLong));
  torch::Tensor dense;
  if (schema.num_dense() > 0) dense = torch::randn({batch, schema.num_dense()});
  return {torch::cat(columns, 1), dense};
}

/// A loss that depends on every output element with a random weight (a plain
/// sum would be constant under LayerNorm and give zero gradients).
inline torch::Tensor random_projection_loss(const torch::Tensor& output) {
  return (output * torch::randn_like(output)).sum();
}

/// After `loss.backward()`, every parameter of `module` has a non-zero gradient.
inline void require_gradient_everywhere(torch::nn::Module& module, const torch::Tensor& loss) {
  module.zero_grad();
  loss.backward();
  auto params = module.named_parameters();
  REQUIRE(params.size() > 0);
  for (const auto& p : params) {
    INFO("parameter " << p.key());
    auto grad = p.value().grad();
    REQUIRE(grad.defined());
    if (grad.is_sparse()) grad = grad.coalesce().values();
    REQUIRE(grad.abs().sum().item<double>() > 0.0);
  }
}

/// A module's written-out backward agrees with autograd through its formula:
/// the gradients of `loss` and of `reference` (both scalars) to `input` and to
/// each of `params` are equal within `tolerance` (relative and absolute; the
/// default for double precision).
inline void require_same_gradients(const torch::Tensor& loss, const torch::Tensor& reference,
                                   const torch::Tensor& input, const std::vector<torch::Tensor>& params,
                                   double tolerance = 1e-12) {
  const auto grads = torch::autograd::grad({loss}, {input}, {}, /*retain_graph=*/true);
  const auto param_grads = torch::autograd::grad({loss}, params);
  const auto ref_grads = torch::autograd::grad({reference}, {input}, {}, /*retain_graph=*/true);
  const auto ref_param_grads = torch::autograd::grad({reference}, params);
  REQUIRE(torch::allclose(grads[0], ref_grads[0], tolerance, tolerance));
  REQUIRE(param_grads.size() == ref_param_grads.size());
  for (size_t i = 0; i < params.size(); ++i) {
    INFO("parameter " << i);
    REQUIRE(torch::allclose(param_grads[i], ref_param_grads[i], tolerance, tolerance));
  }
}

/// `clone()` gives a copy with equal outputs whose parameters do not follow
/// changes to the original's. `run` maps a module to one output tensor.
template <class Holder, class Run>
void require_independent_clone(Holder& module, Run run) {
  using Impl = typename Holder::ContainedType;
  torch::NoGradGuard no_grad;
  auto copy = std::dynamic_pointer_cast<Impl>(module->clone());
  REQUIRE(copy != nullptr);
  auto original_out = run(*module);
  auto copy_out = run(*copy);
  REQUIRE(torch::allclose(original_out, copy_out));
  REQUIRE(copy->parameters().size() == module->parameters().size());
  for (auto& p : module->parameters()) p.add_(torch::randn_like(p));
  REQUIRE(torch::allclose(run(*copy), copy_out));
  REQUIRE_FALSE(torch::allclose(run(*module), original_out));
}

// A user's own mixer: every task reads the input, doubled. It provides what
// mixer.hpp asks and nothing for diagnostics.
struct DoublingMixerOptions {
  DoublingMixerOptions(int64_t input_dim, int64_t num_tasks) : input_dim_(input_dim), num_tasks_(num_tasks) {}
  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(int64_t, num_tasks);
};
class DoublingMixerImpl : public torch::nn::Cloneable<DoublingMixerImpl> {
 public:
  explicit DoublingMixerImpl(DoublingMixerOptions options) : options(std::move(options)) {}
  void reset() override {}
  std::vector<torch::Tensor> forward(const torch::Tensor& x) {
    return std::vector<torch::Tensor>(options.num_tasks(), 2 * x);
  }
  int64_t output_dim() const { return options.input_dim(); }
  int64_t num_tasks() const { return options.num_tasks(); }
  DoublingMixerOptions options;
};
TORCH_MODULE(DoublingMixer);

}  // namespace mtl_test

/// `expr` throws a c10::Error whose message contains `text`.
#define REQUIRE_TORCH_ERROR(expr, text) REQUIRE_THROWS_MATCHES(expr, c10::Error, mtl_test::ErrorMessageContains(text))
