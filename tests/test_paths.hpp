#pragma once
// Where tests find ../shared (test models, data) and the source tree (fixtures).
#include <string>

namespace eexit::test {
// Appended rather than `std::string(DIR) + "/" + rel`: GCC 12 flags that expression's inlined
// memcpy with a false -Warray-bounds (its bug 105329) in some of the files that use it.
inline std::string under(const char* dir, const std::string& rel) {
  std::string p(dir);
  p += '/';
  p += rel;
  return p;
}
inline std::string shared(const std::string& rel) {
  return under(EEXIT_SHARED_DIR, rel);
}
inline std::string source(const std::string& rel) {
  return under(EEXIT_SOURCE_DIR, rel);
}
}  // namespace eexit::test
