#include "quantize/pipeline.h"

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <set>

#include "quantize/calibration.h"
#include "quantize/codec.h"
#include "quantize/rtn.h"
#include "runtime/model.h"
#include "runtime/quant/quant.h"
#include "runtime/tokenizer.h"
#include "schema/json.h"
#include "schema/quant_types.h"
#include "schema/sha256.h"
#include "schema/thread_pool.h"

namespace fqpack::quantize {
using runtime::Model;
using runtime::Tokenizer;

namespace {

using Clock = std::chrono::steady_clock;

bool IsFloat(uint32_t type) {
  const QTypeInfo* t = FindGgmlType(type);
  return t != nullptr && t->is_float;
}

// The GGUF type for an embedding width, as EmbeddingType documents: the
// row of the type table that says it is the ladder's type for that width.
uint32_t GgufTypeOfBits(int bits) {
  for (const runtime::quant::TypeTraits& t : runtime::quant::AllTraits()) {
    if (t.gguf && t.embed_bits == bits) return t.type;
  }
  return ToId(QType::kQ2_K);
}

store::JsonFields ParamsJson(const QuantizeRequest& req, uint32_t type, uint32_t embed_type,
                             const std::string& calib_sha) {
  store::JsonFields p;
  // clang-format off
  p.Set("method", std::string(req.method == Method::kGptq ? "gptq" : "rtn"))
      .Set("type", QTypeName(type));
  if (IsGroupIntType(type)) {
    p.Set("bits", static_cast<int64_t>(GroupIntBits(type))).Set("group", static_cast<int64_t>(GroupIntGroup(type)));
  }
  p.Set("embed_type", QTypeName(embed_type)).Set("from", req.from);
  if (req.method == Method::kGptq) {
    p.Set("calib_sha256", calib_sha)
        .Set("calib_ctx", static_cast<int64_t>(req.calib_ctx))
        .Set("calib_chunks", static_cast<int64_t>(req.calib_chunks))
        .Set("damp", static_cast<double>(req.gptq.damp))
        .Set("act_order", static_cast<bool>(req.gptq.act_order));
  }
  // clang-format on
  return p;
}

// The float values of a float module.
std::vector<float> ToFloats(const store::ModuleDesc& desc, const store::ModuleData& data) {
  std::vector<float> out(static_cast<size_t>(desc.n_elements()));
  runtime::quant::FindTraits(desc.qtype)
      ->dequantize(data.data(), out.data(), static_cast<int64_t>(out.size()));
  return out;
}

struct TargetState {
  QuantizeTarget target;
  uint32_t embed_type = 0;
  store::JsonFields params;
  // Set when the label exists with the same params: its module per slot.
  bool compare = false;
  int64_t existing_id = 0;
  std::map<int, store::ModuleKey> existing;
  std::unique_ptr<store::QmWriter> writer;
  QmResult result;
};

Result<QuantizeResult> QuantizeLocked(store::Store* store, const QuantizeRequest& req,
                                      std::vector<TargetState>* targets) {
  QuantizeResult out;
  FQ_ASSIGN_OR_RETURN(auto writer_lock, store->WriterLock());
  FQ_ASSIGN_OR_RETURN(store::ModelInfo model, store->ResolveModel(req.model));
  out.model = model.name;
  out.from = req.from;
  Result<store::QmInfo> source = store->FindQm(model.id, req.from);
  if (!source.ok()) {
    if (source.status().IsNotFound()) {
      return Status::NotFound("model '" + model.name + "' has no QM '" + req.from +
                              "' (fqpack ls lists them)");
    }
    return source.status();
  }
  FQ_ASSIGN_OR_RETURN(store::PinnedModel pinned, store->PinQm(model.name, req.from));
  const std::vector<store::ManifestSlot>& slots = pinned.manifest.slots;
  for (const store::ManifestSlot& s : slots) {
    if (!IsFloat(s.desc.qtype)) {
      return Status::InvalidArgument(
          "QM '" + req.from + "' is not a float checkpoint: tensor '" + s.name + "' is " +
          QTypeName(s.desc.qtype) +
          "; quantize from an F32, F16 or BF16 QM (fqpack ls lists them)");
    }
  }

  ThreadPool pool(req.threads);
  const auto report = [&](const QuantizeProgress& p) {
    return req.progress ? req.progress(p) : Status::OK();
  };

  if (req.method == Method::kGptq) {
    out.calib_sha256 = Sha256::HexOf(
        ByteSpan(reinterpret_cast<const uint8_t*>(req.calib_text.data()), req.calib_text.size()));
  }
  // Every label is free, or names this very QM, before any work.
  for (TargetState& t : *targets) {
    t.params = ParamsJson(req, t.target.type, t.embed_type, out.calib_sha256);
    t.result.label = t.target.label;
    t.result.type = t.target.type;
    t.result.params_json = store::ToJson(t.params);
    Result<store::QmInfo> existing = store->FindQm(model.id, t.target.label);
    if (existing.ok()) {
      if (existing->origin != "quantize" || existing->params != t.params) {
        return Status::InvalidArgument(
            "model '" + model.name + "' already has a QM labelled '" + t.target.label + "' (" +
            (existing->origin == "quantize"
                 ? "quantized with other settings: " + store::ToJson(existing->params)
                 : "origin " + existing->origin) +
            "); choose another label with --label, or remove it with `fqpack rm`");
      }
      t.compare = true;
      t.existing_id = existing->id;
      FQ_ASSIGN_OR_RETURN(std::vector<store::ModuleRef> mods, store->QmModules(existing->id));
      for (const store::ModuleRef& r : mods) t.existing[r.slot_idx] = r.key;
    } else if (!existing.status().IsNotFound()) {
      return existing.status();
    } else {
      t.writer = std::make_unique<store::QmWriter>(store, model.id, static_cast<int>(slots.size()));
    }
  }

  // Calibration: the inputs of every linear layer of the float model.
  LayerInputs inputs;
  if (req.method == Method::kGptq) {
    const Clock::time_point t0 = Clock::now();
    FQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model_f,
                        Model::Load(pinned.manifest, pinned.source.get(), &pool));
    FQ_ASSIGN_OR_RETURN(gguf::Metadata md, gguf::ParseMetadata(pinned.manifest.metadata,
                                                               pinned.manifest.n_kv, model.name));
    FQ_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::FromMetadata(md));
    const std::vector<int32_t> tokens = tok.Encode(req.calib_text, true);
    CalibrationOptions copts;
    copts.n_ctx = req.calib_ctx;
    copts.max_chunks = req.calib_chunks;
    copts.bos = tok.add_bos() ? tok.bos() : -1;
    copts.progress = [&](int64_t done, int64_t total) {
      return report({"calibrate", done, total, "", ""});
    };
    Result<LayerInputs> collected = CollectHessians(*model_f, tokens, copts, &pool);
    if (!collected.ok()) return collected.status().WithContext(req.calib_name);
    inputs = std::move(*collected);
    out.calib_tokens = inputs.tokens;
    out.calib_chunks = inputs.chunks;
    out.calib_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }

