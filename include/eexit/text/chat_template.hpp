#pragma once
// Chat templates: the prompt text of a list of chat messages, in the format of the model's
// family, and what tokenizer_config.json says about it (chat_template, bos/eos strings).
// The family is detected from markers its Jinja template spells out; no Jinja is run.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace eexit {

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

namespace detail {
// Jinja's trim for the whitespace that matters in chat text: ASCII space, \t \n \v \f \r
// (Python's str.strip also strips Unicode spaces such as U+3000; they are kept here).
inline std::string_view trim_ascii_space(std::string_view s) {
  constexpr std::string_view ws = " \t\n\v\f\r";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}
}  // namespace detail

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
      // Meta's template writes message['content'] | trim.
      for (const auto& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" +
               std::string(detail::trim_ascii_space(m.content)) + "<|eot_id|>";
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

// What a model directory's tokenizer_config.json says about chat formatting.
struct ChatTemplate {
  ChatStyle style = ChatStyle::plain;
  std::string bos_text = "<s>", eos_text = "</s>";  // the tokenizer's BOS/EOS strings
};

namespace detail {
// A special token as tokenizer_config.json writes it: a string or {"content": string}.
inline std::string config_token_string(const nlohmann::json& j, const char* key, std::string def) {
  auto it = j.find(key);
  if (it == j.end()) return def;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return def;
}
}  // namespace detail

// From a parsed tokenizer_config.json. Fields of the wrong type are ignored (the defaults
// stay): a chat template is a convenience, not a reason to refuse a model.
inline ChatTemplate chat_template_from_config(const nlohmann::json& tc) {
  ChatTemplate t;
  if (!tc.is_object()) return t;
  std::string jinja;
  if (auto it = tc.find("chat_template"); it != tc.end()) {
    if (it->is_string()) jinja = it->get<std::string>();
    if (it->is_array())  // [{name, template}, ...]: the default one
      for (const auto& e : *it) {
        if (!e.is_object()) continue;
        auto n = e.find("name"), tp = e.find("template");
        if (n != e.end() && n->is_string() && *n == "default" && tp != e.end() && tp->is_string())
          jinja = tp->get<std::string>();
      }
  }
  t.style = detect_chat_style(jinja);
  t.bos_text = detail::config_token_string(tc, "bos_token", t.bos_text);
  t.eos_text = detail::config_token_string(tc, "eos_token", t.eos_text);
  return t;
}

// From `dir`/tokenizer_config.json; the defaults (plain) when it is missing or not JSON.
inline ChatTemplate load_chat_template(const std::filesystem::path& dir) {
  std::ifstream f(dir / "tokenizer_config.json");
  if (!f) return {};
  return chat_template_from_config(nlohmann::json::parse(f, nullptr, false));
}

}  // namespace eexit
