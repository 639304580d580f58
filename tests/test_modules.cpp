// Tests of the building blocks: schema, embedding, MLP, DeepFM, CrossNetV2,
// experts, aligner, gate and tower.
#include "test_helpers.hpp"

#include <mtl/aligner.hpp>
#include <mtl/cross_net_v2.hpp>
#include <mtl/deepfm.hpp>
#include <mtl/detail/matrix_product.hpp>
#include <mtl/embedding.hpp>
#include <mtl/expert.hpp>
#include <mtl/functional/fm.hpp>
#include <mtl/gate.hpp>
#include <mtl/mlp.hpp>
#include <mtl/tower.hpp>
#include <mtl/version.hpp>

#include <set>
#include <sstream>

using namespace mtl;
using mtl_test::printed;
using mtl_test::random_inputs;
using mtl_test::random_projection_loss;
using mtl_test::require_gradient_everywhere;
using mtl_test::require_independent_clone;
using mtl_test::require_same_gradients;
using mtl_test::small_schema;

// The version string agrees with the version macros.
TEST_CASE("version string") {
  REQUIRE(std::string(mtl::version()) == std::to_string(MTL_VERSION_MAJOR) + "." + std::to_string(MTL_VERSION_MINOR) +
                                             "." + std::to_string(MTL_VERSION_PATCH));
}

// The schema lays fields out back to back and refuses duplicates and empty vocabularies.
TEST_CASE("FeatureSchema offsets and checks") {
  auto schema = small_schema();
  REQUIRE(schema.total_vocab_size() == 35);
  REQUIRE(schema.row_offsets() == std::vector<int64_t>{0, 10, 30});
  REQUIRE(schema.sparse_index("item") == 1);
  REQUIRE_FALSE(schema.sparse_index("nope").has_value());
  REQUIRE_TORCH_ERROR(schema.add_sparse("user", 3), "already has a sparse field 'user'");
  REQUIRE_TORCH_ERROR(schema.add_sparse("x", 0), "positive vocabulary size");
}

// One lookup gives [B, F, D] embeddings and [B, F] first-order weights, at batch 1 and 1024.
TEST_CASE("SparseEmbedding shapes") {
  SparseEmbedding emb(small_schema());
  for (int64_t batch : {1, 1024}) {
    auto out = emb->forward(random_inputs(small_schema(), batch).sparse_ids);
    REQUIRE(out.embeddings.sizes() == torch::IntArrayRef{batch, 3, 4});
    REQUIRE(out.first_order.sizes() == torch::IntArrayRef{batch, 3});
  }
  REQUIRE(emb->weight.sizes() == torch::IntArrayRef{35, 5});
  REQUIRE(printed(emb) == "mtl::SparseEmbedding(fields=3, rows=35, dim=4, sparse_grad=true)");
}

// Field f's id i reads row offset[f] + i of the one table.
TEST_CASE("SparseEmbedding reads each field's own rows") {
  SparseEmbedding emb(small_schema());
  auto ids = torch::tensor({{2, 7, 4}}, torch::kLong);
  auto out = emb->forward(ids);
  auto w = emb->weight.detach();
  REQUIRE(torch::equal(out.embeddings[0][0], w[2].narrow(0, 0, 4)));
  REQUIRE(torch::equal(out.embeddings[0][1], w[10 + 7].narrow(0, 0, 4)));
  REQUIRE(torch::equal(out.embeddings[0][2], w[30 + 4].narrow(0, 0, 4)));
  REQUIRE(out.first_order[0][1].item<float>() == w[17][4].item<float>());
}

