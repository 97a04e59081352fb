#pragma once
// The command line of the model benchmarks (decode, ops, ee, spec): one loop, one set of
// messages. Each tool keeps its own flags and usage text.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace eexit::bench {

// The tool's usage lines (parse_args sets them); usage(why) prints why and them, exits 2.
inline std::string& usage_text() {
  static std::string text;
  return text;
}
[[noreturn]] inline void usage(const std::string& why) {
  std::fprintf(stderr, "%s\nusage: %s", why.c_str(), usage_text().c_str());
  std::exit(2);
}
// Takes the next argument as the current flag's value.
using Value = std::function<std::string()>;

// One flag of a tool: its name and what it does with its value (value() takes it; a flag
// without a value does not call it).
struct Flag {
  std::string name;
  std::function<void(const Value& value)> apply;
};

std::vector<std::string> split(const std::string& s, char sep = ',');
template <class T>
std::vector<T> parse_list(const std::string& s);

// A flag whose value goes into v, parsed by v's type; *given (if given) becomes true when
// the flag is.
template <class T>
Flag opt(std::string name, T& v, bool* given = nullptr) {
  return {std::move(name), [&v, given](const Value& value) {
            if constexpr (std::is_same_v<T, std::string>)
              v = value();
            else if constexpr (std::is_same_v<T, unsigned>)
              v = unsigned(std::stoul(value()));
            else if constexpr (std::is_same_v<T, int>)
              v = std::stoi(value());
            else if constexpr (std::is_same_v<T, std::vector<std::string>>)
              v = split(value());
            else
              v = parse_list<typename T::value_type>(value());
            if (given) *given = true;
          }};
}
// A flag without a value: sets v to to.
inline Flag set(std::string name, bool& v, bool to = true) {
  return {std::move(name), [&v, to](const Value&) { v = to; }};
}

// Walks argv[1..]: -h / --help is usage(""); a flag of flags applies (its value() takes
// the next argument: "missing value for X" when there is none); any other argument
// starting with '-' is "unknown option X"; the rest is the model (once: "unexpected
// argument X" for a second one).
inline void parse_args(int argc, char** argv, const char* usage_lines, std::string& model,
                       const std::vector<Flag>& flags) {
  usage_text() = usage_lines;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const Value value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value for " + a);
      return argv[++i];
    };
    const auto f =
        std::find_if(flags.begin(), flags.end(), [&](const Flag& g) { return g.name == a; });
    if (a == "-h" || a == "--help")
      usage("");
    else if (f != flags.end())
      f->apply(value);
    else if (!a.empty() && a[0] == '-')
      usage("unknown option " + a);
    else if (!model.empty())
      usage("unexpected argument " + a);
    else
      model = a;
  }
}

// "a,b,c" -> {"a", "b", "c"}.
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, sep);) v.push_back(t);
  return v;
}

// "1,4,16" -> {1, 4, 16}; "0.3,0.9" -> {0.3f, 0.9f}.
template <class T>
std::vector<T> parse_list(const std::string& s) {
  std::vector<T> v;
  for (const std::string& t : split(s)) v.push_back(T(std::stod(t)));
  return v;
}

}  // namespace eexit::bench
