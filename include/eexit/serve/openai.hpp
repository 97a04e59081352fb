#pragma once
// The OpenAI API mapping, without sockets: request bodies -> GenerateRequest (every field
// type- and range-checked, errors OpenAI-shaped), serve errors -> HTTP statuses, responses
// and SSE chunks. Chat templates are text/chat_template.hpp, the Prometheus text
// serve/metrics.hpp. The HTTP server (serve/http_server.hpp) glues it to the
// EngineService; tests call it directly.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/engine/completion.hpp"
#include "eexit/engine/request.hpp"
#include "eexit/policy/registry.hpp"
#include "eexit/serve/async_generate.hpp"
#include "eexit/serve/errors.hpp"
#include "eexit/text/chat_template.hpp"

namespace eexit::serve::openai {

using json = nlohmann::json;

// Dumps never throw on bytes that are not UTF-8 (a token's raw bytes can be half a
// character): they become U+FFFD.
inline std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---- errors -------------------------------------------------------------------------
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;  // empty = null
  std::string code;   // empty = null
  std::string type = "invalid_request_error";
};

inline json error_body(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

inline ApiError make_error(int status, std::string message, std::string param = {},
                           std::string code = {}, std::string type = "invalid_request_error") {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  e.type = std::move(type);
  return e;
}

[[noreturn]] inline void bad(std::string param, std::string message, int status = 400,
                             std::string code = {}) {
  throw make_error(status, std::move(message), std::move(param), std::move(code));
}

// A request that the service ended with `ec` (serve/errors.hpp) as an HTTP error: the one
// place where serve error codes become statuses. `message`: what the engine said, if any.
inline ApiError api_error_of(const error_code& ec, const std::string& message) {
  ApiError e;
  e.message = message.empty() ? ec.message() : message;
  if (ec == errc::rejected) {
    e.status = 400;
  } else if (ec == errc::queue_full) {
    e.status = 429;
    e.code = "rate_limit_exceeded";
    e.type = "rate_limit_error";
  } else if (ec == errc::stopped) {
    e.status = 503;
    e.code = "shutting_down";
    e.type = "server_error";
  } else {
    e.status = 500;
    e.type = "server_error";
    e.code = "engine_error";
  }
  return e;
}

// The engine's refusal of a request (eexit::request_error, from Engine::validate) as an
// HTTP error: beside api_error_of(error_code), the one place where codes become statuses.
// Every code is the client's doing, and retrying the same request cannot help: 400.
inline ApiError api_error_of(const request_error& e, bool chat) {
  const std::string prompt = chat ? "messages" : "prompt";
  switch (e.code()) {
    case request_errc::context_length_exceeded:
      return make_error(400, e.what(), prompt, "context_length_exceeded");
    case request_errc::cache_too_small:
      return make_error(400, e.what(), prompt, "kv_cache_too_small");
    case request_errc::empty_prompt:
    case request_errc::token_out_of_vocab:
      return make_error(400, e.what(), prompt);
    case request_errc::invalid_sampling:
    case request_errc::invalid_parameter:
      break;
  }
  return make_error(400, e.what());
}

// ---- requests -----------------------------------------------------------------------
struct Limits {
  std::string model_name;
  std::int32_t context = 512;  // model max_seq_len
  AnyRule server_policy{};     // the server's batch rule (--policy); default full
};

struct ParsedRequest {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  std::string model;
  std::optional<std::string> prompt_text;  // completions: text; chat: messages formatted
  std::vector<std::int32_t> prompt_ids;    // completions given as token ids
  std::vector<ChatMessage> messages;
  std::optional<std::int32_t> max_tokens;  // none: completions 16, chat the context's rest
  GenerateRequest gen;                     // all but prompt and max_tokens
  int logprobs = -1;                       // -1 none; else alternatives per token
  std::optional<float> exit_threshold;     // per-request (early_exit)
  std::string early_exit_policy;           // as asked
};

namespace detail {
inline const json* field(const json& b, const char* k) {
  auto it = b.find(k);
  return it == b.end() || it->is_null() ? nullptr : &*it;
}
inline double number(const json& v, const char* k, double lo, double hi) {
  if (!v.is_number()) bad(k, std::string(k) + " must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    std::ostringstream os;
    os << k << " must be a finite number in [" << lo << ", " << hi << "]";
    bad(k, os.str());
  }
  return x;
}
inline std::int64_t integer(const json& v, const char* k, std::int64_t lo, std::int64_t hi) {
  std::int64_t x = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(hi))
      bad(k, std::string(k) + " must be an integer in [" + std::to_string(lo) + ", " +
                 std::to_string(hi) + "]");
    x = v.get<std::int64_t>();
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
             v.get<double>() == std::floor(v.get<double>()) && std::abs(v.get<double>()) < 9e15) {
    x = std::int64_t(v.get<double>());
  } else {
    bad(k, std::string(k) + " must be an integer");
  }
  if (x < lo || x > hi)
    bad(k, std::string(k) + " must be an integer in [" + std::to_string(lo) + ", " +
               std::to_string(hi) + "]");
  return x;
}
inline bool boolean(const json& v, const char* k) {
  if (!v.is_boolean()) bad(k, std::string(k) + " must be a boolean");
  return v.get<bool>();
}
inline std::string text_content(const json& c, const char* k) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {  // content parts: only text is understood
    std::string s;
    for (const auto& p : c) {
      // Every lookup checks the type first: json::value() and get() throw type_error on a
      // mismatch, which is the client's error, not ours.
      if (!p.is_object()) bad(k, "each content part must be an object");
      auto type = p.find("type"), text = p.find("text");
      if (type == p.end() || !type->is_string()) bad(k, "a content part's type must be a string");
      if (*type != "text" || text == p.end() || !text->is_string())
        bad(k, "only text content parts are supported");
      s += text->get<std::string>();
    }
    return s;
  }
  bad(k, "content must be a string or a list of text parts");
}
}  // namespace detail

