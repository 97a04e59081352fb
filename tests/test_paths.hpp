#pragma once
// Where tests find ../shared (test models, data) and the source tree (fixtures).
#include <string>

namespace eexit::test {
inline std::string shared(const std::string& rel) { return std::string(EEXIT_SHARED_DIR) + "/" + rel; }
inline std::string source(const std::string& rel) { return std::string(EEXIT_SOURCE_DIR) + "/" + rel; }
}  // namespace eexit::test
