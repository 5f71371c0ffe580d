// fqpack init | import | ls | verify | export: the store itself.

#include <map>
#include <memory>
#include <set>

#include "cli/app.h"
#include "cli/output.h"
#include "pack/reader.h"
#include "runtime/arch.h"
#include "runtime/quant/quant.h"
#include "schema/json.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"
#include "schema/units.h"
#include "search/report.h"
#include "store/gguf_export.h"
#include "store/gguf_import.h"
#include "store/synthetic.h"
#include "store/verify.h"

namespace fqpack::cli {
namespace {

using store::Store;

Status RunInit(Context& ctx) {
  bool created = false;
  FQ_RETURN_IF_ERROR(Store::Init(ctx.env, ctx.StoreDir(), &created));
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject().Key("store").String(ctx.StoreDir()).Key("created").Bool(created).EndObject();
    ctx.Print(w.str());
  } else {
    ctx.Print(created ? "Initialized empty fqpack store in " + ctx.StoreDir()
                      : "Reusing existing fqpack store in " + ctx.StoreDir());
  }
  return Status::OK();
}

struct ImportArgs {
  std::vector<std::string> files;
  std::string model;
  std::string label;
  bool init = true;
};

Status RunImport(Context& ctx, const ImportArgs& args) {
  if (!args.label.empty() && args.files.size() > 1) {
    return Status::InvalidArgument("--label names one QM; give one file with it");
  }
  if (args.init) FQ_RETURN_IF_ERROR(Store::Init(ctx.env, ctx.StoreDir()));
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  JsonWriter w(true);
  w.BeginObject().Key("store").String(ctx.StoreDir()).Key("imports").BeginArray();
  for (const std::string& file : args.files) {
    store::ImportOptions opts;
    opts.model = args.model;
    opts.label = args.label;
    opts.threads = ctx.Threads();
    // Progress in thousandths of the file's tensor bytes.
    Progress progress("import " + BaseName(file), 1000, ctx.ShowProgress());
    opts.progress = [&progress](const store::ImportProgress& p) {
      progress.Update(p.bytes_done * 1000 / std::max<uint64_t>(p.bytes_total, 1));
    };
    Result<store::ImportResult> r = store::ImportGguf(store.get(), file, opts);
    if (!r.ok()) return r.status();
    progress.Finish();
    for (const std::string& warning : r->warnings) ctx.Note("warning: " + warning);
    w.BeginObject()
        .Key("file")
        .String(file)
        .Key("model")
        .String(r->model)
        .Key("label")
        .String(r->label)
        .Key("new_model")
        .Bool(r->new_model)
        .Key("already_imported")
        .Bool(r->already_imported)
        .Key("tensors")
        .Uint(r->tensors)
        .Key("new_modules")
        .Uint(r->new_modules)
        .Key("reused_modules")
        .Uint(r->reused_modules)
        .Key("tensor_bytes")
        .Uint(r->tensor_bytes)
        .Key("new_stored_bytes")
        .Uint(r->new_stored_bytes)
        .Key("sha256")
        .String(r->sha256)
        .EndObject();
    if (!ctx.json) {
      if (r->already_imported) {
        ctx.Print(file + ": already in the store as " + r->model + "/" + r->label +
                  " (nothing to do)");
      } else {
        ctx.Print(file + " -> " + r->model + "/" + r->label + (r->new_model ? " (new model)" : "") +
                  ": " + std::to_string(r->tensors) + " tensors, " +
                  std::to_string(r->new_modules) + " new, " + std::to_string(r->reused_modules) +
                  " already stored; " + FormatBytes(r->tensor_bytes) + " of tensors took " +
                  FormatBytes(r->new_stored_bytes) + " more");
      }
    }
  }
  w.EndArray().EndObject();
  if (ctx.json) ctx.Print(w.str());
  return Status::OK();
}

// Per-model numbers for `ls`.
struct ModelTotals {
  uint64_t logical = 0;        // QMs stored whole
  uint64_t unique_raw = 0;     // distinct modules
  uint64_t unique_stored = 0;  // their blob files
};

Result<ModelTotals> Totals(Store* store, int64_t model_id) {
  FQ_ASSIGN_OR_RETURN(store::ModelTotals t, store->catalog().Totals(model_id));
  return ModelTotals{t.logical, t.unique_raw, t.unique_stored};
}

// A search parameter as `ls` shows it: a string as is, a number or a
// boolean as written; "" when absent or of another kind.
std::string ParamText(const store::JsonFields& params, const std::string& key) {
  const store::JsonValue* v = params.Find(key);
  if (v == nullptr) return "";
  if (const std::string* s = std::get_if<std::string>(v)) return *s;
  if (const int64_t* i = std::get_if<int64_t>(v)) return std::to_string(*i);
  if (const uint64_t* u = std::get_if<uint64_t>(v)) return std::to_string(*u);
  if (const bool* b = std::get_if<bool>(v)) return *b ? "true" : "false";
  return "";
}

// The tensor types a QM holds, most bytes first: "Q4_K+Q6_K+F32".
Result<std::string> TypeMix(Store* store, int64_t qm_id) {
  FQ_ASSIGN_OR_RETURN(std::vector<store::ModuleRef> mods, store->QmModules(qm_id));
  std::map<uint32_t, uint64_t> bytes;
  for (const auto& m : mods) bytes[m.desc.qtype] += m.raw_bytes;
  std::vector<std::pair<uint64_t, uint32_t>> order;
  order.reserve(bytes.size());
  for (auto [t, b] : bytes) order.emplace_back(b, t);
  std::sort(order.rbegin(), order.rend());
  std::string s;
  for (auto [b, t] : order) s += (s.empty() ? "" : "+") + QTypeName(t);
  return s;
}

// `ls --ensembles`: a model's ensembles, one line each.
Status ListEnsembles(Store* store, const store::ModelInfo& m, JsonWriter* w, std::string* text) {
  FQ_ASSIGN_OR_RETURN(std::vector<store::EnsembleInfo> ensembles, store->ListEnsembles(m.id));
  w->Key("ensembles").BeginArray();
  Table table({"ensemble", "library", "EQMs", "footprints", "median step", "search", "created"},
              "llrrrll");
  for (const store::EnsembleInfo& e : ensembles) {
    FQ_ASSIGN_OR_RETURN(std::vector<store::EqmInfo> eqms, store->ListEqms(e.id));
    std::vector<uint64_t> fps;
    fps.reserve(eqms.size());
    for (const store::EqmInfo& q : eqms) fps.push_back(q.footprint);
    const search::StepStats steps = search::FootprintSteps(fps);
    const uint64_t hi = fps.empty() ? 0 : *std::max_element(fps.begin(), fps.end());
    const uint64_t lo = fps.empty() ? 0 : *std::min_element(fps.begin(), fps.end());
    w->BeginObject()
        .Key("name")
        .String(e.name)
        .Key("library")
        .Raw(store::ToJson(e.library))
        .Key("params")
        .Raw(store::ToJson(e.params))
        .Key("eqms")
        .Uint(eqms.size())
        .Key("max_footprint")
        .Uint(hi)
        .Key("min_footprint")
        .Uint(lo)
        .Key("median_step")
        .Double(steps.median)
        .Key("calib_sha256")
        .String(e.calib_sha256)
        .Key("created_at")
        .String(e.created_at)
        .EndObject();
    std::string lib;
    for (const std::string& l : e.library) lib += (lib.empty() ? "" : ">") + l;
    std::string how;
    for (const char* key : {"method", "metric", "stem", "branch", "tokens"}) {
      const std::string v = ParamText(e.params, key);
      if (!v.empty()) how += (how.empty() ? "" : " ") + std::string(key) + "=" + v;
    }
    table.AddRow({e.name, lib, std::to_string(eqms.size()),
                  FormatBytes(hi) + ".." + FormatBytes(lo),
                  FormatBytes(static_cast<uint64_t>(steps.median)), how, e.created_at});
  }
  w->EndArray();
  if (!table.empty())
    *text += table.Render("  ");
  else
    *text += "  (no ensembles; build one with `fqpack search`)\n";
  return Status::OK();
}

Status RunLs(Context& ctx, bool ensembles) {
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  FQ_ASSIGN_OR_RETURN(std::vector<store::ModelInfo> models, store->ListModels());
  FQ_ASSIGN_OR_RETURN(store::StoreStats stats, store->Stats());
  JsonWriter w(true);
  w.BeginObject().Key("store").String(ctx.StoreDir()).Key("models").BeginArray();
  std::string text;
  for (const store::ModelInfo& m : models) {
    FQ_ASSIGN_OR_RETURN(std::vector<store::SlotInfo> slots, store->Slots(m.id));
    FQ_ASSIGN_OR_RETURN(std::vector<store::QmInfo> qms, store->ListQms(m.id));
    FQ_ASSIGN_OR_RETURN(ModelTotals t, Totals(store.get(), m.id));
    const double dedup =
        t.unique_stored == 0 ? 0 : static_cast<double>(t.logical) / t.unique_stored;
    w.BeginObject()
        .Key("name")
        .String(m.name)
        .Key("arch")
        .String(m.arch)
        .Key("slots")
        .Uint(slots.size())
        .Key("hparams")
        .Raw(store::ToJson(m.hparams))
        .Key("qms")
        .BeginArray();
    Table table({"QM", "bits/w", "size", "types", "origin", "source"}, "lrrlll");
    for (const store::QmInfo& q : qms) {
      FQ_ASSIGN_OR_RETURN(std::string mix, TypeMix(store.get(), q.id));
      w.BeginObject()
          .Key("label")
          .String(q.label)
          .Key("bits_per_weight")
          .Double(q.bits_per_weight)
          .Key("bytes")
          .Uint(q.weight_bytes)
          .Key("types")
          .String(mix)
          .Key("origin")
          .String(q.origin)
          .Key("partial")
          .Bool(q.partial)
          .Key("source")
          .String(q.source_name)
          .Key("source_sha256")
          .String(q.source_sha256)
          .EndObject();
      table.AddRow({q.label + (q.partial ? " (partial)" : ""), FormatDouble(q.bits_per_weight, 2),
                    FormatBytes(q.weight_bytes), mix, q.origin, q.source_name});
    }
    w.EndArray()
        .Key("logical_bytes")
        .Uint(t.logical)
        .Key("unique_bytes")
        .Uint(t.unique_raw)
        .Key("stored_bytes")
        .Uint(t.unique_stored)
        .Key("dedup_ratio")
        .Double(dedup);
    std::string ensemble_text;
    if (ensembles) FQ_RETURN_IF_ERROR(ListEnsembles(store.get(), m, &w, &ensemble_text));
    FQ_ASSIGN_OR_RETURN(std::vector<store::DynamicModelInfo> dynamic,
                        store->ListDynamicModels(m.id));
    w.Key("dynamic").BeginArray();
    for (const store::DynamicModelInfo& d : dynamic) {
      w.BeginObject()
          .Key("hi")
          .String(d.hi_label)
          .Key("lo")
          .String(d.lo_label)
          .Key("target_bits")
          .Double(d.target_bits)
          .Key("units")
          .Uint(d.units.size())
          .EndObject();
      ensemble_text += "  dynamic precision hi=" + d.hi_label + ",lo=" + d.lo_label + " (" +
                       std::to_string(d.units.size()) + " units, " +
                       FormatDouble(d.target_bits, 2) + " bits/weight)\n";
    }
    w.EndArray();
    w.EndObject();
    text += "model " + m.name + " (" + m.arch + ", " + std::to_string(slots.size()) + " tensors, " +
            std::to_string(qms.size()) + " QMs)\n";
    if (!table.empty()) text += table.Render("  ");
    text += "  QMs stored whole: " + FormatBytes(t.logical) +
            "; stored once: " + FormatBytes(t.unique_raw) + " in " + FormatBytes(t.unique_stored) +
            " of blobs (" + FormatRatio(dedup) + " smaller)\n";
    text += ensemble_text + "\n";
  }
  const double dedup =
      stats.stored_bytes == 0 ? 0 : static_cast<double>(stats.logical_bytes) / stats.stored_bytes;
  w.EndArray()
      .Key("totals")
      .BeginObject()
      .Key("logical_bytes")
      .Uint(stats.logical_bytes)
      .Key("unique_bytes")
      .Uint(stats.unique_raw_bytes)
      .Key("stored_bytes")
      .Uint(stats.stored_bytes)
      .Key("blobs")
      .Uint(stats.blobs)
      .Key("dedup_ratio")
      .Double(dedup)
      .EndObject()
      .EndObject();
  if (ctx.json) {
    ctx.Print(w.str());
  } else {
    if (models.empty()) text = "(no models; add some with `fqpack import FILE.gguf`)\n";
    text += "store " + ctx.StoreDir() + ": " + std::to_string(stats.blobs) + " modules, " +
            FormatBytes(stats.stored_bytes) + " on disk for " + FormatBytes(stats.logical_bytes) +
            " of QMs (dedup " + FormatRatio(dedup) + ")";
    ctx.Print(text);
  }
  return Status::OK();
}

Status RunVerifyPack(Context& ctx, const std::string& path) {
  Progress progress("verify", 1000, ctx.ShowProgress());
  Result<pack::PackVerifyReport> r =
      pack::VerifyPack(ctx.env, path, [&](size_t done, size_t total) {
        progress.Update(done * 1000 / std::max<size_t>(total, 1));
      });
  // A pack that does not even open is one problem: for a script, reported
  // like the others (--json); for a person, one line naming the defect.
  pack::PackVerifyReport report;
  if (r.ok()) {
    report = *r;
  } else if (r.status().IsCorruption() && ctx.json) {
    report.errors.push_back(r.status().message());
  } else {
    return r.status();
  }
  progress.Finish();
  if (ctx.json) {
    JsonWriter w(true);
    w.BeginObject()
        .Key("file")
        .String(path)
        .Key("ok")
        .Bool(report.ok())
        .Key("modules_checked")
        .Uint(report.modules_checked)
        .Key("bytes_checked")
        .Uint(report.bytes_checked)
        .Key("errors")
        .BeginArray();
    for (const auto& e : report.errors) w.String(e);
    w.EndArray().EndObject();
    ctx.Print(w.str());
  } else {
    for (const auto& e : report.errors) std::fprintf(stderr, "error: %s\n", e.c_str());
    ctx.Print(std::string(report.ok() ? "OK" : "FAILED") + ": " + path + ": " +
              std::to_string(report.modules_checked) + " modules (" +
              FormatBytes(report.bytes_checked) + ") re-hashed, " +
              std::to_string(report.errors.size()) + " errors");
  }
  if (!report.ok()) {
    return Status::Corruption(path + ": verify found " + std::to_string(report.errors.size()) +
                              " problem(s)");
  }
  return Status::OK();
}

Status RunVerify(Context& ctx, const std::string& target) {
  if (!target.empty()) return RunVerifyPack(ctx, target);
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  Progress progress("verify", 1000, ctx.ShowProgress());
  Result<store::VerifyReport> r = store::VerifyStore(store.get(), [&](size_t done, size_t total) {
    progress.Update(done * 1000 / std::max<size_t>(total, 1));
  });
  if (!r.ok()) return r.status();
  progress.Finish();
  if (ctx.json) {
    JsonWriter w(true);
    w.BeginObject()
        .Key("store")
        .String(ctx.StoreDir())
        .Key("ok")
        .Bool(r->ok())
        .Key("blobs_checked")
        .Uint(r->blobs_checked)
        .Key("bytes_checked")
        .Uint(r->bytes_checked)
        .Key("references_checked")
        .Uint(r->references_checked)
        .Key("orphan_files")
        .Uint(r->orphan_files)
        .Key("orphan_bytes")
        .Uint(r->orphan_bytes)
        .Key("errors")
        .Uint(r->errors())
        .Key("issues")
        .BeginArray();
    for (const auto& i : r->issues) {
      w.BeginObject()
          .Key("severity")
          .String(i.error ? "error" : "warning")
          .Key("where")
          .String(i.where)
          .Key("message")
          .String(i.message)
          .EndObject();
    }
    w.EndArray().EndObject();
    ctx.Print(w.str());
  } else {
    for (const auto& i : r->issues) {
      std::fprintf(stderr, "%s: %s: %s\n", i.error ? "error" : "warning", i.where.c_str(),
                   i.message.c_str());
    }
    ctx.Print(std::string(r->ok() ? "OK" : "FAILED") + ": " + std::to_string(r->blobs_checked) +
              " modules (" + FormatBytes(r->bytes_checked) + ") re-hashed, " +
              std::to_string(r->references_checked) + " references checked, " +
              std::to_string(r->errors()) + " errors, " +
              std::to_string(r->issues.size() - r->errors()) + " warnings");
  }
  if (!r->ok()) {
    return Status::Corruption(ctx.StoreDir() + ": verify found " + std::to_string(r->errors()) +
                              " problem(s)");
  }
  return Status::OK();
}

struct ExportArgs {
  std::string model;
  std::string qm;
  std::string out;
  std::string pack;  // a .fqpack file instead of the store
  std::string ensemble;
  int eqm = -1;
};

Status RunExport(Context& ctx, const ExportArgs& args) {
  if (!args.pack.empty()) {
    if (!args.model.empty())
      return Status::InvalidArgument("--model picks a model of the store; a .fqpack holds one");
    return ExportPackGguf(ctx, args.pack, args.ensemble, args.eqm, args.qm, args.out);
  }
  if (args.eqm >= 0 || !args.ensemble.empty()) {
    return Status::InvalidArgument(
        "--eqm and --ensemble export from a .fqpack file: fqpack export FILE.fqpack --eqm K -o "
        "OUT");
  }
  if (args.qm.empty())
    return Status::InvalidArgument("export needs --qm LABEL (or a .fqpack file and --eqm K)");
  FQ_ASSIGN_OR_RETURN(auto store, ctx.OpenStore());
  FQ_ASSIGN_OR_RETURN(store::ModelInfo m, store->ResolveModel(args.model));
  Progress progress("export " + args.qm, 1000, ctx.ShowProgress());
  Result<store::ExportResult> r =
      store::ExportQmGguf(store.get(), m.name, args.qm, args.out, [&](size_t done, size_t total) {
        progress.Update(done * 1000 / std::max<size_t>(total, 1));
      });
  if (!r.ok()) return r.status();
  progress.Finish();
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject()
        .Key("file")
        .String(args.out)
        .Key("bytes")
        .Uint(r->bytes)
        .Key("tensors")
        .Uint(r->tensors)
        .Key("source_layout")
        .Bool(r->byte_exact_layout)
        .EndObject();
    ctx.Print(w.str());
  } else {
    ctx.Print("wrote " + args.out + ": " + std::to_string(r->tensors) + " tensors, " +
              FormatBytes(r->bytes) +
              (r->byte_exact_layout ? " (layout of the imported file)" : ""));
  }
  return Status::OK();
}