  // GPTQ factors, one per distinct layer input, made when first needed.
  std::map<const Hessian*, std::unique_ptr<GptqFactor>> factors;
  const auto factor_of = [&](const Hessian* h) -> Result<const GptqFactor*> {
    auto it = factors.find(h);
    if (it != factors.end()) return it->second.get();
    FQ_ASSIGN_OR_RETURN(GptqFactor f, FactorHessian(*h, req.gptq));
    std::string readers;
    for (size_t i = 0; i < inputs.hessians.size(); ++i) {
      if (inputs.hessians[i].get() != h) continue;
      for (const std::string& r : inputs.readers[i]) readers += (readers.empty() ? "" : ", ") + r;
    }
    for (const std::string& w : f.warnings) out.warnings.push_back(readers + ": " + w);
    auto owned = std::make_unique<GptqFactor>(std::move(f));
    const GptqFactor* p = owned.get();
    factors.emplace(h, std::move(owned));
    return p;
  };

  const store::KeyFunction& key_fn = store->blobs()->key_fn();
  const int64_t total = static_cast<int64_t>(slots.size() * targets->size());
  int64_t done = 0;
  for (const store::ManifestSlot& s : slots) {
    FQ_ASSIGN_OR_RETURN(store::ModuleData data, pinned.source->Load(s.key));
    const std::vector<float> w = ToFloats(s.desc, data);
    for (float v : w) {
      if (!std::isfinite(v)) {
        return Status::InvalidArgument("tensor '" + s.name + "' of QM '" + req.from +
                                       "' holds NaN or infinite values");
      }
    }
    const int64_t cols = static_cast<int64_t>(s.desc.ne[0]);
    const int64_t rows = cols == 0 ? 0 : static_cast<int64_t>(s.desc.n_elements()) / cols;
    const bool matrix = s.desc.n_dims >= 2 && rows > 1;
    const bool embedding = s.kind == "embed" || s.kind == "output";
    const Hessian* h = matrix && !embedding ? inputs.Find(s.name) : nullptr;
    for (TargetState& t : *targets) {
      const Clock::time_point t0 = Clock::now();
      TensorResult tr;
      tr.tensor = s.name;
      if (!matrix) {
        tr.type = ToId(QType::kF32);
        tr.method = "copy";
      } else {
        tr.type = TypeForRow(embedding ? t.embed_type : t.target.type, cols, &tr.note);
        tr.method = IsFloat(tr.type) ? "copy" : "rtn";
        if (req.method == Method::kGptq && !embedding && !IsFloat(tr.type)) {
          if (h != nullptr) {
            tr.method = "gptq";
          } else {
            tr.note +=
                std::string(tr.note.empty() ? "" : "; ") + "no calibration input reached it: RTN";
          }
        }
      }
      FQ_ASSIGN_OR_RETURN(const uint64_t row_bytes, RowBytes(tr.type, static_cast<uint64_t>(cols)));
      Bytes bytes(row_bytes * static_cast<uint64_t>(std::max<int64_t>(rows, 1)));
      const int64_t q_rows = std::max<int64_t>(rows, 1);
      if (tr.method == "gptq") {
        FQ_ASSIGN_OR_RETURN(const GptqFactor* f, factor_of(h));
        FQ_RETURN_IF_ERROR(
            QuantizeGptq(tr.type, w.data(), q_rows, cols, *f, req.gptq, bytes.data(), &pool)
                .WithContext("tensor '" + s.name + "'"));
        tr.output_error = RelativeOutputError(tr.type, bytes.data(), w.data(), q_rows, cols, *h);
      } else {
        FQ_RETURN_IF_ERROR(QuantizeRtn(tr.type, w.data(), q_rows, cols, bytes.data(), &pool)
                               .WithContext("tensor '" + s.name + "'"));
      }
      tr.rmse = QuantizationRmse(tr.type, bytes.data(), w.data(), q_rows, cols);
      store::ModuleDesc desc = s.desc;
      desc.qtype = tr.type;
      if (t.compare) {
        auto it = t.existing.find(s.idx);
        if (it == t.existing.end() || it->second != key_fn(desc, bytes)) {
          return Status::InvalidArgument(
              "model '" + model.name + "' already has a QM labelled '" + t.target.label +
              "' with the same settings but different modules (tensor '" + s.name +
              "' differs); choose another label with --label, or remove it with `fqpack rm`");
        }
        ++t.result.reused_modules;
      } else {
        Result<store::QmWriter::Staged> st = t.writer->Add(s.idx, desc, bytes);
        if (!st.ok()) return st.status().WithContext("tensor '" + s.name + "'");
        if (st->reused) {
          ++t.result.reused_modules;
        } else {
          ++t.result.new_modules;
        }
      }
      t.result.weight_bytes += bytes.size();
      tr.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      t.result.tensors.push_back(std::move(tr));
      ++done;
      FQ_RETURN_IF_ERROR(report({"quantize", done, total, t.target.label, s.name}));
    }
  }

