#pragma once
// eexit::error: the one exception type for corrupt input, I/O and setup failures.
// Expected outcomes (cache full, nothing to do) are return values, never exceptions.
#include <cstdint>
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

// Why a request was refused (Engine::add_request). The serving layer maps codes to HTTP
// statuses in one place; the message stays human-readable.
enum class request_errc : std::uint8_t {
  empty_prompt,
  token_out_of_vocab,
  context_length_exceeded,
  cache_too_small,
  invalid_sampling,
  invalid_parameter,
};

class request_error : public error {
 public:
  // where: "request" for the engine's own checks; "" keeps a nested message as it was.
  request_error(request_errc code, std::string_view what, std::string_view where = "request")
      : error(where, what), code_(code) {}
  request_errc code() const noexcept { return code_; }

 private:
  request_errc code_;
};

}  // namespace eexit
