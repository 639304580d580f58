// Checkpoints as a dict of named tensors in torch.save's format, so Python's
// torch.load reads them. Written atomically (a run killed mid-write leaves
// the previous file intact) with a checksum entry, so a file damaged later
// (truncated, bits flipped) is refused rather than trained on.
#pragma once

#include <mtl/io/file_io.hpp>

#include <ATen/core/Dict.h>
#include <torch/nn/module.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

namespace mtl::io {

using TensorDict = c10::Dict<std::string, torch::Tensor>;

/// The entry that holds a checkpoint's checksum (an int64 tensor).
inline constexpr const char* kChecksumKey = "__checksum__";

/// A 64-bit checksum of every entry but the checksum: names, dtypes, shapes
/// and bytes, in name order. Each 8-byte word passes through a bijection, so
/// any change confined to one word always changes the result.
inline int64_t tensor_dict_checksum(const TensorDict& tensors) {
  std::vector<std::string> names;
  for (const auto& entry : tensors)
    if (entry.key() != kChecksumKey) names.push_back(entry.key());
  std::sort(names.begin(), names.end());
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const char* data, size_t size) {
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
      uint64_t word;
      std::memcpy(&word, data + i, 8);
      h = (h ^ word) * 1099511628211ull;
    }
    for (; i < size; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * 1099511628211ull;
    h = (h ^ size) * 1099511628211ull;  // lengths too, so "ab"+"c" differs from "a"+"bc"
  };
  for (const auto& name : names) {
    const auto t = tensors.at(name).contiguous();
    mix(name.data(), name.size());
    const auto type = std::string(c10::toString(t.scalar_type()));
    mix(type.data(), type.size());
    const auto sizes = t.sizes().vec();
    mix(reinterpret_cast<const char*>(sizes.data()), sizes.size() * sizeof(int64_t));
    mix(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return static_cast<int64_t>(h);
}

/// Saves named tensors (moved to CPU) as a torch.save-compatible dict, with a checksum entry.
inline void save_tensor_dict(const std::string& path, const TensorDict& tensors) {
  TensorDict cpu;
  for (const auto& entry : tensors)
    if (entry.key() != kChecksumKey) cpu.insert(entry.key(), entry.value().detach().cpu().contiguous());
  cpu.insert(kChecksumKey, torch::tensor(tensor_dict_checksum(cpu), torch::kLong));
  atomic_write(path, torch::pickle_save(cpu), "checkpoint_write");
}

/// Loads a dict written by `save_tensor_dict` (or torch.save); refuses a file
/// that does not parse or whose checksum does not match. A dict without a
/// checksum (one written in Python) is taken as read.
inline TensorDict load_tensor_dict(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open checkpoint '", path, "': ", std::strerror(errno));
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A zip archive (torch.save's format) ends with its end-of-central-directory
  // record. One cut short is refused here: LibTorch 1.13's reader can read past
  // the buffer of a truncated archive rather than fail.
  auto holds = [&](size_t at, const char* signature) {
    return bytes.size() >= at + 4 &&
           std::equal(signature, signature + 4, bytes.begin() + static_cast<std::ptrdiff_t>(at));
  };
  constexpr size_t kEndRecordSize = 22;
  TORCH_CHECK(
      !holds(0, "PK\x03\x04") || (bytes.size() >= kEndRecordSize && holds(bytes.size() - kEndRecordSize, "PK\x05\x06")),
      "checkpoint '", path,
      "' is not a readable tensor dict (truncated or corrupted?): it does not end with a zip archive's end "
      "record");
  torch::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "checkpoint '", path,
                "' is not a readable tensor dict (truncated or corrupted?): ", e.what_without_backtrace());
  }
  TORCH_CHECK(value.isGenericDict(), "checkpoint '", path, "' does not hold a dict of tensors");
  TensorDict out;
  for (const auto& entry : value.toGenericDict()) {
    TORCH_CHECK(entry.key().isString() && entry.value().isTensor(), "checkpoint '", path,
                "' holds an entry that is not a named tensor");
    out.insert(entry.key().toStringRef(), entry.value().toTensor());
  }
  if (out.contains(kChecksumKey)) {
    const auto& stored = out.at(kChecksumKey);
    TORCH_CHECK(stored.numel() == 1 && stored.scalar_type() == torch::kLong &&
                    stored.item<int64_t>() == tensor_dict_checksum(out),
                "checkpoint '", path, "' is corrupted: its checksum does not match its contents");
    static_cast<void>(out.erase(kChecksumKey));
  }
  return out;
}

/// Saves `tensors` to `path`, first moving the file there to `previous`, kept
/// as the fallback should `path` prove damaged. A kill between the two steps
/// leaves `previous` only; `load_first_good` then takes it.
inline void save_keeping_previous(const std::string& path, const std::string& previous, const TensorDict& tensors) {
  if (std::filesystem::exists(path) && ::rename(path.c_str(), previous.c_str()) != 0)
    throw StorageError("cannot move '" + path + "' to '" + previous + "'", errno);
  mtl::detail::crash_point("checkpoint_rotate");
  save_tensor_dict(path, tensors);
}

struct LoadedCheckpoint {
  TensorDict tensors;
  std::string path;  ///< the file they came from
};

/// The first of `paths` that exists and loads; `warn` hears why each skipped
/// file was refused. Throws naming every refusal when none loads.
inline LoadedCheckpoint load_first_good(const std::vector<std::string>& paths,
                                        const std::function<void(const std::string&)>& warn) {
  std::string refusals;
  for (const auto& path : paths) {
    if (!std::filesystem::exists(path)) continue;
    try {
      return {load_tensor_dict(path), path};
    } catch (const c10::Error& e) {
      const std::string why = e.what_without_backtrace();
      warn(why);
      refusals += "\n  " + why;
    }
  }
  TORCH_CHECK(false, "no usable checkpoint among the ones found:", refusals,
              "\n  remove the run directory to start it again");
}

/// A module's parameters and buffers by name, each under `prefix`.
inline TensorDict module_state(const torch::nn::Module& module, const std::string& prefix = "") {
  TensorDict state;
  for (const auto& p : module.named_parameters()) state.insert(prefix + p.key(), p.value());
  for (const auto& b : module.named_buffers()) state.insert(prefix + b.key(), b.value());
  return state;
}

/// Copies tensors named `prefix` + name into the module's parameters and
/// buffers; a missing name or a shape mismatch is an error naming it.
inline void load_module_state(torch::nn::Module& module, const TensorDict& state, const std::string& prefix = "",
                              const std::string& source = "checkpoint") {
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, torch::Tensor& target) {
    TORCH_CHECK(state.contains(prefix + name), source, " has no tensor '", prefix + name, "' that the model needs");
    const auto& value = state.at(prefix + name);
    TORCH_CHECK(value.sizes() == target.sizes(), source, ": tensor '", prefix + name, "' has shape ", value.sizes(),
                ", but the model expects ", target.sizes());
    target.copy_(value);
  };
  for (auto& p : module.named_parameters()) copy(p.key(), p.value());
  for (auto& b : module.named_buffers()) copy(b.key(), b.value());
}

/// Bytes as a uint8 tensor, so opaque state (an optimizer archive) fits in a tensor dict.
inline torch::Tensor bytes_tensor(const std::string& bytes) {
  auto t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return t;
}
inline std::string tensor_bytes(const torch::Tensor& t) {
  auto c = t.contiguous().cpu();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
}

}  // namespace mtl::io
