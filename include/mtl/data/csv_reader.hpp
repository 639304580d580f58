// Streams the rows of a CSV file (processed Ali-CCP, AliExpress, or any
// layout named by header) as ParsedRows. Accepted: a UTF-8 byte-order mark,
// CRLF line ends, a missing final newline, columns the layout does not use.
// Refused, naming file, line and column: a missing column, a wrong field
// count, a blank line, a non-numeric or non-finite value, a negative id, a
// label other than 0/1, a conversion without a click. Quoted fields are not
// supported (these data sets have none).
#pragma once

#include <mtl/data/csv_layout.hpp>
#include <mtl/data/parsed_row.hpp>
#include <mtl/data/text_fields.hpp>

#include <c10/util/Exception.h>

#include <cerrno>
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

/// The column names of a CSV file's header line.
inline std::vector<std::string> read_csv_header(const std::string& path) {
  std::string line;
  std::vector<std::string_view> fields;
  detail::open_with_header(path, line, fields);
  return {fields.begin(), fields.end()};
}

/// Reads `path` with `layout`, calling `on_row` for each data row.
inline void read_csv(const std::string& path, const CsvLayout& layout,
                     const std::function<void(const ParsedRow&)>& on_row) {
  std::string line;
  std::vector<std::string_view> fields;
  auto in = detail::open_with_header(path, line, fields);
  std::unordered_map<std::string, size_t> column_of;
  for (size_t i = 0; i < fields.size(); ++i) column_of.emplace(std::string(fields[i]), i);
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
  const size_t width = fields.size();

  ParsedRow row;
  row.sparse.resize(sparse_cols.size());
  row.dense.resize(dense_cols.size());
  int64_t line_number = 1;
  while (std::getline(in, line)) {
    trim_line(line, ++line_number);
    TORCH_CHECK(!line.empty(), path, ":", line_number, ": the line is blank, expected ", width, " fields");
    detail::split_commas(line, fields);
    TORCH_CHECK(fields.size() == width, path, ":", line_number, ": expected ", width,
                " comma-separated fields (as the header), got ", fields.size());
    for (size_t j = 0; j < sparse_cols.size(); ++j)
      row.sparse[j] = parse_id(fields[sparse_cols[j]], {path, line_number, layout.sparse[j]});
    for (size_t j = 0; j < dense_cols.size(); ++j)
      row.dense[j] = parse_dense(fields[dense_cols[j]], {path, line_number, layout.dense[j]});
    if (!labelled) {
      on_row(row);
      continue;
    }
    row.click = parse_label(fields[click_col], {path, line_number, layout.click});
    row.conversion = parse_label(fields[conversion_col], {path, line_number, layout.conversion});
    TORCH_CHECK(row.conversion <= row.click, path, ":", line_number, ": ", layout.conversion, " is 1 but ",
                layout.click, " is 0; a conversion needs a click");
    on_row(row);
  }
  TORCH_CHECK(in.eof(), "reading '", path, "' failed at line ", line_number + 1, ": ", std::strerror(errno));
}

/// `read_csv` as a RowSource.
inline RowSource csv_source(std::string path, CsvLayout layout) {
  return [path = std::move(path), layout = std::move(layout)](const std::function<void(const ParsedRow&)>& on_row) {
    read_csv(path, layout, on_row);
  };
}

}  // namespace mtl::data
