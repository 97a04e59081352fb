#pragma once
// What every benchmark here reports beside wall time: process CPU time (which time spent
// descheduled by other load does not inflate) and the machine's load average.
#include <ctime>
#include <fstream>
#include <string>

namespace eexit::bench {

inline double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// "1.23 0.98 0.70": /proc/loadavg's 1, 5 and 15 minute averages.
inline std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace eexit::bench
