#pragma once
// The OpenAI API mapping, without sockets: request bodies -> GenerateRequest (every field
// type- and range-checked, errors OpenAI-shaped), responses and SSE chunks, chat templates,
// and the Prometheus text of /metrics. The HTTP server (serve/http_server.hpp) glues it to
// the EngineService; tests call it directly.
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

#include "eexit/engine/request.hpp"
#include "eexit/policy/registry.hpp"
#include "eexit/serve/engine_service.hpp"

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

// ---- chat templates -----------------------------------------------------------------
enum class ChatStyle { plain, llama2, chatml, llama3, zephyr };

inline std::optional<ChatStyle> chat_style_from_name(std::string_view n) {
  if (n == "plain") return ChatStyle::plain;
  if (n == "llama2") return ChatStyle::llama2;
  if (n == "chatml") return ChatStyle::chatml;
  if (n == "llama3") return ChatStyle::llama3;
  if (n == "zephyr" || n == "tinyllama") return ChatStyle::zephyr;
  return std::nullopt;
}
constexpr std::string_view chat_style_name(ChatStyle s) noexcept {
  switch (s) {
    case ChatStyle::plain:
      return "plain";
    case ChatStyle::llama2:
      return "llama2";
    case ChatStyle::chatml:
      return "chatml";
    case ChatStyle::llama3:
      return "llama3";
    case ChatStyle::zephyr:
      return "zephyr";
  }
  return "plain";
}

// The style of a Jinja chat_template, from markers each family's template spells out.
inline ChatStyle detect_chat_style(std::string_view jinja) {
  auto has = [&](std::string_view m) { return jinja.find(m) != std::string_view::npos; };
  if (has("<|start_header_id|>")) return ChatStyle::llama3;
  if (has("<|im_start|>")) return ChatStyle::chatml;
  if (has("<|user|>") || has("<|assistant|>")) return ChatStyle::zephyr;
  if (has("[INST]")) return ChatStyle::llama2;
  return ChatStyle::plain;
}

struct ChatMessage {
  std::string role, content;
};