// Parses and checks a /v1/completions (chat = false) or /v1/chat/completions body.
inline ParsedRequest parse_request(const json& body, bool chat, const Limits& lim) {
  using namespace detail;
  if (!body.is_object()) bad("", "the request body must be a JSON object");
  ParsedRequest r;
  r.chat = chat;
  if (auto* m = field(body, "model")) {
    if (!m->is_string()) bad("model", "model must be a string");
    r.model = m->get<std::string>();
    if (r.model != lim.model_name)
      bad("model",
          "The model '" + r.model + "' does not exist; this server serves '" + lim.model_name + "'",
          404, "model_not_found");
  } else {
    r.model = lim.model_name;
  }
  if (chat) {
    auto* ms = field(body, "messages");
    if (!ms || !ms->is_array() || ms->empty()) bad("messages", "messages must be a non-empty list");
    for (const auto& m : *ms) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        bad("messages", "each message must be an object with a string role");
      const auto role = m["role"].get<std::string>();
      if (role != "system" && role != "user" && role != "assistant" && role != "developer")
        bad("messages", "unsupported role '" + role + "'");
      std::string content;
      if (auto* c = field(m, "content")) content = text_content(*c, "messages");
      r.messages.push_back({role == "developer" ? "system" : role, std::move(content)});
    }
  } else {
    auto* p = field(body, "prompt");
    if (!p) bad("prompt", "prompt is required");
    auto ids = [&](const json& a) {
      for (const auto& t : a)
        r.prompt_ids.push_back(std::int32_t(integer(t, "prompt", 0, 1 << 30)));
    };
    if (p->is_string()) {
      r.prompt_text = p->get<std::string>();
    } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
      r.prompt_text = (*p)[0].get<std::string>();
    } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
      ids(*p);
    } else if (p->is_array() && p->size() == 1 && (*p)[0].is_array()) {
      ids((*p)[0]);
    } else if (p->is_array() && p->size() > 1) {
      bad("prompt", "only one prompt per request is supported");
    } else {
      bad("prompt", "prompt must be a string, a list of one string, or a list of token ids");
    }
  }
  if (auto* v = field(body, "stream")) r.stream = boolean(*v, "stream");
  if (auto* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "stream_options must be an object");
    if (auto* iu = field(*so, "include_usage")) r.include_usage = boolean(*iu, "include_usage");
  }
  for (const char* k : {"max_tokens", "max_completion_tokens"})
    if (auto* v = field(body, k)) r.max_tokens = std::int32_t(integer(*v, k, 1, lim.context));
  auto& sp = r.gen.sampling;
  sp.temperature = 1.0f;  // OpenAI's default
  if (auto* v = field(body, "temperature")) sp.temperature = float(number(*v, "temperature", 0, 2));
  if (auto* v = field(body, "top_p")) {
    sp.top_p = float(number(*v, "top_p", 0, 1));
    if (sp.top_p <= 0.0f) bad("top_p", "top_p must be in (0, 1]");
  }
  if (auto* v = field(body, "top_k")) {
    const auto k = integer(*v, "top_k", -1, 1 << 24);
    sp.top_k = k < 0 ? 0 : int(k);
  }
  if (auto* v = field(body, "min_p")) sp.min_p = float(number(*v, "min_p", 0, 1));
  if (auto* v = field(body, "repetition_penalty")) {
    sp.repetition_penalty = float(number(*v, "repetition_penalty", 0, 100));
    if (sp.repetition_penalty <= 0.0f) bad("repetition_penalty", "repetition_penalty must be > 0");
  }
  if (auto* v = field(body, "presence_penalty"))
    sp.presence_penalty = float(number(*v, "presence_penalty", -2, 2));
  if (auto* v = field(body, "frequency_penalty"))
    sp.frequency_penalty = float(number(*v, "frequency_penalty", -2, 2));
  if (auto* v = field(body, "seed"))
    sp.seed = std::uint64_t(integer(*v, "seed", std::numeric_limits<std::int64_t>::min(),
                                    std::numeric_limits<std::int64_t>::max()));
  if (auto* v = field(body, "n"))
    if (integer(*v, "n", 1, 1) != 1) bad("n", "n must be 1");
  if (auto* v = field(body, "best_of"))
    if (integer(*v, "best_of", 1, 1) != 1) bad("best_of", "best_of must be 1");
  if (auto* v = field(body, "echo"))
    if (boolean(*v, "echo")) bad("echo", "echo is not supported");
  if (auto* v = field(body, "stop")) {
    auto add = [&](const json& s) {
      if (!s.is_string() || s.get<std::string>().empty())
        bad("stop", "stop must be a non-empty string or a list of them");
      r.gen.stop.push_back(s.get<std::string>());
    };
    if (v->is_array()) {
      if (v->size() > 4) bad("stop", "at most 4 stop sequences");
      for (const auto& s : *v) add(s);
    } else {
      add(*v);
    }
  }
  if (auto* v = field(body, "ignore_eos")) r.gen.ignore_eos = boolean(*v, "ignore_eos");
  if (chat) {
    bool want = false;
    if (auto* v = field(body, "logprobs")) want = boolean(*v, "logprobs");
    if (auto* v = field(body, "top_logprobs")) {
      const int k = int(integer(*v, "top_logprobs", 0, SamplingParams::max_logprobs));
      if (!want) bad("top_logprobs", "top_logprobs needs logprobs: true");
      r.logprobs = k;
    } else if (want) {
      r.logprobs = 0;
    }
  } else if (auto* v = field(body, "logprobs")) {
    r.logprobs = int(integer(*v, "logprobs", 0, SamplingParams::max_logprobs));
  }
  sp.logprobs = r.logprobs;
  if (auto* ee = field(body, "early_exit")) {
    if (!ee->is_object()) bad("early_exit", "early_exit must be an object");
    std::string pol;
    if (auto* p = field(*ee, "policy")) {
      if (!p->is_string()) bad("early_exit.policy", "early_exit.policy must be a string");
      pol = p->get<std::string>();
      if (!is_policy_name(pol))
        bad("early_exit.policy", "early_exit.policy must be one of " + policy_names_help());
    }
    r.early_exit_policy = pol;
    std::optional<float> thr;
    if (auto* t = field(*ee, "threshold"))
      thr = float(number(*t, "early_exit.threshold", -1e6, 1e6));
    const std::string_view full = NeverExit{}.name();
    if (pol == full) {
      if (thr) bad("early_exit.threshold", "a threshold means nothing with policy full");
      if (lim.server_policy.evaluates_exits()) r.exit_threshold = full_depth_threshold;
    } else {
      const std::string server(lim.server_policy.name());
      if (!pol.empty() && pol != server)
        bad("early_exit.policy", "this server runs policy '" + server +
                                     "'; a request may ask for it or for 'full' (one batch "
                                     "shares one batch rule)");
      if (thr) {
        if (!lim.server_policy.evaluates_exits())
          bad("early_exit.threshold", "early exit is off on this server (--policy full)");
        r.exit_threshold = *thr;
      }
    }
  }
  if (r.exit_threshold) r.gen.exit_threshold = *r.exit_threshold;
  // What the engine checks itself (sampling combinations, the prompt against the context and
  // the vocabulary) it checks once, in Engine::validate: the server calls it before
  // submitting (see api_error_of(request_error)).
  return r;
}

