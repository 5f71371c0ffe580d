#include "tests/fuzz/fuzz_support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "runtime/unicode.h"
#include "tests/fuzz/fuzz_target.h"

namespace fqpack::fuzz {

void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz check failed: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

void MemoryFileEnv::SetFile(const std::string& path, ByteSpan bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  files_[path].assign(bytes.begin(), bytes.end());
}

void MemoryFileEnv::ClearFiles() {
  std::lock_guard<std::mutex> lock(mu_);
  files_.clear();
}

void MemoryFileEnv::RemoveCreatedFiles() {
  std::set<std::string> created;
  {
    std::lock_guard<std::mutex> lock(mu_);
    created.swap(created_);
  }
  for (const std::string& path : created) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
}

Result<MappedFile> MemoryFileEnv::MapFile(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = files_.find(path);
    if (it != files_.end()) return MappedFile::FromBuffer(path, it->second);
  }
  return EnvWrapper::MapFile(path);
}

Result<std::unique_ptr<WritableFile>> MemoryFileEnv::NewWritableFile(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    created_.insert(path);
  }
  return EnvWrapper::NewWritableFile(path);
}

Status MemoryFileEnv::RenameFile(const std::string& from, const std::string& to) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    created_.insert(to);
  }
  return EnvWrapper::RenameFile(from, to);
}

namespace {

struct Scratch {
  std::string path;
  Scratch() {
    const char* chosen = std::getenv("FQ_FUZZ_SCRATCH");
    const char* tmp = std::getenv("TMPDIR");
    std::string base = chosen != nullptr && *chosen != '\0' ? chosen : "/dev/shm";
    if (!std::filesystem::is_directory(base)) base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    path = JoinPath(base, UniqueTempName("fqpack-fuzz"));
    std::filesystem::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

const std::string& ScratchDir() {
  static Scratch scratch;
  return scratch.path;
}

Status WriteScratchFile(const std::string& path, ByteSpan bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return Status::IOError(path + ": cannot create");
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) return Status::IOError(path + ": cannot write");
  return Status::OK();
}

uint64_t TouchBytes(ByteSpan bytes) {
  uint64_t sum = 0;
  for (uint8_t b : bytes) sum += b;
  return sum;
}

gguf::Metadata TinyVocabMetadata() {
  using gguf::Value;
  using gguf::ValueType;
  constexpr int32_t kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6;
  std::vector<Value> tokens, scores, types;
  auto add = [&](std::string text, float score, int32_t type) {
    tokens.push_back(Value::String(std::move(text)));
    scores.push_back(Value::Float(ValueType::kF32, score));
    types.push_back(Value::Int(ValueType::kI32, type));
  };
  add("<unk>", 0, kUnknown);
  add("<s>", 0, kControl);
  add("</s>", 0, kControl);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    add(name, 0, kByte);
  }
  // Pieces in order of falling score, as SentencePiece lists them: "▁" is
  // U+2581, the word-start marker. Merges must build the longer ones from
  // the shorter, so each longer piece's halves are pieces too.
  const std::string sp = "\xE2\x96\x81";
  const std::string kPieces[] = {
      sp,
      "e",
      "t",
      "a",
      "o",
      "n",
      "i",
      "s",
      "h",
      "r",
      "d",
      "l",
      "u",
      sp + "t",
      "he",
      sp + "a",
      "in",
      "er",
      "an",
      "on",
      sp + "the",
      sp + "s",
      "at",
      "en",
      sp + "o",
      "es",
      "or",
      sp + "w",
      "nd",
      sp + "and",
      sp + sp,
      ",",
      ".",
      "!",
      "\xC3\xA9",
      "\xE2\x82\xAC",
      sp + "\xE2\x82\xAC",
      "\xF0\x9F\x99\x82",
  };
  float score = -1;
  for (const std::string& p : kPieces) {
    add(p, score, kNormal);
    score -= 1;
  }
  gguf::Metadata md;
  md.Set("general.architecture", Value::String("llama"));
  md.Set("tokenizer.ggml.model", Value::String("llama"));
  md.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, tokens));
  md.Set("tokenizer.ggml.scores", Value::Array(ValueType::kF32, scores));
  md.Set("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, types));
  md.Set("tokenizer.ggml.bos_token_id", Value::Uint(ValueType::kU32, 1));
  md.Set("tokenizer.ggml.eos_token_id", Value::Uint(ValueType::kU32, 2));
  md.Set("tokenizer.ggml.unknown_token_id", Value::Uint(ValueType::kU32, 0));
  return md;
}

Bytes TinyVocabGguf() {
  gguf::FileSpec spec;
  const gguf::Metadata md = TinyVocabMetadata();
  spec.n_kv = md.entries.size();
  spec.kv = gguf::EncodeMetadata(md);
  return gguf::EncodeHeader(spec);
}

gguf::Metadata TinyBpeVocabMetadata() {
  using gguf::Value;
  using gguf::ValueType;
  std::vector<Value> tokens, types, merges;
  auto add = [&](const std::string& text, int32_t type) {
    tokens.push_back(Value::String(text));
    types.push_back(Value::Int(ValueType::kI32, type));
  };
  for (int b = 0; b < 256; ++b) add(runtime::ByteToUnicode(static_cast<uint8_t>(b)), 1);
  const std::string g = runtime::ByteToUnicode(' ');  // "Ġ"
  // Each merge's halves are tokens made by earlier merges (or bytes).
  const std::pair<std::string, std::string> kMerges[] = {
      {g, "t"},
      {"h", "e"},
      {g + "t", "he"},
      {"i", "n"},
      {g, "a"},
      {"e", "r"},
      {g, "w"},
      {"o", "r"},
      {g + "w", "or"},
      {"l", "d"},
      {g + "wor", "ld"},
      {g, g},
      {runtime::ByteToUnicode(0xC3), runtime::ByteToUnicode(0xA9)}};  // é
  for (const auto& [left, right] : kMerges) {
    add(left + right, 1);
    merges.push_back(Value::String(left + " " + right));
  }
  add("<|endoftext|>", 3);
  const uint64_t end = tokens.size() - 1;
  gguf::Metadata md;
  md.Set("general.architecture", Value::String("llama"));
  md.Set("tokenizer.ggml.model", Value::String("gpt2"));
  md.Set("tokenizer.ggml.pre", Value::String("llama-bpe"));
  md.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, tokens));
  md.Set("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, types));
  md.Set("tokenizer.ggml.merges", Value::Array(ValueType::kString, merges));
  md.Set("tokenizer.ggml.bos_token_id", Value::Uint(ValueType::kU32, end));
  md.Set("tokenizer.ggml.eos_token_id", Value::Uint(ValueType::kU32, end));
  return md;
}

Bytes TinyBpeVocabGguf() {
  gguf::FileSpec spec;
  const gguf::Metadata md = TinyBpeVocabMetadata();
  spec.n_kv = md.entries.size();
  spec.kv = gguf::EncodeMetadata(md);
  return gguf::EncodeHeader(spec);
}

}  // namespace fqpack::fuzz
