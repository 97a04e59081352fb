#pragma once
// A tiny flag parser shared by the samples: --name VALUE or --name=VALUE, typed getters
// with range checks, and a clear message (exit code 2) for anything wrong.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace eexit::samples {

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  // flags: names that take a value; switches: names that do not.
  Args(int argc, char** argv, std::set<std::string> flags, std::set<std::string> switches) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) throw usage_error("unexpected argument '" + a + "'");
      std::string name = a.substr(2), value;
      bool has_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      if (switches.count(name)) {
        if (has_value) throw usage_error("--" + name + " takes no value");
        values_[name].push_back("1");
        continue;
      }
      if (!flags.count(name)) throw usage_error("unknown flag --" + name);
      if (!has_value) {
        if (i + 1 >= argc) throw usage_error("--" + name + " needs a value");
        value = argv[++i];
      }
      values_[name].push_back(value);
    }
  }
  bool has(const std::string& n) const { return values_.count(n) > 0; }
  std::vector<std::string> all(const std::string& n) const {
    auto it = values_.find(n);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
  }
  std::string str(const std::string& n, std::string def = {}) const {
    auto it = values_.find(n);
    return it == values_.end() ? def : it->second.back();
  }
  long long integer(const std::string& n, long long def, long long lo, long long hi) const {
    if (!has(n)) return def;
    const std::string s = str(n);
    long long v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size())
      throw usage_error("--" + n + ": '" + s + "' is not an integer");
    if (v < lo || v > hi)
      throw usage_error("--" + n + ": " + s + " is outside [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]");
    return v;
  }
  double real(const std::string& n, double def, double lo, double hi) const {
    if (!has(n)) return def;
    return parse_real(n, str(n), lo, hi);
  }
  static double parse_real(const std::string& n, const std::string& s, double lo, double hi) {
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
      throw usage_error("--" + n + ": '" + s + "' is not a number");
    if (v < lo || v > hi)
      throw usage_error("--" + n + ": " + s + " is outside [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]");
    return v;
  }

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace eexit::samples
