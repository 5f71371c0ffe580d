#include "tests/support/test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "schema/quant_types.h"

namespace fqpack::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && *base ? base : "/tmp") + "/fqpack-test-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back(0);
  char* dir = ::mkdtemp(buf.data());
  if (dir == nullptr) std::abort();
  path_ = dir;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TestDataDir() {
  const char* d = std::getenv("FQ_TESTDATA");
  if (d == nullptr || *d == 0) return "";
  if (!Env::Default()->IsDirectory(d)) return "";
  return d;
}

std::string TestDataPath(const std::string& relative) { return JoinPath(TestDataDir(), relative); }

int RunCommand(const std::string& command, std::string* output) {
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  if (output != nullptr) *output = out;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

std::string FqpackBinary() {
#ifdef FQPACK_BINARY
  return FQPACK_BINARY;
#else
  return "fqpack";
#endif
}

namespace {
class FaultyFile : public WritableFile {
 public:
  FaultyFile(std::unique_ptr<WritableFile> base, FaultInjectionEnv* env)
      : base_(std::move(base)), env_(env) {}
  Status Append(ByteSpan data) override {
    FQ_RETURN_IF_ERROR(env_->Step("append " + base_->path()));
    return base_->Append(data);
  }
  Status Sync() override {
    FQ_RETURN_IF_ERROR(env_->Step("fsync " + base_->path()));
    return base_->Sync();
  }
  Status Close() override { return base_->Close(); }
  const std::string& path() const override { return base_->path(); }

 private:
  std::unique_ptr<WritableFile> base_;
  FaultInjectionEnv* env_;
};
}  // namespace

Status FaultInjectionEnv::Step(const std::string& what) {
  int64_t n = ++steps_;
  if (fail_at_ < 0 || n != fail_at_) return Status::OK();
  switch (mode_) {
    case Mode::kCrash:
      std::fflush(nullptr);
      ::_exit(99);
    case Mode::kDiskFull:
      return Status::IOError(what + ": No space left on device");
    case Mode::kFail:
      break;
  }
  return Status::IOError(what + ": injected failure at step " + std::to_string(n));
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(const std::string& path) {
  FQ_RETURN_IF_ERROR(Step("create " + path));
  FQ_ASSIGN_OR_RETURN(auto f, target()->NewWritableFile(path));
  return std::unique_ptr<WritableFile>(new FaultyFile(std::move(f), this));
}

Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  FQ_RETURN_IF_ERROR(Step("rename " + from));
  return target()->RenameFile(from, to);
}

Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  FQ_RETURN_IF_ERROR(Step("unlink " + path));
  return target()->RemoveFile(path);
}

Status FaultInjectionEnv::SyncDir(const std::string& path) {
  FQ_RETURN_IF_ERROR(Step("fsync dir " + path));
  return target()->SyncDir(path);
}

Status FaultInjectionEnv::CreateDir(const std::string& path) {
  FQ_RETURN_IF_ERROR(Step("mkdir " + path));
  return target()->CreateDir(path);
}

void FillRandom(TestGguf* g, uint32_t seed) {
  std::mt19937 rng(seed);
  for (TestTensor& t : g->tensors) {
    if (!t.data.empty()) continue;
    Result<uint64_t> n = TensorBytes(t.type, t.ne);
    if (!n.ok()) std::abort();
    t.data.resize(*n);
    for (uint8_t& b : t.data) b = static_cast<uint8_t>(rng());
  }
}

Bytes EncodeGguf(const TestGguf& g) {
  gguf::FileSpec spec;
  spec.version = g.version;
  spec.n_kv = g.metadata.entries.size();
  spec.kv = gguf::EncodeMetadata(g.metadata);
  spec.alignment = g.alignment;
  for (const TestTensor& t : g.tensors) {
    gguf::TensorInfo ti;
    ti.name = t.name;
    ti.n_dims = static_cast<uint32_t>(t.ne.size());
    for (size_t d = 0; d < t.ne.size(); ++d) ti.ne[d] = t.ne[d];
    ti.type = t.type;
    spec.tensors.push_back(ti);
  }
  if (!gguf::AssignOffsets(&spec).ok()) std::abort();
  Bytes header = gguf::EncodeHeader(spec);
  Bytes out = header;
  for (size_t i = 0; i < g.tensors.size(); ++i) {
    out.resize(header.size() + spec.tensors[i].offset, 0);
    out.insert(out.end(), g.tensors[i].data.begin(), g.tensors[i].data.end());
  }
  uint64_t end = 0;
  AlignUp(out.size(), g.alignment, &end);
  if (!g.tensors.empty()) out.resize(end, 0);
  return out;
}

std::string WriteGguf(const std::string& path, const TestGguf& g) {
  Bytes b = EncodeGguf(g);
  if (!PublishFile(Env::Default(), path, b).ok()) std::abort();
  return path;
}

TestGguf SmallLlama(uint32_t weight_type, uint32_t seed, int n_layers, int n_embd) {
  using gguf::Value;
  using gguf::ValueType;
  TestGguf g;
  const uint64_t vocab = 32, ff = 2 * static_cast<uint64_t>(n_embd);
  g.metadata.Set("general.architecture", Value::String("llama"));
  g.metadata.Set("general.name", Value::String("tiny"));
  g.metadata.Set("llama.embedding_length", Value::Uint(ValueType::kU32, n_embd));
  g.metadata.Set("llama.block_count", Value::Uint(ValueType::kU32, n_layers));
  g.metadata.Set("llama.feed_forward_length", Value::Uint(ValueType::kU32, ff));
  g.metadata.Set("llama.attention.head_count", Value::Uint(ValueType::kU32, 4));
  std::vector<Value> tokens;
  for (uint64_t i = 0; i < vocab; ++i) tokens.push_back(Value::String("t" + std::to_string(i)));
  g.metadata.Set("tokenizer.ggml.tokens", Value::Array(ValueType::kString, tokens));
  auto add = [&](std::string name, std::vector<uint64_t> ne, uint32_t type) {
    g.tensors.push_back({std::move(name), std::move(ne), type, {}});
  };
  const uint32_t f32 = ToId(QType::kF32);
  add("token_embd.weight", {static_cast<uint64_t>(n_embd), vocab}, weight_type);
  add("output_norm.weight", {static_cast<uint64_t>(n_embd)}, f32);
  for (int l = 0; l < n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const uint64_t e = static_cast<uint64_t>(n_embd);
    add(p + "attn_norm.weight", {e}, f32);
    add(p + "attn_q.weight", {e, e}, weight_type);
    add(p + "attn_k.weight", {e, e}, weight_type);
    add(p + "attn_v.weight", {e, e}, weight_type);
    add(p + "attn_output.weight", {e, e}, weight_type);
    add(p + "ffn_norm.weight", {e}, f32);
    add(p + "ffn_gate.weight", {e, ff}, weight_type);
    add(p + "ffn_up.weight", {e, ff}, weight_type);
    add(p + "ffn_down.weight", {ff, e}, weight_type);
  }
  FillRandom(&g, seed);
  return g;
}

}  // namespace fqpack::testing
