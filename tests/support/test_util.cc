#include "tests/support/test_util.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "schema/quant_types.h"

namespace fqpack::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && *base ? base : "/tmp") + "/fqpack-test-XXXXXX";
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

std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

double JsonNumber(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return NAN;
  return std::strtod(json.c_str() + at + key.size() + 3, nullptr);
}

std::string JsonString(const std::string& json, const std::string& key) {
  size_t i = json.find("\"" + key + "\":");
  if (i == std::string::npos) return "";
  i = json.find('"', i + key.size() + 3) + 1;
  std::string out;
  for (; i < json.size() && json[i] != '"'; ++i) {
    if (json[i] != '\\') {
      out += json[i];
      continue;
    }
    const char c = json[++i];
    switch (c) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'u':
        out += static_cast<char>(std::strtol(json.substr(i + 1, 4).c_str(), nullptr, 16));
        i += 4;
        break;
      default:
        out += c;
    }
  }
  return out;
}

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

// The durability model reads and repairs files behind the wrapped Env's
// back, with plain POSIX calls: it is a test's stand-in for the disk.

// `path` with its directory resolved (symlinks, "..", relative paths), so
// that SQLite's absolute names and the store's names of a file agree.
std::string Canonical(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(DirName(path).c_str(), buf) == nullptr) return path;
  return JoinPath(buf, BaseName(path));
}

std::string CanonicalDir(const std::string& dir) {
  char buf[PATH_MAX];
  return ::realpath(dir.c_str(), buf) == nullptr ? dir : std::string(buf);
}

bool RegularFileSize(const std::string& path, uint64_t* size) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *size = static_cast<uint64_t>(st.st_size);
  return true;
}

// Up to `n` bytes at `offset` (fewer at the end of the file).
Bytes ReadRange(const std::string& path, uint64_t offset, uint64_t n) {
  Bytes out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  out.resize(n);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, out.data() + got, n - got, static_cast<off_t>(offset + got));
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

void WriteWhole(const std::string& path, const Bytes& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w <= 0) break;
    done += static_cast<size_t>(w);
  }
  ::close(fd);
}

// What a power cut would leave of one file (one inode: its handles and its
// current name share it).
struct FileState {
  uint64_t synced_size = 0;
  // Bytes below synced_size as they were before each write or truncate
  // since the last Sync, oldest first. Applied newest first, they give back
  // the synced content.
  std::vector<std::pair<uint64_t, Bytes>> undo;
};

// A change of a directory not yet made durable by SyncDir(dir).
struct PendingOp {
  enum class Kind { kCreate, kRename, kRemove, kMkdir, kRmdir };
  Kind kind = Kind::kCreate;
  std::string path;  // the name created, removed, or renamed onto
  std::string from;  // kRename: the old name
  std::string dir;   // canonical directory that holds `path`
  // kRemove, and kRename onto an existing file: the durable content of the
  // file that went away, brought back by a power cut.
  bool had_old = false;
  Bytes old_content;
};

PendingOp MakeOp(PendingOp::Kind kind, const std::string& cpath, const std::string& from = "") {
  PendingOp op;
  op.kind = kind;
  op.path = cpath;
  op.from = from;
  op.dir = DirName(cpath);
  return op;
}

}  // namespace

struct FaultInjectionEnv::Model {
  std::map<std::string, std::shared_ptr<FileState>> files;  // by canonical path
  std::vector<PendingOp> pending;                           // oldest first

  // The state of the file at `cpath`; one not seen before is durable as it is.
  std::shared_ptr<FileState> StateOf(const std::string& cpath) {
    std::shared_ptr<FileState>& st = files[cpath];
    if (st == nullptr) {
      st = std::make_shared<FileState>();
      uint64_t size = 0;
      if (RegularFileSize(cpath, &size)) st->synced_size = size;
    }
    return st;
  }

  static Bytes DurableContent(const std::string& cpath, const FileState& st) {
    Bytes b = ReadRange(cpath, 0, st.synced_size);
    b.resize(st.synced_size, 0);
    for (auto it = st.undo.rbegin(); it != st.undo.rend(); ++it) {
      const uint64_t off = it->first;
      if (off >= b.size()) continue;
      const size_t n = static_cast<size_t>(std::min<uint64_t>(it->second.size(), b.size() - off));
      std::copy(it->second.begin(), it->second.begin() + static_cast<long>(n),
                b.begin() + static_cast<long>(off));
    }
    return b;
  }

