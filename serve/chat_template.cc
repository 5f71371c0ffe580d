#include "serve/chat_template.h"

#include <array>

namespace fqpack::serve {
namespace {

constexpr std::array<ChatTemplate, 5> kAll = {ChatTemplate::kLlama2, ChatTemplate::kLlama3,
                                              ChatTemplate::kChatml, ChatTemplate::kGemma,
                                              ChatTemplate::kPhi3};

// Leading and trailing whitespace removed, as llama.cpp trims message
// contents for the formats that were trained on trimmed text.
std::string Trim(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

const char* ChatTemplateName(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kLlama2:
      return "llama2";
    case ChatTemplate::kLlama3:
      return "llama3";
    case ChatTemplate::kChatml:
      return "chatml";
    case ChatTemplate::kGemma:
      return "gemma";
    case ChatTemplate::kPhi3:
      return "phi3";
  }
  return "?";
}

std::string ChatTemplateNames() {
  std::string names;
  for (ChatTemplate t : kAll)
    names += (names.empty() ? "" : ", ") + std::string(ChatTemplateName(t));
  return names;
}

Result<ChatTemplate> ParseChatTemplateName(std::string_view name) {
  for (ChatTemplate t : kAll) {
    if (name == ChatTemplateName(t)) return t;
  }
  if (name == "llama-2") return ChatTemplate::kLlama2;
  if (name == "llama-3") return ChatTemplate::kLlama3;
  if (name == "qwen") return ChatTemplate::kChatml;
  if (name == "phi-3") return ChatTemplate::kPhi3;
  return Status::InvalidArgument("unknown chat template '" + std::string(name) +
                                 "' (known: " + ChatTemplateNames() + ")");
}

std::optional<ChatTemplate> DetectChatTemplate(std::string_view jinja) {
  if (Result<ChatTemplate> named = ParseChatTemplateName(jinja); named.ok()) return *named;
  auto has = [jinja](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
  if (has("<|im_start|>")) {
    // Phi-4 and SmolVLM write their own markers inside ChatML's.
    if (has("<|im_sep|>") || has("<end_of_utterance>")) return std::nullopt;
    return ChatTemplate::kChatml;
  }
  if (jinja.starts_with("mistral") || has("[INST]")) {
    // Mistral's formats reuse [INST] without <<SYS>> blocks.
    if (has("[SYSTEM_PROMPT]") || has("[AVAILABLE_TOOLS]") || has("' [INST] ' + system_message"))
      return std::nullopt;
    return ChatTemplate::kLlama2;
  }
  if (has("<|assistant|>") && has("<|end|>")) return ChatTemplate::kPhi3;
  if (has("<start_of_turn>")) return ChatTemplate::kGemma;
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return ChatTemplate::kLlama3;
  return std::nullopt;
}

std::string ApplyChatTemplate(ChatTemplate t, const std::vector<ChatMessage>& messages) {
  std::string out;
  switch (t) {
    case ChatTemplate::kLlama2: {
      // A turn is "[INST] ... [/INST]answer</s>"; the system prompt goes in
      // a <<SYS>> block at the start of the first one.
      bool in_turn = true;
      out += "[INST] ";
      for (const ChatMessage& m : messages) {
        if (!in_turn) {
          out += "[INST] ";
          in_turn = true;
        }
        if (m.role == "system") {
          out += "<<SYS>>\n" + m.content + "\n<</SYS>>\n\n";
        } else if (m.role == "user") {
          out += m.content + " [/INST]";
        } else {
          out += m.content + "</s>";
          in_turn = false;
        }
      }
      break;
    }
    case ChatTemplate::kLlama3:
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + Trim(m.content) +
               "<|eot_id|>";
      }
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatTemplate::kChatml:
      for (const ChatMessage& m : messages) {
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      out += "<|im_start|>assistant\n";
      break;
    case ChatTemplate::kGemma: {
      // No system role: its text opens the next user turn.
      std::string system;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system += Trim(m.content);
          continue;
        }
        const std::string role = m.role == "assistant" ? "model" : m.role;
        out += "<start_of_turn>" + role + "\n";
        if (!system.empty() && role != "model") {
          out += system + "\n\n";
          system.clear();
        }
        out += Trim(m.content) + "<end_of_turn>\n";
      }
      out += "<start_of_turn>model\n";
      break;
    }
    case ChatTemplate::kPhi3:
      for (const ChatMessage& m : messages) {
        out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      }
      out += "<|assistant|>\n";
      break;
  }
  return out;
}

}  // namespace fqpack::serve
