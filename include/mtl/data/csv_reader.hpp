// Streams the rows of a CSV file (processed Ali-CCP, AliExpress, or any
// layout named by header) as ParsedRows. Accepted: a UTF-8 byte-order mark,
// CRLF line ends, a missing final newline, columns the layout does not use.
// Refused, naming file, line and column: a missing column, a wrong field
// count, a blank line, a non-numeric or non-finite value, a negative id, a
// label other than 0/1. A file without a header line (a split beside a
// training file that has one) is read with the training file's columns; a
// conversion without a click is refused, dropped or counted as a click, as
// asked, and counted. Quoted fields are not supported (these data sets have
// none).
#pragma once

#include <mtl/data/csv_layout.hpp>
#include <mtl/data/parsed_row.hpp>
#include <mtl/data/text_fields.hpp>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mtl::data {

namespace detail {
inline void split_commas(std::string_view line, std::vector<std::string_view>& fields) {
  fields.clear();
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      fields.push_back(line.substr(start));
      return;
    }
    fields.push_back(line.substr(start, comma - start));
    start = comma + 1;
  }
}
}  // namespace detail

namespace detail {
/// Opens `path` and reads its header line into `line`, split into `fields`.
inline std::ifstream open_with_header(const std::string& path, std::string& line,
                                      std::vector<std::string_view>& fields) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open '", path, "': ", std::strerror(errno));
  TORCH_CHECK(static_cast<bool>(std::getline(in, line)), path, ": the file is empty, expected a header line");
  trim_line(line, 1);
  split_commas(line, fields);
  return in;
}
}  // namespace detail

/// Whether a file's first line names its columns.
enum class HeaderLine {
  first_line,  ///< always
  detect,      ///< when it names the layout's columns; a line of numbers with as many fields as `columns` is data
  absent,      ///< never: every line is data, read with `columns`
};

/// What becomes of a row whose conversion label is 1 and click label 0 (real logs carry such rows: attribution
/// windows, joins).
enum class ConversionWithoutClick {
  error,     ///< the file is refused, naming the line
  drop,      ///< the row is left out
  as_click,  ///< the row counts as clicked
};

struct CsvReadOptions {
  HeaderLine header = HeaderLine::first_line;
  /// The columns of a file without a header line, and where they come from (for messages), e.g. "train.csv".
  std::vector<std::string> columns;
  std::string columns_from;
  ConversionWithoutClick conversion_without_click = ConversionWithoutClick::error;
  /// How to keep such rows, in the caller's terms (a config's keys, say), for the refusal's message.
  std::string conversion_without_click_advice = "CsvReadOptions::conversion_without_click: drop or as_click";
};

/// What reading one file found and changed.
struct CsvReadReport {
  bool header_line = true;  ///< false: the first line was data, read with the options' columns
  int64_t rows = 0;         ///< rows passed on
  int64_t conversions_without_click_dropped = 0;
  int64_t conversions_without_click_as_click = 0;
};

namespace detail {
/// Whether every field reads as a number (a data row, not a header).
inline bool all_numbers(const std::vector<std::string_view>& fields) {
  for (auto f : fields) {
    const std::string text(f);
    char* end = nullptr;
    std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size()) return false;
  }
  return true;
}

/// Whether `header` names every column `layout` reads.
inline bool names_layout_columns(const std::vector<std::string>& header, const CsvLayout& layout) {
  auto has = [&](const std::string& name) { return std::find(header.begin(), header.end(), name) != header.end(); };
  for (const auto* list : {&layout.sparse, &layout.dense})
    for (const auto& name : *list)
      if (!has(name)) return false;
  return !layout.labelled() || (has(layout.click) && has(layout.conversion));
}
}  // namespace detail

/// The column names of a CSV file's header line.
inline std::vector<std::string> read_csv_header(const std::string& path) {
  std::string line;
  std::vector<std::string_view> fields;
  detail::open_with_header(path, line, fields);
  return {fields.begin(), fields.end()};
}

