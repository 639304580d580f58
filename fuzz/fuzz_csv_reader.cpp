// libFuzzer target: the CSV reader and the encoding behind it. Any input
// must either be refused with a c10::Error or read whole: as many rows as
// the file has data lines. Anything else (a crash, another exception, a
// sanitizer report, a lost row) is a finding.
#include "fuzz_input_file.hpp"

#include <mtl/data/csv_reader.hpp>
#include <mtl/data/split_files.hpp>

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* text = reinterpret_cast<const char*>(data);
  const auto path = mtl_fuzz::write_file("input.csv", text, size);
  mtl::data::CsvLayout layout;
  layout.name = "fuzz";
  layout.sparse = {"user", "item"};
  layout.dense = {"price"};
  layout.conversion = "buy";

  int64_t rows = 0;
  try {
    mtl::data::read_csv(path, layout, [&](const mtl::data::ParsedRow&) { ++rows; });
  } catch (const c10::Error&) {
    return 0;  // refused, as bad input should be
  }
  // Read whole: every line after the header is a row (a final newline ends the last one).
  int64_t lines = 0;
  for (size_t i = 0; i < size; ++i) lines += text[i] == '\n';
  if (size > 0 && text[size - 1] != '\n') ++lines;
  if (rows != lines - 1) std::abort();

  try {
    auto splits = mtl::data::load_csv_splits({path, "", ""}, layout,
                                             {/*min_count=*/1, /*embedding_dim=*/4, /*valid_fraction=*/0.5});
    if (splits.train.num_rows() + splits.valid.num_rows() + splits.test.num_rows() != rows) std::abort();
  } catch (const c10::Error&) {
    // too few rows to hold out validation and test shares
  }
  return 0;
}