// The gradient is a sparse tensor whose rows are exactly the rows the batch touched.
TEST_CASE("SparseEmbedding gradient is sparse and touches only the batch's rows") {
  SparseEmbedding emb(small_schema());
  auto ids = torch::tensor({{1, 0, 4}, {1, 19, 2}}, torch::kLong);
  auto out = emb->forward(ids);
  (random_projection_loss(out.embeddings) + random_projection_loss(out.first_order)).backward();
  auto grad = emb->weight.grad();
  REQUIRE(grad.is_sparse());
  auto rows = grad.coalesce().indices()[0];
  std::set<int64_t> touched;
  for (int64_t i = 0; i < rows.size(0); ++i) touched.insert(rows[i].item<int64_t>());
  REQUIRE(touched == std::set<int64_t>{1, 10, 29, 34, 32});
  require_gradient_everywhere(*emb, random_projection_loss(emb->forward(ids).embeddings) +
                                        random_projection_loss(emb->forward(ids).first_order));
}

// The fused lookup equals LibTorch's embedding: values, and the table's
// gradient (sparse or dense), also when only one of the two outputs is used;
// at widths with a fixed-size row copy (4, 8) and without (5).
TEST_CASE("SparseEmbedding lookup and gradient equal torch::embedding's") {
  for (int64_t dim : {4, 5, 8}) {
    mtl::FeatureSchema schema(dim);
    schema.add_sparse("user", 10).add_sparse("item", 20).add_sparse("ctx", 5);
    for (bool sparse : {true, false}) {
      for (int used : {0, 1, 2}) {  // 0: both outputs, 1: embeddings only, 2: first order only
        INFO("dim " << dim << ", sparse " << sparse << ", outputs used " << used);
        SparseEmbedding emb(SparseEmbeddingOptions(schema).sparse_grad(sparse));
        {
          torch::NoGradGuard no_grad;
          emb->weight.normal_();  // a non-zero first-order column too
        }
        auto ids = random_inputs(schema, 64).sparse_ids;
        auto reference_weight = emb->weight.detach().clone().requires_grad_();
        auto reference = torch::embedding(reference_weight, ids + emb->row_offsets(), -1, false, sparse);
        auto out = emb->forward(ids);
        REQUIRE(torch::equal(out.embeddings, reference.narrow(2, 0, dim)));
        REQUIRE(torch::equal(out.first_order, reference.select(2, dim)));
        auto weights_e = torch::randn({64, 3, dim}), weights_f = torch::randn({64, 3});
        auto loss = [&](const torch::Tensor& e, const torch::Tensor& f) {
          if (used == 1) return (e * weights_e).sum();
          if (used == 2) return (f * weights_f).sum();
          return (e * weights_e).sum() + (f * weights_f).sum();
        };
        loss(out.embeddings, out.first_order).backward();
        loss(reference.narrow(2, 0, dim), reference.select(2, dim)).backward();
        REQUIRE(emb->weight.grad().is_sparse() == sparse);
        auto ours = sparse ? emb->weight.grad().coalesce().to_dense() : emb->weight.grad();
        auto theirs = sparse ? reference_weight.grad().coalesce().to_dense() : reference_weight.grad();
        REQUIRE(torch::allclose(ours, theirs, 1e-6, 1e-6));
      }
    }
  }
}

// Bad ids and shapes are refused with messages naming the field and what was expected.
TEST_CASE("SparseEmbedding refuses bad ids") {
  SparseEmbedding emb(small_schema());
  REQUIRE_TORCH_ERROR(emb->forward(torch::tensor({{1, 20, 0}}, torch::kLong)),
                      "ids of field 'item' in [0, 20), but got 20 at batch row 0");
  REQUIRE_TORCH_ERROR(emb->forward(torch::tensor({{0, 0, 0}, {0, 0, -1}}, torch::kLong)),
                      "field 'ctx' in [0, 5), but got -1 at batch row 1");
  REQUIRE_TORCH_ERROR(emb->forward(torch::zeros({2, 3}, torch::kFloat)), "expects int64 ids");
  REQUIRE_TORCH_ERROR(emb->forward(torch::zeros({3}, torch::kLong)), "but got a 1-D tensor");
  REQUIRE_TORCH_ERROR(emb->forward(torch::zeros({2, 4}, torch::kLong)),
                      "expects 3 id columns (one per sparse field), but got 4");
  auto mixed = small_schema().add_sparse("wide", 3, /*embedding_dim=*/8);
  REQUIRE_TORCH_ERROR(SparseEmbedding(mixed), "field 'wide' has embedding dim 8");
}