  uint64_t elements = 0;
  for (const store::ManifestSlot& s : slots) elements += s.desc.n_elements();
  for (TargetState& t : *targets) {
    t.result.bits_per_weight = elements == 0 ? 0
                                             : 8.0 * static_cast<double>(t.result.weight_bytes) /
                                                   static_cast<double>(elements);
    if (t.compare) {
      t.result.nothing_to_do = true;
      t.result.qm_id = t.existing_id;
    } else {
      store::QmWriter::NewQm qm;
      qm.label = t.target.label;
      qm.origin = "quantize";
      qm.params = t.params;
      qm.source_name = model.name + "/" + req.from;
      qm.source_sha256 = source->source_sha256;
      qm.source_bytes = source->source_bytes;
      FQ_ASSIGN_OR_RETURN(t.result.qm_id, t.writer->Commit(qm));
      t.result.new_stored_bytes = t.writer->new_stored_bytes();
    }
    out.qms.push_back(t.result);
  }
  return out;
}

}  // namespace

std::string DefaultLabel(uint32_t type, Method method) {
  return QTypeName(type) + (method == Method::kGptq ? "-gptq" : "");
}

Result<uint32_t> GroupIntTarget(int bits, int group) {
  if (bits < 2 || bits > 8 || bits == 7) {
    return Status::InvalidArgument("bit width " + std::to_string(bits) +
                                   " is not available; fqpack's group-int types have 2, 3, 4, 5, "
                                   "6 or 8 bits");
  }
  if (group != 32 && group != 64 && group != 128) {
    return Status::InvalidArgument("group size " + std::to_string(group) +
                                   " is not available; use 32, 64 or 128");
  }
  return GroupIntId(static_cast<uint32_t>(bits), static_cast<uint32_t>(group));
}

