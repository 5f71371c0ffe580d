#include "store/synthetic.h"

#include <cmath>
#include <random>
#include <vector>

#include "schema/gguf.h"
#include "schema/half.h"
#include "schema/quant_types.h"

namespace fqpack::store {
namespace {

using gguf::Value;
using gguf::ValueType;

// SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte tokens, then
// whole pieces (letters, common words with the U+2581 space marker) until
// n_vocab. Scores rank longer pieces first so that merges prefer them.
void AddTokenizer(gguf::Metadata* md, uint32_t n_vocab) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    tokens.push_back(buf);
    scores.push_back(0);
    types.push_back(6);
  }
  const std::string space = "\xe2\x96\x81";
  std::vector<std::string> pieces;
  for (char c = 'a'; c <= 'z'; ++c) pieces.push_back(std::string(1, c));
  for (char c = 'a'; c <= 'z'; ++c) pieces.push_back(space + c);
  for (const char* w :
       {"the",  "and",   "was",    "to",  "a",    "he",   "she",  "it",   "of",    "in",     "her",
        "his",  "they",  "said",   "day", "one",  "time", "upon", "once", "there", "little", "big",
        "play", "happy", "friend", "saw", "with", "had",  "very", "so",   "you",   "not"}) {
    pieces.push_back(space + w);
    pieces.push_back(w);
  }
  for (const char* p :
       {".",  ",",  "!",  "?",  "\"", "'",  space.c_str(), "th", "he", "in",  "er",
        "an", "re", "on", "at", "en", "nd", "ed",          "es", "or", "ing", "ly"}) {
    pieces.push_back(p);
  }
  for (size_t i = 0; tokens.size() < n_vocab && i < pieces.size(); ++i) {
    bool dup = false;
    for (const std::string& t : tokens) dup = dup || t == pieces[i];
    if (dup) continue;
    tokens.push_back(pieces[i]);
    scores.push_back(-static_cast<float>(tokens.size()) +
                     10.0f * static_cast<float>(pieces[i].size()));
    types.push_back(1);
  }
  for (int i = 0; tokens.size() < n_vocab; ++i) {  // filler pieces that never merge
    tokens.push_back("<unused" + std::to_string(i) + ">");
    scores.push_back(-1e9f);
    types.push_back(5);
  }
  tokens.resize(n_vocab);
  scores.resize(n_vocab);
  types.resize(n_vocab);
  std::vector<Value> t, s, ty;
  for (uint32_t i = 0; i < n_vocab; ++i) {
    t.push_back(Value::String(tokens[i]));
    s.push_back(Value::Float(ValueType::kF32, scores[i]));
    ty.push_back(Value::Int(ValueType::kI32, types[i]));
  }
  md->Set("tokenizer.ggml.model", Value::String("llama"));
  md->Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, t));
  md->Set("tokenizer.ggml.scores", Value::Array(ValueType::kF32, s));
  md->Set("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, ty));
  md->Set("tokenizer.ggml.bos_token_id", Value::Uint(ValueType::kU32, 1));
  md->Set("tokenizer.ggml.eos_token_id", Value::Uint(ValueType::kU32, 2));
  md->Set("tokenizer.ggml.unknown_token_id", Value::Uint(ValueType::kU32, 0));
}

}  // namespace

Status WriteSyntheticLlama(Env* env, const std::string& path, const SyntheticLlama& spec) {
  if (spec.n_heads == 0 || spec.n_kv_heads == 0 || spec.n_embd % spec.n_heads != 0 ||
      spec.n_heads % spec.n_kv_heads != 0 || spec.n_vocab < 260) {
    return Status::InvalidArgument(
        "synthetic model: heads must divide the embedding, kv heads the heads, "
        "and the vocabulary needs at least 260 tokens");
  }
  const uint64_t head_dim = spec.n_embd / spec.n_heads;
  gguf::Metadata md;
  md.Set("general.architecture", Value::String("llama"));
  md.Set("general.name", Value::String(spec.name));
  md.Set("llama.context_length", Value::Uint(ValueType::kU32, spec.n_ctx));
  md.Set("llama.embedding_length", Value::Uint(ValueType::kU32, spec.n_embd));
  md.Set("llama.feed_forward_length", Value::Uint(ValueType::kU32, spec.n_ff));
  md.Set("llama.attention.head_count", Value::Uint(ValueType::kU32, spec.n_heads));
  md.Set("llama.attention.head_count_kv", Value::Uint(ValueType::kU32, spec.n_kv_heads));
  md.Set("llama.block_count", Value::Uint(ValueType::kU32, spec.n_layers));
  md.Set("llama.rope.dimension_count", Value::Uint(ValueType::kU32, head_dim));
  md.Set("llama.rope.freq_base", Value::Float(ValueType::kF32, 10000.0));
  md.Set("llama.attention.layer_norm_rms_epsilon", Value::Float(ValueType::kF32, 1e-5));
  std::vector<SyntheticTensor> tensors;
  auto add = [&](std::string name, std::vector<uint64_t> ne, bool is_norm) {
    tensors.push_back({std::move(name), std::move(ne),
                       is_norm ? SyntheticTensor::Fill::kNorm : SyntheticTensor::Fill::kMatrix});
  };
  const uint64_t e = spec.n_embd, kv = head_dim * spec.n_kv_heads, ff = spec.n_ff, v = spec.n_vocab;
  add("token_embd.weight", {e, v}, false);
  add("output_norm.weight", {e}, true);
  if (!spec.tied_output) add("output.weight", {e, v}, false);
  for (uint32_t l = 0; l < spec.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {e}, true);
    add(p + "attn_q.weight", {e, e}, false);
    add(p + "attn_k.weight", {e, kv}, false);
    add(p + "attn_v.weight", {e, kv}, false);
    add(p + "attn_output.weight", {e, e}, false);
    add(p + "ffn_norm.weight", {e}, true);
    add(p + "ffn_gate.weight", {e, ff}, false);
    add(p + "ffn_up.weight", {e, ff}, false);
    add(p + "ffn_down.weight", {ff, e}, false);
  }
  return WriteSyntheticGguf(env, path, std::move(md), tensors, spec.type, spec.n_vocab, spec.seed,
                            spec.encode);
}

