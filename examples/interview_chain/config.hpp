// Experiment configs of the interview chain: YAML files (an experiment file
// naming a base file that holds the locked fields) resolved into one flat
// table of fields, each remembering the file and line it came from, then
// read into `ExperimentConfig` by each field's setter (experiment.hpp). Every error names the file, the line, the
// field and what was expected; an unknown key suggests the closest known one.
#pragma once

#include <mtl/data/synthetic.hpp>
#include <mtl/esmm.hpp>
#include <mtl/expert.hpp>

#include <c10/util/Exception.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace chain {

/// What a field holds.
enum class FieldType { integer, number, boolean, text, integer_list, text_list, expert_list };

inline const char* describe(FieldType t) {
  switch (t) {
    case FieldType::integer:
      return "an integer";
    case FieldType::number:
      return "a number";
    case FieldType::boolean:
      return "true or false";
    case FieldType::text:
      return "a string";
    case FieldType::integer_list:
      return "a list of integers, like [256, 128]";
    case FieldType::text_list:
      return "a list of strings, like [ctr, cvr]";
    case FieldType::expert_list:
      return "a list of experts, like [{type: mlp, hidden_dims: [128]}, {type: cross, layers: 2}]";
  }
  return "";
}

/// One field's value and where it was written.
struct FieldValue {
  YAML::Node node;
  std::string file;
  int line = 0;  ///< 1-based
  std::string key;
};

struct ExperimentConfig;

/// A field a config may hold: its key, what it holds, whether every config
/// must give it, whether it must agree across the seven experiments, and the
/// setter that reads it into an `ExperimentConfig` (experiment.hpp). A key
/// that was renamed keeps an entry that names its new key and refuses it.
struct FieldSpec {
  std::string key;
  FieldType type;
  bool required = false;
  bool controlled = false;
  /// Allowed values of a text field; empty allows any.
  std::vector<std::string> choices = {};
  void (*set)(ExperimentConfig&, const FieldValue&) = nullptr;
  /// A renamed key: its new name (the entry holds nothing else).
  std::string renamed_to = {};
};

/// Every field a config may hold, in the order `validate` lists them (experiment.hpp). Lists are leaves.
inline const std::vector<FieldSpec>& field_specs();

/// The fields by key.
inline const std::map<std::string, const FieldSpec*>& known_fields() {
  static const std::map<std::string, const FieldSpec*> by_key = [] {
    std::map<std::string, const FieldSpec*> m;
    for (const auto& spec : field_specs()) m[spec.key] = &spec;
    return m;
  }();
  return by_key;
}

/// The fields that must agree across the seven experiments, in table order.
inline std::vector<std::string> controlled_fields() {
  std::vector<std::string> keys;
  for (const auto& spec : field_specs())
    if (spec.controlled) keys.push_back(spec.key);
  return keys;
}

/// Edit distance, for "did you mean" suggestions.
inline size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

inline std::string closest_known_field(const std::string& path) {
  std::string best;
  size_t best_distance = std::string::npos;
  for (const auto& [known, spec] : known_fields()) {
    if (!spec->renamed_to.empty()) continue;
    const size_t d = edit_distance(path, known);
    if (d < best_distance) best = known, best_distance = d;
  }
  return best;
}

/// All fields of a resolved config, by dotted path.
class FieldTable {
 public:
  /// Reads `file`, after the base file it names (whose fields it overrides).
  static FieldTable load(const std::string& file) {
    FieldTable table;
    table.load_file(file, 0, "");
    table.check_required();
    return table;
  }

  /// A table from fields given directly (tests, presets).
  void set(const std::string& path, const YAML::Node& value, const std::string& origin) {
    check_known(path, origin, 0);
    check_type(path, value, origin, 0);
    fields_[path] = {YAML::Clone(value), origin, 0, path};
  }

