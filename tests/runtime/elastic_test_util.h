// A tiny llama quantized several ways (the same weights each time), imported
// into a store as a ladder of QMs, with a walk ensemble over them, and packs
// of it: the fixture of the residency, elastic runtime and CLI tests.
#ifndef FQPACK_TESTS_RUNTIME_ELASTIC_TEST_UTIL_H_
#define FQPACK_TESTS_RUNTIME_ELASTIC_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "pack/writer.h"
#include "schema/quant_types.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/support/test_util.h"
#include "tests/support/tiny_llama.h"
#include "tests/support/walk_ensemble.h"

namespace fqpack::testing {

// The tiny llama as a GGUF file.
inline std::string WriteTinyLlamaGguf(const std::string& path, TinyLlama* tiny) {
  TestGguf g;
  Result<gguf::Metadata> md =
      gguf::ParseMetadata(tiny->manifest.metadata, tiny->manifest.n_kv, path);
  EXPECT_TRUE(md.ok()) << md.status().ToString();
  g.metadata = *md;
  for (const store::ManifestSlot& s : tiny->manifest.slots) {
    TestTensor t;
    t.name = s.name;
    for (uint32_t d = 0; d < s.desc.n_dims; ++d) t.ne.push_back(s.desc.ne[d]);
    t.type = s.desc.qtype;
    Result<store::ModuleData> data = tiny->source.Load(s.key);
    EXPECT_TRUE(data.ok());
    t.data.assign(data->bytes().begin(), data->bytes().end());
    g.tensors.push_back(std::move(t));
  }
  return WriteGguf(path, g);
}

// Model "tiny" with one QM per type (labelled by the type's name, highest
// precision first) and the walk ensemble "walk" over them.
class ElasticLadder {
 public:
  static TinyLlamaSpec DefaultSpec() {
    TinyLlamaSpec spec;
    spec.n_vocab = 64;
    spec.n_embd = 64;
    spec.n_layer = 2;
    spec.n_ff = 128;
    spec.n_head = 4;
    spec.n_head_kv = 2;
    spec.n_ctx_train = 64;
    spec.seed = 5;
    return spec;
  }

  explicit ElasticLadder(std::vector<QType> types = {QType::kF16, QType::kQ8_0, QType::kQ4_0},
                         TinyLlamaSpec spec = DefaultSpec())
      : spec_(spec) {
    store_dir_ = tmp_.Join("store");
    EXPECT_TRUE(store::Store::Init(Env::Default(), store_dir_).ok());
    auto s = store::Store::Open(Env::Default(), store_dir_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    for (QType t : types) {
      TinyLlamaSpec ts = spec;
      ts.weight_type = ToId(t);
      std::unique_ptr<TinyLlama> tiny = MakeTinyLlama(ts);
      const std::string label = QTypeName(ToId(t));
      const std::string path = WriteTinyLlamaGguf(tmp_.Join("tiny-" + label + ".gguf"), tiny.get());
      store::ImportOptions io;
      io.model = "tiny";
      io.label = label;
      auto r = store::ImportGguf(store_.get(), path, io);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      labels_.push_back(label);
      gguf_paths_.push_back(path);
    }
    auto n = AddWalkEnsemble(store_.get(), "tiny", labels_, "walk");
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    n_eqms_ = n.ok() ? *n : 0;
  }

  // Writes a pack of everything (the ensemble and its QMs).
  std::string Pack(pack::Codec codec, const std::string& name = "tiny.fqpack",
                   std::vector<std::string> ensembles = {}, std::vector<std::string> qms = {}) {
    pack::PackOptions opts;
    opts.codec = codec;
    opts.ensembles = std::move(ensembles);
    opts.qms = std::move(qms);
    const std::string path = tmp_.Join(name);
    auto r = pack::WritePack(store_.get(), opts, path);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return path;
  }

  store::Store* store() { return store_.get(); }
  const std::string& store_dir() const { return store_dir_; }
  const std::vector<std::string>& labels() const { return labels_; }
  const std::vector<std::string>& gguf_paths() const { return gguf_paths_; }
  int n_eqms() const { return n_eqms_; }
  const TinyLlamaSpec& spec() const { return spec_; }
  std::string Join(const std::string& name) const { return tmp_.Join(name); }

 private:
  TempDir tmp_;
  TinyLlamaSpec spec_;
  std::string store_dir_;
  std::unique_ptr<store::Store> store_;
  std::vector<std::string> labels_;
  std::vector<std::string> gguf_paths_;
  int n_eqms_ = 0;
};

}  // namespace fqpack::testing

#endif  // FQPACK_TESTS_RUNTIME_ELASTIC_TEST_UTIL_H_
