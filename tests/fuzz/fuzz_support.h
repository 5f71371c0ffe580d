// Helpers the fuzz targets and the seed generator share: an Env that serves
// an input from memory, a per-process scratch directory, and a small
// SentencePiece vocabulary.
//
// Thread-safety: a fuzz target runs one input at a time; none of this is
// meant to be shared between threads except through the Env's own locking.
#ifndef FQPACK_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define FQPACK_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "schema/coding.h"
#include "schema/env.h"
#include "schema/gguf.h"
#include "schema/status.h"

namespace fqpack::fuzz {

// Forwards to Env::Default(), except that MapFile of a path given to
// SetFile returns a copy of those bytes in a heap buffer of exactly their
// size (so AddressSanitizer sees a read one byte past the end, which a page
// of a real mapping would hide). It also remembers every file created or
// renamed into place through it, so that a scratch store can be emptied
// without listing its directories.
class MemoryFileEnv : public EnvWrapper {
 public:
  MemoryFileEnv() : EnvWrapper(Env::Default()) {}

  void SetFile(const std::string& path, ByteSpan bytes);
  void ClearFiles();
  // Removes every file created through this Env that still exists.
  void RemoveCreatedFiles();

  Result<MappedFile> MapFile(const std::string& path) override;
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  Status RenameFile(const std::string& from, const std::string& to) override;

 private:
  std::mutex mu_;
  std::map<std::string, Bytes> files_;
  std::set<std::string> created_;
};

// A directory of this process for scratch files, under $FQ_FUZZ_SCRATCH
// when set, else /dev/shm when it exists (stores fsync a lot; on tmpfs that
// costs nothing), else $TMPDIR or /tmp. Created on first use and removed
// with its contents at a normal exit (a crash leaves it behind, which is
// why .ci/fuzz.sh points FQ_FUZZ_SCRATCH at a directory it removes).
const std::string& ScratchDir();

// Writes `bytes` to `path` (plain write, no fsync: scratch files only).
Status WriteScratchFile(const std::string& path, ByteSpan bytes);

// True for the errors a reader may give for bad bytes.
inline bool IsDataError(const Status& s) { return s.IsCorruption() || s.IsNotSupported(); }

// Sums the bytes so that every one of them is read (AddressSanitizer then
// checks that they all lie inside their buffer).
uint64_t TouchBytes(ByteSpan bytes);

// The metadata of a small vocabulary in llama.cpp's SentencePiece layout:
// <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, "▁" and a few dozen
// scored pieces of English, so that encoding exercises merges and byte
// fallback and every byte string decodes back to itself.
gguf::Metadata TinyVocabMetadata();
// The same as a GGUF file without tensors (what llama.cpp's vocab files are).
Bytes TinyVocabGguf();
// A byte-level BPE vocabulary (tokenizer.ggml.model "gpt2", pre "llama-bpe"):
// the 256 characters of GPT-2's byte map, a few merged words, their merges,
// and "<|endoftext|>" (control, BOS/EOS/EOT); as metadata and as a GGUF file
// without tensors.
gguf::Metadata TinyBpeVocabMetadata();
Bytes TinyBpeVocabGguf();

}  // namespace fqpack::fuzz

#endif  // FQPACK_TESTS_FUZZ_FUZZ_SUPPORT_H_
