// Catch2's main, in a translation unit of its own so that it compiles once.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <ATen/Context.h>

// Every test case starts from the same random state (Catch's --rng-seed, 0
// unless given), so a test drawing random weights or inputs is deterministic:
// a failure reproduces, and no test passes or fails by the luck of the draw.
struct SeedTorchPerTestCase : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override { at::manual_seed(Catch::rngSeed()); }
};
CATCH_REGISTER_LISTENER(SeedTorchPerTestCase)
