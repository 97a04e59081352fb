// Must compile: the control for the compile-fail tests, so that they fail for the
// concept and not for a missing include or flag.
#include "eexit/eexit.hpp"

using Cache = eexit::PagedCache<eexit::CpuBackend, 16>;
eexit::Engine<eexit::FullDepth, Cache>* engine = nullptr;
int main() { return engine != nullptr; }
