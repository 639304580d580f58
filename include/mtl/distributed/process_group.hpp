// A c10d process group: the ranks meet at a store (a TCPStore that the
// leader serves at MASTER_ADDR:MASTER_PORT, or for ranks on one machine a
// FileStore, which opens no port), and Gloo runs the collectives on the CPU. Needs a LibTorch built with Gloo and
// Gloo's headers (Debian: libgloo-dev); link `mtl::distributed`, which defines USE_C10D_GLOO.
#pragma once

#ifndef USE_C10D_GLOO
#error "mtl/distributed needs USE_C10D_GLOO: link the mtl::distributed target"
#endif

#include <mtl/distributed/environment.hpp>

#include <torch/types.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <exception>
#include <string>
#include <vector>

namespace mtl::distributed {

/// A process group and what a message about it should name.
struct Group {
  Environment environment;
  c10::intrusive_ptr<c10d::ProcessGroupGloo>
      process_group;  // the Gloo group itself: LibTorch 2.x wraps backends in a ProcessGroup
  std::chrono::milliseconds timeout{60000};

  int64_t rank() const noexcept { return environment.rank; }
  int64_t size() const noexcept { return environment.world_size; }

  /// Waits for a collective; a peer that died or hung becomes an error
  /// naming this rank, the operation and the timeout, within the timeout.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& operation) const {
    try {
      work->wait(timeout);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "rank ", rank(), " of ", size(), ": ", operation,
                  " failed; another rank has exited or stopped answering (timeout ", timeout.count() / 1000.0,
                  " s): ", e.what());
    }
  }

  /// Every rank's `mine` (of one shape on every rank), in rank order.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& mine, const std::string& operation) const {
    std::vector<std::vector<torch::Tensor>> gathered(1);
    for (int64_t r = 0; r < size(); ++r) gathered[0].push_back(torch::empty_like(mine));
    std::vector<torch::Tensor> input{mine};
    wait(process_group->allgather(gathered, input), operation);
    return gathered[0];
  }
};

/// Joins the group `environment` describes: every rank must call it with the
/// same world size and address within `timeout`, or each gets an error
/// naming the store's address.
inline Group join_group(const Environment& environment, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  Group group{environment, {}, timeout};
  const bool on_file = !environment.store_file.empty();
  const std::string where = on_file ? "the file store " + environment.store_file
                                    : environment.master_addr + ":" + std::to_string(environment.master_port);
  try {
    c10::intrusive_ptr<c10d::Store> store;
    if (on_file) {
      store = c10::make_intrusive<c10d::FileStore>(environment.store_file, static_cast<int>(environment.world_size));
      store->setTimeout(timeout);
    } else {
      c10d::TCPStoreOptions store_options;
      store_options.port = environment.master_port;
      store_options.isServer = environment.is_leader() && !environment.launcher_serves_store;
      store_options.numWorkers = static_cast<size_t>(environment.world_size);
      store_options.waitWorkers = false;
      store_options.timeout = timeout;
      store = c10::make_intrusive<c10d::TCPStore>(environment.master_addr, store_options);
    }
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname(on_file ? "127.0.0.1" : environment.master_addr));
    group.process_group = c10::make_intrusive<c10d::ProcessGroupGloo>(
        store, static_cast<int>(environment.rank), static_cast<int>(environment.world_size), options);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "rank ", environment.rank, " of ", environment.world_size,
                " could not join the process group at ", where, " within ", timeout.count() / 1000.0, " s",
                on_file                   ? " (did every rank start, with the same WORLD_SIZE and store file?)"
                : environment.is_leader() ? " (is the port in use, or did a rank not start?)"
                                          : " (is rank 0 running, and every rank given the same WORLD_SIZE?)",
                ": ", e.what());
  }
  return group;
}

}  // namespace mtl::distributed
