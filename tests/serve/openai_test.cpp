// The OpenAI mapping without sockets: request checks, chat templates, response shapes,
// Prometheus text.
#include "eexit/serve/openai.hpp"

#include <doctest/doctest.h>

using namespace eexit;
using namespace eexit::serve;
using openai::json;

namespace {
openai::Limits limits(std::string_view policy = "full") {
  return openai::Limits{
      .model_name = std::string("m"), .context = 512, .server_policy = rule_from_name(policy)};
}
openai::ApiError error_of(const json& body, bool chat = false, std::string_view k = "full") {
  try {
    openai::parse_request(body, chat, limits(k));
  } catch (const openai::ApiError& e) {
    return e;
  }
  FAIL("no error for " << body.dump());
  return {};
}
}  // namespace

TEST_CASE("completions: fields map onto GenerateRequest") {
  auto r = openai::parse_request(
      json::parse(R"({"model":"m","prompt":"hi","max_tokens":7,"temperature":0.5,"top_p":0.9,
        "top_k":5,"min_p":0.1,"repetition_penalty":1.2,"presence_penalty":0.5,
        "frequency_penalty":-0.5,"seed":42,"stop":["a","b"],"n":1,"logprobs":2,"stream":true,
        "stream_options":{"include_usage":true},"user":"ignored"})"),
      false, limits());
  CHECK(*r.prompt_text == "hi");
  CHECK(*r.max_tokens == 7);
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(r.gen.sampling.temperature == doctest::Approx(0.5));
  CHECK(r.gen.sampling.top_k == 5);
  CHECK(r.gen.sampling.min_p == doctest::Approx(0.1));
  CHECK(r.gen.sampling.repetition_penalty == doctest::Approx(1.2));
  CHECK(*r.gen.sampling.seed == 42);
  CHECK(r.gen.stop == std::vector<std::string>{"a", "b"});
  CHECK(r.logprobs == 2);
  CHECK(r.gen.sampling.logprobs == 2);
  // Token-id prompts, and OpenAI's default temperature.
  auto t = openai::parse_request(json::parse(R"({"prompt":[1,2,3]})"), false, limits());
  CHECK(t.prompt_ids == std::vector<std::int32_t>{1, 2, 3});
  CHECK(t.gen.sampling.temperature == 1.0f);
}

TEST_CASE("bad fields: 4xx naming the field") {
  struct Case {
    const char* body;
    const char* param;
    int status;
  };
  const Case cases[] = {
      {R"({"prompt":"x","model":"other"})", "model", 404},
      {R"({"prompt":"x","temperature":-1})", "temperature", 400},
      {R"({"prompt":"x","temperature":"1"})", "temperature", 400},
      {R"({"prompt":"x","temperature":1e300})", "temperature", 400},
      {R"({"prompt":"x","max_tokens":0})", "max_tokens", 400},
      {R"({"prompt":"x","max_tokens":100000})", "max_tokens", 400},
      {R"({"prompt":"x","max_tokens":2.5})", "max_tokens", 400},
      {R"({"prompt":"x","top_p":0})", "top_p", 400},
      {R"({"prompt":"x","top_k":-2})", "top_k", 400},
      {R"({"prompt":"x","min_p":1.5})", "min_p", 400},
      {R"({"prompt":"x","repetition_penalty":0})", "repetition_penalty", 400},
      {R"({"prompt":"x","frequency_penalty":2.5})", "frequency_penalty", 400},
      {R"({"prompt":"x","n":3})", "n", 400},
      {R"({"prompt":"x","stop":["a","b","c","d","e"]})", "stop", 400},
      {R"({"prompt":"x","stop":[""]})", "stop", 400},
      {R"({"prompt":"x","stream":"yes"})", "stream", 400},
      {R"({"prompt":"x","logprobs":21})", "logprobs", 400},
      {R"({"prompt":"x","seed":18446744073709551615})", "seed", 400},
      {R"({"prompt":["a","b"]})", "prompt", 400},
      {R"({"prompt":{}})", "prompt", 400},
      {R"({"max_tokens":3})", "prompt", 400},
      {R"({"prompt":"x","early_exit":{"threshold":0.5}})", "early_exit.threshold", 400},
      {R"({"prompt":"x","early_exit":{"policy":"fastest"}})", "early_exit.policy", 400},
      {R"({"prompt":"x","early_exit":[]})", "early_exit", 400},
  };
  for (const auto& c : cases) {
    CAPTURE(c.body);
    auto e = error_of(json::parse(c.body));
    CHECK(e.status == c.status);
    CHECK(e.param == c.param);
    CHECK(e.type == "invalid_request_error");
  }
  CHECK(error_of(json::parse("[1]")).status == 400);
  CHECK(error_of(json::parse(R"({"messages":[]})"), true).param == "messages");
  CHECK(error_of(json::parse(R"({"messages":[{"role":"wizard","content":"x"}]})"), true).param ==
        "messages");
  CHECK(error_of(json::parse(R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})"),
                 true)
            .param == "top_logprobs");
  // The error body is OpenAI's shape, nulls included.
  auto body = openai::error_body(openai::make_error(400, "no", "", ""));
  CHECK(body["error"]["message"] == "no");
  CHECK(body["error"]["param"].is_null());
  CHECK(body["error"]["code"].is_null());
  CHECK(body["error"]["type"] == "invalid_request_error");
}