/// Reads `path` with `layout`, calling `on_row` for each data row; `report`, when given, says what reading found
/// and changed.
inline void read_csv(const std::string& path, const CsvLayout& layout,
                     const std::function<void(const ParsedRow&)>& on_row, const CsvReadOptions& options = {},
                     CsvReadReport* report = nullptr) {
  CsvReadReport found;
  std::string line;
  std::vector<std::string_view> fields;
  auto in = detail::open_with_header(path, line, fields);
  std::vector<std::string> header(fields.begin(), fields.end());
  bool first_line_is_data = false;
  if (options.header == HeaderLine::absent) {
    TORCH_CHECK(!options.columns.empty(), path, ": a file without a header line needs the columns to read it with");
    first_line_is_data = true;
  } else if (options.header == HeaderLine::detect && !options.columns.empty() &&
             !detail::names_layout_columns(header, layout) && detail::all_numbers(fields)) {
    TORCH_CHECK(fields.size() == options.columns.size(), path, ":1: the first line is data, not a header naming the ",
                layout.name, " layout's columns, but it has ", fields.size(), " fields where ", options.columns_from,
                "'s header has ", options.columns.size());
    first_line_is_data = true;
  }
  if (first_line_is_data) header = options.columns, found.header_line = false;
  std::unordered_map<std::string, size_t> column_of;
  for (size_t i = 0; i < header.size(); ++i) column_of.emplace(header[i], i);
  auto column = [&](const std::string& name) {
    auto it = column_of.find(name);
    TORCH_CHECK(it != column_of.end(), path, ":1: the header has no column '", name, "', which the ", layout.name,
                " layout needs");
    return it->second;
  };
  std::vector<size_t> sparse_cols, dense_cols;
  for (const auto& name : layout.sparse) sparse_cols.push_back(column(name));
  for (const auto& name : layout.dense) dense_cols.push_back(column(name));
  const bool labelled = layout.labelled();
  const size_t click_col = labelled ? column(layout.click) : 0,
               conversion_col = labelled ? column(layout.conversion) : 0;
  const size_t width = header.size();

  ParsedRow row;
  row.sparse.resize(sparse_cols.size());
  row.dense.resize(dense_cols.size());
  int64_t line_number = 1;
  // The line in `line` (its fields in `fields`), as data row `line_number`.
  auto read_row = [&] {
    TORCH_CHECK(fields.size() == width, path, ":", line_number, ": expected ", width, " comma-separated fields (as ",
                first_line_is_data ? options.columns_from + "'s header" : std::string("the header"), "), got ",
                fields.size());
    for (size_t j = 0; j < sparse_cols.size(); ++j)
      row.sparse[j] = parse_id(fields[sparse_cols[j]], {path, line_number, layout.sparse[j]});
    for (size_t j = 0; j < dense_cols.size(); ++j)
      row.dense[j] = parse_dense(fields[dense_cols[j]], {path, line_number, layout.dense[j]});
    if (labelled) {
      row.click = parse_label(fields[click_col], {path, line_number, layout.click});
      row.conversion = parse_label(fields[conversion_col], {path, line_number, layout.conversion});
      if (row.conversion > row.click) {
        TORCH_CHECK(options.conversion_without_click != ConversionWithoutClick::error, path, ":", line_number, ": ",
                    layout.conversion, " is 1 but ", layout.click,
                    " is 0; a conversion needs a click (to keep such rows: ", options.conversion_without_click_advice,
                    ")");
        if (options.conversion_without_click == ConversionWithoutClick::drop) {
          ++found.conversions_without_click_dropped;
          return;
        }
        row.click = 1.0f, ++found.conversions_without_click_as_click;
      }
    }
    ++found.rows;
    on_row(row);
  };
  if (first_line_is_data) read_row();
  while (std::getline(in, line)) {
    trim_line(line, ++line_number);
    TORCH_CHECK(!line.empty(), path, ":", line_number, ": the line is blank, expected ", width, " fields");
    detail::split_commas(line, fields);
    read_row();
  }
  TORCH_CHECK(in.eof(), "reading '", path, "' failed at line ", line_number + 1, ": ", std::strerror(errno));
  if (report) *report = found;
}

/// `read_csv` as a RowSource.
inline RowSource csv_source(std::string path, CsvLayout layout, CsvReadOptions options = {},
                            CsvReadReport* report = nullptr) {
  return [path = std::move(path), layout = std::move(layout), options = std::move(options), report](
             const std::function<void(const ParsedRow&)>& on_row) { read_csv(path, layout, on_row, options, report); };
}

}  // namespace mtl::data