// The MLP's shapes, gradients, clone, identity with no layers, and input checks.
TEST_CASE("MLP") {
  MLP mlp(MLPOptions(6, {8, 3}));
  for (int64_t batch : {1, 1024})
    REQUIRE(mlp->forward(torch::randn({batch, 6})).sizes() == torch::IntArrayRef{batch, 3});
  auto x = torch::randn({64, 6});  // enough rows that some output stays above the last ReLU
  require_gradient_everywhere(*mlp, random_projection_loss(mlp->forward(x)));
  require_independent_clone(mlp, [&](MLPImpl& m) { return m.forward(x); });
  MLP identity(MLPOptions(6, {}));
  REQUIRE(torch::equal(identity->forward(x), x));
  REQUIRE_TORCH_ERROR(mlp->forward(torch::randn({4, 5})), "MLP expects [batch, 6], but got shape [4, 5]");
  REQUIRE_TORCH_ERROR(mlp->forward(torch::randn({2, 4, 6})), "MLP expects [batch, 6]");
  REQUIRE(printed(mlp) == "mtl::MLP(input_dim=6, hidden_dims=[8, 3], dropout=0)");
}

// The MLP's layers as one autograd function give the values and gradients of
// Linear + ReLU through autograd: input and every parameter, last layer
// activated or not; an input that needs no gradient gets none; dropout in
// training takes the module path (a different output each call), in eval none.
// With a head (a Linear after the last ReLU) the head is the node's last layer.
// In float the products go to oneDNN and the reference's to ATen's BLAS: equal within float rounding.
TEST_CASE("MLP layers as one function equal Linear + ReLU through autograd") {
  for (auto dtype : {torch::kDouble, torch::kFloat})
    for (auto [activate_last, batch] : {std::pair{true, 9}, {false, 9}, {true, 600}, {false, 600}}) {
      INFO("dtype " << dtype << ", activate_last " << activate_last << ", batch "
                    << batch);  // 600 rows: more than one block of bias sums
      const double tolerance = dtype == torch::kDouble ? 1e-12 : 1e-4;
      MLP mlp(MLPOptions(6, {40, 5, 3}).activate_last(activate_last));
      mlp->to(dtype);
      auto x = torch::randn({batch, 6}, dtype).requires_grad_();
      const auto projection = torch::randn({batch, 3}, dtype);
      const auto out = mlp->forward(x);
      torch::Tensor reference_out = x;
      for (size_t l = 0; l < 3; ++l) {
        reference_out = mlp->layers[l]->as<torch::nn::Linear>()->forward(reference_out);
        if (l < 2 || activate_last) reference_out = torch::relu(reference_out);
      }
      REQUIRE(torch::allclose(out, reference_out, tolerance, tolerance));
      require_same_gradients((out * projection).sum(), (reference_out * projection).sum(), x, mlp->parameters(),
                             tolerance);
    }
  MLP mlp(MLPOptions(6, {8, 3}));
  mlp->to(torch::kDouble);
  torch::nn::Linear head(3, 2);
  head->to(torch::kDouble);
  auto input = torch::randn({7, 6}, torch::kDouble).requires_grad_();
  const auto head_projection = torch::randn({7, 2}, torch::kDouble);
  auto head_params = mlp->parameters();
  head_params.insert(head_params.end(), {head->weight, head->bias});
  require_same_gradients((mlp->forward_with_head(input, head) * head_projection).sum(),
                         (head->forward(mlp->forward(input)) * head_projection).sum(), input, head_params);
  mlp->to(torch::kFloat);
  auto constant_input = torch::randn({4, 6});
  mlp->forward(constant_input).sum().backward();
  REQUIRE_FALSE(constant_input.grad().defined());
  REQUIRE(mlp->layers[0]->as<torch::nn::Linear>()->weight.grad().defined());

  MLP dropping(MLPOptions(6, {64, 64}).dropout(0.5));
  auto x = torch::randn({32, 6});
  REQUIRE_FALSE(torch::equal(dropping->forward(x), dropping->forward(x)));
  dropping->eval();
  REQUIRE(torch::equal(dropping->forward(x), dropping->forward(x)));
}

