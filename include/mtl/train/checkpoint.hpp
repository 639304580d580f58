// Checkpoints as a dict of named tensors in torch.save's format, so Python's
// torch.load reads them; written atomically (temporary file, fsync, rename)
// so a run killed mid-write leaves the previous checkpoint intact.
#pragma once

#include <ATen/core/Dict.h>
#include <torch/nn/module.h>
#include <torch/serialize.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace mtl::train {

using TensorDict = c10::Dict<std::string, torch::Tensor>;

/// Writes `bytes` to `path` so that `path` holds either its old content or all of the new.
inline void atomic_write(const std::string& path, const std::vector<char>& bytes) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  TORCH_CHECK(fd >= 0, "cannot write '", temporary, "': ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(temporary.c_str());
      TORCH_CHECK(false, "writing '", temporary, "' failed: ", std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_err = errno;
  ::close(fd);
  if (!synced) {
    ::unlink(temporary.c_str());
    TORCH_CHECK(false, "flushing '", temporary, "' to disk failed: ", std::strerror(sync_err));
  }
  TORCH_CHECK(::rename(temporary.c_str(), path.c_str()) == 0, "cannot move '", temporary, "' to '", path, "': ",
              std::strerror(errno));
}

inline void atomic_write(const std::string& path, const std::string& text) {
  atomic_write(path, std::vector<char>(text.begin(), text.end()));
}

/// Saves named tensors (moved to CPU) as a torch.save-compatible dict.
inline void save_tensor_dict(const std::string& path, const TensorDict& tensors) {
  TensorDict cpu;
  for (const auto& entry : tensors) cpu.insert(entry.key(), entry.value().detach().cpu().contiguous());
  atomic_write(path, torch::pickle_save(cpu));
}

inline TensorDict load_tensor_dict(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open checkpoint '", path, "': ", std::strerror(errno));
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  torch::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "checkpoint '", path, "' is not a readable tensor dict (truncated or corrupted?): ",
                e.what_without_backtrace());
  }
  TORCH_CHECK(value.isGenericDict(), "checkpoint '", path, "' does not hold a dict of tensors");
  TensorDict out;
  for (const auto& entry : value.toGenericDict()) out.insert(entry.key().toStringRef(), entry.value().toTensor());
  return out;
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

}  // namespace mtl::train
