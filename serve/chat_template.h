// Chat templates: a list of chat messages rendered as the one prompt text a
// chat model was trained on. fqpack has the common formats built in, as
// llama.cpp does (src/llama-chat.cpp), instead of running the Jinja
// template a GGUF file carries; DetectChatTemplate picks the format from
// that template's text by the substrings llama.cpp looks for.
//
// Thread-safety: free functions over values.
#ifndef FQPACK_SERVE_CHAT_TEMPLATE_H_
#define FQPACK_SERVE_CHAT_TEMPLATE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"

namespace fqpack::serve {

enum class ChatTemplate {
  kLlama2,  // [INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST]assistant</s>
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\ntext<|eot_id|>
  kChatml,  // <|im_start|>role\ntext<|im_end|>\n (Qwen)
  kGemma,   // <start_of_turn>user\n...<end_of_turn>\n, "model" for the assistant
  kPhi3,    // <|role|>\ntext<|end|>\n
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (others pass through)
  std::string content;
};

// "llama2", "llama3", "chatml", "gemma", "phi3".
const char* ChatTemplateName(ChatTemplate t);
// "llama2, llama3, chatml, gemma, phi3": for messages.
std::string ChatTemplateNames();
// A name as ChatTemplateName spells it (also "llama-2", "llama-3", "qwen",
// "phi-3"); InvalidArgument naming the known ones otherwise.
Result<ChatTemplate> ParseChatTemplateName(std::string_view name);
// The format of a `tokenizer.chat_template` Jinja text, by llama.cpp's
// substring checks, in its order: "<|im_start|>" chatml; "[INST]" llama2;
// "<|assistant|>" with "<|end|>" phi3; "<start_of_turn>" gemma;
// "<|start_header_id|>" with "<|end_header_id|>" llama3. A text that is
// itself a name is that template. nullopt for anything else (and for the
// llama.cpp formats fqpack does not build in, such as Mistral's and
// Phi-4's, which share those markers).
std::optional<ChatTemplate> DetectChatTemplate(std::string_view jinja);

// The prompt for `messages`, ending with the opening of the assistant's
// turn. The BOS is not written: the tokenizer adds it.
std::string ApplyChatTemplate(ChatTemplate t, const std::vector<ChatMessage>& messages);

}  // namespace fqpack::serve

#endif  // FQPACK_SERVE_CHAT_TEMPLATE_H_
