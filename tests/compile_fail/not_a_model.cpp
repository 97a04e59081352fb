// Must NOT compile: a model type without the layer-by-layer interface (forward_layer,
// exit_logits, kv_from_hidden, backend(), ...) is rejected by the exit_model concept when
// it is used as the engine's Model parameter.
#include "eexit/eexit.hpp"

struct NotAModel {
  using backend_type = eexit::CpuBackend;
  struct Workspace {};
  const eexit::ModelConfig& config() const { return cfg; }
  int n_exits() const { return 1; }
  eexit::ModelConfig cfg;
  // backend, exit_layers, has_classifier, make_workspace, embed, forward_layer, ... missing
};

using Cache = eexit::PagedCache<eexit::CpuBackend, 16>;
eexit::Engine<eexit::FullDepth, Cache, NotAModel>* engine = nullptr;
int main() {
  return engine != nullptr;
}
