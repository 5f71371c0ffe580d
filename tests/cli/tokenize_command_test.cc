// `fqpack tokenize FILE.gguf`: the tokenizer of any GGUF file, vocab-only ones
// (llama.cpp's tokenizer test files, which hold no tensors) included, and
// a one-line error naming the file with a meaningful exit code for a broken
// or unsupported vocabulary.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "schema/env.h"
#include "schema/gguf.h"
#include "tests/support/test_util.h"

namespace fqpack::cli {
namespace {

using testing::RunCommand;

class TokenizeCommand : public ::testing::Test {
 protected:
  int Fq(const std::string& args, std::string* out) {
    return RunCommand(
        testing::FqpackBinary() + " --store " + tmp_.Join("store") + " " + args + " 2>&1", out);
  }

  // The metadata of a vocab file of the test data, changed by `edit`, as a
  // new GGUF file without tensors.
  std::string Rewritten(const std::string& vocab, const std::string& name,
                        const std::function<void(gguf::Metadata*)>& edit) {
    const std::string src = testing::TestDataPath("tokenizer/" + vocab);
    Result<MappedFile> file = Env::Default()->MapFile(src);
    EXPECT_TRUE(file.ok()) << file.status().ToString();
    Result<gguf::Header> header = gguf::ParseFile(file->bytes(), src);
    EXPECT_TRUE(header.ok()) << header.status().ToString();
    gguf::Metadata md = header->metadata;
    edit(&md);
    gguf::FileSpec spec;
    spec.n_kv = md.entries.size();
    spec.kv = gguf::EncodeMetadata(md);
    const std::string path = tmp_.Join(name);
    EXPECT_TRUE(PublishFile(Env::Default(), path, gguf::EncodeHeader(spec)).ok());
    return path;
  }

  testing::TempDir tmp_;
};

void Erase(gguf::Metadata* md, const std::string& key) {
  md->entries.erase(std::remove_if(md->entries.begin(), md->entries.end(),
                                   [&](const gguf::KeyValue& kv) { return kv.key == key; }),
                    md->entries.end());
}

TEST_F(TokenizeCommand, TokenizesWithAVocabOnlyGguf) {
  FQ_REQUIRE_TESTDATA();
  const std::string gpt2 = testing::TestDataPath("tokenizer/ggml-vocab-gpt-2.gguf");
  std::string out;
  // GPT-2: "Hello" 15496, " world" 995; no BOS (the vocabulary adds none).
  ASSERT_EQ(Fq("--json tokenize " + gpt2 + " --text 'Hello world'", &out), 0) << out;
  EXPECT_NE(out.find("\"tokens\":[15496,995]"), std::string::npos) << out;
  EXPECT_NE(out.find("\"pieces\":[\"Hello\",\" world\"]"), std::string::npos) << out;
  EXPECT_NE(out.find("\"model\":\"gpt-2\""), std::string::npos) << out;

  // Control tokens only with --parse-special.
  ASSERT_EQ(Fq("--json tokenize " + gpt2 + " --parse-special --text '<|endoftext|>'", &out), 0)
      << out;
  EXPECT_NE(out.find("\"tokens\":[50256]"), std::string::npos) << out;

  // A SentencePiece vocab file: BOS first unless --no-bos.
  const std::string spm = testing::TestDataPath("tokenizer/ggml-vocab-llama-spm.gguf");
  ASSERT_EQ(Fq("--json tokenize " + spm + " --text 'Hello world'", &out), 0) << out;
  EXPECT_NE(out.find("\"tokens\":[1,15043,3186]"), std::string::npos) << out;
  ASSERT_EQ(Fq("tokenize " + spm + " --no-bos --text 'Hello world'", &out), 0) << out;
  EXPECT_NE(out.find("15043 -> ' Hello'"), std::string::npos) << out;
}

TEST_F(TokenizeCommand, RefusesBrokenVocabulariesNamingTheFile) {
  FQ_REQUIRE_TESTDATA();
  const std::string no_merges =
      Rewritten("ggml-vocab-gpt-2.gguf", "no-merges.gguf",
                [](gguf::Metadata* md) { Erase(md, "tokenizer.ggml.merges"); });
  std::string out;
  EXPECT_EQ(Fq("tokenize " + no_merges + " --text hi", &out), 3) << out;  // corruption
  EXPECT_EQ(out.rfind("fqpack: error: " + no_merges + ": ", 0), 0u) << out;
  EXPECT_NE(out.find("tokenizer.ggml.merges"), std::string::npos) << out;

  const std::string unknown =
      Rewritten("ggml-vocab-gpt-2.gguf", "unknown-pre.gguf", [](gguf::Metadata* md) {
        md->Set("tokenizer.ggml.pre", gguf::Value::String("klingon-bpe"));
      });
  EXPECT_EQ(Fq("tokenize " + unknown + " --text hi", &out), 5) << out;  // not supported
  EXPECT_NE(out.find(unknown + ": "), std::string::npos) << out;
  EXPECT_NE(out.find("'klingon-bpe'"), std::string::npos) << out;

  const std::string no_vocab =
      Rewritten("ggml-vocab-gpt-2.gguf", "no-vocab.gguf",
                [](gguf::Metadata* md) { Erase(md, "tokenizer.ggml.model"); });
  EXPECT_EQ(Fq("tokenize " + no_vocab + " --text hi", &out), 5) << out;
  EXPECT_NE(out.find(no_vocab + ": no tokenizer"), std::string::npos) << out;

  const std::string text = testing::TestDataPath("tokenizer/ggml-vocab-gpt-2.gguf.inp");
  EXPECT_EQ(Fq("tokenize " + text + " --text hi", &out), 3) << out;
  EXPECT_NE(out.find(text + ": neither a GGUF file nor a .fqpack"), std::string::npos) << out;
}

}  // namespace
}  // namespace fqpack::cli
