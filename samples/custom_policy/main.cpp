// Runs the embedded early-exit model with a custom policy (two_in_a_row.hpp) next to the
// stock AllConfident, and prints what each did.
#include <iostream>

#include "../common/default_model.hpp"
#include "two_in_a_row.hpp"

template <class Policy>
void generate(eexit::LlamaModel<eexit::CpuBackend>& model, eexit::CpuBackend& be,
              const eexit::Tokenizer& tok, Policy policy, const std::string& prompt) {
  using Cache = eexit::PagedCache<eexit::CpuBackend, 16>;
  Cache cache(be, model.config(), 64);
  eexit::Engine<Policy, Cache> engine(model, cache, policy);
  engine.set_tokenizer(&tok);
  eexit::GenerateRequest r;
  for (int id : tok.encode(prompt)) r.prompt.push_back(id);
  r.max_tokens = 80;
  engine.add_request(r);
  const auto out = engine.run_to_completion().at(0);
  std::cout << "== " << policy.name() << "\n" << prompt << out.text << "\nexit layers:";
  for (auto l : out.exit_layers) std::cout << ' ' << l;
  const auto& st = engine.stats();
  std::cout << "\nlayers computed: " << st.decode_layers_computed << " of " << st.decode_layers_full
            << "\n\n";
}

int main(int argc, char** argv) {
  try {
    const std::string path = argc > 1 ? argv[1] : eexit::samples::default_model(argv[0]);
    eexit::CpuBackend be;
    eexit::LlamaModel<eexit::CpuBackend> model(be, eexit::load_model(path));
    const auto tok = eexit::Tokenizer::load(path);
    const std::string prompt = "JULIET:\n";
    generate(model, be, tok, TwoInARow(0.3f), prompt);
    eexit::AllConfident stock;
    stock.thresholds.values = {0.3f};
    generate(model, be, tok, stock, prompt);
  } catch (const std::exception& e) {
    std::cerr << "custom_policy: " << e.what() << "\n";
    return 1;
  }
}