// ---- responses ----------------------------------------------------------------------
// A token's text for logprobs: its raw bytes (U+FFFD where they are not UTF-8 on dump).
struct TokenTexts {
  std::function<std::string(int)> text;
};

inline json completion_logprobs(const std::vector<TokenEvent>& toks, const TokenTexts& tt,
                                std::size_t offset0) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  std::size_t off = offset0;
  for (const auto& t : toks) {
    const std::string s = tt.text(t.token);
    tokens.push_back(s);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& a : t.top) top[tt.text(a.token)] = a.logprob;
    tops.push_back(top);
    offs.push_back(off);
    off += s.size();
  }
  return {
      {"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

inline json chat_logprobs(const std::vector<TokenEvent>& toks, const TokenTexts& tt) {
  auto entry = [&](int id, float lp) {
    const std::string s = tt.text(id);
    json bytes = json::array();
    for (unsigned char c : s) bytes.push_back(int(c));
    return json{{"token", s}, {"logprob", lp}, {"bytes", bytes}};
  };
  json content = json::array();
  for (const auto& t : toks) {
    json e = entry(t.token, t.logprob);
    json top = json::array();
    for (const auto& a : t.top) top.push_back(entry(a.token, a.logprob));
    e["top_logprobs"] = top;
    content.push_back(e);
  }
  return {{"content", content}};
}

inline json exit_layers_of(const std::vector<TokenEvent>& toks) {
  json a = json::array();
  for (const auto& t : toks) a.push_back(t.exit_layer);
  return a;
}

// cached: prompt tokens whose K/V came from the prefix cache (OpenAI's
// prompt_tokens_details.cached_tokens).
inline json usage(std::int64_t prompt, std::int64_t completion, std::int64_t cached = 0) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

// OpenAI's names where they exist. A request cut short (aborted, or failed after its
// first tokens) says so: "abort" / "error", never "length", which claims max_tokens.
inline std::string finish_name(finish_reason f) {
  switch (f) {
    case finish_reason::stop:
      return "stop";
    case finish_reason::abort:
      return "abort";
    case finish_reason::error:
      return "error";
    case finish_reason::length:
    case finish_reason::none:
      break;
  }
  return "length";
}

// A Completion's tokens as the per-token events the logprob formats read.
inline std::vector<TokenEvent> token_events(const Completion& c) {
  std::vector<TokenEvent> ev(c.tokens.size());
  for (std::size_t i = 0; i < ev.size(); ++i) {
    ev[i].token = c.tokens[i];
    if (i < c.exit_layers.size()) ev[i].exit_layer = c.exit_layers[i];
    if (i < c.logprobs.size()) ev[i].logprob = c.logprobs[i];
    if (i < c.top_logprobs.size()) ev[i].top = c.top_logprobs[i];
  }
  return ev;
}

// Self-speculation's share of a finished request (null when it ran no verify pass): the
// non-streaming body and the last SSE chunk both carry it.
inline json speculation(const RequestStats& st) {
  if (st.verify_passes <= 0) return nullptr;
  return {{"verify_passes", st.verify_passes},
          {"draft_tokens", st.draft_tokens},
          {"accepted_drafts", st.accepted_drafts},
          {"tokens_per_verify", double(st.speculative_tokens) / st.verify_passes}};
}

// One non-streaming response body.
inline json response_body(const ParsedRequest& r, const std::string& id, std::int64_t created,
                          const Completion& c, std::int64_t prompt_tokens, const TokenTexts& tt) {
  json choice = {
      {"index", 0}, {"finish_reason", finish_name(c.finish)}, {"exit_layers", c.exit_layers}};
  json lp = nullptr;
  if (r.logprobs >= 0) {
    const auto ev = token_events(c);
    lp = r.chat ? chat_logprobs(ev, tt) : completion_logprobs(ev, tt, 0);
  }
  choice["logprobs"] = lp;
  if (r.chat)
    choice["message"] = {{"role", "assistant"}, {"content", c.text}};
  else
    choice["text"] = c.text;
  json body = {
      {"id", id},
      {"object", r.chat ? "chat.completion" : "text_completion"},
      {"created", created},
      {"model", r.model},
      {"choices", json::array({choice})},
      {"usage", usage(prompt_tokens, std::int64_t(c.tokens.size()), c.stats.cached_tokens)}};
  if (auto s = speculation(c.stats); !s.is_null()) body["speculation"] = std::move(s);
  return body;
}

// One SSE chunk: a step's tokens (and the finish reason on the last).
inline json chunk_body(const ParsedRequest& r, const std::string& id, std::int64_t created,
                       const std::vector<TokenEvent>& toks, const std::string& text,
                       std::optional<finish_reason> finish, bool first, std::size_t text_offset,
                       const TokenTexts& tt) {
  json choice = {{"index", 0}, {"exit_layers", exit_layers_of(toks)}};
  choice["finish_reason"] = finish ? json(finish_name(*finish)) : json(nullptr);
  json lp = nullptr;
  if (r.logprobs >= 0 && !toks.empty())
    lp = r.chat ? chat_logprobs(toks, tt) : completion_logprobs(toks, tt, text_offset);
  choice["logprobs"] = lp;
  if (r.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && !finish)) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", id},
          {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", r.model},
          {"choices", json::array({choice})}};
}

inline json usage_chunk(const ParsedRequest& r, const std::string& id, std::int64_t created,
                        std::int64_t prompt, std::int64_t completion, std::int64_t cached = 0) {
  return {{"id", id},
          {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", r.model},
          {"choices", json::array()},
          {"usage", usage(prompt, completion, cached)}};
}

}  // namespace eexit::serve::openai
