// Matrix products of the layers' own autograd functions (DenseLayers,
// CrossLayers). Where mtl is built with oneDNN (MTL_WITH_ONEDNN, set by the
// mtl CMake target where LibTorch loads the shared libdnnl, as Debian's does),
// CPU float products go to oneDNN's sgemm: LibTorch 1.13 sends a float `mm` to
// the system BLAS, while oneDNN generates its kernels for the processor it runs
// on, about twice as fast at the layers' thin shapes (benchmarks/README.md).
// Without it, and for other devices and dtypes, empty operands, and operands
// that autograd must track, the products are ATen's.
#pragma once

#include <ATen/core/grad_mode.h>
#include <torch/types.h>

#ifndef MTL_WITH_ONEDNN
#define MTL_WITH_ONEDNN 0
#endif
#if MTL_WITH_ONEDNN
#include <dnnl.h>
#endif

#include <algorithm>

namespace mtl::detail {

// A 2-D float operand as sgemm reads it: row-major, or the transpose of a
// row-major matrix, with its leading dimension.
struct GemmOperand {
  char transpose;
  int64_t leading_dim;
  const float* data;
};

/// Whether this build sends products to oneDNN at all.
inline constexpr bool kWithOneDnn = MTL_WITH_ONEDNN != 0;

// Whether oneDNN takes these two operands of a product, whatever their shapes.
inline bool onednn_takes(const torch::Tensor& a, const torch::Tensor& b) {
  return kWithOneDnn && a.dim() == 2 && b.dim() == 2 && a.device().is_cpu() && b.device().is_cpu() &&
         a.scalar_type() == torch::kFloat && b.scalar_type() == torch::kFloat && a.numel() > 0 && b.numel() > 0 &&
         !(at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad()));
}

// Whether a product of these operands goes to oneDNN.
inline bool use_onednn_gemm(const torch::Tensor& a, const torch::Tensor& b) {
  return onednn_takes(a, b) && a.size(1) == b.size(0);
}

// The operand sgemm reads for `t`: row-major or a transpose as it lies, else
// a contiguous copy kept in `copy`.
inline GemmOperand gemm_operand(const torch::Tensor& t, torch::Tensor& copy) {
  const int64_t rows = t.size(0), columns = t.size(1);
  if (t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, columns)) return {'N', t.stride(0), t.data_ptr<float>()};
  if (t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, rows)) return {'T', t.stride(1), t.data_ptr<float>()};
  copy = t.contiguous();
  return {'N', std::max<int64_t>(1, columns), copy.data_ptr<float>()};
}

// out = left @ right + beta * out for [m, k] and [k, n] operands as sgemm reads
// them, out a contiguous [m, n] float tensor. Callers ask onednn_takes first.
inline void sgemm(const GemmOperand& left, const GemmOperand& right, int64_t m, int64_t n, int64_t k, float beta,
                  torch::Tensor& out) {
#if MTL_WITH_ONEDNN
  const auto status = dnnl_sgemm(left.transpose, right.transpose, m, n, k, 1.0f, left.data, left.leading_dim,
                                 right.data, right.leading_dim, beta, out.data_ptr<float>(), n);
  TORCH_CHECK(status == dnnl_success, "oneDNN's sgemm failed with status ", static_cast<int>(status), " on [", m, ", ",
              k, "] x [", k, ", ", n, "]");
#else
  TORCH_INTERNAL_ASSERT(false, "mtl::detail::sgemm called in a build without oneDNN");
#endif
}

// out = a @ b + beta * out, out a contiguous [a.rows, b.columns] float tensor.
inline void onednn_gemm(const torch::Tensor& a, const torch::Tensor& b, float beta, torch::Tensor& out) {
  torch::Tensor a_copy, b_copy;
  sgemm(gemm_operand(a, a_copy), gemm_operand(b, b_copy), a.size(0), b.size(1), a.size(1), beta, out);
}

/// a @ b, as torch::mm.
inline torch::Tensor mm(const torch::Tensor& a, const torch::Tensor& b) {
  if (!use_onednn_gemm(a, b)) return torch::mm(a, b);
  auto out = torch::empty({a.size(0), b.size(1)}, a.options());
  onednn_gemm(a, b, 0.0f, out);
  return out;
}

/// a @ w^T for a layer's weight w [out, in], as torch::mm(a, w.t()); where
/// oneDNN takes it, w is read as it lies, without a transposed view.
inline torch::Tensor mm_transposed(const torch::Tensor& a, const torch::Tensor& w) {
  if (!onednn_takes(a, w) || !w.is_contiguous() || a.size(1) != w.size(1)) return detail::mm(a, w.t());
  torch::Tensor a_copy;
  auto out = torch::empty({a.size(0), w.size(0)}, a.options());
  sgemm(gemm_operand(a, a_copy), {'T', w.size(1), w.data_ptr<float>()}, a.size(0), w.size(0), a.size(1), 0.0f, out);
  return out;
}

/// out += a @ b in place, as out.addmm_(a, b).
inline void add_product_(torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b) {
  if (!use_onednn_gemm(a, b) || out.scalar_type() != torch::kFloat || !out.device().is_cpu() || !out.is_contiguous() ||
      out.size(0) != a.size(0) || out.size(1) != b.size(1) || (at::GradMode::is_enabled() && out.requires_grad())) {
    out.addmm_(a, b);
    return;
  }
  onednn_gemm(a, b, 1.0f, out);
}

}  // namespace mtl::detail
