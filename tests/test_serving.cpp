// Tests of serving: the model spec's JSON round trip, the one-file bundle
// (round trip, damaged and foreign files refused) and the Predictor (raw ids
// through the vocabularies, equal to the model's own eval forward, the same
// answers from several threads at once, requests that do not match refused)
// and the ONNX export's graph (its scores are checked against ONNX Runtime by
// the chain's onnx_export test).
#include "test_helpers.hpp"

#include <mtl/model_spec.hpp>
#include <mtl/serving/bundle.hpp>
#include <mtl/serving/predictor.hpp>
#ifdef MTL_TEST_ONNX
#include <mtl/serving/onnx_export.hpp>
#endif

#include <thread>

using mtl_test::ScratchDir;
using namespace mtl::serving;

namespace {

/// A heterogeneous PLE with the aligner, as the chain's E5 builds it.
mtl::ModelSpec ple_spec() {
  mtl::ModelSpec s;
  s.mixer = "ple";
  s.deep_hidden_dims = {32, 16};
  s.fm_projection_dim = 8;
  s.tower_hidden_dims = {{16}, {8}};
  s.shared_experts = {mtl::ExpertOptions::mlp({32}), mtl::ExpertOptions::cross(2)};
  s.task_experts = {{mtl::ExpertOptions::cross(1, 4)}, {mtl::ExpertOptions::mlp({16})}};
  s.expert_dim = 16;
  s.align_outputs = true;
  return s;
}

/// Vocabularies of `schema` whose raw ids are 1000 * (field + 1) + row.
std::vector<mtl::data::Vocabulary> offset_vocabularies(const mtl::FeatureSchema& schema) {
  std::vector<mtl::data::Vocabulary> out;
  for (size_t j = 0; j < schema.sparse_fields().size(); ++j) {
    std::vector<int64_t> ids;
    for (int64_t r = 1; r < schema.sparse_fields()[j].vocab_size; ++r)
      ids.push_back(1000 * static_cast<int64_t>(j + 1) + r);
    mtl::data::Vocabulary v;
    v.set_ids(ids);
    out.push_back(std::move(v));
  }
  return out;
}

/// A bundle of a freshly initialised model of `spec` on the small schema.
ModelBundle make_bundle(const mtl::ModelSpec& spec) {
  ModelBundle b;
  b.model = spec;
  b.schema = mtl_test::small_schema();
  b.vocabularies = offset_vocabularies(b.schema);
  b.conversion_label = "buy";
  b.metadata = {{"note", "made by a test"}};
  torch::manual_seed(7);
  mtl::with_model(spec, b.schema, [&](auto model) { b.weights = mtl::io::module_state(*model); });
  return b;
}

/// The raw request whose encoding is `inputs` under `offset_vocabularies`.
RawRows raw_rows(const mtl::FeatureSchema& schema, const mtl::FeatureInputs& inputs) {
  RawRows rows;
  for (size_t j = 0; j < schema.sparse_fields().size(); ++j) {
    auto& column = rows.sparse[schema.sparse_fields()[j].name];
    for (int64_t i = 0; i < inputs.batch_size(); ++i) {
      const int64_t row = inputs.sparse_ids[i][static_cast<int64_t>(j)].item<int64_t>();
      column.push_back(row == 0 ? 999999 : 1000 * static_cast<int64_t>(j + 1) + row);  // row 0: an unseen id
    }
  }
  for (size_t j = 0; j < schema.dense_fields().size(); ++j) {
    auto& column = rows.dense[schema.dense_fields()[j].name];
    for (int64_t i = 0; i < inputs.batch_size(); ++i)
      column.push_back(inputs.dense[i][static_cast<int64_t>(j)].item<float>());
  }
  return rows;
}

std::vector<float> as_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

// Every mixer's spec survives JSON and builds the same parameters.
TEST_CASE("model specs round-trip through JSON") {
  for (const std::string mixer : {"single", "sharedbottom", "mmoe", "ple"}) {
    INFO(mixer);
    auto spec = ple_spec();
    spec.mixer = mixer;
    spec.shared_bottom_dims = {24};
    const auto again = mtl::model_spec_from_json(nlohmann::json::parse(mtl::to_json(spec).dump()));
    REQUIRE(mtl::to_json(again) == mtl::to_json(spec));
    std::vector<std::string> names, names_again;
    mtl::with_model(spec, mtl_test::small_schema(), [&](auto m) {
      for (const auto& p : m->named_parameters()) names.push_back(p.key());
    });
    mtl::with_model(again, mtl_test::small_schema(), [&](auto m) {
      for (const auto& p : m->named_parameters()) names_again.push_back(p.key());
    });
    REQUIRE(names == names_again);
    REQUIRE(!names.empty());
  }
  auto bad = mtl::to_json(ple_spec());
  bad["mixer"] = "moe";
  REQUIRE_TORCH_ERROR(mtl::model_spec_from_json(bad), "a model spec's mixer is 'moe'");
  bad.erase("mixer");
  REQUIRE_TORCH_ERROR(mtl::model_spec_from_json(bad), "a model spec does not read");
}

// A saved bundle loads with the same spec, schema, vocabularies, weights and metadata.
TEST_CASE("model bundles round-trip and refuse damaged or foreign files") {
  const mtl_test::IntraOpThreads restore(at::get_num_threads());  // a Predictor sets its caller's threads
  ScratchDir tmp("bundle");
  const auto bundle = make_bundle(ple_spec());
  const auto path = tmp / "m.mtl";
  save_bundle(path, bundle);
  const auto loaded = load_bundle(path);
  REQUIRE(mtl::to_json(loaded.model) == mtl::to_json(bundle.model));
  REQUIRE(loaded.schema.num_sparse() == 3);
  REQUIRE(loaded.schema.sparse_fields()[1].vocab_size == 20);
  REQUIRE(loaded.schema.dense_fields()[1].name == "age");
  REQUIRE(loaded.vocabularies[2].ids() == bundle.vocabularies[2].ids());
  REQUIRE(loaded.conversion_label == "buy");
  REQUIRE(loaded.metadata.at("note") == "made by a test");
  REQUIRE(loaded.written_by_mtl == mtl::version());
  REQUIRE(loaded.weights.size() == bundle.weights.size());
  for (const auto& w : bundle.weights) REQUIRE(torch::equal(loaded.weights.at(w.key()), w.value()));

  // One flipped byte in the weights: the checksum refuses the file.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto damaged = bytes;
  damaged[damaged.size() * 2 / 3] ^= 0x20;
  REQUIRE_TORCH_ERROR(load_bundle(tmp.write("damaged.mtl", damaged)), "cannot load model bundle");
  REQUIRE_TORCH_ERROR(load_bundle(tmp.write("cut.mtl", bytes.substr(0, bytes.size() / 2))), "cannot load model bundle");
  // A checkpoint is not a bundle.
  mtl::io::TensorDict checkpoint;
  checkpoint.insert("w", torch::ones({2}));
  mtl::io::save_tensor_dict(tmp / "ckpt.pt", checkpoint);
  REQUIRE_TORCH_ERROR(load_bundle(tmp / "ckpt.pt"), "is not an mtl model bundle");
  // A bundle of another format is refused with both versions named.
  auto entries = mtl::io::load_tensor_dict(path);
  auto header = nlohmann::json::parse(mtl::io::tensor_bytes(entries.at("bundle.json")));
  header["format"] = kBundleFormat + 1;
  entries.insert_or_assign("bundle.json", mtl::io::bytes_tensor(header.dump()));
  mtl::io::save_tensor_dict(tmp / "future.mtl", entries);
  REQUIRE_TORCH_ERROR(load_bundle(tmp / "future.mtl"), "reads format " + std::to_string(kBundleFormat));
  // A vocabulary that does not fit its field.
  entries = mtl::io::load_tensor_dict(path);
  entries.insert_or_assign("vocabulary/item", torch::arange(3, torch::kLong));
  mtl::io::save_tensor_dict(tmp / "short.mtl", entries);
  REQUIRE_TORCH_ERROR(load_bundle(tmp / "short.mtl"),
                      "the vocabulary of field 'item' holds 3 ids, but the field has 20");
  // Weights of another shape than the spec builds.
  entries = mtl::io::load_tensor_dict(path);
  entries.insert_or_assign("weight/backbone.fm_projection.bias", torch::zeros({3}));
  mtl::io::save_tensor_dict(tmp / "shape.mtl", entries);
  REQUIRE_TORCH_ERROR(Predictor(tmp / "shape.mtl"), "tensor 'backbone.fm_projection.bias' has shape [3]");
}

// Raw ids go through the vocabularies (unseen ids to row 0), and the
// probabilities equal the model's own eval-mode forward on the encoded ids.
TEST_CASE("Predictor scores raw rows as the model does") {
  const mtl_test::IntraOpThreads restore(at::get_num_threads());  // a Predictor sets its caller's threads
  for (const std::string mixer : {"sharedbottom", "mmoe", "ple"}) {
    INFO(mixer);
    auto spec = ple_spec();
    spec.mixer = mixer;
    spec.shared_bottom_dims = {24};
    const auto bundle = make_bundle(spec);
    const Predictor predictor(bundle);
    torch::manual_seed(3);
    const auto inputs = mtl_test::random_inputs(bundle.schema, 37);
    const auto raw = raw_rows(bundle.schema, inputs);
    REQUIRE(torch::equal(predictor.encode(raw).sparse_ids, inputs.sparse_ids));
    const auto p = predictor.predict(raw);

    torch::manual_seed(7);
    mtl::with_model(spec, bundle.schema, [&](auto model) {
      model->eval();
      torch::NoGradGuard no_grad;
      const auto logits = model->forward(inputs);
      const auto ctr = as_vector(torch::sigmoid(logits.at("ctr"))), cvr = as_vector(torch::sigmoid(logits.at("cvr")));
      REQUIRE(p.p_ctr == ctr);
      REQUIRE(p.p_cvr == cvr);
      for (size_t i = 0; i < ctr.size(); ++i) REQUIRE(p.p_ctcvr[i] == ctr[i] * cvr[i]);
    });
  }
  // A one-head model gives only its head.
  auto spec = ple_spec();
  spec.mixer = "single";
  spec.heads = {"ctr"};
  spec.tower_hidden_dims = {{8}};
  const Predictor single(make_bundle(spec));
  const auto p = single.predict(raw_rows(single.schema(), mtl_test::random_inputs(single.schema(), 4)));
  REQUIRE(p.p_ctr.size() == 4);
  REQUIRE(p.p_cvr.empty());
  REQUIRE(p.p_ctcvr.empty());
}

// Several threads calling one Predictor at once get what one thread gets.
TEST_CASE("Predictor serves several threads at once") {
  const mtl_test::IntraOpThreads restore(at::get_num_threads());  // a Predictor sets its caller's threads
  const Predictor predictor(make_bundle(ple_spec()));
  std::vector<RawRows> requests;
  std::vector<Predictions> expected;
  for (int k = 0; k < 8; ++k) {
    torch::manual_seed(100 + k);
    requests.push_back(raw_rows(predictor.schema(), mtl_test::random_inputs(predictor.schema(), 1 + 13 * k)));
    expected.push_back(predictor.predict(requests.back()));
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int call = 0; call < 50; ++call) {
        const size_t k = static_cast<size_t>((call * 3 + t) % 8);
        const auto p = predictor.predict(requests[k]);
        mismatches[t] += p.p_ctr != expected[k].p_ctr || p.p_cvr != expected[k].p_cvr;
      }
    });
  for (auto& thread : threads) thread.join();
  REQUIRE(mismatches == std::vector<int>(4, 0));
}

