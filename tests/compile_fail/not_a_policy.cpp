// Must NOT compile: a policy without evaluates_exits() does not model eexit::policy.
#include "eexit/eexit.hpp"

struct NoExitsPolicy {
  std::string_view name() const { return "broken"; }
};

using Cache = eexit::PagedCache<eexit::CpuBackend, 16>;
eexit::Engine<NoExitsPolicy, Cache>* engine = nullptr;
int main() { return engine != nullptr; }
