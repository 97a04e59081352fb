// Chat templates: detection from a Jinja template's markers, the prompt text per family,
// and what tokenizer_config.json contributes.
#include "eexit/text/chat_template.hpp"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "../test_paths.hpp"

using namespace eexit;

TEST_CASE("chat templates: detected from the Jinja text, formatted per family") {
  CHECK(detect_chat_style("{% for m in messages %}<|im_start|>{{m.role}}") == ChatStyle::chatml);
  CHECK(detect_chat_style("<|start_header_id|>' + message['role'] + '<|end_header_id|>") ==
        ChatStyle::llama3);
  CHECK(detect_chat_style("{{ bos_token + '[INST] ' + content + ' [/INST]' }}") ==
        ChatStyle::llama2);
  CHECK(detect_chat_style("{{ '<|user|>\n' + message['content'] + eos_token }}") ==
        ChatStyle::zephyr);
  CHECK(detect_chat_style("") == ChatStyle::plain);
  const std::vector<ChatMessage> ms = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
  CHECK(format_chat(ChatStyle::chatml, ms) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK(format_chat(ChatStyle::llama3, {{"user", "Hi"}}) ==
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Meta's Llama 3 template trims each message (| trim); tests/text/llama3 renders it with
  // @huggingface/jinja and compares.
  CHECK(format_chat(ChatStyle::llama3, {{"user", " \n Hi \t\n"}, {"assistant", "  "}}) ==
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(format_chat(ChatStyle::llama2, ms) ==
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]");
  CHECK(format_chat(ChatStyle::zephyr, {{"system", "S"}, {"user", "Hi"}}) ==
        "<|system|>\nS</s>\n<|user|>\nHi</s>\n<|assistant|>\n");
  CHECK(format_chat(ChatStyle::plain, {{"user", "Hi"}}) == "Hi\n");
}

TEST_CASE("tokenizer_config.json: TinyLlama's real file, and fields of the wrong type") {
  const auto t = load_chat_template(test::shared("models/tokenizers/tinyllama-1.1b-chat-v1.0"));
  CHECK(t.style == ChatStyle::zephyr);
  CHECK(t.bos_text == "<s>");
  CHECK(t.eos_text == "</s>");
  CHECK(load_chat_template("/nonexistent").style == ChatStyle::plain);
  using nlohmann::json;
  // The list form: the entry named "default" wins; entries of other shapes are skipped.
  const auto list = chat_template_from_config(json::parse(R"({"chat_template":[5,
      {"name":7,"template":"[INST]"},{"name":"default","template":"<|im_start|>"}],
      "bos_token":{"content":"<B>"},"eos_token":3})"));
  CHECK(list.style == ChatStyle::chatml);
  CHECK(list.bos_text == "<B>");
  CHECK(list.eos_text == "</s>");
  CHECK(chat_template_from_config(json::parse("[1,2]")).style == ChatStyle::plain);
}