TEST_CASE("early_exit: the server's rule, a per-request threshold or full depth") {
  auto r = openai::parse_request(
      json::parse(R"({"prompt":"x","early_exit":{"policy":"split","threshold":0.25}})"), false,
      limits("split"));
  CHECK(*r.exit_threshold == doctest::Approx(0.25));
  auto f = openai::parse_request(json::parse(R"({"prompt":"x","early_exit":{"policy":"full"}})"),
                                 false, limits("split"));
  CHECK(*f.exit_threshold == full_depth_threshold);
  CHECK(error_of(json::parse(R"({"prompt":"x","early_exit":{"policy":"all-confident"}})"), false,
                 "split")
            .param == "early_exit.policy");
}

TEST_CASE("chat templates: detected from the Jinja text, formatted per family") {
  using openai::ChatStyle;
  CHECK(openai::detect_chat_style("{% for m in messages %}<|im_start|>{{m.role}}") ==
        ChatStyle::chatml);
  CHECK(openai::detect_chat_style("<|start_header_id|>' + message['role'] + '<|end_header_id|>") ==
        ChatStyle::llama3);
  CHECK(openai::detect_chat_style("{{ bos_token + '[INST] ' + content + ' [/INST]' }}") ==
        ChatStyle::llama2);
  CHECK(openai::detect_chat_style("{{ '<|user|>\n' + message['content'] + eos_token }}") ==
        ChatStyle::zephyr);
  CHECK(openai::detect_chat_style("") == ChatStyle::plain);
  const std::vector<openai::ChatMessage> ms = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
  CHECK(openai::format_chat(ChatStyle::chatml, ms) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK(openai::format_chat(ChatStyle::llama3, {{"user", "Hi"}}) ==
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(openai::format_chat(ChatStyle::llama2, ms) ==
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]");
  CHECK(openai::format_chat(ChatStyle::zephyr, {{"system", "S"}, {"user", "Hi"}}) ==
        "<|system|>\nS</s>\n<|user|>\nHi</s>\n<|assistant|>\n");
  CHECK(openai::format_chat(ChatStyle::plain, {{"user", "Hi"}}) == "Hi\n");
}

TEST_CASE("responses: usage, exit layers, logprobs; chunks; Prometheus text") {
  openai::ParsedRequest pr;
  pr.model = "m";
  pr.logprobs = 1;
  Completion c;
  c.tokens = {TokenEvent{5, 1, -0.5f, {{5, -0.5f}}}, TokenEvent{6, 5, -1.0f, {{7, -0.9f}}}};
  c.text = "ab";
  c.finish = finish_reason::length;
  openai::TokenTexts tt{[](int id) { return id == 6 ? std::string("\xff") : std::string("t"); }};
  auto j = openai::response_body(pr, "cmpl-1", 1, c, 3, tt);
  CHECK(j["usage"]["prompt_tokens"] == 3);
  CHECK(j["usage"]["completion_tokens"] == 2);
  CHECK(j["choices"][0]["exit_layers"] == json::array({1, 5}));
  CHECK(j["choices"][0]["finish_reason"] == "length");
  CHECK(j["choices"][0]["logprobs"]["token_logprobs"].size() == 2);
  CHECK_NOTHROW(openai::dump(j));  // the 0xff token becomes U+FFFD
  pr.chat = true;
  auto chunk = openai::chunk_body(pr, "x", 1, c.tokens, "ab", std::nullopt, true, 0, tt);
  CHECK(chunk["object"] == "chat.completion.chunk");
  CHECK(chunk["choices"][0]["delta"]["role"] == "assistant");
  CHECK(chunk["choices"][0]["logprobs"]["content"].size() == 2);
  ServiceMetrics m;
  m.kv_blocks_used = 3;
  m.exit_layers = {1, 3, 5};
  m.exit_histogram = {2, 0, 1};
  m.step_time_counts[0] = 4;
  const auto text = openai::prometheus_text(m);
  CHECK(text.find("eexit_kv_blocks_used 3\n") != std::string::npos);
  CHECK(text.find("eexit_exit_layer_bucket{le=\"3\"} 2\n") != std::string::npos);
  CHECK(text.find("eexit_exit_layer_count 3\n") != std::string::npos);
  CHECK(text.find("eexit_step_seconds_count 4\n") != std::string::npos);
  CHECK(text.find("eexit_requests_total{outcome=\"abort\"} 0\n") != std::string::npos);
}

TEST_CASE("responses and /metrics carry self-speculation's figures") {
  openai::ParsedRequest pr;
  pr.model = "m";
  Completion c;
  c.tokens = {TokenEvent{5, 5, 0.0f, {}}, TokenEvent{6, 5, 0.0f, {}}, TokenEvent{7, 5, 0.0f, {}}};
  c.finish = finish_reason::length;
  openai::TokenTexts tt{[](int) { return std::string("t"); }};
  CHECK_FALSE(openai::response_body(pr, "cmpl-1", 1, c, 3, tt).contains("speculation"));
  c.stats.verify_passes = 1;
  c.stats.draft_tokens = 3;
  c.stats.accepted_drafts = 1;
  c.stats.speculative_tokens = 2;
  const auto j = openai::response_body(pr, "cmpl-1", 1, c, 3, tt);
  CHECK(j["speculation"]["draft_tokens"] == 3);
  CHECK(j["speculation"]["accepted_drafts"] == 1);
  CHECK(j["speculation"]["tokens_per_verify"] == 2.0);
  ServiceMetrics m;
  m.verify_passes = 4;
  m.accepted_drafts = 9;
  const auto text = openai::prometheus_text(m);
  CHECK(text.find("eexit_verify_passes_total 4\n") != std::string::npos);
  CHECK(text.find("eexit_accepted_drafts_total 9\n") != std::string::npos);
}