Result<uint32_t> EmbeddingType(uint32_t target, int embed_bits) {
  switch (embed_bits) {
    case 0:
      return target;
    case 16:
      return ToId(QType::kF16);
    case 32:
      return ToId(QType::kF32);
    case 2:
    case 3:
    case 4:
    case 5:
    case 6:
    case 8:
      if (IsGroupIntType(target)) {
        return GroupIntId(static_cast<uint32_t>(embed_bits), GroupIntGroup(target));
      }
      return GgufTypeOfBits(embed_bits);
    default:
      return Status::InvalidArgument("--embed-bits " + std::to_string(embed_bits) +
                                     " is not available; use 2, 3, 4, 5, 6, 8, 16 (F16), 32 (F32) "
                                     "or 0 (the same type as the other matrices)");
  }
}

uint32_t TypeForRow(uint32_t wanted, int64_t cols, std::string* note) {
  note->clear();
  const auto fits = [cols](uint32_t type) {
    return RowBytes(type, static_cast<uint64_t>(cols)).ok();
  };
  if (fits(wanted)) return wanted;
  const runtime::quant::TypeTraits* t = runtime::quant::FindTraits(wanted);
  uint32_t next = t != nullptr ? t->fallback : ToId(QType::kF16);
  if (!fits(next)) next = ToId(QType::kF16);
  *note = std::to_string(cols) + " columns are not a multiple of " +
          std::to_string(FindGgmlType(wanted)->block_elems) + " (the " + QTypeName(wanted) +
          " block): " + QTypeName(next) + ", as llama.cpp falls back";
  return next;
}

Result<QuantizeResult> QuantizeModel(store::Store* store, const QuantizeRequest& req) {
  if (req.targets.empty()) return Status::InvalidArgument("nothing to make: no target types");
  if (req.method == Method::kGptq && req.calib_text.empty()) {
    return Status::InvalidArgument("GPTQ needs calibration text (--calib FILE)");
  }
  std::vector<TargetState> targets;
  std::set<std::string> labels;
  for (const QuantizeTarget& target : req.targets) {
    if (!IsGroupIntType(target.type) && FindCodec(target.type) == nullptr) {
      return Status::InvalidArgument("fqpack cannot quantize to " + QTypeName(target.type) +
                                     "; GGUF types it makes: " + CodecTypeNames());
    }
    TargetState t;
    t.target = target;
    if (t.target.label.empty()) t.target.label = DefaultLabel(target.type, req.method);
    if (!labels.insert(t.target.label).second) {
      return Status::InvalidArgument("two targets would both be labelled '" + t.target.label + "'");
    }
    FQ_ASSIGN_OR_RETURN(t.embed_type, EmbeddingType(target.type, req.embed_bits));
    targets.push_back(std::move(t));
  }
  Result<QuantizeResult> r = QuantizeLocked(store, req, &targets);
  if (!r.ok()) {
    for (TargetState& t : targets) {
      if (t.writer) t.writer->Abandon();
    }
  }
  return r;
}

}  // namespace fqpack::quantize