  // Remembers that the file at `cpath` is about to go away (remove, or
  // rename onto it), for a power cut to bring back. Opens and closes the
  // file: harmless for what goes away (blobs, WALs, journals), which no
  // connection holds fcntl locks on.
  void SaveOld(const std::string& cpath, PendingOp* op) {
    uint64_t size = 0;
    if (!RegularFileSize(cpath, &size)) return;
    op->had_old = true;
    op->old_content = DurableContent(cpath, *StateOf(cpath));
  }

  static void RestoreContent(const std::string& cpath, const FileState& st) {
    int fd = ::open(cpath.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return;
    struct stat s;
    if (::fstat(fd, &s) == 0 && st.undo.empty() &&
        static_cast<uint64_t>(s.st_size) == st.synced_size) {
      ::close(fd);
      return;
    }
    for (auto it = st.undo.rbegin(); it != st.undo.rend(); ++it) {
      (void)!::pwrite(fd, it->second.data(), it->second.size(), static_cast<off_t>(it->first));
    }
    (void)!::ftruncate(fd, static_cast<off_t>(st.synced_size));
    ::close(fd);
  }
};

class FaultyWritableFile final : public WritableFile {
 public:
  FaultyWritableFile(std::unique_ptr<WritableFile> base, FaultInjectionEnv* env,
                     std::shared_ptr<FileState> state)
      : base_(std::move(base)), env_(env), state_(std::move(state)) {}
  Status Append(ByteSpan data) override {
    std::lock_guard<std::mutex> lock(env_->mu_);
    FQ_RETURN_IF_ERROR(env_->Step("append " + base_->path()));
    FQ_RETURN_IF_ERROR(base_->Append(data));
    size_ += data.size();
    return Status::OK();
  }
  Status Sync() override {
    if (env_->SyncDropped(base_->path(), false)) return Status::OK();
    std::lock_guard<std::mutex> lock(env_->mu_);
    FQ_RETURN_IF_ERROR(env_->Step("fsync " + base_->path(), true));
    if (env_->real_syncs_) FQ_RETURN_IF_ERROR(base_->Sync());
    // The file was created (or truncated) by this handle: it holds exactly
    // what was appended.
    state_->synced_size = size_;
    state_->undo.clear();
    return Status::OK();
  }
  Status Close() override { return base_->Close(); }
  const std::string& path() const override { return base_->path(); }

 private:
  std::unique_ptr<WritableFile> base_;
  FaultInjectionEnv* env_;
  std::shared_ptr<FileState> state_;
  uint64_t size_ = 0;
};

class FaultyRandomRWFile final : public RandomRWFile {
 public:
  FaultyRandomRWFile(std::unique_ptr<RandomRWFile> base, FaultInjectionEnv* env,
                     std::shared_ptr<FileState> state)
      : base_(std::move(base)), env_(env), state_(std::move(state)) {}

  Status Read(uint64_t offset, size_t n, uint8_t* out, size_t* got) override {
    return base_->Read(offset, n, out, got);
  }
  Status Write(uint64_t offset, ByteSpan data) override {
    std::lock_guard<std::mutex> lock(env_->mu_);
    FQ_RETURN_IF_ERROR(env_->Step("write " + base_->path()));
    FQ_RETURN_IF_ERROR(SavePreImage(offset, offset + data.size()));
    return base_->Write(offset, data);
  }
  Status Truncate(uint64_t size) override {
    std::lock_guard<std::mutex> lock(env_->mu_);
    FQ_RETURN_IF_ERROR(env_->Step("truncate " + base_->path()));
    FQ_ASSIGN_OR_RETURN(uint64_t now, base_->Size());
    FQ_RETURN_IF_ERROR(SavePreImage(size, now));
    return base_->Truncate(size);
  }
  Status Sync() override {
    if (env_->SyncDropped(base_->path(), false)) return Status::OK();
    std::lock_guard<std::mutex> lock(env_->mu_);
    FQ_RETURN_IF_ERROR(env_->Step("fsync " + base_->path(), true));
    if (env_->real_syncs_) FQ_RETURN_IF_ERROR(base_->Sync());
    FQ_ASSIGN_OR_RETURN(state_->synced_size, base_->Size());
    state_->undo.clear();
    return Status::OK();
  }
  Result<uint64_t> Size() override { return base_->Size(); }
  Status Close() override { return base_->Close(); }
  const std::string& path() const override { return base_->path(); }