struct SynthArgs {
  store::SyntheticLlama spec;
  std::string arch = "llama";
  uint32_t head_dim = 0;  // attention.key_length; 0: n_embd / heads
  std::string type = "F32";
  std::string out;
};

// A model of any architecture of the runtime's table: its keys, then the
// tensors its graph reads (runtime::ExpectedTensors), so that what synth
// writes is exactly what the runtime validates.
Status WriteSyntheticArch(Context& ctx, const SynthArgs& args) {
  using gguf::Value;
  using gguf::ValueType;
  const store::SyntheticLlama& s = args.spec;
  if (s.n_heads == 0 || s.n_kv_heads == 0 || s.n_heads % s.n_kv_heads != 0 ||
      (args.head_dim == 0 && s.n_embd % s.n_heads != 0)) {
    return Status::InvalidArgument(
        "synthetic model: kv heads must divide the heads, and heads the embedding unless "
        "--head-dim is given");
  }
  const uint32_t head_dim = args.head_dim > 0 ? args.head_dim : s.n_embd / s.n_heads;
  const std::string a = args.arch + ".";
  auto u32 = [](uint64_t v) { return Value::Uint(ValueType::kU32, v); };
  gguf::Metadata md;
  md.Set("general.architecture", Value::String(args.arch));
  md.Set("general.name", Value::String(s.name));
  md.Set(a + "context_length", u32(s.n_ctx));
  md.Set(a + "embedding_length", u32(s.n_embd));
  md.Set(a + "feed_forward_length", u32(s.n_ff));
  md.Set(a + "attention.head_count", u32(s.n_heads));
  md.Set(a + "attention.head_count_kv", u32(s.n_kv_heads));
  md.Set(a + "block_count", u32(s.n_layers));
  md.Set(a + "attention.key_length", u32(head_dim));
  md.Set(a + "attention.value_length", u32(head_dim));
  md.Set(a + "rope.dimension_count", u32(head_dim));
  // The bases and windows the families ship with (Qwen 1e6, Gemma 3 1B's
  // 512-token window and 1e6 global base).
  const bool qwen = args.arch == "qwen2" || args.arch == "qwen3";
  const bool gemma = args.arch == "gemma3";
  md.Set(a + "rope.freq_base", Value::Float(ValueType::kF32, qwen || gemma ? 1e6 : 10000.0));
  md.Set(a + "attention.layer_norm_rms_epsilon", Value::Float(ValueType::kF32, 1e-6));
  if (gemma) md.Set(a + "attention.sliding_window", u32(512));
  // Read back through the runtime's table: the same checks a real file gets.
  gguf::Metadata with_vocab = md;
  with_vocab.Set(
      "tokenizer.ggml.tokens",
      Value::Array(ValueType::kString, std::vector<Value>(s.n_vocab, Value::String("t"))));
  FQ_ASSIGN_OR_RETURN(runtime::Hparams hp, runtime::ReadHparams(with_vocab, "synth"));
  std::vector<store::SyntheticTensor> tensors;
  for (const runtime::ExpectedTensor& t : runtime::ExpectedTensors(hp)) {
    if (!t.required && !(t.name == "output.weight" && !s.tied_output)) continue;
    store::SyntheticTensor st;
    st.name = t.name;
    const bool vector = t.ne[1] == 1;
    st.ne = vector ? std::vector<uint64_t>{t.ne[0]} : std::vector<uint64_t>{t.ne[0], t.ne[1]};
    st.fill = !vector                                     ? store::SyntheticTensor::Fill::kMatrix
              : t.name.find(".bias") != std::string::npos ? store::SyntheticTensor::Fill::kBias
                                                          : store::SyntheticTensor::Fill::kNorm;
    tensors.push_back(std::move(st));
  }
  return store::WriteSyntheticGguf(ctx.env, args.out, std::move(md), tensors, s.type, s.n_vocab,
                                   s.seed, s.encode);
}

