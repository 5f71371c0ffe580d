#include "serve/chat_template.h"

#include <gtest/gtest.h>

namespace fqpack::serve {
namespace {

const std::vector<ChatMessage> kChat = {
    {"system", "Be brief."},
    {"user", "Hi"},
    {"assistant", "Hello."},
    {"user", " What is 2+2? "},
};

TEST(ChatTemplate, Llama2PutsTheSystemPromptInTheFirstInstBlock) {
  EXPECT_EQ(ApplyChatTemplate(ChatTemplate::kLlama2, kChat),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]Hello.</s>"
            "[INST]  What is 2+2?  [/INST]");
}

TEST(ChatTemplate, Llama3TrimsContentsAndOpensTheAssistantHeader) {
  EXPECT_EQ(ApplyChatTemplate(ChatTemplate::kLlama3, kChat),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, ChatmlKeepsContentsAsTheyAre) {
  EXPECT_EQ(ApplyChatTemplate(ChatTemplate::kChatml, kChat),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n"
            "<|im_start|>user\n What is 2+2? <|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplate, GemmaFoldsTheSystemPromptIntoTheFirstUserTurn) {
  EXPECT_EQ(ApplyChatTemplate(ChatTemplate::kGemma, kChat),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
            "<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
            "<start_of_turn>model\n");
}

TEST(ChatTemplate, Phi3) {
  EXPECT_EQ(ApplyChatTemplate(ChatTemplate::kPhi3, kChat),
            "<|system|>\nBe brief.<|end|>\n"
            "<|user|>\nHi<|end|>\n"
            "<|assistant|>\nHello.<|end|>\n"
            "<|user|>\n What is 2+2? <|end|>\n"
            "<|assistant|>\n");
}

TEST(ChatTemplate, DetectsTheFormatFromJinjaText) {
  struct Case {
    std::string jinja;
    std::optional<ChatTemplate> want;
  };
  const std::vector<Case> cases = {
      // Qwen2's template (abridged).
      {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
       "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
       ChatTemplate::kChatml},
      {"{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ '[INST] <<SYS>>\\n' }}",
       ChatTemplate::kLlama2},
      {"{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + "
       "message['content'] + '<|end|>\\n' }}{% endfor %}{{ '<|assistant|>\\n' }}",
       ChatTemplate::kPhi3},
      {"{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}",
       ChatTemplate::kGemma},
      {"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
       "message['content'] | trim + '<|eot_id|>' %}",
       ChatTemplate::kLlama3},
      // A name works as a template, as in llama.cpp.
      {"chatml", ChatTemplate::kChatml},
      {"gemma", ChatTemplate::kGemma},
      // Phi-4 writes <|im_sep|> inside ChatML markers: not ChatML.
      {"<|im_start|>user<|im_sep|>", std::nullopt},
      // Mistral's v7 format has [INST] but no <<SYS>>.
      {"[SYSTEM_PROMPT] [INST]", std::nullopt},
      {"{{ messages }}", std::nullopt},
      {"", std::nullopt},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(DetectChatTemplate(c.jinja), c.want) << c.jinja;
  }
}

TEST(ChatTemplate, NamesRoundTripAndUnknownNamesListTheKnownOnes) {
  for (ChatTemplate t : {ChatTemplate::kLlama2, ChatTemplate::kLlama3, ChatTemplate::kChatml,
                         ChatTemplate::kGemma, ChatTemplate::kPhi3}) {
    Result<ChatTemplate> r = ParseChatTemplateName(ChatTemplateName(t));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, t);
  }
  EXPECT_EQ(*ParseChatTemplateName("qwen"), ChatTemplate::kChatml);
  Result<ChatTemplate> bad = ParseChatTemplateName("vicuna");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.status().IsInvalidArgument());
  EXPECT_EQ(bad.status().message(),
            "unknown chat template 'vicuna' (known: llama2, llama3, chatml, gemma, phi3)");
}

}  // namespace
}  // namespace fqpack::serve
