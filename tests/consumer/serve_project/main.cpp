// Maps an OpenAI completion request with a per-request early-exit threshold on a server
// that runs policy "split", and prints what the engine request gets.
#include <eexit/serve/openai.hpp>
#include <iostream>

int main() {
  eexit::serve::openai::Limits lim;
  lim.model_name = "m";
  lim.server_policy = eexit::rule_from_name("split");
  const auto r = eexit::serve::openai::parse_request(
      nlohmann::json::parse(R"({"prompt":"x","early_exit":{"policy":"split","threshold":0.25}})"),
      false, lim);
  std::cout << "policy " << lim.server_policy.name() << " threshold " << r.gen.exit_threshold
            << '\n';
}