// With MTL_ONEDNN=AUTO the products go to oneDNN exactly where LibTorch has
// loaded the shared libdnnl (Debian's LibTorch), and to ATen's elsewhere.
TEST_CASE("oneDNN's sgemm is used where LibTorch loads the shared libdnnl") {
  if (std::string(MTL_TEST_ONEDNN_SETTING) != "AUTO") {
    WARN("skipped: built with MTL_ONEDNN=" MTL_TEST_ONEDNN_SETTING);
    return;
  }
  const bool torch_loads_dnnl = !mtl_test::loaded_libraries({"libdnnl.so"}).empty();
  INFO("LibTorch loads libdnnl: " << torch_loads_dnnl);
  REQUIRE(mtl::detail::kWithOneDnn == torch_loads_dnnl);
}

// The products handed to oneDNN's sgemm equal float products computed in
// double, for each layout sgemm reads (row-major, a transpose, rows longer than
// the matrix) and one it cannot (a copy first); the cases oneDNN does not take
// (double, empty, operands autograd tracks) give ATen's results.
TEST_CASE("Matrix products through oneDNN equal ATen's") {
  INFO("built with oneDNN: " << mtl::detail::kWithOneDnn);
  const auto in_double = [](const torch::Tensor& a, const torch::Tensor& b) {
    return torch::mm(a.to(torch::kDouble), b.to(torch::kDouble)).to(torch::kFloat);
  };
  const auto wide = torch::randn({300, 70});
  const std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>> cases{
      {"row-major", {torch::randn({300, 64}), torch::randn({64, 33})}},
      {"both transposed", {torch::randn({64, 300}).t(), torch::randn({33, 64}).t()}},
      {"column slices", {wide.narrow(1, 3, 64), torch::randn({64, 90}).narrow(1, 50, 33)}},
      {"every other row and column",
       {torch::randn({600, 128}).slice(0, 0, 600, 2).slice(1, 0, 128, 2), torch::randn({64, 33})}},
      {"one row, one column", {torch::randn({1, 64}), torch::randn({64, 1})}}};
  for (const auto& [name, operands] : cases) {
    INFO(name);
    const auto& [a, b] = operands;
    const auto expected = in_double(a, b);
    REQUIRE(torch::allclose(mtl::detail::mm(a, b), expected, 1e-5, 1e-4));
    const auto full = torch::randn({a.size(0), b.size(1)});
    auto sum = full.clone();
    mtl::detail::add_product_(sum, a, b);
    REQUIRE(torch::allclose(sum, expected + full, 1e-5, 1e-4));
  }
  // A sum that is not contiguous takes ATen's addmm_.
  auto columns = torch::zeros({3, 5}).t();
  const auto a5 = torch::randn({5, 4}), b3 = torch::randn({4, 3});
  mtl::detail::add_product_(columns, a5, b3);
  REQUIRE(torch::allclose(columns, in_double(a5, b3), 1e-5, 1e-4));
  const auto a = torch::randn({5, 4}, torch::kDouble), b = torch::randn({4, 3}, torch::kDouble);
  REQUIRE(torch::equal(mtl::detail::mm(a, b), torch::mm(a, b)));
  REQUIRE(mtl::detail::mm(torch::randn({0, 4}), torch::randn({4, 3})).sizes() == torch::IntArrayRef{0, 3});
  REQUIRE(torch::equal(mtl::detail::mm(torch::randn({2, 0}), torch::randn({0, 3})), torch::zeros({2, 3})));
  const auto tracked = torch::randn({5, 4}, torch::requires_grad());
  REQUIRE(mtl::detail::mm(tracked, torch::randn({4, 3})).requires_grad());
  REQUIRE_TORCH_ERROR(mtl::detail::mm(torch::randn({5, 4}), torch::randn({3, 2})), "cannot be multiplied");
}

