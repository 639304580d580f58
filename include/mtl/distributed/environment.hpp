// Where this process stands in a group of processes, read from the
// environment that torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT), or that a launcher of ranks on this machine sets (RANK,
// WORLD_SIZE, LOCAL_RANK and MTL_STORE_FILE, a file store: no port opened).
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>

namespace mtl::distributed {

/// One rank's place in the group and the address of the group's store.
struct Environment {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  uint16_t master_port = 29500;
  /// The launcher already serves the store at MASTER_ADDR:MASTER_PORT
  /// (torchrun sets TORCHELASTIC_USE_AGENT_STORE=True): every rank joins it as a client.
  bool launcher_serves_store = false;
  /// Ranks on one machine: the store is this file (c10d's FileStore), and the
  /// collectives run over loopback; no store port is opened. Empty: a TCP store
  /// at MASTER_ADDR:MASTER_PORT, which has no authentication (a trusted network).
  std::string store_file;

  bool is_leader() const noexcept { return rank == 0; }

  /// The environment of this process: nothing when WORLD_SIZE is unset (a
  /// single process); otherwise every variable of the contract checked, and
  /// an error naming the variable and what was expected. `lookup` reads a
  /// variable (std::getenv by default; tests pass their own).
  static std::optional<Environment> from_process(const std::function<const char*(const char*)>& lookup =
                                                     [](const char* name) { return std::getenv(name); }) {
    const char* world = lookup("WORLD_SIZE");
    if (world == nullptr) {
      TORCH_CHECK(lookup("RANK") == nullptr,
                  "the environment sets RANK but not WORLD_SIZE: a rank of a process group needs both");
      return std::nullopt;
    }
    Environment e;
    e.world_size = integer(lookup, "WORLD_SIZE", 1, 1 << 20);
    e.rank = integer(lookup, "RANK", 0, e.world_size - 1);
    e.local_rank = lookup("LOCAL_RANK") ? integer(lookup, "LOCAL_RANK", 0, e.world_size - 1) : e.rank;
    if (const char* file = lookup("MTL_STORE_FILE"); file != nullptr && *file != '\0') {
      e.store_file = file;
      return e;
    }
    const char* addr = lookup("MASTER_ADDR");
    TORCH_CHECK(addr != nullptr && *addr != '\0',
                "the environment sets WORLD_SIZE but neither MASTER_ADDR nor MTL_STORE_FILE: the group's store is "
                "needed");
    e.master_addr = addr;
    e.master_port = static_cast<uint16_t>(integer(lookup, "MASTER_PORT", 1, 65535));
    const char* agent_store = lookup("TORCHELASTIC_USE_AGENT_STORE");
    e.launcher_serves_store = agent_store != nullptr && std::string(agent_store) == "True";
    return e;
  }

 private:
  static int64_t integer(const std::function<const char*(const char*)>& lookup, const char* name, int64_t low,
                         int64_t high) {
    const char* text = lookup(name);
    TORCH_CHECK(text != nullptr, "the environment sets WORLD_SIZE but not ", name, ": expected an integer in [", low,
                ", ", high, "]");
    char* end = nullptr;
    errno = 0;
    const long long value = std::strtoll(text, &end, 10);
    TORCH_CHECK(end != text && *end == '\0' && errno == 0 && value >= low && value <= high, "the environment's ", name,
                " is '", text, "': expected an integer in [", low, ", ", high, "]");
    return value;
  }
};

}  // namespace mtl::distributed