Status RunSynth(Context& ctx, SynthArgs args) {
  FQ_ASSIGN_OR_RETURN(args.spec.type, ParseQTypeName(args.type));
  // A quantized type: each matrix through the type's reference quantizer
  // (llama.cpp's for the GGUF types), its rows shared over the threads.
  std::unique_ptr<ThreadPool> pool;
  const uint32_t type = args.spec.type;
  if (type != ToId(QType::kF32) && type != ToId(QType::kF16)) {
    const runtime::quant::TypeTraits* t = runtime::quant::FindTraits(type);
    if (t == nullptr || !t->gguf || t->quantize == nullptr) {
      return Status::InvalidArgument("synth --type " + args.type +
                                     ": F32, F16 or a GGUF type fqpack quantizes to");
    }
    pool = std::make_unique<ThreadPool>(ctx.Threads());
    args.spec.encode = [t, p = pool.get()](const float* values, int64_t rows, int64_t cols,
                                           uint8_t* out) -> Status {
      FQ_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(t->type, static_cast<uint64_t>(cols)));
      p->ParallelFor(rows, [&](int64_t begin, int64_t end) {
        t->quantize(values + begin * cols, out + static_cast<uint64_t>(begin) * row_bytes,
                    (end - begin) * cols);
      });
      return Status::OK();
    };
  }
  if (runtime::FindArch(args.arch) == nullptr) {
    std::string names;
    for (const runtime::ArchInfo& a : runtime::Architectures()) {
      if (!names.empty()) names += ", ";
      names += a.name;
    }
    return Status::InvalidArgument("synth --arch '" + args.arch + "': one of " + names);
  }
  if (args.arch == "llama" && args.head_dim == 0) {
    FQ_RETURN_IF_ERROR(store::WriteSyntheticLlama(ctx.env, args.out, args.spec));
  } else {
    FQ_RETURN_IF_ERROR(WriteSyntheticArch(ctx, args));
  }
  FQ_ASSIGN_OR_RETURN(uint64_t size, ctx.env->GetFileSize(args.out));
  ctx.Print("wrote " + args.out + ": synthetic " + args.arch + " (random weights), " +
            std::to_string(args.spec.n_layers) + " layers, n_embd " +
            std::to_string(args.spec.n_embd) + ", " + args.type + ", " + FormatBytes(size));
  return Status::OK();
}

}  // namespace