// A Linear layer as DenseLayers' one node equals the module's forward and its
// gradients; an input that is not 2-D goes through the module.
TEST_CASE("linear_forward equals the Linear module through autograd") {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    INFO("dtype " << dtype);
    const double tolerance = dtype == torch::kDouble ? 1e-12 : 1e-4;
    torch::nn::Linear layer(20, 7);
    layer->to(dtype);
    auto x = torch::randn({300, 20}, dtype).requires_grad_();
    const auto projection = torch::randn({300, 7}, dtype);
    const auto out = mtl::detail::linear_forward(layer, x);
    const auto reference = layer->forward(x);
    REQUIRE(torch::allclose(out, reference, tolerance, tolerance));
    require_same_gradients((out * projection).sum(), (reference * projection).sum(), x, layer->parameters(), tolerance);
  }
  torch::nn::Linear layer(4, 2);
  const auto batched = torch::randn({3, 5, 4});
  REQUIRE(torch::equal(mtl::detail::linear_forward(layer, batched), layer->forward(batched)));
}

// DeepFM emits deep output joined with the FM projection; gradients reach everything.
TEST_CASE("DeepFM shapes, gradients and clone") {
  DeepFM fm(DeepFMOptions(small_schema()).deep_hidden_dims({16, 8}).fm_projection_dim(5));
  REQUIRE(fm->output_dim() == 13);
  for (int64_t batch : {1, 1024})
    REQUIRE(fm->forward(random_inputs(small_schema(), batch)).sizes() == torch::IntArrayRef{batch, 13});
  auto input = random_inputs(small_schema(), 64);
  auto parts = fm->forward_parts(input);
  REQUIRE(parts.first_order.sizes() == torch::IntArrayRef{64, 1});
  REQUIRE(parts.second_order.sizes() == torch::IntArrayRef{64, 4});
  require_gradient_everywhere(*fm, random_projection_loss(fm->forward(input)));
  require_independent_clone(fm, [&](DeepFMImpl& m) { return m.forward(input); });
  REQUIRE_TORCH_ERROR(fm->forward({input.sparse_ids, torch::randn({64, 3})}),
                      "DeepFM expects dense values [batch, 2], but got shape [64, 3]");
  REQUIRE_TORCH_ERROR(fm->forward({input.sparse_ids, torch::Tensor()}), "but got none");
  REQUIRE(printed(fm) ==
          "mtl::DeepFM(sparse_fields=3, dense_fields=2, embedding_dim=4, deep_hidden_dims=[16, 8], "
          "fm_projection_dim=5)");
}

// A schema without dense fields runs with an undefined dense tensor.
TEST_CASE("DeepFM without dense fields") {
  FeatureSchema schema(4);
  schema.add_sparse("a", 7).add_sparse("b", 9);
  DeepFM fm(DeepFMOptions(schema).deep_hidden_dims({8}));
  auto input = random_inputs(schema, 10);
  REQUIRE_FALSE(input.dense.defined());
  REQUIRE(fm->forward(input).sizes() == torch::IntArrayRef{10, 8 + 16});
}

namespace {
torch::Tensor linear(const torch::nn::Linear& layer, const torch::Tensor& x) {
  auto y = x.matmul(layer->weight.t());
  return layer->bias.defined() ? y + layer->bias : y;
}
}  // namespace

// Two full-rank layers equal x1 = x0 * (W0 x0 + b0) + x0, x2 = x0 * (W1 x1 + b1) + x1.
TEST_CASE("CrossNetV2 full rank equals its formula") {
  CrossNetV2 cross(5, 2);
  cross->to(torch::kDouble);
  auto x0 = torch::randn({7, 5}, torch::kDouble);
  torch::nn::Linear w0(std::dynamic_pointer_cast<torch::nn::LinearImpl>(cross->up[0]));
  torch::nn::Linear w1(std::dynamic_pointer_cast<torch::nn::LinearImpl>(cross->up[1]));
  auto x1 = x0 * linear(w0, x0) + x0;
  auto x2 = x0 * linear(w1, x1) + x1;
  REQUIRE(torch::allclose(cross->forward(x0), x2, 1e-12, 1e-12));
  REQUIRE(cross->down->size() == 0);
}

