// libFuzzer target: an HTTP request body -> the OpenAI request mapping (parse_request), as
// the server runs it for /v1/completions and /v1/chat/completions. The first byte picks the
// endpoint and the server's policy; the rest is the body. Acceptable: a JSON parse error
// (the server answers 400), or openai::ApiError (an OpenAI-shaped 4xx). Any other exception
// escaping (e.g. nlohmann's type_error) means a request the server cannot answer.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "eexit/serve/openai.hpp"  // if serve/ gets an umbrella header, include that instead

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  namespace oa = eexit::serve::openai;
  const bool chat = data[0] & 1;
  oa::Limits lim;
  lim.model_name = "eexit-shakespeare";
  lim.context = 256;
  lim.server_policy = (data[0] & 2) ? eexit::AnyRule{eexit::ExitWhenAllConfident{}}
                                    : eexit::AnyRule{eexit::NeverExit{}};
  nlohmann::json body;
  try {
    body = nlohmann::json::parse(data + 1, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  try {
    (void)oa::parse_request(body, chat, lim);
  } catch (const oa::ApiError&) {
  }
  return 0;
}
