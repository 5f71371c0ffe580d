// store::ImportGguf of arbitrary bytes into a scratch store, as `fqpack
// import` runs it, then store::VerifyStore as `fqpack verify` runs it: the
// store must verify whatever the import returned. A file that imports is
// imported again under a second label (every module reused after a byte
// comparison) and a third time under its own (nothing to do), and exported:
// the export must give back the input byte for byte unless the import warned
// that its padding is not zeros.
//
// One store per process, in ScratchDir(); between inputs it is emptied by
// removing the files created through the Env and restoring the index file
// as it was right after `init`.

#include <filesystem>
#include <memory>
#include <string>

#include "store/gguf_export.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "store/verify.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/fuzz_target.h"

namespace fqpack::fuzz {
namespace {

class ScratchStore {
 public:
  ScratchStore() : dir_(JoinPath(ScratchDir(), "import-store")) {
    Status s = store::Store::Init(&env_, dir_);
    FQ_FUZZ_CHECK(s.ok(), s.ToString());
    {
      // The first open switches the index to WAL; keep it as it is after that.
      Result<std::unique_ptr<store::Store>> st = store::Store::Open(&env_, dir_);
      FQ_FUZZ_CHECK(st.ok(), st.status().ToString());
    }
    Result<Bytes> index = ReadFileBytes(&env_, IndexPath());
    FQ_FUZZ_CHECK(index.ok(), index.status().ToString());
    pristine_index_ = std::move(*index);
    // Init renamed the index into place through the Env: Reset removes it
    // with the rest and writes it back.
    Reset();
  }

  MemoryFileEnv* env() { return &env_; }
  const std::string& dir() const { return dir_; }

  Result<std::unique_ptr<store::Store>> Open() { return store::Store::Open(&env_, dir_); }

  // Back to the empty store. The caller has closed it.
  void Reset() {
    env_.RemoveCreatedFiles();
    env_.ClearFiles();
    std::error_code ec;
    std::filesystem::remove(IndexPath() + "-wal", ec);
    std::filesystem::remove(IndexPath() + "-shm", ec);
    Status s = WriteScratchFile(IndexPath(), pristine_index_);
    FQ_FUZZ_CHECK(s.ok(), s.ToString());
  }

 private:
  std::string IndexPath() const { return JoinPath(dir_, "index.sqlite"); }

  MemoryFileEnv env_;
  std::string dir_;
  Bytes pristine_index_;
};

void RequireVerifies(store::Store* store, const std::string& after) {
  Result<store::VerifyReport> v = store::VerifyStore(store);
  FQ_FUZZ_CHECK(v.ok(), "verify after " + after + ": " + v.status().ToString());
  std::string issues;
  for (const store::VerifyIssue& i : v->issues) {
    if (i.error) issues += "\n  " + i.where + ": " + i.message;
  }
  FQ_FUZZ_CHECK(v->ok(), "verify after " + after + " found:" + issues);
}

void RunImport(ScratchStore* scratch, store::Store* store, const std::string& path,
               ByteSpan input) {
  store::ImportOptions opts;
  opts.threads = 1;
  Result<store::ImportResult> r = store::ImportGguf(store, path, opts);
  const std::string first = "import (" + (r.ok() ? std::string("ok") : r.status().ToString()) + ")";
  if (!r.ok()) {
    // Bad bytes, or a well-formed file the store refuses (no tensors).
    FQ_FUZZ_CHECK(IsDataError(r.status()) || r.status().IsInvalidArgument(), r.status().ToString());
  }
  RequireVerifies(store, first);
  if (!r.ok()) return;
  FQ_FUZZ_CHECK(
      !r->already_imported && r->new_model && r->new_modules + r->reused_modules == r->tensors,
      "counts of a first import");

  opts.label = "again";
  Result<store::ImportResult> again = store::ImportGguf(store, path, opts);
  FQ_FUZZ_CHECK(again.ok(), "the same file under a second label: " + again.status().ToString());
  FQ_FUZZ_CHECK(
      !again->new_model && again->reused_modules == again->tensors && again->new_modules == 0,
      "a second import of the same file must reuse every module");
  opts.label.clear();
  Result<store::ImportResult> same = store::ImportGguf(store, path, opts);
  FQ_FUZZ_CHECK(same.ok() && same->already_imported, "the same file again must be a no-op");
  RequireVerifies(store, "imports under a second label");

  const std::string out = JoinPath(scratch->dir(), "export.gguf");
  Result<store::ExportResult> e = store::ExportQmGguf(store, r->model, r->label, out);
  FQ_FUZZ_CHECK(e.ok(), "export of an imported QM: " + e.status().ToString());
  bool padding_warned = false;
  for (const std::string& w : r->warnings) padding_warned |= w.find("padding") != std::string::npos;
  if (!padding_warned) {
    Result<Bytes> back = ReadFileBytes(scratch->env(), out);
    FQ_FUZZ_CHECK(back.ok(), back.status().ToString());
    FQ_FUZZ_CHECK(std::equal(back->begin(), back->end(), input.begin(), input.end()),
                  "export is not the imported file byte for byte (" + std::to_string(back->size()) +
                      " bytes vs " + std::to_string(input.size()) + ")");
  }
  std::error_code ec;
  std::filesystem::remove(out, ec);
}

}  // namespace
}  // namespace fqpack::fuzz

FQ_FUZZ_ENTRY(fuzz_gguf_import)(const uint8_t* data, size_t size) {
  using namespace fqpack;
  static fuzz::ScratchStore* scratch = new fuzz::ScratchStore();
  // The name gives the model ("fuzz") and the label ("Q8_0").
  const std::string path = JoinPath(fuzz::ScratchDir(), "fuzz-Q8_0.gguf");
  const ByteSpan input(data, size);
  scratch->env()->SetFile(path, input);
  {
    Result<std::unique_ptr<store::Store>> store = scratch->Open();
    FQ_FUZZ_CHECK(store.ok(), "the scratch store does not open: " + store.status().ToString());
    fuzz::RunImport(scratch, store->get(), path, input);
  }
  scratch->Reset();
  return 0;
}