// Low rank: W_l = U_l V_l^T, applied as two thin matrices.
TEST_CASE("CrossNetV2 low rank equals its formula") {
  CrossNetV2 cross(CrossNetV2Options(6, 2).low_rank(2));
  cross->to(torch::kDouble);
  auto x0 = torch::randn({3, 6}, torch::kDouble);
  torch::Tensor x = x0;
  for (size_t l = 0; l < 2; ++l) {
    torch::nn::Linear v(std::dynamic_pointer_cast<torch::nn::LinearImpl>(cross->down[l]));
    torch::nn::Linear u(std::dynamic_pointer_cast<torch::nn::LinearImpl>(cross->up[l]));
    REQUIRE(v->weight.sizes() == torch::IntArrayRef{2, 6});
    x = x0 * linear(u, linear(v, x)) + x;
  }
  REQUIRE(torch::allclose(cross->forward(x0), x, 1e-12, 1e-12));
  for (int64_t batch : {1, 1024})
    REQUIRE(cross->forward(torch::randn({batch, 6}, torch::kDouble)).sizes() == torch::IntArrayRef{batch, 6});
  require_gradient_everywhere(*cross, random_projection_loss(cross->forward(x0)));
  require_independent_clone(cross, [&](CrossNetV2Impl& m) { return m.forward(x0); });
  REQUIRE_TORCH_ERROR(CrossNetV2(4, 0), "at least one layer, but got 0");
  REQUIRE(printed(cross) == "mtl::CrossNetV2(input_dim=6, num_layers=2, low_rank=2)");
}

// The written-out backward of the cross layers equals autograd through the
// formula: gradients to the input and to every weight and bias, full and low rank.
TEST_CASE("CrossNetV2 gradients equal autograd through its formula") {
  // float: products through oneDNN, the reference's through ATen; 600 rows: more
  // than one block of bias sums; a transposed input is copied to rows.
  for (auto dtype : {torch::kDouble, torch::kFloat})
    for (int64_t rank : {0, 3})
      for (auto [batch, transposed] : {std::pair{9, false}, {600, false}, {9, true}}) {
        INFO("dtype " << dtype << ", low_rank " << rank << ", batch " << batch << ", transposed " << transposed);
        CrossNetV2 cross(CrossNetV2Options(6, 3).low_rank(rank));
        cross->to(dtype);
        auto x0 = (transposed ? torch::randn({6, batch}, dtype).t() : torch::randn({batch, 6}, dtype)).requires_grad_();
        const auto projection = torch::randn({batch, 6}, dtype);
        torch::Tensor x = x0;
        for (size_t l = 0; l < 3; ++l) {
          torch::nn::Linear u(std::dynamic_pointer_cast<torch::nn::LinearImpl>(cross->up[l]));
          torch::Tensor h = x;
          if (rank > 0)
            h = linear(torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(cross->down[l])), x);
          x = x0 * linear(u, h) + x;
        }
        const double tolerance = dtype == torch::kDouble ? 1e-12 : 1e-4;
        REQUIRE(torch::allclose(cross->forward(x0), x, tolerance, tolerance));
        require_same_gradients((cross->forward(x0) * projection).sum(), (x * projection).sum(), x0, cross->parameters(),
                               tolerance);
      }
}