 private:
  // Saves the durable bytes of [begin, end) about to change (mu_ held).
  Status SavePreImage(uint64_t begin, uint64_t end) {
    end = std::min(end, state_->synced_size);
    if (begin >= end) return Status::OK();
    Bytes pre(static_cast<size_t>(end - begin));
    size_t got = 0;
    FQ_RETURN_IF_ERROR(base_->Read(begin, pre.size(), pre.data(), &got));
    pre.resize(got);
    if (!pre.empty()) state_->undo.emplace_back(begin, std::move(pre));
    return Status::OK();
  }

  std::unique_ptr<RandomRWFile> base_;
  FaultInjectionEnv* env_;
  std::shared_ptr<FileState> state_;
};

FaultInjectionEnv::FaultInjectionEnv(Env* target)
    : EnvWrapper(target), model_(std::make_unique<Model>()) {}

FaultInjectionEnv::~FaultInjectionEnv() = default;

void FaultInjectionEnv::FailAt(int64_t step, Mode mode) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_at_ = step;
  count_syncs_only_ = false;
  mode_ = mode;
  steps_ = 0;
  sync_steps_ = 0;
  log_.clear();
}

void FaultInjectionEnv::FailAtSync(int64_t n, Mode mode) {
  FailAt(n, mode);
  std::lock_guard<std::mutex> lock(mu_);
  count_syncs_only_ = true;
}

void FaultInjectionEnv::Disarm() {
  std::lock_guard<std::mutex> lock(mu_);
  fail_at_ = -1;
}

std::vector<std::string> FaultInjectionEnv::StepLog() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

void FaultInjectionEnv::DropFileSyncs(const std::string& substring) {
  std::lock_guard<std::mutex> lock(mu_);
  drop_file_syncs_.push_back(substring);
}

void FaultInjectionEnv::DropDirSyncs(const std::string& substring) {
  std::lock_guard<std::mutex> lock(mu_);
  drop_dir_syncs_.push_back(substring);
}

bool FaultInjectionEnv::SyncDropped(const std::string& path, bool dir) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& s : dir ? drop_dir_syncs_ : drop_file_syncs_) {
    if (path.find(s) != std::string::npos) return true;
  }
  return false;
}

Status FaultInjectionEnv::Step(const std::string& what, bool sync) {
  const int64_t n = ++steps_;
  const int64_t n_sync = sync ? ++sync_steps_ : sync_steps_.load();
  log_.push_back(what);
  const bool hit = fail_at_ > 0 && (count_syncs_only_ ? sync && n_sync == fail_at_ : n == fail_at_);
  if (!hit) return Status::OK();
  // No flushing of stdio on the way out: a kill does not flush either.
  switch (mode_) {
    case Mode::kCrash:
      ::_exit(99);
    case Mode::kPowerLoss:
      DropUnsyncedDataLocked();
      ::_exit(99);
    case Mode::kDiskFull:
      return Status::IOError(what + ": No space left on device");
    case Mode::kFail:
      break;
  }
  return Status::IOError(what + ": injected failure at step " + std::to_string(n));
}

void FaultInjectionEnv::DropUnsyncedData() {
  std::lock_guard<std::mutex> lock(mu_);
  DropUnsyncedDataLocked();
}

void FaultInjectionEnv::PowerLoss() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    DropUnsyncedDataLocked();
  }
  ::_exit(99);
}

void FaultInjectionEnv::DropUnsyncedDataLocked() {
  // Contents first, under the names files have now; then the names, newest
  // change first, so that each undo sees the directory as it was right
  // after that change.
  for (const auto& [path, state] : model_->files) Model::RestoreContent(path, *state);
  for (auto it = model_->pending.rbegin(); it != model_->pending.rend(); ++it) {
    const PendingOp& op = *it;
    switch (op.kind) {
      case PendingOp::Kind::kCreate:
        ::unlink(op.path.c_str());
        break;
      case PendingOp::Kind::kRename:
        ::rename(op.path.c_str(), op.from.c_str());
        if (op.had_old) WriteWhole(op.path, op.old_content);
        break;
      case PendingOp::Kind::kRemove:
        if (op.had_old) WriteWhole(op.path, op.old_content);
        break;
      case PendingOp::Kind::kMkdir:
        ::rmdir(op.path.c_str());
        break;
      case PendingOp::Kind::kRmdir:
        ::mkdir(op.path.c_str(), 0755);
        break;
    }
  }
  model_->files.clear();
  model_->pending.clear();
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  FQ_RETURN_IF_ERROR(Step("create " + path));
  const std::string cpath = Canonical(path);
  uint64_t old_size = 0;
  const bool existed = RegularFileSize(cpath, &old_size);
  std::shared_ptr<FileState> state;
  if (existed) {
    // Opening truncates: keep what was durable.
    state = model_->StateOf(cpath);
    const uint64_t keep = std::min(old_size, state->synced_size);
    if (keep > 0) state->undo.emplace_back(0, ReadRange(cpath, 0, keep));
  }
  FQ_ASSIGN_OR_RETURN(auto f, target()->NewWritableFile(path));
  if (!existed) {
    model_->pending.push_back(MakeOp(PendingOp::Kind::kCreate, cpath));
    state = std::make_shared<FileState>();
    model_->files[cpath] = state;
  }
  return std::unique_ptr<WritableFile>(
      new FaultyWritableFile(std::move(f), this, std::move(state)));
}

