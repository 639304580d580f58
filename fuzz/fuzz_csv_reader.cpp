// libFuzzer target: the CSV reader and the encoding behind it. Any input
// must either be refused with a c10::Error or read whole: as many rows as
// the file has data lines, less the conversions without a click it was told
// to drop (the input's size picks how the reader treats those rows and the
// first line). Anything else (a crash, another exception, a sanitizer
// report, a lost row) is a finding.
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

  mtl::data::CsvReadOptions read;
  read.conversion_without_click = static_cast<mtl::data::ConversionWithoutClick>(size % 3);
  read.header = static_cast<mtl::data::HeaderLine>(size / 3 % 3);
  read.columns = {"user", "item", "price", "click", "buy"}, read.columns_from = "train.csv";
  int64_t rows = 0;
  mtl::data::CsvReadReport report;
  try {
    mtl::data::read_csv(
        path, layout,
        [&](const mtl::data::ParsedRow& row) {
          if (row.conversion > row.click) std::abort();  // every policy leaves no conversion without a click
          ++rows;
        },
        read, &report);
  } catch (const c10::Error&) {
    return 0;  // refused, as bad input should be
  }
  // Read whole: every line after the header (or every line, without one) is a row or a dropped conversion.
  int64_t lines = 0;
  for (size_t i = 0; i < size; ++i) lines += text[i] == '\n';
  if (size > 0 && text[size - 1] != '\n') ++lines;
  if (rows != report.rows || rows + report.conversions_without_click_dropped != lines - (report.header_line ? 1 : 0))
    std::abort();
  read.header = mtl::data::HeaderLine::first_line;

  try {
    if (!report.header_line) return 0;  // a training file always has its header line
    auto splits = mtl::data::load_csv_splits({path, "", ""}, layout,
                                             {/*min_count=*/1, /*embedding_dim=*/4, /*valid_fraction=*/0.5}, "", read);
    if (splits.train.num_rows() + splits.valid.num_rows() + splits.test.num_rows() != rows) std::abort();
  } catch (const c10::Error&) {
    // too few rows to hold out validation and test shares
  }
  return 0;
}