// The prompt text for `messages`, ending where the assistant's reply begins. The BOS token
// is not written: the tokenizer adds it (add_special). bos/eos: the tokenizer's strings.
inline std::string format_chat(ChatStyle style, const std::vector<ChatMessage>& messages,
                               std::string_view bos = "<s>", std::string_view eos = "</s>") {
  std::string out;
  switch (style) {
    case ChatStyle::plain:
      for (const auto& m : messages) out += m.content + "\n";
      break;
    case ChatStyle::chatml:
      for (const auto& m : messages)
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case ChatStyle::llama3:
      for (const auto& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatStyle::zephyr:
      for (const auto& m : messages)
        out += "<|" + m.role + "|>\n" + m.content + std::string(eos) + "\n";
      out += "<|assistant|>\n";
      break;
    case ChatStyle::llama2: {
      // Llama 2: the system prompt folds into the first user turn.
      std::string system;
      bool first = true;
      for (const auto& m : messages) {
        if (m.role == "system") {
          system = m.content;
          continue;
        }
        if (m.role == "user") {
          std::string content = m.content;
          if (!system.empty()) {
            content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
            system.clear();
          }
          if (!first) out += bos;
          out += "[INST] " + content + " [/INST]";
        } else {
          out += " " + m.content + " " + std::string(eos);
        }
        first = false;
      }
      break;
    }
  }
  return out;
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
      if (!p.is_object() || p.value("type", std::string()) != "text" || !p.contains("text") ||
          !p["text"].is_string())
        bad(k, "only text content parts are supported");
      s += p["text"].get<std::string>();
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
  try {
    sp.validate();
  } catch (const std::exception& e) {
    bad("", e.what());
  }
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

inline json usage(std::int64_t prompt, std::int64_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

inline std::string finish_name(finish_reason f) {
  return f == finish_reason::stop ? "stop" : "length";
}

// One non-streaming response body.
inline json response_body(const ParsedRequest& r, const std::string& id, std::int64_t created,
                          const Completion& c, std::int64_t prompt_tokens, const TokenTexts& tt) {
  json choice = {{"index", 0},
                 {"finish_reason", finish_name(c.finish)},
                 {"exit_layers", exit_layers_of(c.tokens)}};
  json lp = nullptr;
  if (r.logprobs >= 0)
    lp = r.chat ? chat_logprobs(c.tokens, tt) : completion_logprobs(c.tokens, tt, 0);
  choice["logprobs"] = lp;
  if (r.chat)
    choice["message"] = {{"role", "assistant"}, {"content", c.text}};
  else
    choice["text"] = c.text;
  json body = {{"id", id},
               {"object", r.chat ? "chat.completion" : "text_completion"},
               {"created", created},
               {"model", r.model},
               {"choices", json::array({choice})},
               {"usage", usage(prompt_tokens, std::int64_t(c.tokens.size()))}};
  if (c.stats.verify_passes > 0)  // self-speculation's share of this request
    body["speculation"] = {
        {"verify_passes", c.stats.verify_passes},
        {"draft_tokens", c.stats.draft_tokens},
        {"accepted_drafts", c.stats.accepted_drafts},
        {"tokens_per_verify", double(c.stats.speculative_tokens) / c.stats.verify_passes}};
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
                        std::int64_t prompt, std::int64_t completion) {
  return {{"id", id},
          {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", r.model},
          {"choices", json::array()},
          {"usage", usage(prompt, completion)}};
}

// ---- /metrics -----------------------------------------------------------------------
inline std::string prometheus_text(const ServiceMetrics& m) {
  std::ostringstream o;
  auto counter = [&](const char* name, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n";
  };
  auto gauge = [&](const char* name, const char* help, std::int64_t v) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n"
      << name << " " << v << "\n";
  };
  counter("eexit_requests_total", "Requests by outcome.");
  const std::pair<const char*, std::int64_t> outcomes[] = {
      {"stop", m.finished_stop},   {"length", m.finished_length}, {"abort", m.finished_abort},
      {"error", m.finished_error}, {"rejected", m.rejected},      {"queue_full", m.queue_full}};
  for (auto& [k, v] : outcomes) o << "eexit_requests_total{outcome=\"" << k << "\"} " << v << "\n";
  counter("eexit_prompt_tokens_total", "Prompt tokens computed (recomputation included).");
  o << "eexit_prompt_tokens_total " << m.prompt_tokens << "\n";
  counter("eexit_generated_tokens_total", "Tokens generated.");
  o << "eexit_generated_tokens_total " << m.generated_tokens << "\n";
  counter("eexit_preemptions_total", "Sequences preempted for lack of KV blocks.");
  o << "eexit_preemptions_total " << m.preemptions << "\n";
  const std::tuple<const char*, const char*, std::int64_t> speculation[] = {
      {"eexit_verify_passes_total", "Self-speculation: verify passes (one per drafting row).",
       m.verify_passes},
      {"eexit_draft_tokens_total", "Self-speculation: draft tokens proposed.", m.draft_tokens},
      {"eexit_accepted_drafts_total", "Self-speculation: draft tokens accepted.",
       m.accepted_drafts},
      {"eexit_speculative_tokens_total", "Self-speculation: tokens emitted by verify passes.",
       m.speculative_tokens}};
  for (auto& [name, help, v] : speculation) {
    counter(name, help);
    o << name << " " << v << "\n";
  }
  gauge("eexit_requests_running", "Requests in the running batch.", m.running);
  gauge("eexit_requests_waiting", "Requests waiting for admission.", m.waiting);
  gauge("eexit_kv_blocks_used", "KV cache blocks in use.", m.kv_blocks_used);
  gauge("eexit_kv_blocks_total", "KV cache blocks in the pool.", m.kv_blocks_total);
  o << "# HELP eexit_step_seconds Engine step time.\n# TYPE eexit_step_seconds histogram\n";
  std::int64_t cum = 0;
  for (std::size_t b = 0; b < step_time_buckets.size(); ++b) {
    cum += m.step_time_counts[b];
    o << "eexit_step_seconds_bucket{le=\"" << step_time_buckets[b] << "\"} " << cum << "\n";
  }
  cum += m.step_time_counts.back();
  o << "eexit_step_seconds_bucket{le=\"+Inf\"} " << cum << "\n";
  o << "eexit_step_seconds_sum " << m.step_time_sum_s << "\neexit_step_seconds_count " << cum
    << "\n";
  // Exit layers: a histogram over the layer each generated token left at.
  o << "# HELP eexit_exit_layer Layer (0-based) whose exit produced each token.\n"
       "# TYPE eexit_exit_layer histogram\n";
  cum = 0;
  for (std::size_t e = 0; e < m.exit_histogram.size(); ++e) {
    cum += m.exit_histogram[e];
    if (e < m.exit_layers.size())
      o << "eexit_exit_layer_bucket{le=\"" << m.exit_layers[e] << "\"} " << cum << "\n";
  }
  o << "eexit_exit_layer_bucket{le=\"+Inf\"} " << cum << "\n";
  double sum = 0;
  for (std::size_t e = 0; e < m.exit_histogram.size() && e < m.exit_layers.size(); ++e)
    sum += double(m.exit_histogram[e]) * m.exit_layers[e];
  o << "eexit_exit_layer_sum " << sum << "\neexit_exit_layer_count " << cum << "\n";
  return o.str();
}

}  // namespace eexit::serve::openai