  bool has(const std::string& path) const { return fields_.count(path) > 0; }
  const FieldValue& at(const std::string& path) const {
    auto it = fields_.find(path);
    TORCH_CHECK(it != fields_.end(), "config field '", path, "' is missing");
    return it->second;
  }
  const std::map<std::string, FieldValue>& fields() const noexcept { return fields_; }

  /// The value as text (scalars) or flow YAML (lists), for comparisons and snapshots.
  std::string text(const std::string& path) const {
    if (!has(path)) return "(unset)";
    YAML::Emitter out;
    out << YAML::Flow << at(path).node;
    return out.c_str();
  }

  static std::string place(const FieldValue& f) { return f.line > 0 ? f.file + ":" + std::to_string(f.line) : f.file; }

  /// The resolved config as YAML (what a run directory keeps).
  std::string to_yaml() const {
    struct Tree {
      std::map<std::string, Tree> children;
      const YAML::Node* value = nullptr;
    };
    Tree root;
    for (const auto& [path, f] : fields_) {
      if (path == "base") continue;
      Tree* at = &root;
      std::stringstream ss(path);
      for (std::string part; std::getline(ss, part, '.');) at = &at->children[part];
      at->value = &f.node;
    }
    YAML::Emitter out;
    std::function<void(const Tree&)> emit = [&](const Tree& t) {
      out << YAML::BeginMap;
      for (const auto& [key, child] : t.children) {
        out << YAML::Key << key << YAML::Value;
        if (child.value) {
          if (child.value->IsSequence()) out << YAML::Flow;
          out << *child.value;
        } else {
          emit(child);
        }
      }
      out << YAML::EndMap;
    };
    emit(root);
    return std::string(out.c_str()) + "\n";
  }

 private:
  /// `named_by` is "file:line" of the `base` field that named `file` (empty for the top file).
  void load_file(const std::string& file, int depth, const std::string& named_by) {
    TORCH_CHECK(depth < 4, named_by, ": 'base' files nest too deeply (a cycle?)");
    std::error_code error;  // the throwing overload would escape as a filesystem_error (a name too long, say)
    const bool found = std::filesystem::is_regular_file(file, error);
    const bool absent = !error || error == std::errc::no_such_file_or_directory;
    TORCH_CHECK(found, named_by.empty() ? "" : named_by + ": ", "config file '", file, "' ",
                absent ? std::string("does not exist") : "cannot be read: " + error.message());
    YAML::Node root;
    try {
      root = YAML::LoadFile(file);
    } catch (const YAML::ParserException& e) {
      TORCH_CHECK(false, file, ":", e.mark.line + 1, ":", e.mark.column + 1, ": not valid YAML (", e.msg,
                  "); check the indentation, and use spaces, not tabs");
    }
    TORCH_CHECK(root.IsMap(), file, ": expected a mapping of config sections at the top level");
    if (const auto base = root["base"]) {
      const auto at = file + ":" + std::to_string(base.Mark().line + 1);
      TORCH_CHECK(base.IsScalar(), at, ": field 'base' expects a file name");
      load_file((std::filesystem::path(file).parent_path() / base.Scalar()).string(), depth + 1, at);
    }
    flatten(root, "", file);
  }

  void flatten(const YAML::Node& node, const std::string& prefix, const std::string& file) {
    for (const auto& entry : node) {
      const int line = entry.first.Mark().line + 1;
      TORCH_CHECK(entry.first.IsScalar(), file, ":", line, ": expected a field name, got a ",
                  entry.first.IsMap() ? "mapping" : "list");
      const auto key = entry.first.Scalar();
      const auto path = prefix.empty() ? key : prefix + "." + key;
      if (!entry.second.IsMap() && !known_fields().count(path) && is_section(path))
        TORCH_CHECK(false, file, ":", line, ": '", path, "' is a section; it expects fields below it, like '",
                    first_field_in(path), "'");
      if (entry.second.IsMap() && !known_fields().count(path)) {
        check_known_prefix(path, file, line);
        flatten(entry.second, path, file);
        continue;
      }
      check_known(path, file, line);
      check_type(path, entry.second, file, line);
      fields_[path] = {entry.second, file, line, path};
    }
  }

