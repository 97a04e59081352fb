#pragma once
// The error codes of the serving layer (a boost::system category, so they travel through
// Asio completion handlers as error_code). How they become HTTP statuses: serve/openai.hpp
// (api_error_of), the one place.
#include <boost/system/error_code.hpp>
#include <string>
#include <type_traits>
#include <utility>

namespace eexit::serve {

using error_code = boost::system::error_code;

enum class errc {
  rejected = 1,  // the engine refused the request (RequestOutput::error says why)
  queue_full,    // more requests in flight than ServiceOptions::max_pending
  engine_error,  // the step that ran it failed (finish_reason::error)
  engine_fault,  // an exception on the engine thread outside step()
  stopped,       // the service stopped before the request finished
};

namespace detail {
class error_category_impl : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "eexit.serve"; }
  std::string message(int ev) const override {
    switch (errc(ev)) {
      case errc::rejected:
        return "request rejected";
      case errc::queue_full:
        return "too many requests in flight";
      case errc::engine_error:
        return "the engine failed the request";
      case errc::engine_fault:
        return "fault on the engine thread";
      case errc::stopped:
        return "the engine service stopped";
    }
    return "unknown eexit.serve error";
  }
};
}  // namespace detail

inline const boost::system::error_category& error_category() noexcept {
  static const detail::error_category_impl cat;
  return cat;
}
inline error_code make_error_code(errc e) noexcept {
  return {int(e), error_category()};
}

}  // namespace eexit::serve

template <>
struct boost::system::is_error_code_enum<eexit::serve::errc> : std::true_type {};