Result<std::unique_ptr<RandomRWFile>> FaultInjectionEnv::OpenRandomRWFile(const std::string& path,
                                                                          OpenMode mode) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string cpath = Canonical(path);
  uint64_t size = 0;
  const bool creates = mode == OpenMode::kReadWriteCreate && !RegularFileSize(cpath, &size);
  if (creates) FQ_RETURN_IF_ERROR(Step("create " + path));
  FQ_ASSIGN_OR_RETURN(auto f, target()->OpenRandomRWFile(path, mode));
  std::shared_ptr<FileState> state;
  if (creates) {
    model_->pending.push_back(MakeOp(PendingOp::Kind::kCreate, cpath));
    state = std::make_shared<FileState>();
    model_->files[cpath] = state;
  } else {
    state = model_->StateOf(cpath);
  }
  return std::unique_ptr<RandomRWFile>(
      new FaultyRandomRWFile(std::move(f), this, std::move(state)));
}

Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mu_);
  FQ_RETURN_IF_ERROR(Step("rename " + from + " -> " + to));
  const std::string cfrom = Canonical(from), cto = Canonical(to);
  std::shared_ptr<FileState> moved = model_->StateOf(cfrom);
  PendingOp op = MakeOp(PendingOp::Kind::kRename, cto, cfrom);
  model_->SaveOld(cto, &op);
  FQ_RETURN_IF_ERROR(target()->RenameFile(from, to));
  model_->pending.push_back(std::move(op));
  model_->files.erase(cfrom);
  model_->files[cto] = std::move(moved);
  return Status::OK();
}

Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  FQ_RETURN_IF_ERROR(Step("unlink " + path));
  const std::string cpath = Canonical(path);
  PendingOp op = MakeOp(PendingOp::Kind::kRemove, cpath);
  model_->SaveOld(cpath, &op);
  FQ_RETURN_IF_ERROR(target()->RemoveFile(path));
  model_->pending.push_back(std::move(op));
  model_->files.erase(cpath);
  return Status::OK();
}

Status FaultInjectionEnv::RemoveDir(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  FQ_RETURN_IF_ERROR(Step("rmdir " + path));
  const std::string cpath = Canonical(path);
  FQ_RETURN_IF_ERROR(target()->RemoveDir(path));
  model_->pending.push_back(MakeOp(PendingOp::Kind::kRmdir, cpath));
  return Status::OK();
}

Status FaultInjectionEnv::SyncDir(const std::string& path) {
  if (SyncDropped(path, true)) return Status::OK();
  std::lock_guard<std::mutex> lock(mu_);
  FQ_RETURN_IF_ERROR(Step("fsync dir " + path, true));
  if (real_syncs_) FQ_RETURN_IF_ERROR(target()->SyncDir(path));
  const std::string dir = CanonicalDir(path);
  std::erase_if(model_->pending, [&](const PendingOp& op) { return op.dir == dir; });
  return Status::OK();
}

Status FaultInjectionEnv::CreateDir(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  FQ_RETURN_IF_ERROR(Step("mkdir " + path));
  const bool existed = target()->IsDirectory(path);
  FQ_RETURN_IF_ERROR(target()->CreateDir(path));
  if (!existed) {
    const std::string cpath = Canonical(path);
    model_->pending.push_back(MakeOp(PendingOp::Kind::kMkdir, cpath));
  }
  return Status::OK();
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
  if (!AlignUp(out.size(), g.alignment, &end)) std::abort();  // a test model's size never wraps
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