  static std::string first_field_in(const std::string& section) {
    for (auto it = known_fields().lower_bound(section + "."); it != known_fields().end(); ++it)
      if (it->second->renamed_to.empty()) return it->first;
    return section + ".";
  }
  static bool is_section(const std::string& path) {
    for (const auto& [known, spec] : known_fields())
      if (known.rfind(path + ".", 0) == 0) return true;
    return false;
  }
  static void check_known_prefix(const std::string& path, const std::string& file, int line) {
    TORCH_CHECK(is_section(path), file, ":", line, ": unknown section '", path, "'; did you mean '",
                closest_known_field(path), "'?");
  }
  static void check_known(const std::string& path, const std::string& file, int line) {
    auto it = known_fields().find(path);
    TORCH_CHECK(it != known_fields().end(), file, ":", line, ": unknown field '", path, "'; did you mean '",
                closest_known_field(path), "'?");
    TORCH_CHECK(it->second->renamed_to.empty(), file, ":", line, ": field '", path, "' is now '",
                it->second->renamed_to, "'");
  }

  static void check_type(const std::string& path, const YAML::Node& value, const std::string& file, int line) {
    const auto& spec = *known_fields().at(path);
    const std::string where =
        file + ":" + std::to_string(line) + ": field '" + path + "' expects " + describe(spec.type);
    auto scalar_is = [&](const YAML::Node& n, FieldType t) {
      if (!n.IsScalar()) return false;
      try {
        if (t == FieldType::integer)
          n.as<int64_t>();
        else if (t == FieldType::number)
          n.as<double>();
        else if (t == FieldType::boolean)
          n.as<bool>();
        else
          n.as<std::string>();
        return true;
      } catch (const YAML::Exception&) {
        return false;
      }
    };
    auto shown = [&] {
      YAML::Emitter out;
      out << YAML::Flow << value;
      return std::string(out.c_str());
    };
    switch (spec.type) {
      case FieldType::integer_list:
      case FieldType::text_list: {
        TORCH_CHECK(value.IsSequence(), where, ", got '", shown(), "'");
        const auto item = spec.type == FieldType::integer_list ? FieldType::integer : FieldType::text;
        for (const auto& v : value) TORCH_CHECK(scalar_is(v, item), where, ", got '", shown(), "'");
        break;
      }
      case FieldType::expert_list:
        TORCH_CHECK(value.IsSequence(), where, ", got '", shown(), "'");
        for (const auto& v : value) TORCH_CHECK(v.IsMap() && v["type"], where, ", got '", shown(), "'");
        break;
      default:
        TORCH_CHECK(!value.IsNull() || std::count(spec.choices.begin(), spec.choices.end(), "null") == 0, file, ":",
                    line, ": field '", path, "' reads YAML's null value here; to choose 'null', quote it: \"null\"");
        TORCH_CHECK(scalar_is(value, spec.type), where, ", got '", shown(), "'");
        if (!spec.choices.empty()) {
          const auto v = value.as<std::string>();
          std::string allowed;
          for (const auto& c : spec.choices) allowed += (allowed.empty() ? "" : ", ") + c;
          TORCH_CHECK(std::count(spec.choices.begin(), spec.choices.end(), v), file, ":", line, ": field '", path,
                      "' expects one of ", allowed, ", got '", v, "'");
        }
    }
  }

  void check_required() const {
    for (const auto& [path, spec] : known_fields())
      if (spec->required && !has(path)) {
        std::string files;
        for (const auto& [p, f] : fields_)
          if (files.find(f.file) == std::string::npos) files += (files.empty() ? "" : ", ") + f.file;
        TORCH_CHECK(false, files, ": required field '", path, "' is missing (expected ", describe(spec->type), ")");
      }
  }

  std::map<std::string, FieldValue> fields_;
};

}  // namespace chain
