#pragma once
// The command line of the model benchmarks (decode, ops, ee, spec): one loop, one set of
// messages. Each tool keeps its own flags and usage text.
#include <sstream>
#include <string>
#include <vector>

namespace eexit::bench {

// usage(why): prints why and the tool's usage, exits 2.
using Usage = void (*)(const char* why);

// Walks argv[1..]: -h / --help is usage(""); every other argument goes to
// flag(a, value), where value() takes the next argument as a's ("missing value for a" when
// there is none) and which returns false for a flag it does not know ("unknown option a");
// an argument not starting with '-' that flag does not take is the model (once:
// "unexpected argument a" for a second one).
template <class Flag>
void parse_args(int argc, char** argv, Usage usage, std::string& model, Flag&& flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "-h" || a == "--help")
      usage("");
    else if (flag(a, value))
      continue;
    else if (!a.empty() && a[0] == '-')
      usage(("unknown option " + a).c_str());
    else if (!model.empty())
      usage(("unexpected argument " + a).c_str());
    else
      model = a;
  }
}

// "a,b,c" -> {"a", "b", "c"}.
inline std::vector<std::string> split(const std::string& s, char sep = ',') {
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
