// The OpenAI mapping without sockets: request checks, chat templates, response shapes,
// Prometheus text.
#include "eexit/serve/openai.hpp"

#include <doctest/doctest.h>

#include "eexit/serve/metrics.hpp"

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

TEST_CASE("responses: usage, exit layers, logprobs; chunks; Prometheus text") {
  openai::ParsedRequest pr;
  pr.model = "m";
  pr.logprobs = 1;
  // The completion as the server folds it: the engine's accumulator over a step's output.
  RequestOutput step;
  step.tokens = {TokenEvent{5, 1, -0.5f, {{5, -0.5f}}}, TokenEvent{6, 5, -1.0f, {{7, -0.9f}}}};
  step.text = "ab";
  step.finish = finish_reason::length;
  step.stats.cached_tokens = 2;
  CompletionAccumulator acc;
  const Completion c = acc.add(step);
  openai::TokenTexts tt{[](int id) { return id == 6 ? std::string("\xff") : std::string("t"); }};
  auto j = openai::response_body(pr, "cmpl-1", 1, c, 3, tt);
  CHECK(j["usage"]["prompt_tokens"] == 3);
  CHECK(j["usage"]["completion_tokens"] == 2);
  CHECK(j["usage"]["prompt_tokens_details"]["cached_tokens"] == 2);
  CHECK(j["choices"][0]["exit_layers"] == json::array({1, 5}));
  CHECK(j["choices"][0]["finish_reason"] == "length");
  CHECK(j["choices"][0]["logprobs"]["token_logprobs"].size() == 2);
  CHECK_NOTHROW(openai::dump(j));  // the 0xff token becomes U+FFFD
  pr.chat = true;
  auto chunk = openai::chunk_body(pr, "x", 1, step.tokens, "ab", std::nullopt, true, 0, tt);
  CHECK(chunk["object"] == "chat.completion.chunk");
  CHECK(chunk["choices"][0]["delta"]["role"] == "assistant");
  CHECK(chunk["choices"][0]["logprobs"]["content"].size() == 2);
  ServiceMetrics m;
  m.kv_blocks_used = 3;
  m.exit_layers = {1, 3, 5};
  m.exit_histogram = {2, 0, 1};
  m.step_time_counts[0] = 4;
  m.prompt_tokens = 10;
  m.prefix_cached_tokens = 30;
  m.kv_blocks_cached = 2;
  const auto text = prometheus_text(m);
  CHECK(text.find("eexit_prefix_cache_hit_tokens_total 30\n") != std::string::npos);
  CHECK(text.find("eexit_prefix_cache_hit_rate 0.75\n") != std::string::npos);
  CHECK(text.find("eexit_kv_blocks_cached 2\n") != std::string::npos);
  CHECK(text.find("eexit_kv_blocks_used 3\n") != std::string::npos);
  CHECK(text.find("eexit_exit_layer_bucket{le=\"3\"} 2\n") != std::string::npos);
  CHECK(text.find("eexit_exit_layer_count 3\n") != std::string::npos);
  CHECK(text.find("eexit_step_seconds_count 4\n") != std::string::npos);
  CHECK(text.find("eexit_requests_total{outcome=\"abort\"} 0\n") != std::string::npos);
}