// The cross layers' one-pass loops equal the tensor ops that other devices and
// dtypes take, reached here through operands in column-major order.
TEST_CASE("Cross layer loops equal their tensor ops") {
  const auto columns_first = [](const torch::Tensor& t) { return t.t().contiguous().t(); };
  const auto g = torch::randn({600, 7}, torch::kDouble), x0 = torch::randn({600, 7}, torch::kDouble);
  const auto u = torch::randn({600, 7}, torch::kDouble), start = torch::randn({600, 7}, torch::kDouble);
  for (bool x_is_x0 : {false, true})
    for (bool accumulate : {false, true}) {
      INFO("x_is_x0 " << x_is_x0 << ", accumulate " << accumulate);
      torch::Tensor by_loop = accumulate ? start.clone() : torch::Tensor();
      torch::Tensor by_ops = accumulate ? columns_first(start) : torch::Tensor();
      const auto [grad_u, grad_bias] = mtl::detail::cross_gradients(g, x0, u, by_loop, x_is_x0);
      const auto [ops_grad_u, ops_grad_bias] = mtl::detail::cross_gradients(columns_first(g), x0, u, by_ops, x_is_x0);
      REQUIRE(torch::allclose(grad_u, g * x0, 1e-12, 1e-12));
      REQUIRE(torch::allclose(ops_grad_u, g * x0, 1e-12, 1e-12));
      REQUIRE(torch::allclose(grad_bias, ops_grad_bias, 1e-12, 1e-12));
      REQUIRE(torch::allclose(by_loop, by_ops, 1e-12, 1e-12));
      const auto expected = (accumulate ? start : torch::zeros_like(g)) + g * u + (x_is_x0 ? g : torch::zeros_like(g));
      REQUIRE(torch::allclose(by_loop, expected, 1e-12, 1e-12));
    }
  const auto bias = torch::randn({7}, torch::kDouble), x = torch::randn({600, 7}, torch::kDouble);
  auto u_loop = u.clone(), u_ops = columns_first(u);
  const auto next_loop = mtl::detail::add_bias_and_cross(u_loop, bias, x0, x);
  const auto next_ops = mtl::detail::add_bias_and_cross(u_ops, bias, x0, x);
  REQUIRE(torch::allclose(u_loop, u + bias, 1e-12, 1e-12));
  REQUIRE(torch::allclose(u_ops, u + bias, 1e-12, 1e-12));
  REQUIRE(torch::allclose(next_loop, x0 * (u + bias) + x, 1e-12, 1e-12));
  REQUIRE(torch::allclose(next_ops, next_loop, 1e-12, 1e-12));
}

// Both expert kinds emit the common width from their natural widths.
TEST_CASE("Expert kinds project to a common width") {
  Expert deep(ExpertOptions::mlp({32, 12}).input_dim(10).output_dim(8));
  Expert cross(ExpertOptions::cross(3).input_dim(10).output_dim(8));
  REQUIRE(deep->natural_dim() == 12);
  REQUIRE(cross->natural_dim() == 10);
  for (auto* expert : {&deep, &cross}) {
    for (int64_t batch : {1, 1024})
      REQUIRE((*expert)->forward(torch::randn({batch, 10})).sizes() == torch::IntArrayRef{batch, 8});
    auto x = torch::randn({16, 10});
    require_gradient_everywhere(**expert, random_projection_loss((*expert)->forward(x)));
    require_independent_clone(*expert, [&](ExpertImpl& m) { return m.forward(x); });
  }
  REQUIRE(describe(ExpertOptions::cross(2, 4)) == "cross(2,r=4)");
  REQUIRE(printed(deep) == "mtl::Expert(mlp[32,12], input_dim=10, output_dim=8)");
  REQUIRE_TORCH_ERROR(Expert(ExpertOptions::mlp({}).input_dim(4).output_dim(2)), "at least one hidden layer");
}