Status WriteSyntheticGguf(Env* env, const std::string& path, gguf::Metadata md,
                          const std::vector<SyntheticTensor>& tensors, uint32_t type,
                          uint32_t n_vocab, uint64_t seed, const MatrixEncoder& encode) {
  const bool is_float = type == ToId(QType::kF32) || type == ToId(QType::kF16);
  if (!is_float && (!encode || GgmlBlockBytes(type) == 0)) {
    return Status::InvalidArgument(
        "synthetic checkpoints are F32, F16 or a GGUF type with an encoder");
  }
  if (n_vocab < 260) {
    return Status::InvalidArgument("synthetic model: the vocabulary needs at least 260 tokens");
  }
  if (is_float && !md.Has("general.file_type")) {
    md.Set("general.file_type", Value::Uint(ValueType::kU32, type == ToId(QType::kF32) ? 0 : 1));
  }
  AddTokenizer(&md, n_vocab);

  gguf::FileSpec fs;
  fs.kv = gguf::EncodeMetadata(md);
  fs.n_kv = md.entries.size();
  // Scale of each tensor's values: norms are 1 (scale 0 marks them);
  // matrices ~ N(0, 1/sqrt(fan_in)); biases ~ N(0, 0.02).
  std::vector<float> scale;
  for (const SyntheticTensor& st : tensors) {
    gguf::TensorInfo t;
    t.name = st.name;
    t.n_dims = static_cast<uint32_t>(st.ne.size());
    for (size_t d = 0; d < st.ne.size(); ++d) t.ne[d] = st.ne[d];
    t.type = st.fill == SyntheticTensor::Fill::kMatrix ? type : ToId(QType::kF32);
    fs.tensors.push_back(std::move(t));
    scale.push_back(st.fill == SyntheticTensor::Fill::kNorm ? 0.0f
                    : st.fill == SyntheticTensor::Fill::kBias
                        ? 0.02f
                        : 1.0f / std::sqrt(static_cast<float>(st.ne[0])));
  }
  FQ_RETURN_IF_ERROR(gguf::AssignOffsets(&fs));

  std::mt19937_64 rng(seed);
  Bytes buf;
  return PublishFileWith(env, path, [&](WritableFile* f) {
    return gguf::WriteFile(f, fs, [&](size_t i) -> Result<ByteSpan> {
      const gguf::TensorInfo& t = fs.tensors[i];
      const uint64_t n = t.n_elements();
      std::normal_distribution<float> normal(0.0f, scale[i]);
      buf.clear();
      if (t.type != ToId(QType::kF32) && t.type != ToId(QType::kF16)) {
        std::vector<float> values(n);
        for (float& x : values) x = normal(rng);
        buf.resize(t.nbytes);
        FQ_RETURN_IF_ERROR(encode(values.data(), static_cast<int64_t>(t.ne[1]),
                                  static_cast<int64_t>(t.ne[0]), buf.data()));
        return ByteSpan(buf);
      }
      buf.reserve(t.nbytes);
      for (uint64_t k = 0; k < n; ++k) {
        const float x = scale[i] == 0.0f ? 1.0f : normal(rng);
        if (t.type == ToId(QType::kF32))
          PutF32(&buf, x);
        else
          PutU16(&buf, F32ToFp16(x));
      }
      return ByteSpan(buf);
    });
  });
}

}  // namespace fqpack::store