// A request that does not match the model's fields is refused, naming what is wrong.
TEST_CASE("Predictor refuses requests that do not match the schema") {
  const mtl_test::IntraOpThreads restore(at::get_num_threads());  // a Predictor sets its caller's threads
  const Predictor predictor(make_bundle(ple_spec()));
  const auto good = raw_rows(predictor.schema(), mtl_test::random_inputs(predictor.schema(), 3));
  auto missing = good;
  missing.sparse.erase("item");
  REQUIRE_TORCH_ERROR(predictor.predict(missing), "the request does not match the model's fields: missing item");
  REQUIRE_TORCH_ERROR(predictor.predict(missing),
                      "the model reads sparse fields user, item, ctx and dense fields price, age");
  auto unknown = good;
  unknown.sparse["shop"] = {1, 2, 3};
  unknown.sparse["price"] = {1, 2, 3};
  unknown.dense.erase("price");
  REQUIRE_TORCH_ERROR(predictor.predict(unknown), "missing price; not read by the model:");
  REQUIRE_TORCH_ERROR(predictor.predict(unknown), "price (a dense field)");
  auto ragged = good;
  ragged.dense["age"].push_back(1.f);
  REQUIRE_TORCH_ERROR(predictor.predict(ragged), "'age' holds 4");
  RawRows empty;
  for (const auto& f : predictor.schema().sparse_fields()) empty.sparse[f.name];
  for (const auto& f : predictor.schema().dense_fields()) empty.dense[f.name];
  REQUIRE_TORCH_ERROR(predictor.predict(empty), "the request holds no rows");
}

