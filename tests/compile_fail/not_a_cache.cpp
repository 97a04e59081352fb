// Must NOT compile: a cache type without truncate()/block_table() is rejected by the
// kv_cache concept when it is used as the engine's Cache parameter.
#include "eexit/eexit.hpp"

struct BrokenCache {
  using backend_type = eexit::CpuBackend;
  using seq_id = std::int64_t;
  bool reserve(seq_id, std::int32_t) { return true; }
  void release(seq_id) {}
  std::int32_t length(seq_id) const { return 0; }
  // truncate, free_tokens, capacity_tokens, block_size, blocks_*, block_table, view missing
};

eexit::Engine<eexit::FullDepth, BrokenCache>* engine = nullptr;
int main() { return engine != nullptr; }
