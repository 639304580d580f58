// Adam for an embedding table with sparse gradients: only the rows a batch
// touched are read and written (moments and step count per row), so a step
// costs O(rows touched), not O(table).
#pragma once

#include <mtl/detail/adam_update.hpp>
#include <mtl/detail/cpu_loops.hpp>
#include <mtl/detail/fixed_width.hpp>
#include <mtl/detail/huge_pages.hpp>
#include <mtl/detail/row_groups.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/arg.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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
  SparseAdam(torch::Tensor table, SparseAdamOptions options = {}) : table_(std::move(table)), options_(options) {
    TORCH_CHECK(table_.dim() == 2, "SparseAdam expects a 2-D table, but got a ", table_.dim(), "-D tensor");
    TORCH_CHECK(options_.lr() >= 0.0, "SparseAdam expects lr >= 0, but got ", options_.lr());
    TORCH_CHECK(options_.beta1() >= 0.0 && options_.beta1() < 1.0 && options_.beta2() >= 0.0 && options_.beta2() < 1.0,
                "SparseAdam expects betas in [0, 1), but got (", options_.beta1(), ", ", options_.beta2(), ")");
    const int64_t d = table_.size(1);
    row_state_ = detail::zeros_on_huge_pages({table_.size(0), 2 * d + 1}, table_.options());
  }

  /// Applies the table's sparse gradient, then clears it. No gradient: no-op.
  void step() {
    prepare_step();
    finish_step();
  }

  /// step() in two parts, so that other work can run beside the first
  /// (DualSparseDenseOptimizer runs the dense update there): on the CPU
  /// path, prepare_step() groups the gradient's ids by row on the calling
  /// thread; finish_step() updates the rows (in parallel) and drops the
  /// gradient. Elsewhere finish_step() does it all.
  /// Call finish_step() after prepare_step() with the gradient unchanged.
  void prepare_step() {
    const auto& grad = sparse_gradient();
    grouped_ = false;
    if (!grad.defined()) return;
    const auto rows = grad._indices()[0];
    const auto row_grads = grad._values();
    check_rows(rows, row_grads);
    if (rows.numel() > 0 && takes_cpu_path()) group_rows(rows, row_grads), grouped_ = true;
  }

  void finish_step() {
    const auto& grad = sparse_gradient();
    if (!grad.defined()) return;
    if (grouped_)
      update_grouped_rows();
    else
      step_rows(grad._indices()[0], grad._values());
    zero_grad();
  }

  /// Applies gradients given as rows [n] (may repeat; repeats are summed) and
  /// their gradients [n, dim].
  void step_rows(const torch::Tensor& rows, const torch::Tensor& row_grads) {
    torch::NoGradGuard no_grad;
    check_rows(rows, row_grads);
    if (rows.numel() == 0) return;
    if (takes_cpu_path()) {
      group_rows(rows, row_grads);
      update_grouped_rows();
      return;
    }
    auto [unique_rows, inverse] = torch::_unique(rows, /*sorted=*/false, /*return_inverse=*/true);
    auto g = torch::zeros({unique_rows.size(0), table_.size(1)}, table_.options())
                 .index_add_(0, inverse, row_grads.to(table_.scalar_type()));
    const double b1 = options_.beta1(), b2 = options_.beta2();
    auto steps = row_steps().index_select(0, unique_rows) + 1;
    auto m = exp_avg().index_select(0, unique_rows).mul_(b1).add_(g, 1 - b1);
    auto v = exp_avg_sq().index_select(0, unique_rows).mul_(b2).addcmul_(g, g, 1 - b2);
    auto bias1 = 1 - torch::pow(b1, steps).unsqueeze(1);
    auto bias2 = 1 - torch::pow(b2, steps).unsqueeze(1);
    auto update = (m / bias1) / ((v / bias2).sqrt_() + options_.eps()) * options_.lr();
    row_state_.index_copy_(0, unique_rows, torch::cat({m, v, steps.unsqueeze(1)}, 1));
    table_.index_add_(0, unique_rows, -update);
  }

  /// Drops the table's gradient (the next backward starts a fresh one).
  void zero_grad() {
    table_.mutable_grad().reset();
    grouped_ = false;
  }

  void set_lr(double lr) { options_.lr(lr); }
  const SparseAdamOptions& options() const noexcept { return options_; }
  const torch::Tensor& table() const noexcept { return table_; }

  /// The state is saved as three tensors (exp_avg, exp_avg_sq, row_steps),
  /// the same names and shapes whichever layout holds them in memory.
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const {
    archive.write(prefix + "exp_avg", exp_avg().contiguous(), /*is_buffer=*/true);
    archive.write(prefix + "exp_avg_sq", exp_avg_sq().contiguous(), /*is_buffer=*/true);
    archive.write(prefix + "row_steps", row_steps().contiguous(), /*is_buffer=*/true);
  }
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) {
    torch::Tensor m, v, s;
    archive.read(prefix + "exp_avg", m, /*is_buffer=*/true);
    archive.read(prefix + "exp_avg_sq", v, /*is_buffer=*/true);
    archive.read(prefix + "row_steps", s, /*is_buffer=*/true);
    TORCH_CHECK(
        m.sizes() == table_.sizes() && v.sizes() == table_.sizes() && s.dim() == 1 && s.size(0) == table_.size(0),
        "SparseAdam state '", prefix, "' holds moments of shape ", m.sizes(), ", but the table is ", table_.sizes());
    torch::NoGradGuard no_grad;
    exp_avg().copy_(m), exp_avg_sq().copy_(v), row_steps().copy_(s);
    step_bound_ = s.numel() > 0 ? static_cast<int64_t>(s.max().item<double>()) : 0;
  }

 private:
  // Rows read and written at random, with Adam's arithmetic: a second thread pays from a few hundred rows.
  static constexpr int64_t kUpdateValuesPerThread = int64_t{1} << 13;

  // Views of the state: a row's first moments, second moments and step count sit side by side.
  torch::Tensor exp_avg() const { return row_state_.narrow(1, 0, table_.size(1)); }
  torch::Tensor exp_avg_sq() const { return row_state_.narrow(1, table_.size(1), table_.size(1)); }
  torch::Tensor row_steps() const { return row_state_.select(1, 2 * table_.size(1)); }

  /// The table's gradient (undefined where there is none), which must be sparse.
  const torch::Tensor& sparse_gradient() const {
    const auto& grad = table_.grad();
    TORCH_CHECK(!grad.defined() || grad.is_sparse(),
                "SparseAdam expects a sparse gradient (build the embedding with "
                "sparse_grad(true)), but the table's gradient is dense");
    return grad;
  }

  void check_rows(const torch::Tensor& rows, const torch::Tensor& row_grads) const {
    TORCH_CHECK(rows.dim() == 1 && row_grads.dim() == 2 && row_grads.size(0) == rows.size(0) &&
                    row_grads.size(1) == table_.size(1),
                "SparseAdam expects rows [n] and gradients [n, ", table_.size(1), "], but got ", rows.sizes(), " and ",
                row_grads.sizes());
  }

  // The CPU path. The ids are grouped by row and each row's gradients summed
  // in batch order (detail::RowGroups, on one thread: both threads would read every id),
  // then the rows are updated in parallel, in blocks: a block's weights and
  // state records (two random places per row) are copied into a small buffer,
  // updated there and copied back while still in cache. The copy loop is
  // loads only, so the core keeps many rows' cache misses in flight; updating
  // each row in place, the Adam arithmetic between one row's loads and the
  // next would hold them back. A run repeats bit for bit whatever the number of threads.
  bool takes_cpu_path() const {
    return table_.device().is_cpu() && table_.is_contiguous() && table_.is_floating_point();
  }

  /// The CPU path's first part, on the calling thread: checks the ids and
  /// groups them by row into `row_groups_`.
  void group_rows(const torch::Tensor& rows, const torch::Tensor& row_grads) {
    const auto ids = rows.to(torch::kLong).contiguous();
    const auto grads = row_grads.to(table_.scalar_type()).contiguous();
    const int64_t n = ids.size(0);
    const int64_t* r = ids.data_ptr<int64_t>();
    const auto table_rows = static_cast<uint64_t>(table_.size(0));
    bool in_range = true;  // checked in one branch-free pass; the offending id is looked for only on failure
    for (int64_t j = 0; j < n; ++j) in_range &= static_cast<uint64_t>(r[j]) < table_rows;
    for (int64_t j = 0; !in_range && j < n; ++j)
      TORCH_CHECK(static_cast<uint64_t>(r[j]) < table_rows, "SparseAdam expects rows in [0, ", table_rows,
                  "), but got ", r[j]);
    TORCH_CHECK(n <= std::numeric_limits<int32_t>::max(), "SparseAdam takes at most 2^31 - 1 ids a step, but got ", n);
    AT_DISPATCH_FLOATING_TYPES(table_.scalar_type(), "mtl::SparseAdam::group_rows", [&] {
      row_groups_.build(r, grads.data_ptr<scalar_t>(), n, table_.size(1), table_.options());
    });
  }

  /// The CPU path's second part: updates the rows `group_rows` grouped, in parallel.
  void update_grouped_rows() {
    torch::NoGradGuard no_grad;
    const int64_t d = table_.size(1);
    const double b1 = options_.beta1(), b2 = options_.beta2(), lr = options_.lr(), eps = options_.eps();
    // Bias corrections by table lookup: std::pow per row cost more than the update.
    const auto most_steps = static_cast<size_t>(++step_bound_) + 1;
    for (auto k = static_cast<double>(inverse_bias1_.size()); k < most_steps; ++k)
      inverse_bias1_.push_back(1 / (1 - std::pow(b1, k))),
          inverse_root_bias2_.push_back(1 / std::sqrt(1 - std::pow(b2, k)));
    AT_DISPATCH_FLOATING_TYPES(table_.scalar_type(), "mtl::SparseAdam", [&] {
      scalar_t* w = table_.data_ptr<scalar_t>();
      scalar_t* state = row_state_.data_ptr<scalar_t>();
      const scalar_t* sums = row_groups_.sums<scalar_t>();
      const auto beta1 = static_cast<scalar_t>(b1), beta2 = static_cast<scalar_t>(b2);
      const auto epsilon = static_cast<scalar_t>(eps);
      // `columns` is d, or d as a compile-time constant for the usual width (8
      // embedding columns + the first-order weight): then the copies and the
      // update are a few vector operations instead of memmove calls and loops.
      const auto update_rows = [&](auto columns) {
        const int64_t record = 2 * columns + 1,
                      width = columns + record;  // a row in the buffer: weights, then its record
        // Updates one row held in the buffer as [weights, exp_avg, exp_avg_sq, step count].
        const auto update = [&](scalar_t* weights, const scalar_t* grad_sum) {
          scalar_t* mr = weights + columns;
          scalar_t* vr = mr + columns;
          scalar_t& steps = vr[columns];
          const auto step = static_cast<int64_t>(steps) + 1;
          steps = static_cast<scalar_t>(step);
          const bool tabled =
              step < static_cast<int64_t>(inverse_bias1_.size());  // unless state was edited from outside
          const double inverse_bias1 =
              tabled ? inverse_bias1_[step] : 1 / (1 - std::pow(b1, static_cast<double>(step)));
          const double inverse_root_bias2 =
              tabled ? inverse_root_bias2_[step] : 1 / std::sqrt(1 - std::pow(b2, static_cast<double>(step)));
          const detail::AdamCoefficients<scalar_t> coefficients{beta1, beta2, static_cast<scalar_t>(lr * inverse_bias1),
                                                                static_cast<scalar_t>(inverse_root_bias2), epsilon};
          detail::adam_update(weights, mr, vr, grad_sum, columns, coefficients);
        };
        at::parallel_for(
            0, row_groups_.size(), detail::row_grain(width, kUpdateValuesPerThread), [&](int64_t begin, int64_t end) {
              constexpr int64_t kBlock = 32;  // rows: 3.5 KB of buffer at 9 values a row
              std::vector<scalar_t> buffer(static_cast<size_t>(kBlock * width));
              for (int64_t first = begin; first < end; first += kBlock) {
                const int64_t count = std::min(kBlock, end - first);
                for (int64_t k = 0; k < count; ++k) {
                  const int64_t row = row_groups_.row(first + k);
                  scalar_t* held = buffer.data() + k * width;
                  std::copy(w + row * columns, w + (row + 1) * columns, held);
                  std::copy(state + row * record, state + (row + 1) * record, held + columns);
                }
                // Ask for the next block's rows now, so memory works while this block is updated.
                for (int64_t k = first + count; k < std::min(end, first + count + kBlock); ++k) {
                  const int64_t row = row_groups_.row(k);
                  __builtin_prefetch(w + row * columns, 1), __builtin_prefetch(w + (row + 1) * columns - 1, 1);
                  __builtin_prefetch(state + row * record, 1), __builtin_prefetch(state + (row + 1) * record - 1, 1);
                }
                for (int64_t k = 0; k < count; ++k) update(buffer.data() + k * width, sums + (first + k) * columns);
                for (int64_t k = 0; k < count; ++k) {
                  const int64_t row = row_groups_.row(first + k);
                  const scalar_t* held = buffer.data() + k * width;
                  std::copy(held, held + columns, w + row * columns);
                  std::copy(held + columns, held + width, state + row * record);
                }
              }
            });
      };
      detail::with_fixed_width<9>(d, update_rows);
    });
  }

  torch::Tensor table_;
  SparseAdamOptions options_;
  /// Per row [exp_avg (dim), exp_avg_sq (dim), step count]: one record, so an
  /// update touches one place of the state instead of three. The step count is
  /// kept in the table's dtype (pow takes it).
  torch::Tensor row_state_;
  detail::RowGroups row_groups_;  ///< scratch of the CPU path, kept across steps
  bool grouped_ = false;          ///< prepare_step() grouped the gradient's rows
  // For k = 0, 1, ...: 1 / (1 - beta1^k) and 1 / sqrt(1 - beta2^k) (grown on demand; betas never change).
  std::vector<double> inverse_bias1_, inverse_root_bias2_;
  int64_t step_bound_ = 0;  ///< no row has taken more steps than this
};

}  // namespace mtl::optim