// Every field of the request schema, set to a value of each JSON type: a value of a type
// the field does not take is a 400 naming the field (never another exception, which the
// server would turn into a dropped connection); one of a type it takes is accepted or a
// 400 for its range.
TEST_CASE("wrong-typed values in every field: 400 in OpenAI's shape") {
  using Types = std::vector<json::value_t>;
  const auto num = {json::value_t::number_integer, json::value_t::number_unsigned,
                    json::value_t::number_float};
  const Types number(num.begin(), num.end());
  struct Field {
    const char* pointer;  // JSON pointer into the base body
    Types takes;          // the JSON types the field accepts (null: absent, where allowed)
    bool nullable = true;
  };
  const auto b = json::value_t::boolean, s = json::value_t::string, a = json::value_t::array,
             o = json::value_t::object;
  const Field common[] = {
      {"/model", {s}},
      {"/stream", {b}},
      {"/stream_options", {o}},
      {"/stream_options/include_usage", {b}},
      {"/max_tokens", number},
      {"/max_completion_tokens", number},
      {"/temperature", number},
      {"/top_p", number},
      {"/top_k", number},
      {"/min_p", number},
      {"/repetition_penalty", number},
      {"/presence_penalty", number},
      {"/frequency_penalty", number},
      {"/seed", number},
      {"/n", number},
      {"/best_of", number},
      {"/echo", {b}},
      {"/stop", {s, a}},
      {"/stop/0", {s}, false},
      {"/ignore_eos", {b}},
      {"/early_exit", {o}},
      {"/early_exit/policy", {s}},
      {"/early_exit/threshold", number},
  };
  const Field completions_only[] = {{"/prompt", {s, a}, false}, {"/logprobs", number}};
  const Field chat_only[] = {
      {"/messages", {a}, false},
      {"/messages/0", {o}, false},
      {"/messages/0/role", {s}, false},
      {"/messages/0/content", {s, a}},
      {"/messages/0/content/0", {o}, false},
      {"/messages/0/content/0/type", {s}, false},
      {"/messages/0/content/0/text", {s}, false},
      {"/logprobs", {b}},
      {"/top_logprobs", number},
  };
  const json values[] = {nullptr,
                         true,
                         false,
                         0,
                         -1,
                         1.5,
                         1e300,
                         "",
                         "x",
                         "1",
                         json::array(),
                         json::array({1}),
                         json::array({"x"}),
                         json::object(),
                         json::array({json::object()}),
                         json{{"type", 5}}};
  auto walk = [&](bool chat, const Field* begin, const Field* end) {
    const json base = chat ? json::parse(R"({"messages":[{"role":"user","content":
                                 [{"type":"text","text":"x"}]}],"stop":["a"],
                                 "stream_options":{},"early_exit":{}})")
                           : json::parse(R"({"prompt":"x","stop":["a"],"stream_options":{},
                                 "early_exit":{}})");
    for (const Field* f = begin; f != end; ++f)
      for (const auto& v : values) {
        json body = base;
        body[json::json_pointer(f->pointer)] = v;
        CAPTURE(body.dump());
        const bool takes = (v.is_null() && f->nullable) ||
                           std::find(f->takes.begin(), f->takes.end(), v.type()) != f->takes.end();
        try {
          openai::parse_request(body, chat, limits("split"));
          CHECK_MESSAGE(takes, "a value of the wrong type was accepted");
        } catch (const openai::ApiError& e) {
          // A right-typed value may still be out of range (400) or name another model (404).
          CHECK((e.status == 400 || (takes && e.status == 404)));
          CHECK(e.type == "invalid_request_error");
          CHECK_FALSE(e.param.empty());
        } catch (const std::exception& e) {
          FAIL("not an OpenAI error: " << e.what());
        }
      }
  };
  walk(false, std::begin(common), std::end(common));
  walk(false, std::begin(completions_only), std::end(completions_only));
  walk(true, std::begin(common), std::end(common));
  walk(true, std::begin(chat_only), std::end(chat_only));
  // The case that used to drop the connection: a content part whose type is not a string.
  for (const char* part : {R"({"type":5})", R"({"type":null})", R"({"type":[]})"}) {
    const auto body =
        json::parse(std::string(R"({"messages":[{"role":"user","content":[)") + part + "]}]}");
    CHECK(error_of(body, true).param == "messages");
  }
}

TEST_CASE("a request cut short says so: finish_reason abort / error, never length") {
  openai::ParsedRequest pr;
  pr.model = "m";
  const std::vector<TokenEvent> toks = {TokenEvent{5, 5, 0.0f, {}}};
  Completion c;
  c.tokens = {5};
  c.exit_layers = {5};
  openai::TokenTexts tt{[](int) { return std::string("t"); }};
  for (auto [f, name] :
       {std::pair{finish_reason::abort, "abort"}, std::pair{finish_reason::error, "error"},
        std::pair{finish_reason::length, "length"}, std::pair{finish_reason::stop, "stop"}}) {
    c.finish = f;
    CHECK(openai::response_body(pr, "x", 1, c, 1, tt)["choices"][0]["finish_reason"] == name);
    CHECK(openai::chunk_body(pr, "x", 1, toks, "t", f, false, 0,
                             tt)["choices"][0]["finish_reason"] == name);
  }
}

TEST_CASE("serve error codes map onto HTTP statuses in one place") {
  CHECK(openai::api_error_of(errc::rejected, "bad prompt").status == 400);
  CHECK(openai::api_error_of(errc::rejected, "bad prompt").message == "bad prompt");
  CHECK(openai::api_error_of(errc::queue_full, "").status == 429);
  CHECK(openai::api_error_of(errc::queue_full, "").type == "rate_limit_error");
  CHECK(openai::api_error_of(errc::stopped, "").status == 503);
  CHECK(openai::api_error_of(errc::engine_error, "").status == 500);
  CHECK(openai::api_error_of(errc::engine_fault, "").code == "engine_error");
  // The engine's refusals, by code: all 400, the prompt's field named where it is at fault.
  using E = request_errc;
  CHECK(openai::api_error_of(request_error(E::context_length_exceeded, "long"), false).code ==
        "context_length_exceeded");
  CHECK(openai::api_error_of(request_error(E::context_length_exceeded, "long"), true).param ==
        "messages");
  CHECK(openai::api_error_of(request_error(E::token_out_of_vocab, "id"), false).param == "prompt");
  CHECK(openai::api_error_of(request_error(E::cache_too_small, "kv"), false).code ==
        "kv_cache_too_small");
  for (auto c : {E::empty_prompt, E::token_out_of_vocab, E::context_length_exceeded,
                 E::cache_too_small, E::invalid_sampling, E::invalid_parameter}) {
    const auto e = openai::api_error_of(request_error(c, "x"), false);
    CHECK(e.status == 400);
    CHECK(e.type == "invalid_request_error");
  }
}

TEST_CASE("responses and /metrics carry self-speculation's figures") {
  openai::ParsedRequest pr;
  pr.model = "m";
  Completion c;
  c.tokens = {5, 6, 7};
  c.exit_layers = {5, 5, 5};
  c.logprobs = {0.0f, 0.0f, 0.0f};
  c.top_logprobs.resize(3);
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
  const auto text = prometheus_text(m);
  CHECK(text.find("eexit_verify_passes_total 4\n") != std::string::npos);
  CHECK(text.find("eexit_accepted_drafts_total 9\n") != std::string::npos);
}
