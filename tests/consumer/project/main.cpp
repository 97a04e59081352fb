// Greedy-generates 8 tokens from BOS with the model given on the command line.
#include <eexit/eexit.hpp>
#include <iostream>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  eexit::CpuBackend be(1);
  eexit::LlamaModel<eexit::CpuBackend> model(be, eexit::load_model(argv[1]));
  using Cache = eexit::PagedCache<eexit::CpuBackend, 16>;
  Cache cache(be, model.config(), 8);
  eexit::Engine<eexit::FullDepth, Cache> engine(model, cache);
  eexit::GenerateRequest r;
  r.prompt = {model.config().bos_id};
  r.max_tokens = 8;
  engine.add_request(r);
  for (auto& c : engine.run_to_completion())
    for (auto t : c.tokens) std::cout << t << ' ';
  std::cout << '\n';
}
