// A list written out with a separator, for pretty_print and error messages.
#pragma once

#include <sstream>
#include <string>

namespace mtl::detail {

/// The items of `range`, each as `operator<<` writes it, with `separator` between them.
template <class Range>
std::string join(const Range& range, const char* separator = ", ") {
  std::ostringstream text;
  const char* between = "";
  for (const auto& item : range) text << between << item, between = separator;
  return text.str();
}

}  // namespace mtl::detail
