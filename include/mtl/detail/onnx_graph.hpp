// Writes an ONNX graph through ONNX's own protobuf classes (libonnx): named
// initializers from tensors, nodes with attributes, graph inputs and outputs.
// Every value gets a unique name made from a hint, so that the graph reads
// like the model (e.g. "mixer.gate0.softmax").
#pragma once

#include <onnx/onnx_pb.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace mtl::detail {

/// A node attribute: an int, a float or a list of ints.
struct OnnxAttribute {
  std::string name;
  std::variant<int64_t, float, std::vector<int64_t>> value;
};

class OnnxGraph {
 public:
  explicit OnnxGraph(onnx::GraphProto& graph) : graph_(graph) {}

  /// A new value name from `hint`: the hint itself if unused, else the first unused of hint_1, hint_2, ...
  std::string unique(const std::string& hint) {
    std::string name = hint;
    for (int64_t k = 1; used_.count(name); ++k) name = hint + "_" + std::to_string(k);
    used_.insert(name);
    return name;
  }

  /// A float32 or int64 tensor as an initializer; returns its name.
  std::string initializer(const std::string& hint, const torch::Tensor& tensor) {
    const auto values = tensor.detach().cpu().contiguous();
    auto* t = graph_.add_initializer();
    t->set_name(unique(hint));
    for (const auto d : values.sizes()) t->add_dims(d);
    if (values.scalar_type() == torch::kLong) {
      t->set_data_type(onnx::TensorProto::INT64);
    } else {
      TORCH_CHECK(values.scalar_type() == torch::kFloat, "ONNX export writes float32 and int64 tensors, but '", hint,
                  "' is ", values.scalar_type());
      t->set_data_type(onnx::TensorProto::FLOAT);
    }
    t->set_raw_data(values.data_ptr(), values.numel() * values.element_size());
    return t->name();
  }

  std::string ints(const std::string& hint, const std::vector<int64_t>& values) {
    return initializer(hint, torch::tensor(values, torch::kLong));
  }

  /// Adds a node `op` of `domain` ("" for the default) reading `inputs`; returns its one output's name.
  std::string node(const std::string& op, const std::vector<std::string>& inputs, const std::string& hint,
                   std::initializer_list<OnnxAttribute> attributes = {}, const std::string& domain = "") {
    auto* n = graph_.add_node();
    n->set_op_type(op);
    if (!domain.empty()) n->set_domain(domain);
    for (const auto& input : inputs) n->add_input(input);
    const auto output = unique(hint);
    n->add_output(output);
    n->set_name(output);
    for (const auto& a : attributes) {
      auto* attribute = n->add_attribute();
      attribute->set_name(a.name);
      if (const auto* i = std::get_if<int64_t>(&a.value)) {
        attribute->set_type(onnx::AttributeProto::INT);
        attribute->set_i(*i);
      } else if (const auto* f = std::get_if<float>(&a.value)) {
        attribute->set_type(onnx::AttributeProto::FLOAT);
        attribute->set_f(*f);
      } else {
        attribute->set_type(onnx::AttributeProto::INTS);
        for (const auto v : std::get<std::vector<int64_t>>(a.value)) attribute->add_ints(v);
      }
    }
    return output;
  }

  /// A graph input of `element_type` and `dims`; a dim of -1 is the batch, named "batch".
  std::string input(const std::string& name, onnx::TensorProto::DataType element_type,
                    const std::vector<int64_t>& dims) {
    TORCH_CHECK(used_.insert(name).second, "ONNX export: the input name '", name, "' is taken");
    describe(graph_.add_input(), name, element_type, dims);
    return name;
  }

  /// Names `value` as graph output `name` (through an Identity where the names differ).
  void output(const std::string& value, const std::string& name, onnx::TensorProto::DataType element_type,
              const std::vector<int64_t>& dims) {
    std::string out = value;
    if (value != name) {
      TORCH_CHECK(used_.insert(name).second, "ONNX export: the output name '", name, "' is taken");
      auto* n = graph_.add_node();
      n->set_op_type("Identity");
      n->add_input(value);
      n->add_output(name);
      n->set_name(name);
      out = name;
    }
    describe(graph_.add_output(), out, element_type, dims);
  }

  // Shorthands for the operators the models use.
  std::string gemm(const std::string& x, const torch::Tensor& weight, const torch::Tensor& bias,
                   const std::string& hint) {
    std::vector<std::string> inputs{x, initializer(hint + ".weight", weight)};
    if (bias.defined()) inputs.push_back(initializer(hint + ".bias", bias));
    return node("Gemm", inputs, hint, {{"transB", int64_t{1}}});
  }
  std::string unsqueeze(const std::string& x, int64_t axis, const std::string& hint) {
    return node("Unsqueeze", {x, ints(hint + ".axes", {axis})}, hint);
  }
  std::string squeeze(const std::string& x, int64_t axis, const std::string& hint) {
    return node("Squeeze", {x, ints(hint + ".axes", {axis})}, hint);
  }
  std::string concat(const std::vector<std::string>& xs, int64_t axis, const std::string& hint) {
    return xs.size() == 1 ? xs.front() : node("Concat", xs, hint, {{"axis", axis}});
  }
  std::string reduce_sum(const std::string& x, int64_t axis, bool keep_dims, const std::string& hint) {
    return node("ReduceSum", {x, ints(hint + ".axes", {axis})}, hint, {{"keepdims", int64_t{keep_dims ? 1 : 0}}});
  }
  /// Columns [begin, end) of `axis`.
  std::string slice(const std::string& x, int64_t axis, int64_t begin, int64_t end, const std::string& hint) {
    return node("Slice",
                {x, ints(hint + ".starts", {begin}), ints(hint + ".ends", {end}), ints(hint + ".axes", {axis})}, hint);
  }

 private:
  static void describe(onnx::ValueInfoProto* info, const std::string& name, onnx::TensorProto::DataType element_type,
                       const std::vector<int64_t>& dims) {
    info->set_name(name);
    auto* tensor = info->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(element_type);
    auto* shape = tensor->mutable_shape();
    for (const auto d : dims) {
      auto* dim = shape->add_dim();
      if (d < 0)
        dim->set_dim_param("batch");
      else
        dim->set_dim_value(d);
    }
  }

  onnx::GraphProto& graph_;
  std::unordered_set<std::string> used_;
};

}  // namespace mtl::detail
