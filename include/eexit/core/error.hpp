#pragma once
// eexit::error: the one exception type for corrupt input, I/O and setup failures.
// Expected outcomes (cache full, nothing to do) are return values, never exceptions.
#include <stdexcept>
#include <string>
#include <string_view>

namespace eexit {

class error : public std::runtime_error {
 public:
  // where: the file, tensor, field or flag the problem is in (may be empty).
  error(std::string_view where, std::string_view what)
      : std::runtime_error(compose(where, what)), where_(where) {}
  explicit error(std::string_view what) : std::runtime_error(std::string(what)) {}

  const std::string& where() const noexcept { return where_; }

 private:
  static std::string compose(std::string_view where, std::string_view what) {
    if (where.empty()) return std::string(what);
    std::string s(where);
    s += ": ";
    s += what;
    return s;
  }
  std::string where_;
};

}  // namespace eexit
