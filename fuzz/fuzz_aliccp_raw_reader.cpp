// libFuzzer target: the raw Ali-CCP reader. The input is the common-feature
// file, a NUL byte, then the skeleton file. It must be refused with a
// c10::Error or read whole: one row per skeleton line.
#include "fuzz_input_file.hpp"

#include <mtl/data/aliccp_raw_reader.hpp>

#include <algorithm>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* text = reinterpret_cast<const char*>(data);
  const auto* split = std::find(text, text + size, '\0');
  const auto common = mtl_fuzz::write_file("common.csv", text, static_cast<size_t>(split - text));
  const char* skeleton_text = split == text + size ? split : split + 1;
  const auto skeleton_size = static_cast<size_t>(text + size - skeleton_text);
  const auto skeleton = mtl_fuzz::write_file("skeleton.csv", skeleton_text, skeleton_size);

  int64_t rows = 0;
  try {
    mtl::data::aliccp_raw_source(skeleton, common)([&](const mtl::data::ParsedRow& row) {
      if (row.sparse.size() != 23 || row.dense.size() != 8) std::abort();
      ++rows;
    });
  } catch (const c10::Error&) {
    return 0;
  }
  int64_t lines = std::count(skeleton_text, skeleton_text + skeleton_size, '\n');
  if (skeleton_size > 0 && skeleton_text[skeleton_size - 1] != '\n') ++lines;
  if (rows != lines) std::abort();
  return 0;
}
