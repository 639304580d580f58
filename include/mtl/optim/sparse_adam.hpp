// Adam for an embedding table with sparse gradients: only the rows a batch
// touched are read and written (moments and step count per row), so a step
// costs O(rows touched), not O(table).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/serialize/archive.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace mtl::optim {

/// Options of `SparseAdam`.
///
/// Example:
///   SparseAdam sparse(model->backbone->embedding->weight, SparseAdamOptions().lr(1e-3));
struct SparseAdamOptions {
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, eps) = 1e-8;
};

/// Each row keeps its own step count, so a row's update equals plain Adam
/// applied to that row over the steps that touched it. (PyTorch's SparseAdam
/// uses the global step for bias correction instead, which shrinks the first
/// updates of rows first seen late in training.)
class SparseAdam {
 public:
  SparseAdam(torch::Tensor table, SparseAdamOptions options = {})
      : table_(std::move(table)), options_(options) {
    TORCH_CHECK(table_.dim() == 2, "SparseAdam expects a 2-D table, but got a ", table_.dim(), "-D tensor");
    TORCH_CHECK(options_.lr() >= 0.0, "SparseAdam expects lr >= 0, but got ", options_.lr());
    TORCH_CHECK(options_.beta1() >= 0.0 && options_.beta1() < 1.0 && options_.beta2() >= 0.0 && options_.beta2() < 1.0,
                "SparseAdam expects betas in [0, 1), but got (", options_.beta1(), ", ", options_.beta2(), ")");
    exp_avg_ = torch::zeros_like(table_, torch::MemoryFormat::Contiguous);
    exp_avg_sq_ = torch::zeros_like(table_, torch::MemoryFormat::Contiguous);
    row_steps_ = torch::zeros({table_.size(0)}, table_.options());
  }

  /// Applies the table's sparse gradient, then clears it. No gradient: no-op.
  void step() {
    const auto& grad = table_.grad();
    if (!grad.defined()) return;
    TORCH_CHECK(grad.is_sparse(), "SparseAdam expects a sparse gradient (build the embedding with "
                "sparse_grad(true)), but the table's gradient is dense");
    step_rows(grad._indices()[0], grad._values());
    zero_grad();
  }

  /// Applies gradients given as rows [n] (may repeat; repeats are summed) and
  /// their gradients [n, dim].
  void step_rows(const torch::Tensor& rows, const torch::Tensor& row_grads) {
    torch::NoGradGuard no_grad;
    TORCH_CHECK(rows.dim() == 1 && row_grads.dim() == 2 && row_grads.size(0) == rows.size(0) &&
                    row_grads.size(1) == table_.size(1),
                "SparseAdam expects rows [n] and gradients [n, ", table_.size(1), "], but got ", rows.sizes(),
                " and ", row_grads.sizes());
    if (rows.numel() == 0) return;
    if (table_.device().is_cpu() && table_.is_contiguous() && table_.is_floating_point()) {
      step_rows_fused_cpu(rows, row_grads);
      return;
    }
    auto [unique_rows, inverse] = torch::_unique(rows, /*sorted=*/false, /*return_inverse=*/true);
    auto g = torch::zeros({unique_rows.size(0), table_.size(1)}, table_.options())
                 .index_add_(0, inverse, row_grads.to(table_.scalar_type()));
    const double b1 = options_.beta1(), b2 = options_.beta2();
    auto steps = row_steps_.index_select(0, unique_rows) + 1;
    auto m = exp_avg_.index_select(0, unique_rows).mul_(b1).add_(g, 1 - b1);
    auto v = exp_avg_sq_.index_select(0, unique_rows).mul_(b2).addcmul_(g, g, 1 - b2);
    auto bias1 = 1 - torch::pow(b1, steps).unsqueeze(1);
    auto bias2 = 1 - torch::pow(b2, steps).unsqueeze(1);
    auto update = (m / bias1) / ((v / bias2).sqrt_() + options_.eps()) * options_.lr();
    row_steps_.index_copy_(0, unique_rows, steps);
    exp_avg_.index_copy_(0, unique_rows, m);
    exp_avg_sq_.index_copy_(0, unique_rows, v);
    table_.index_add_(0, unique_rows, -update);
  }

  /// Drops the table's gradient (the next backward starts a fresh one).
  void zero_grad() { table_.mutable_grad().reset(); }

