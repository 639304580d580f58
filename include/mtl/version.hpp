// The library's version: the single source that CMake reads for the package version.
#pragma once

#define MTL_VERSION_MAJOR 0
#define MTL_VERSION_MINOR 2
#define MTL_VERSION_PATCH 0

#define MTL_STRINGIFY_DETAIL(x) #x
#define MTL_STRINGIFY(x) MTL_STRINGIFY_DETAIL(x)
#define MTL_VERSION_STRING         \
  MTL_STRINGIFY(MTL_VERSION_MAJOR) \
  "." MTL_STRINGIFY(MTL_VERSION_MINOR) "." MTL_STRINGIFY(MTL_VERSION_PATCH)

namespace mtl {
/// "major.minor.patch" of the headers in use.
inline constexpr const char* version() noexcept { return MTL_VERSION_STRING; }
}  // namespace mtl
