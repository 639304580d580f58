// Strict parsing of one text field, with errors that name where it came from
// ("file:line, column 'x': expected ..., got '...'"). Used by every reader.
#pragma once

#include <c10/util/Exception.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace mtl::data {

/// Where a field came from, for messages.
struct FieldPlace {
  const std::string& file;
  int64_t line;
  std::string_view column;
};

inline std::string describe(const FieldPlace& at) {
  return at.file + ":" + std::to_string(at.line) + ", column '" + std::string(at.column) + "'";
}

/// A field in quotes for a message, cut at 40 characters so a 10 MB field
/// does not flood the log. (Not named `quoted`: ADL would pick std::quoted
/// for a std::string argument.)
inline std::string excerpt(std::string_view text) {
  return "'" + std::string(text.substr(0, 40)) + (text.size() > 40 ? "...'" : "'");
}

/// Drops what every reader accepts but does not keep: a UTF-8 byte-order
/// mark at the start of a file's first line and a CR before the newline.
inline void trim_line(std::string& line, int64_t line_number) {
  if (line_number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
  if (!line.empty() && line.back() == '\r') line.pop_back();
}

/// A non-negative integer; `what` names it in messages ("an integer id").
inline int64_t parse_non_negative(std::string_view text, const FieldPlace& at, const char* what) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  TORCH_CHECK(ec == std::errc() && end == text.data() + text.size() && !text.empty(), describe(at), ": expected ", what,
              ", got ", excerpt(text));
  TORCH_CHECK(value >= 0, describe(at), ": expected ", what, " >= 0, got ", value);
  return value;
}

inline int64_t parse_id(std::string_view text, const FieldPlace& at) {
  return parse_non_negative(text, at, "an integer id");
}

inline float parse_dense(std::string_view text, const FieldPlace& at) {
  float value = 0.f;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  TORCH_CHECK(ec == std::errc() && end == text.data() + text.size() && !text.empty(), describe(at),
              ": expected a number, got ", excerpt(text));
  TORCH_CHECK(std::isfinite(value), describe(at), ": expected a finite number, got ", excerpt(text));
  return value;
}

inline float parse_label(std::string_view text, const FieldPlace& at) {
  TORCH_CHECK(text == "0" || text == "1" || text == "0.0" || text == "1.0", describe(at),
              ": expected a 0/1 label, got ", excerpt(text));
  return text[0] == '1' ? 1.f : 0.f;
}

}  // namespace mtl::data
