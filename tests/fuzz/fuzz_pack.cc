// pack::VerifyPack and pack::PackReader on arbitrary bytes, as `fqpack
// verify model.fqpack`, `fqpack info` and `fqpack run` use them: open,
// verify, every manifest of every QM and EQM, every module loaded, the
// dynamic models, the model's tokenizer, and the residency manager's levels.
//
// The reader is handed the input from memory (MemoryFileEnv); the residency
// manager opens the file by its path to check it is the one the reader
// validated, so a pack that opens is also written to a scratch file.
//
// With libFuzzer, LLVMFuzzerCustomMutator (pack_mutator.h) rewrites the
// index through SQLite and makes the checksums right again, so that inputs
// get past the checksums into the reader's validation of the index rows.

#include <string>

#include "pack/reader.h"
#include "runtime/residency.h"
#include "runtime/tokenizer.h"
#include "schema/gguf.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/pack_mutator.h"

namespace fqpack::fuzz {
namespace {

// EQMs looked at per ensemble: enough for every seed, bounded for a crafted
// index that claims millions.
constexpr size_t kMaxEqms = 64;

void LoadManifest(pack::PackReader* reader, const Result<store::ModelManifest>& m) {
  if (!m.ok()) return;
  for (const store::ManifestSlot& s : m->slots) {
    Result<store::ModuleData> d = reader->Load(s.key);
    if (d.ok())
      FQ_FUZZ_CHECK(d->size() == s.bytes, s.name + ": loaded size differs from the manifest's");
  }
}

void ExerciseReader(pack::PackReader* reader, const std::string& path, bool verified_clean) {
  const store::ModelInfo& model = reader->model();
  Result<gguf::Metadata> md = gguf::ParseMetadata(model.metadata, model.n_kv, path);
  if (md.ok()) {
    Result<runtime::Tokenizer> tok = runtime::Tokenizer::FromMetadata(*md);
    if (tok.ok()) (void)tok->Decode(tok->Encode("Once upon a time", true));
  }

  const pack::Footer& footer = reader->footer();
  for (const pack::PayloadInfo& p : reader->payloads()) {
    FQ_FUZZ_CHECK(p.offset >= pack::kHeaderSize && p.stored_bytes <= footer.payload_end &&
                      p.offset <= footer.payload_end - p.stored_bytes,
                  "payload " + p.key.Hex() + " outside the payload area");
    Result<pack::PayloadInfo> again = reader->Payload(p.key);
    FQ_FUZZ_CHECK(again.ok() && again->offset == p.offset, "Payload() of a listed module");
    (void)TouchBytes(reader->PayloadBytes(p));
    Result<store::ModuleData> d = reader->Load(p.key);
    FQ_FUZZ_CHECK(d.ok() || !verified_clean,
                  "verify passed but loading " + p.key.Hex() + " fails: " + d.status().ToString());
    if (d.ok()) {
      FQ_FUZZ_CHECK(d->size() == p.raw_bytes,
                    "module " + p.key.Hex() + " loads with the wrong size");
      (void)TouchBytes(d->bytes());
    }
  }

  if (Result<std::vector<store::QmInfo>> qms = reader->Qms(); qms.ok()) {
    for (const store::QmInfo& q : *qms) {
      Result<store::ModelManifest> m = reader->QmManifest(q.label);
      FQ_FUZZ_CHECK(m.ok() || q.partial || !verified_clean,
                    "verify passed but QM " + q.label + ": " + m.status().ToString());
      LoadManifest(reader, m);
    }
  }
  if (Result<std::vector<store::EnsembleInfo>> ensembles = reader->Ensembles(); ensembles.ok()) {
    (void)reader->FindEnsemble("");
    for (const store::EnsembleInfo& e : *ensembles) {
      (void)reader->FindEnsemble(e.name);
      Result<std::vector<store::EqmInfo>> eqms = reader->Eqms(e.id);
      if (!eqms.ok()) continue;
      for (size_t i = 0; i < eqms->size() && i < kMaxEqms; ++i) {
        Result<store::ModelManifest> m = reader->EqmManifest(e.id, (*eqms)[i].step);
        FQ_FUZZ_CHECK(m.ok() || !verified_clean, "verify passed but EQM " +
                                                     std::to_string((*eqms)[i].step) + ": " +
                                                     m.status().ToString());
        LoadManifest(reader, m);
      }
    }
  }
  if (Result<std::vector<store::DynamicModelInfo>> dyn = reader->DynamicModels(); dyn.ok()) {
    for (const store::DynamicModelInfo& d : *dyn)
      (void)reader->FindDynamicModel(d.hi_label, d.lo_label);
  }
  for (const char* key : {"format_version", "model", "created_at"}) (void)reader->Info(key);
}

void ExerciseResidency(pack::PackReader* reader, bool qms_only) {
  runtime::ResidencyOptions opts;
  opts.qms_only = qms_only;
  Result<std::unique_ptr<runtime::ResidencyManager>> r =
      runtime::ResidencyManager::Open(reader, opts);
  if (!r.ok()) return;
  runtime::ResidencyManager* m = r->get();
  FQ_FUZZ_CHECK(!m->levels().empty(), "a residency manager without levels");
  (void)m->LevelOfStep(0);
  (void)m->LevelOfLabel(m->levels()[0].label);
  const uint64_t min = m->MinimumBudget();
  Result<int> level = m->LevelForBudget(min);
  FQ_FUZZ_CHECK(level.ok(), "the minimum budget " + std::to_string(min) +
                                " fits no level: " + level.status().ToString());
  (void)m->LevelForBudget(~uint64_t{0});
  (void)m->LevelForBudget(1);
}

}  // namespace
}  // namespace fqpack::fuzz

FQ_FUZZ_ENTRY(fuzz_pack)(const uint8_t* data, size_t size) {
  using namespace fqpack;
  static fuzz::MemoryFileEnv* env = new fuzz::MemoryFileEnv();
  const std::string path = JoinPath(fuzz::ScratchDir(), "fuzz.fqpack");
  const ByteSpan input(data, size);
  env->SetFile(path, input);

  Result<pack::PackVerifyReport> verified = pack::VerifyPack(env, path);
  if (!verified.ok())
    FQ_FUZZ_CHECK(fuzz::IsDataError(verified.status()), verified.status().ToString());
  Result<std::unique_ptr<pack::PackReader>> reader = pack::PackReader::Open(env, path);
  if (!reader.ok()) {
    FQ_FUZZ_CHECK(fuzz::IsDataError(reader.status()), reader.status().ToString());
    FQ_FUZZ_CHECK(!verified.ok(), "VerifyPack opened what PackReader::Open refuses");
    return 0;
  }
  fuzz::ExerciseReader(reader->get(), path, verified.ok() && verified->ok());
  Status written = fuzz::WriteScratchFile(path, input);
  FQ_FUZZ_CHECK(written.ok(), written.ToString());
  fuzz::ExerciseResidency(reader->get(), false);
  fuzz::ExerciseResidency(reader->get(), true);
  return 0;
}

#ifndef FQ_FUZZ_REPLAY
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  return fqpack::fuzz::MutatePack(data, size, max_size, seed, LLVMFuzzerMutate);
}
#endif
