#pragma once
// Where the samples find the embedded model when no --model is given: relative to their
// own executable, so no build machine path is compiled in. Installed, the model sits in
// <prefix>/share/eexit/models beside <prefix>/bin; in a build tree, the source tree's
// models/ is a few folders above the executable (build/<preset>/samples/<name>/).
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "eexit/core/error.hpp"

namespace eexit::samples {

inline constexpr const char* kEmbeddedModel = "eexit-shakespeare";

// The search list as help text shows it; <exe> is the executable's folder. `wrap` goes
// between its two entries (a line break and indent in help text).
inline std::string default_model_help(std::string_view wrap = " ") {
  return std::string("<exe>/../share/eexit/models/") + kEmbeddedModel + "," + std::string(wrap) +
         "else models/" + kEmbeddedModel + " in a folder above <exe>";
}

inline std::filesystem::path executable_dir(const char* argv0) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);  // Linux; argv[0] elsewhere
  if (ec || exe.empty()) exe = fs::absolute(argv0, ec);
  return exe.parent_path();
}

// The first of: <exe dir>/../share/eexit/models/<model>, then <dir>/models/<model> for the
// executable's folder and each folder above it. eexit::error("--model") when none exists.
inline std::string default_model(const char* argv0) {
  namespace fs = std::filesystem;
  const fs::path dir = executable_dir(argv0);
  std::error_code ec;
  const fs::path installed = dir.parent_path() / "share" / "eexit" / "models" / kEmbeddedModel;
  if (fs::is_directory(installed, ec)) return installed.string();
  for (fs::path d = dir; !d.empty(); d = d.parent_path()) {
    if (fs::is_directory(d / "models" / kEmbeddedModel, ec))
      return (d / "models" / kEmbeddedModel).string();
    if (d == d.parent_path()) break;
  }
  throw error("--model", "no default model found (looked for " + default_model_help() +
                             ", <exe> = " + dir.string() + "); pass --model PATH");
}

}  // namespace eexit::samples
