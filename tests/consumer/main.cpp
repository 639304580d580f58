// A consumer of the installed package: builds a PLE and checks one forward.
#include <mtl/ple.hpp>

#include <iostream>

int main() {
  mtl::PLE ple(mtl::PLEOptions::homogeneous(/*input_dim=*/16, /*num_tasks=*/2, /*num_shared=*/2,
                                            /*num_private=*/1, mtl::ExpertOptions::mlp({8}))
                   .expert_dim(4));
  auto out = ple->forward(torch::randn({3, 16}));
  if (out.size() != 2 || out[0].size(0) != 3 || out[0].size(1) != 4) {
    std::cerr << "unexpected PLE output\n";
    return 1;
  }
  std::cout << "consumer: " << ple << " ran\n";
  return 0;
}