#ifdef MTL_TEST_ONNX
// Every mixer writes a graph that ONNX's checker accepts, with the schema's
// fields as inputs, the vocabularies as LabelEncoders, and the heads' probabilities as outputs.
TEST_CASE("ONNX export writes every mixer as a checked graph") {
  const ScratchDir tmp("onnx");
  for (const std::string mixer : {"single", "sharedbottom", "mmoe", "ple"}) {
    INFO(mixer);
    auto spec = ple_spec();
    spec.mixer = mixer;
    spec.shared_bottom_dims = {24};
    spec.num_levels = mixer == "ple" ? 2 : 1;
    const auto bundle = make_bundle(spec);
    const auto proto = to_onnx(bundle);
    REQUIRE_NOTHROW(write_onnx(proto, tmp / (mixer + ".onnx")));
    REQUIRE(std::filesystem::file_size(tmp / (mixer + ".onnx")) == proto.ByteSizeLong());

    std::vector<std::string> inputs, outputs;
    for (const auto& i : proto.graph().input()) inputs.push_back(i.name());
    for (const auto& o : proto.graph().output()) outputs.push_back(o.name());
    REQUIRE(inputs == std::vector<std::string>{"user", "item", "ctx", "price", "age"});
    REQUIRE(proto.graph().input(0).type().tensor_type().elem_type() == onnx::TensorProto::INT64);
    REQUIRE(proto.graph().input(3).type().tensor_type().elem_type() == onnx::TensorProto::FLOAT);
    REQUIRE(outputs == std::vector<std::string>{"p_ctr", "p_cvr", "p_ctcvr"});
    std::vector<std::vector<int64_t>> keys;
    for (const auto& node : proto.graph().node())
      if (node.op_type() == "LabelEncoder")
        for (const auto& a : node.attribute())
          if (a.name() == "keys_int64s") keys.emplace_back(a.ints().begin(), a.ints().end());
    REQUIRE(keys.size() == bundle.vocabularies.size());
    for (size_t f = 0; f < keys.size(); ++f) REQUIRE(keys[f] == bundle.vocabularies[f].ids());
  }
}

