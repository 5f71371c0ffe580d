// The export of a .fqpack's EQM or QM as a GGUF (`fqpack export FILE.fqpack`,
// registered with the store's export in store_commands.cc).

#include <algorithm>

#include "cli/app.h"
#include "cli/output.h"
#include "pack/reader.h"
#include "runtime/residency.h"
#include "schema/json.h"
#include "schema/units.h"
#include "store/gguf_export.h"

namespace fqpack::cli {

Status ExportPackGguf(Context& ctx, const std::string& pack_path, const std::string& ensemble,
                      int eqm, const std::string& qm, const std::string& out) {
  if ((eqm >= 0) == !qm.empty())
    return Status::InvalidArgument("export from a .fqpack needs one of --eqm K and --qm LABEL");
  FQ_ASSIGN_OR_RETURN(auto reader, pack::PackReader::Open(ctx.env, pack_path));
  store::ModelManifest manifest;
  if (eqm >= 0) {
    // The residency manager's reading of the ensemble gives the range message.
    runtime::ResidencyOptions ro;
    ro.ensemble = ensemble;
    FQ_ASSIGN_OR_RETURN(auto levels, runtime::ResidencyManager::Open(reader.get(), ro));
    FQ_RETURN_IF_ERROR(levels->LevelOfStep(eqm).status());
    FQ_ASSIGN_OR_RETURN(store::EnsembleInfo e, reader->FindEnsemble(ensemble));
    FQ_ASSIGN_OR_RETURN(manifest, reader->EqmManifest(e.id, eqm));
  } else {
    FQ_ASSIGN_OR_RETURN(manifest, reader->QmManifest(qm));
  }
  Progress progress("export " + manifest.label, 1000, ctx.ShowProgress());
  Result<store::ExportResult> r = store::ExportManifestGguf(
      ctx.env, reader.get(), manifest, out, [&](size_t done, size_t total) {
        progress.Update(done * 1000 / std::max<size_t>(total, 1));
      });
  if (!r.ok()) return r.status().WithContext(pack_path + ": " + manifest.label);
  progress.Finish();
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject()
        .Key("file")
        .String(out)
        .Key("pack")
        .String(pack_path)
        .Key("level")
        .String(manifest.label)
        .Key("bytes")
        .Uint(r->bytes)
        .Key("tensors")
        .Uint(r->tensors)
        .Key("weight_bytes")
        .Uint(manifest.weight_bytes())
        .EndObject();
    ctx.Print(w.str());
  } else {
    ctx.Print("wrote " + out + ": " + manifest.model + " " + manifest.label + ", " +
              std::to_string(r->tensors) + " tensors, " + FormatBytes(r->bytes));
  }
  return Status::OK();
}

}  // namespace fqpack::cli
