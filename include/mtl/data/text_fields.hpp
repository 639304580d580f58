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

/// Shortens a field for a message, so a 10 MB field does not flood the log.
inline std::string quoted(std::string_view text) {
  return "'" + std::string(text.substr(0, 40)) + (text.size() > 40 ? "...'" : "'");
}

inline int64_t parse_id(std::string_view text, const FieldPlace& at) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  TORCH_CHECK(ec == std::errc() && end == text.data() + text.size() && !text.empty(), describe(at),
              ": expected an integer id, got ", quoted(text));
  TORCH_CHECK(value >= 0, describe(at), ": expected a non-negative id, got ", value);
  return value;
}

inline float parse_dense(std::string_view text, const FieldPlace& at) {
  float value = 0.f;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  TORCH_CHECK(ec == std::errc() && end == text.data() + text.size() && !text.empty(), describe(at),
              ": expected a number, got ", quoted(text));
  TORCH_CHECK(std::isfinite(value), describe(at), ": expected a finite number, got ", quoted(text));
  return value;
}

inline float parse_label(std::string_view text, const FieldPlace& at) {
  TORCH_CHECK(text == "0" || text == "1" || text == "0.0" || text == "1.0", describe(at),
              ": expected a 0/1 label, got ", quoted(text));
  return text[0] == '1' ? 1.f : 0.f;
}

}  // namespace mtl::data