// Normalised expert outputs have per-row mean 0 and std 1; the scale starts at 1.
TEST_CASE("ExpertOutputAligner normalises each expert's output") {
  ExpertOutputAligner align(3, 16);
  REQUIRE(torch::equal(align->scale, torch::ones({3})));
  // Experts on very different scales: 0.1, 1 and 30 (far above LayerNorm's eps of 1e-5).
  auto raw = torch::randn({64, 3, 16}) * torch::tensor({0.1, 1.0, 30.0}).view({1, 3, 1}) + 5.0;
  auto normalised = align->normalize(raw);
  REQUIRE(normalised.mean(-1).abs().max().item<double>() < 1e-4);
  REQUIRE((normalised.var(-1, /*unbiased=*/false) - 1).abs().max().item<double>() < 1e-2);
  // forward is one function on the CPU, normalize ATen's LayerNorm: on the expert at 5 +- 0.1 each is
  // about 1e-5 from the result in double
  REQUIRE(torch::allclose(align->forward(raw), normalised, 5e-5, 5e-5));
  for (int64_t batch : {1, 1024})
    REQUIRE(align->forward(torch::randn({batch, 3, 16})).sizes() == torch::IntArrayRef{batch, 3, 16});
  require_gradient_everywhere(*align, random_projection_loss(align->forward(raw)));
  require_independent_clone(align, [&](ExpertOutputAlignerImpl& m) { return m.forward(raw); });
  REQUIRE_TORCH_ERROR(align->forward(torch::randn({4, 2, 16})), "expects [batch, 3, 16], but got shape [4, 2, 16]");
}

// On the CPU the normalisation and the scale are one function: its values and
// gradients (input and scale) equal LayerNorm times the scale through autograd,
// in double and float, over more than one block of the scale's sums, and with
// a row of equal values (variance 0).
TEST_CASE("ExpertOutputAligner as one function equals LayerNorm times the scale through autograd") {
  for (auto dtype : {torch::kDouble, torch::kFloat})
    for (int64_t batch : {1, 7, 600}) {
      INFO("dtype " << dtype << ", batch " << batch);
      const double tolerance = dtype == torch::kDouble ? 1e-10 : 1e-4;
      ExpertOutputAligner align(6, 20);
      align->to(dtype);
      {
        torch::NoGradGuard no_grad;
        align->scale.copy_(torch::rand({6}, dtype) + 0.5);
      }
      auto x = (torch::randn({batch, 6, 20}, dtype) * 3 + 1);
      x[0][2].fill_(4.0);
      x.requires_grad_();
      const auto projection = torch::randn({batch, 6, 20}, dtype);
      const auto out = align->forward(x);
      const auto reference = align->normalize(x) * align->scale.view({1, -1, 1});
      REQUIRE(torch::allclose(out, reference, tolerance, tolerance));
      require_same_gradients((out * projection).sum(), (reference * projection).sum(), x, {align->scale}, tolerance);
    }
}

// Gate weights are non-negative and sum to 1 per row; the last ones are kept, outside inference mode.
TEST_CASE("Gate weights form a distribution") {
  Gate gate(6, 4);
  REQUIRE_FALSE(gate->last_weights().defined());
  for (int64_t batch : {1, 1024}) {
    auto w = gate->forward(torch::randn({batch, 6}) * 10);
    REQUIRE(w.sizes() == torch::IntArrayRef{batch, 4});
    REQUIRE(w.min().item<float>() >= 0.0f);
    REQUIRE(torch::allclose(w.sum(1), torch::ones({batch}), 1e-5, 1e-6));
    REQUIRE(torch::equal(gate->last_weights(), w));
  }
  // Under inference mode (how a Predictor serves) a forward leaves the module as it was.
  const auto kept = gate->last_weights();
  {
    const c10::InferenceMode serving;
    gate->forward(torch::randn({3, 6}));
  }
  REQUIRE(gate->last_weights().is_same(kept));
  auto x = torch::randn({8, 6});
  require_gradient_everywhere(*gate, random_projection_loss(gate->forward(x)));
  require_independent_clone(gate, [&](GateImpl& m) { return m.forward(x); });
  REQUIRE_TORCH_ERROR(Gate(6, 0), "at least one expert, but got 0");
}

// A tower maps a representation to one logit per row.
TEST_CASE("Tower") {
  Tower tower(TowerOptions(8).hidden_dims({4}));
  for (int64_t batch : {1, 1024})
    REQUIRE(tower->forward(torch::randn({batch, 8})).sizes() == torch::IntArrayRef{batch});
  auto x = torch::randn({8, 8});
  require_gradient_everywhere(*tower, random_projection_loss(tower->forward(x)));
  require_independent_clone(tower, [&](TowerImpl& m) { return m.forward(x); });
}