// What the export cannot write is refused, naming the module or the reason.
TEST_CASE("ONNX export refuses a module without a rule and non-float32 weights") {
  mtl::MultiTaskModel<mtl::DeepFM, mtl_test::DoublingMixer> doubling(
      mtl::MultiTaskModelOptions<mtl::DeepFM, mtl_test::DoublingMixer>(
          mtl::DeepFMOptions(mtl_test::small_schema()).deep_hidden_dims({8}).fm_projection_dim(4),
          mtl_test::DoublingMixerOptions(0, 0), {"ctr", "cvr"}));
  REQUIRE_TORCH_ERROR(to_onnx(doubling, mtl_test::small_schema(), {}), "ONNX export has no rule for the mixer");
  REQUIRE_TORCH_ERROR(to_onnx(doubling, mtl_test::small_schema(), {}), "DoublingMixerImpl");

  // Field names like the graph's own value names do not collide with them.
  mtl::FeatureSchema clash(4);
  clash.add_sparse("rows", 5).add_sparse("rows_1", 6).add_sparse("rows.rows", 3).add_dense("dense");
  const ScratchDir tmp("onnx_names");
  mtl::with_model(ple_spec(), clash,
                  [&](auto model) { REQUIRE_NOTHROW(write_onnx(to_onnx(model, clash, {}), tmp / "clash.onnx")); });

  auto bundle = make_bundle(ple_spec());
  auto short_vocabularies = bundle.vocabularies;
  short_vocabularies[1].set_ids({1, 2});
  mtl::with_model(bundle.model, bundle.schema, [&](auto model) {
    REQUIRE_TORCH_ERROR(to_onnx(model, bundle.schema, short_vocabularies),
                        "the vocabulary of field 'item' maps to 3 rows, but the field has");
  });
  mtl::with_model(bundle.model, bundle.schema, [&](auto model) {
    model->to(torch::kDouble);
    REQUIRE_TORCH_ERROR(to_onnx(model, bundle.schema, bundle.vocabularies), "writes float32 weights");
    REQUIRE_TORCH_ERROR(to_onnx(model, bundle.schema, {mtl::data::Vocabulary()}), "one vocabulary per sparse field");
  });
}
#endif