  void set_lr(double lr) { options_.lr(lr); }
  const SparseAdamOptions& options() const noexcept { return options_; }
  const torch::Tensor& table() const noexcept { return table_; }

  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const {
    archive.write(prefix + "exp_avg", exp_avg_, /*is_buffer=*/true);
    archive.write(prefix + "exp_avg_sq", exp_avg_sq_, /*is_buffer=*/true);
    archive.write(prefix + "row_steps", row_steps_, /*is_buffer=*/true);
  }
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) {
    torch::Tensor m, v, s;
    archive.read(prefix + "exp_avg", m, /*is_buffer=*/true);
    archive.read(prefix + "exp_avg_sq", v, /*is_buffer=*/true);
    archive.read(prefix + "row_steps", s, /*is_buffer=*/true);
    TORCH_CHECK(m.sizes() == table_.sizes() && v.sizes() == table_.sizes() && s.size(0) == table_.size(0),
                "SparseAdam state '", prefix, "' holds moments of shape ", m.sizes(), ", but the table is ",
                table_.sizes());
    exp_avg_ = m.to(table_.device()), exp_avg_sq_ = v.to(table_.device()), row_steps_ = s.to(table_.device());
  }

 private:
  /// The CPU path in one pass: rows sorted once, each distinct row's gradients
  /// summed and its moments, step count and weights updated in place, rows in
  /// parallel. The tensor-op path above allocates a dozen temporaries per step.
  void step_rows_fused_cpu(const torch::Tensor& rows, const torch::Tensor& row_grads) {
    // Stable, so duplicates are summed in batch order and a run repeats bit for bit.
    auto [sorted_rows, order] = rows.to(torch::kLong).contiguous().sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
    const auto grads = row_grads.to(table_.scalar_type()).contiguous();
    const int64_t n = sorted_rows.size(0), d = table_.size(1);
    const int64_t* r = sorted_rows.data_ptr<int64_t>();
    const int64_t* from = order.data_ptr<int64_t>();
    std::vector<int64_t> starts;  // first sorted position of each distinct row, then n
    for (int64_t i = 0; i < n; ++i)
      if (i == 0 || r[i] != r[i - 1]) starts.push_back(i);
    starts.push_back(n);
    const auto groups = static_cast<int64_t>(starts.size()) - 1;
    const double b1 = options_.beta1(), b2 = options_.beta2(), lr = options_.lr(), eps = options_.eps();
    AT_DISPATCH_FLOATING_TYPES(table_.scalar_type(), "mtl::SparseAdam", [&] {
      scalar_t* w = table_.data_ptr<scalar_t>();
      scalar_t* m = exp_avg_.data_ptr<scalar_t>();
      scalar_t* v = exp_avg_sq_.data_ptr<scalar_t>();
      scalar_t* steps = row_steps_.data_ptr<scalar_t>();
      const scalar_t* g = grads.data_ptr<scalar_t>();
      at::parallel_for(0, groups, /*grain_size=*/512, [&](int64_t begin, int64_t end) {
        std::vector<double> sum(d);
        for (int64_t k = begin; k < end; ++k) {
          std::fill(sum.begin(), sum.end(), 0.0);
          for (int64_t j = starts[k]; j < starts[k + 1]; ++j)
            for (int64_t c = 0; c < d; ++c) sum[c] += g[from[j] * d + c];
          const int64_t row = r[starts[k]];
          const double step = static_cast<double>(steps[row]) + 1;
          steps[row] = static_cast<scalar_t>(step);
          const double bias1 = 1 - std::pow(b1, step), bias2 = 1 - std::pow(b2, step);
          for (int64_t c = 0; c < d; ++c) {
            const int64_t at = row * d + c;
            const double mc = b1 * m[at] + (1 - b1) * sum[c];
            const double vc = b2 * v[at] + (1 - b2) * sum[c] * sum[c];
            m[at] = static_cast<scalar_t>(mc);
            v[at] = static_cast<scalar_t>(vc);
            w[at] = static_cast<scalar_t>(w[at] - lr * (mc / bias1) / (std::sqrt(vc / bias2) + eps));
          }
        }
      });
    });
  }

  torch::Tensor table_;
  SparseAdamOptions options_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  torch::Tensor row_steps_;  ///< per-row step count, as the table's dtype (pow takes it)
};

}  // namespace mtl::optim
