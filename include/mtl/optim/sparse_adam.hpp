// Adam for an embedding table with sparse gradients: only the rows a batch
// touched are read and written (moments and step count per row), so a step
// costs O(rows touched), not O(table).
#pragma once

#include <mtl/huge_pages.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/serialize/archive.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
    exp_avg_ = detail::zeros_on_huge_pages(table_.sizes(), table_.options());
    exp_avg_sq_ = detail::zeros_on_huge_pages(table_.sizes(), table_.options());
    row_steps_ = detail::zeros_on_huge_pages({table_.size(0)}, table_.options());
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
    step_bound_ = row_steps_.numel() > 0 ? static_cast<int64_t>(row_steps_.max().item<double>()) : 0;
  }

 private:
  /// The CPU path in one pass. The ids are grouped by row without sorting:
  /// a table-sized array remembers each touched row's group for this step
  /// (and is reset for just those rows afterwards), and each group links its
  /// ids in batch order, so duplicates are summed in batch order and a run
  /// repeats bit for bit. Then each group's moments, step count and weights
  /// are updated in place, groups in parallel.
  void step_rows_fused_cpu(const torch::Tensor& rows, const torch::Tensor& row_grads) {
    const auto ids = rows.to(torch::kLong).contiguous();
    const auto grads = row_grads.to(table_.scalar_type()).contiguous();
    const int64_t n = ids.size(0), d = table_.size(1);
    const int64_t* r = ids.data_ptr<int64_t>();
    for (int64_t j = 0; j < n; ++j)
      TORCH_CHECK(r[j] >= 0 && r[j] < table_.size(0), "SparseAdam expects rows in [0, ", table_.size(0),
                  "), but got ", r[j]);
    if (group_of_row_.size() != static_cast<size_t>(table_.size(0))) group_of_row_.assign(table_.size(0), -1);
    group_row_.clear(), group_head_.clear(), group_tail_.clear();
    next_in_group_.assign(n, -1);
    constexpr int64_t kAhead = 16;  // rows are random: fetch their entries early
    for (int64_t j = 0; j < n; ++j) {
      if (j + kAhead < n) __builtin_prefetch(group_of_row_.data() + r[j + kAhead], 1);
      int32_t& group = group_of_row_[r[j]];
      if (group < 0) {
        group = static_cast<int32_t>(group_row_.size());
        group_row_.push_back(r[j]), group_head_.push_back(j), group_tail_.push_back(j);
      } else {
        next_in_group_[group_tail_[group]] = j;
        group_tail_[group] = j;
      }
    }
    const auto groups = static_cast<int64_t>(group_row_.size());
    const double b1 = options_.beta1(), b2 = options_.beta2(), lr = options_.lr(), eps = options_.eps();
    // Bias corrections 1 - beta^step by table lookup: std::pow per row cost more than the update.
    const auto most_steps = static_cast<size_t>(++step_bound_) + 1;
    for (size_t k = bias1_.size(); k < most_steps; ++k)
      bias1_.push_back(1 - std::pow(b1, static_cast<double>(k))), bias2_.push_back(1 - std::pow(b2, static_cast<double>(k)));
    AT_DISPATCH_FLOATING_TYPES(table_.scalar_type(), "mtl::SparseAdam", [&] {
      scalar_t* w = table_.data_ptr<scalar_t>();
      scalar_t* m = exp_avg_.data_ptr<scalar_t>();
      scalar_t* v = exp_avg_sq_.data_ptr<scalar_t>();
      scalar_t* steps = row_steps_.data_ptr<scalar_t>();
      const scalar_t* g = grads.data_ptr<scalar_t>();
      // In the table's precision (as torch.optim.Adam), so the loop over columns vectorises.
      const auto beta1 = static_cast<scalar_t>(b1), beta2 = static_cast<scalar_t>(b2);
      const auto epsilon = static_cast<scalar_t>(eps);
      at::parallel_for(0, groups, /*grain_size=*/512, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> sum(d);
        for (int64_t k = begin; k < end; ++k) {
          if (k + kAhead / 2 < end) {
            const int64_t ahead = group_row_[k + kAhead / 2];
            __builtin_prefetch(w + ahead * d, 1), __builtin_prefetch(m + ahead * d, 1);
            __builtin_prefetch(v + ahead * d, 1), __builtin_prefetch(steps + ahead, 1);
          }
          const scalar_t* first = g + group_head_[k] * d;
          std::copy(first, first + d, sum.begin());
          for (int64_t j = next_in_group_[group_head_[k]]; j >= 0; j = next_in_group_[j])
            for (int64_t c = 0; c < d; ++c) sum[c] += g[j * d + c];
          const int64_t row = group_row_[k];
          group_of_row_[row] = -1;  // the scratch is clean again for the next step
          const auto step = static_cast<size_t>(steps[row]) + 1;
          steps[row] = static_cast<scalar_t>(step);
          const bool tabled = step < bias1_.size();  // always, unless state was edited from outside
          const double bias1 = tabled ? bias1_[step] : 1 - std::pow(b1, static_cast<double>(step));
          const double bias2 = tabled ? bias2_[step] : 1 - std::pow(b2, static_cast<double>(step));
          const auto step_size = static_cast<scalar_t>(lr / bias1);
          const auto inverse_root_bias2 = static_cast<scalar_t>(1 / std::sqrt(bias2));
          scalar_t* wr = w + row * d;
          scalar_t* mr = m + row * d;
          scalar_t* vr = v + row * d;
          for (int64_t c = 0; c < d; ++c) {
            mr[c] = beta1 * mr[c] + (1 - beta1) * sum[c];
            vr[c] = beta2 * vr[c] + (1 - beta2) * sum[c] * sum[c];
            wr[c] -= step_size * mr[c] / (std::sqrt(vr[c]) * inverse_root_bias2 + epsilon);
          }
        }
      });
    });
  }

  torch::Tensor table_;
  SparseAdamOptions options_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  torch::Tensor row_steps_;  ///< per-row step count, as the table's dtype (pow takes it)
  // Scratch of the CPU path, kept across steps: each row's group in this
  // step (-1 outside a step), and per group its row and its ids' linked list.
  std::vector<int32_t> group_of_row_;
  std::vector<int64_t> group_row_, group_head_, group_tail_, next_in_group_;
  std::vector<double> bias1_, bias2_;  ///< 1 - beta^k for k = 0, 1, ... (grown on demand; betas never change)
  int64_t step_bound_ = 0;  ///< no row has taken more steps than this
};

}  // namespace mtl::optim
