// Small libraries for the search tests: one tiny llama (tests/support/
// tiny_llama.h) quantized several ways from the same float weights, either
// in memory (a Library over a MemorySource) or imported into a store from
// GGUF files written on the spot.
#ifndef FQPACK_TESTS_SEARCH_SEARCH_FIXTURE_H_
#define FQPACK_TESTS_SEARCH_SEARCH_FIXTURE_H_

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "search/ladder.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/support/test_util.h"
#include "tests/support/tiny_llama.h"

namespace fqpack::testing {

// Block-32 types: every row length of the tiny models is a multiple of 32.
inline uint32_t TypeId(QType t) { return ToId(t); }

inline TinyLlamaSpec SearchSpec(uint32_t type, int64_t n_layer = 2) {
  TinyLlamaSpec s;
  s.n_vocab = 40;
  s.n_embd = 32;
  s.n_ff = 64;
  s.n_layer = n_layer;
  s.n_head = 4;
  s.n_head_kv = 2;
  s.n_ctx_train = 64;
  s.weight_type = type;
  s.seed = 7;
  return s;
}

// A vocabulary a text can be written in: "<unk>", "<s>", "</s>", then single
// letters, then the same letters after a word boundary. Replaces the tiny
// llama's "t<i>" tokens, which no text tokenizes into.
inline void SetLetterVocab(gguf::Metadata* md, int64_t n_vocab) {
  using gguf::Value;
  using gguf::ValueType;
  std::vector<Value> tokens, scores, types;
  for (int64_t i = 0; i < n_vocab; ++i) {
    std::string text;
    if (i == 0)
      text = "<unk>";
    else if (i == 1)
      text = "<s>";
    else if (i == 2)
      text = "</s>";
    else if (i < 3 + 26)
      text = std::string(1, static_cast<char>('a' + (i - 3)));
    else
      text = "\xe2\x96\x81" + std::string(1, static_cast<char>('a' + (i - 29)));
    tokens.push_back(Value::String(text));
    scores.push_back(Value::Float(ValueType::kF32, -static_cast<double>(i)));
    types.push_back(Value::Int(ValueType::kI32, i == 0 ? 2 : i < 3 ? 3 : 1));
  }
  md->Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, tokens));
  md->Set("tokenizer.ggml.scores", Value::Array(ValueType::kF32, scores));
  md->Set("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, types));
}

// Random words over the letter vocabulary.
inline std::string RandomText(size_t words, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> letter(0, 10), len(1, 6);
  std::string text;
  for (size_t w = 0; w < words; ++w) {
    if (w) text += ' ';
    const int n = len(rng);
    for (int i = 0; i < n; ++i) text += static_cast<char>('a' + letter(rng));
  }
  return text;
}

// Random token ids (not 0..2) for evaluator tests.
inline std::vector<int32_t> RandomTokens(size_t n, int32_t n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(3, n_vocab - 1);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = tok(rng);
  return t;
}

// Several quantizations of one tiny llama, their modules in one source.
struct TinyLibrary {
  MemorySource source;
  std::vector<search::LibraryQm> qms;  // in the order given
  std::vector<std::unique_ptr<TinyLlama>> models;

  // Copies every module of `m` into `source`; returns its manifest with
  // model name "tiny" and the label.
  store::ModelManifest Adopt(std::unique_ptr<TinyLlama> m, const std::string& label) {
    store::ModelManifest man = m->manifest;
    man.model = "tiny";
    man.label = label;
    for (const store::ManifestSlot& s : man.slots) {
      auto d = m->source.Load(s.key);
      EXPECT_TRUE(d.ok());
      source.Add(s.desc, Bytes(d->data(), d->data() + d->size()));
    }
    models.push_back(std::move(m));
    return man;
  }

  void AddQm(const std::string& label, const TinyLlamaSpec& spec) {
    search::LibraryQm q;
    q.label = label;
    q.manifest = Adopt(MakeTinyLlama(spec), label);
    uint64_t bytes = 0, elements = 0;
    for (const auto& s : q.manifest.slots) {
      bytes += s.bytes;
      elements += s.desc.n_elements();
    }
    q.bits_per_weight = 8.0 * static_cast<double>(bytes) / static_cast<double>(elements);
    qms.push_back(std::move(q));
  }

  // Replaces slot `name` of QM `qm` by the same slot of a model made from
  // `spec` (kept in `source`).
  void SwapSlot(size_t qm, const std::string& name, const TinyLlamaSpec& spec) {
    store::ModelManifest other = Adopt(MakeTinyLlama(spec), "donor");
    for (auto& s : qms[qm].manifest.slots) {
      if (s.name == name) s = *other.Find(name);
    }
  }
};

// The standard three-QM tiny library: up Q8_0, mid Q5_0, low Q4_0.
inline std::unique_ptr<TinyLibrary> ThreeQmLibrary(int64_t n_layer = 2) {
  auto lib = std::make_unique<TinyLibrary>();
  lib->AddQm("Q8_0", SearchSpec(TypeId(QType::kQ8_0), n_layer));
  lib->AddQm("Q5_0", SearchSpec(TypeId(QType::kQ5_0), n_layer));
  lib->AddQm("Q4_0", SearchSpec(TypeId(QType::kQ4_0), n_layer));
  return lib;
}

// Writes the tiny llama of `spec` as a GGUF file (letter vocabulary).
inline std::string WriteTinyGguf(const std::string& path, const TinyLlamaSpec& spec) {
  std::unique_ptr<TinyLlama> m = MakeTinyLlama(spec);
  TestGguf g;
  g.metadata = TinyLlamaMetadata(spec);
  SetLetterVocab(&g.metadata, spec.n_vocab);
  for (const store::ManifestSlot& s : m->manifest.slots) {
    TestTensor t;
    t.name = s.name;
    for (uint32_t d = 0; d < s.desc.n_dims; ++d) t.ne.push_back(s.desc.ne[d]);
    t.type = s.desc.qtype;
    auto data = m->source.Load(s.key);
    EXPECT_TRUE(data.ok());
    t.data.assign(data->data(), data->data() + data->size());
    g.tensors.push_back(std::move(t));
  }
  return WriteGguf(path, g);
}

// A store at `dir` holding model "tiny" with one QM per (label, type).
inline std::unique_ptr<store::Store> TinyStore(
    const std::string& dir, const std::vector<std::pair<std::string, QType>>& qms,
    int64_t n_layer = 2) {
  EXPECT_TRUE(store::Store::Init(Env::Default(), dir).ok());
  auto st = store::Store::Open(Env::Default(), dir);
  EXPECT_TRUE(st.ok());
  for (const auto& [label, type] : qms) {
    const std::string file = dir + "-" + label + ".gguf";
    WriteTinyGguf(file, SearchSpec(TypeId(type), n_layer));
    store::ImportOptions opts;
    opts.model = "tiny";
    opts.label = label;
    opts.threads = 1;
    auto r = store::ImportGguf(st->get(), file, opts);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
  }
  return std::move(st).value();
}

}  // namespace fqpack::testing

#endif  // FQPACK_TESTS_SEARCH_SEARCH_FIXTURE_H_