void RegisterStoreCommands(CLI::App& app, Context& ctx) {
  CLI::App* init =
      app.add_subcommand("init", "Create an empty store (./.fqpack-store, or --store DIR)");
  init->callback([&ctx] { ctx.action = [&ctx] { return RunInit(ctx); }; });

  auto import_args = std::make_shared<ImportArgs>();
  CLI::App* imp =
      app.add_subcommand("import", "Import GGUF checkpoints of one model; each becomes a QM");
  imp->add_option("files", import_args->files, "GGUF files")->required()->check(CLI::ExistingFile);
  imp->add_option("-m,--model", import_args->model, "Model name (default: from the file name)");
  imp->add_option("-l,--label", import_args->label,
                  "QM label (default: from the file name or file type)");
  imp->add_flag("!--no-init", import_args->init, "Fail when the store does not exist yet");
  imp->callback([&ctx, import_args] {
    ctx.action = [&ctx, import_args] { return RunImport(ctx, *import_args); };
  });

  CLI::App* ls = app.add_subcommand("ls", "List models, their QMs, and what deduplication saves");
  auto ls_ensembles = std::make_shared<bool>(false);
  ls->add_flag("--ensembles", *ls_ensembles, "Also list each model's ensembles");
  ls->callback([&ctx, ls_ensembles] {
    ctx.action = [&ctx, ls_ensembles] { return RunLs(ctx, *ls_ensembles); };
  });

  auto verify_target = std::make_shared<std::string>();
  CLI::App* verify = app.add_subcommand(
      "verify", "Re-hash every module and check the index; non-zero exit on any problem");
  verify->add_option("file", *verify_target, "A .fqpack file to verify instead of the store");
  verify->callback([&ctx, verify_target] {
    ctx.action = [&ctx, verify_target] { return RunVerify(ctx, *verify_target); };
  });

  auto export_args = std::make_shared<ExportArgs>();
  CLI::App* exp =
      app.add_subcommand("export", "Write a QM, or an EQM of a .fqpack file, out as a GGUF file");
  exp->add_option("pack", export_args->pack, "A .fqpack file to export from (default: the store)")
      ->check(CLI::ExistingFile);
  exp->add_option("-m,--model", export_args->model,
                  "Model name (needed when the store holds several)");
  exp->add_option("--qm", export_args->qm, "QM label");
  exp->add_option("--eqm", export_args->eqm, "EQM step of the pack's ensemble")
      ->check(CLI::NonNegativeNumber);
  exp->add_option("-e,--ensemble", export_args->ensemble,
                  "Ensemble of the pack (default: the newest)");
  exp->add_option("-o,--output", export_args->out, "Output GGUF file")->required();
  exp->callback([&ctx, export_args] {
    ctx.action = [&ctx, export_args] { return RunExport(ctx, *export_args); };
  });

  auto synth = std::make_shared<SynthArgs>();
  CLI::App* syn = app.add_subcommand(
      "synth",
      "Write a GGUF with random weights (a model of any architecture and shape for demos and "
      "benchmarks)");
  syn->add_option("-o,--output", synth->out, "Output GGUF file")->required();
  syn->add_option("--arch", synth->arch, "Architecture: llama, qwen2, qwen3, gemma3, phi3")
      ->capture_default_str();
  syn->add_option("--head-dim", synth->head_dim, "Head size (attention.key_length; 0: embd/heads)")
      ->capture_default_str();
  syn->add_flag("--tied", synth->spec.tied_output, "No output.weight: the embedding serves");
  syn->add_option("--name", synth->spec.name, "general.name")->capture_default_str();
  syn->add_option("--embd", synth->spec.n_embd, "Embedding width")->capture_default_str();
  syn->add_option("--layers", synth->spec.n_layers, "Blocks")->capture_default_str();
  syn->add_option("--ff", synth->spec.n_ff, "Feed-forward width")->capture_default_str();
  syn->add_option("--heads", synth->spec.n_heads, "Attention heads")->capture_default_str();
  syn->add_option("--kv-heads", synth->spec.n_kv_heads, "Key/value heads")->capture_default_str();
  syn->add_option("--vocab", synth->spec.n_vocab, "Vocabulary size")->capture_default_str();
  syn->add_option("--ctx", synth->spec.n_ctx, "Context length in the metadata")
      ->capture_default_str();
  syn->add_option("--type", synth->type,
                  "F32, F16, or a GGUF type (Q8_0, Q6_K, Q5_K, Q4_K, Q4_0, Q3_K, Q2_K, IQ4_NL, "
                  "...): every matrix of that type, made by the type's reference quantizer")
      ->capture_default_str();
  syn->add_option("--seed", synth->spec.seed, "Random seed")->capture_default_str();
  syn->callback([&ctx, synth] { ctx.action = [&ctx, synth] { return RunSynth(ctx, *synth); }; });
}

}  // namespace fqpack::cli
