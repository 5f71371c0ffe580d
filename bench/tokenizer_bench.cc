// Tokenizer throughput on whole evaluation files, the way perplexity
// tokenizes them (one Encode call over the file). Needs FQ_TESTDATA.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "runtime/tokenizer.h"
#include "schema/env.h"
#include "schema/gguf.h"

namespace fqpack::runtime {
namespace {

std::string DataPath(const std::string& relative) {
  const char* dir = std::getenv("FQ_TESTDATA");
  return dir == nullptr ? std::string() : JoinPath(dir, relative);
}

std::optional<Tokenizer> LoadVocab(const std::string& relative) {
  const std::string path = DataPath(relative);
  if (path.empty()) return std::nullopt;
  Result<MappedFile> file = Env::Default()->MapFile(path);
  if (!file.ok()) return std::nullopt;
  Result<gguf::Header> header = gguf::ParseFile(file->bytes(), path);
  if (!header.ok()) return std::nullopt;
  Result<Tokenizer> tok = Tokenizer::FromMetadata(header->metadata);
  if (!tok.ok()) return std::nullopt;
  return std::move(tok).value();
}

std::optional<std::string> LoadText(const std::string& relative) {
  const std::string path = DataPath(relative);
  if (path.empty()) return std::nullopt;
  Result<Bytes> bytes = ReadFileBytes(Env::Default(), path);
  if (!bytes.ok()) return std::nullopt;
  return std::string(bytes->begin(), bytes->end());
}

void EncodeFile(benchmark::State& state, const char* vocab, const char* text_file) {
  const std::optional<Tokenizer> tok = LoadVocab(vocab);
  const std::optional<std::string> text = LoadText(text_file);
  if (!tok || !text) {
    state.SkipWithError("FQ_TESTDATA is not set or its files are missing");
    return;
  }
  size_t n_tokens = 0;
  for (auto _ : state) {
    std::vector<int32_t> ids = tok->Encode(*text, /*add_special=*/true);
    n_tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text->size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
}

void BM_EncodeTinyStoriesVal_Stories260K(benchmark::State& state) {
  EncodeFile(state, "models/stories260K/stories260K-F32.gguf", "text/tinystories_val.txt");
}
BENCHMARK(BM_EncodeTinyStoriesVal_Stories260K)->Unit(benchmark::kMillisecond);

void BM_EncodeTinyStoriesVal_LlamaSpm(benchmark::State& state) {
  EncodeFile(state, "tokenizer/ggml-vocab-llama-spm.gguf", "text/tinystories_val.txt");
}
BENCHMARK(BM_EncodeTinyStoriesVal_LlamaSpm)->Unit(benchmark::kMillisecond);

void BM_EncodeWikiText_LlamaSpm(benchmark::State& state) {
  EncodeFile(state, "tokenizer/ggml-vocab-llama-spm.gguf", "text/wiki.test.raw");
}
BENCHMARK(BM_EncodeWikiText_LlamaSpm)->Unit(benchmark::kMillisecond);

// Byte-level BPE: pre-tokenizer splits, byte mapping and rank merges.
void BM_EncodeWikiText_Gpt2(benchmark::State& state) {
  EncodeFile(state, "tokenizer/ggml-vocab-gpt-2.gguf", "text/wiki.test.raw");
}
BENCHMARK(BM_EncodeWikiText_Gpt2)->Unit(benchmark::kMillisecond);

void BM_EncodeWikiText_DeepseekLlm(benchmark::State& state) {
  EncodeFile(state, "tokenizer/ggml-vocab-deepseek-llm.gguf", "text/wiki.test.raw");
}
BENCHMARK(BM_EncodeWikiText_DeepseekLlm)->Unit(benchmark::kMillisecond);

void BM_EncodeTinyStoriesVal_Starcoder(benchmark::State& state) {
  EncodeFile(state, "tokenizer/ggml-vocab-starcoder.gguf", "text/tinystories_val.txt");
}
BENCHMARK(BM_EncodeTinyStoriesVal_Starcoder)->Unit(benchmark::kMillisecond);

void BM_DecodeTinyStoriesVal_Stories260K(benchmark::State& state) {
  const std::optional<Tokenizer> tok = LoadVocab("models/stories260K/stories260K-F32.gguf");
  const std::optional<std::string> text = LoadText("text/tinystories_val.txt");
  if (!tok || !text) {
    state.SkipWithError("FQ_TESTDATA is not set or its files are missing");
    return;
  }
  const std::vector<int32_t> ids = tok->Encode(*text, /*add_special=*/false);
  for (auto _ : state) {
    std::string out = tok->Decode(ids);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text->size()));
}
BENCHMARK(BM_DecodeTinyStoriesVal_Stories260K)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fqpack::runtime

BENCHMARK_MAIN();
