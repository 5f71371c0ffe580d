#include "store/gguf_import.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "schema/gguf.h"
#include "schema/sha256.h"
#include "schema/thread_pool.h"
#include "store/naming.h"

namespace fqpack::store {
namespace {

JsonFields Hparams(const std::string& arch, const gguf::Metadata& md) {
  JsonFields w;
  const std::string prefix = arch + ".";
  for (const gguf::KeyValue& kv : md.entries) {
    if (kv.key.rfind(prefix, 0) != 0) continue;
    const gguf::Value& v = kv.value;
    const std::string key = kv.key.substr(prefix.size());
    if (v.type == gguf::ValueType::kString) {
      w.Set(key, v.str);
    } else if (v.type == gguf::ValueType::kBool) {
      w.Set(key, v.u != 0);
    } else if (v.type == gguf::ValueType::kF32 || v.type == gguf::ValueType::kF64) {
      w.Set(key, static_cast<double>(v.f));
    } else if (v.is_integer()) {
      int64_t i;
      uint64_t u;
      if (v.AsInt(&i))
        w.Set(key, i);
      else if (v.AsUint(&u))
        w.Set(key, u);
    }
  }
  return w;
}

// Checks that a checkpoint has exactly the slots of an existing model;
// the message says what differs.
Status MatchModel(const std::string& file, const ModelInfo& model, const std::string& arch,
                  const std::vector<SlotInfo>& slots, const gguf::Header& h) {
  const std::string hint = " (use --model NAME to import it as a new model)";
  if (arch != model.arch) {
    return Status::InvalidArgument(file + ": architecture '" + arch + "' differs from model '" +
                                   model.name + "' ('" + model.arch + "')" + hint);
  }
  std::map<std::string, const gguf::TensorInfo*> by_name;
  for (const gguf::TensorInfo& t : h.tensors) by_name[t.name] = &t;
  for (const SlotInfo& s : slots) {
    auto it = by_name.find(s.name);
    if (it == by_name.end()) {
      return Status::InvalidArgument(file + ": has no tensor '" + s.name + "' that model '" +
                                     model.name + "' has" + hint);
    }
    ModuleDesc d;
    d.n_dims = it->second->n_dims;
    d.ne = it->second->ne;
    if (!d.SameShape(s.shape)) {
      return Status::InvalidArgument(file + ": tensor '" + s.name + "' is " + d.ShapeString() +
                                     " here but " + s.shape.ShapeString() + " in model '" +
                                     model.name + "'" + hint);
    }
    by_name.erase(it);
  }
  if (!by_name.empty()) {
    return Status::InvalidArgument(file + ": tensor '" + by_name.begin()->first +
                                   "' is not in model '" + model.name + "'" + hint);
  }
  return Status::OK();
}

}  // namespace

namespace {
Result<ImportResult> ImportLocked(Store* store, const std::string& path,
                                  const ImportOptions& options,
                                  std::unique_ptr<QmWriter>* writer_out);
}  // namespace

Result<ImportResult> ImportGguf(Store* store, const std::string& path,
                                const ImportOptions& options) {
  std::unique_ptr<QmWriter> writer;
  Result<ImportResult> r = ImportLocked(store, path, options, &writer);
  if (!r.ok() && writer) writer->Abandon();
  return r;
}

namespace {
Result<ImportResult> ImportLocked(Store* store, const std::string& path,
                                  const ImportOptions& options,
                                  std::unique_ptr<QmWriter>* writer_out) {
  Env* env = store->env();
  FQ_ASSIGN_OR_RETURN(MappedFile file, env->MapFile(path));
  file.AdviseSequential();
  FQ_ASSIGN_OR_RETURN(gguf::Header h, gguf::ParseFile(file.bytes(), path));
  if (h.tensors.empty())
    return Status::InvalidArgument(path + ": holds no tensors (a vocabulary-only file?)");

  ImportResult result;
  result.file = path;
  result.tensors = h.tensors.size();

  std::string arch = "unknown";
  if (Result<std::string> a = h.metadata.GetString("general.architecture"); a.ok()) arch = *a;

  const NameGuess guess = GuessNamesFromFile(path);
  result.model = options.model.empty() ? guess.model : options.model;
  result.label = options.label;
  if (result.label.empty()) result.label = guess.label;
  if (result.label.empty()) {
    if (Result<uint64_t> ft = h.metadata.GetUint("general.file_type"); ft.ok()) {
      result.label = FileTypeName(*ft).value_or("");
    }
  }
  if (result.label.empty()) result.label = BaseName(path);

  // Held until this function returns, so that a gc never sweeps the
  // blobs published here before their rows exist.
  FQ_ASSIGN_OR_RETURN(auto writer_lock, store->WriterLock());

  // The model: existing (the checkpoint must match it) or new.
  std::unique_ptr<QmWriter>& writer = *writer_out;
  std::map<std::string, int> slot_of;
  Result<ModelInfo> model = store->FindModel(result.model);
  if (model.ok()) {
    FQ_ASSIGN_OR_RETURN(std::vector<SlotInfo> slots, store->Slots(model->id));
    FQ_RETURN_IF_ERROR(MatchModel(path, *model, arch, slots, h));
    for (const SlotInfo& s : slots) slot_of[s.name] = s.idx;
    Result<QmInfo> existing = store->FindQm(model->id, result.label);
    if (existing.ok()) {
      // Nothing to stage: the fingerprint alone decides.
      const std::string sha = Sha256::HexOf(file.bytes());
      if (existing->source_sha256 == sha) {
        result.already_imported = true;
        result.qm_id = existing->id;
        result.sha256 = sha;
        return result;
      }
      return Status::InvalidArgument(path + ": model '" + result.model +
                                     "' already has a QM labelled '" + result.label + "' (from " +
                                     existing->source_name + "); choose another with --label");
    }
    writer = std::make_unique<QmWriter>(store, model->id, static_cast<int>(slots.size()));
  } else if (model.status().IsNotFound()) {
    result.new_model = true;
    QmWriter::NewModel nm;
    nm.name = result.model;
    nm.arch = arch;
    nm.hparams = Hparams(arch, h.metadata);
    nm.gguf_version = h.version;
    nm.n_kv = h.n_kv;
    ByteSpan kv = h.KvBytes(file.bytes());
    nm.metadata.assign(kv.begin(), kv.end());
    for (size_t i = 0; i < h.tensors.size(); ++i) {
      SlotInfo s;
      s.idx = static_cast<int>(i);
      s.name = h.tensors[i].name;
      s.kind = SlotKindOf(s.name, &s.layer);
      s.shape.n_dims = h.tensors[i].n_dims;
      s.shape.ne = h.tensors[i].ne;
      slot_of[s.name] = s.idx;
      nm.slots.push_back(std::move(s));
    }
    writer = std::make_unique<QmWriter>(store, std::move(nm));
  } else {
    return model.status();
  }

  // Byte-exact export writes zeros between tensors; say so if this file
  // holds anything else there.
  {
    std::vector<size_t> order(h.tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return h.tensors[a].offset < h.tensors[b].offset; });
    uint64_t pos = h.header_end;
    auto nonzero = [&](uint64_t from, uint64_t to) {
      for (uint64_t p = from; p < to; ++p) {
        if (file.data()[p] != 0) return true;
      }
      return false;
    };
    bool dirty = false;
    for (size_t idx : order) {
      const gguf::TensorInfo& t = h.tensors[idx];
      dirty = dirty || nonzero(pos, h.data_offset + t.offset);
      pos = h.data_offset + t.offset + t.nbytes;
    }
    dirty = dirty || nonzero(pos, file.size());
    if (dirty) {
      result.warnings.push_back(
          path + ": padding between tensors is not all zeros; `export` will write zeros there");
    }
  }

  // Stage the modules on a pool of `threads` stagers (hash, compare or
  // compress, publish) plus one more thread that computes the file's
  // fingerprint meanwhile. ParallelFor hands out one task per thread; each
  // stager then takes tensors one at a time until none are left, so uneven
  // tensors balance, and a stager that starts late finds the queue empty.
  uint64_t total = 0;
  for (const gguf::TensorInfo& t : h.tensors) total += t.nbytes;
  result.tensor_bytes = total;
  int threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::clamp(threads, 1, static_cast<int>(h.tensors.size()));
  std::string sha;
  std::atomic<size_t> next{0}, done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<size_t> reused{0};
  std::mutex err_mu, progress_mu;
  Status first_error;
  auto stage = [&] {
    while (true) {
      size_t i = next.fetch_add(1);
      if (i >= h.tensors.size()) return;
      {
        std::lock_guard<std::mutex> lock(err_mu);
        if (!first_error.ok()) return;
      }
      const gguf::TensorInfo& t = h.tensors[i];
      ModuleDesc desc;
      desc.qtype = t.type;
      desc.n_dims = t.n_dims;
      desc.ne = t.ne;
      Result<QmWriter::Staged> st =
          writer->Add(slot_of[t.name], desc, h.TensorBytes(file.bytes(), i),
                      static_cast<int64_t>(i), static_cast<int64_t>(t.offset));
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(err_mu);
        if (first_error.ok())
          first_error = st.status().WithContext(path + ": tensor '" + t.name + "'");
        return;
      }
      if (st->reused) ++reused;
      bytes_done += t.nbytes;
      size_t d = ++done;
      if (options.progress) {
        std::lock_guard<std::mutex> lock(progress_mu);
        options.progress({path, d, h.tensors.size(), bytes_done.load(), total});
      }
    }
  };
  ThreadPool pool(threads + 1);
  pool.ParallelFor(threads + 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      if (task == 0) {
        sha = Sha256::HexOf(file.bytes());
      } else {
        stage();
      }
    }
  });
  FQ_RETURN_IF_ERROR(first_error);
  result.reused_modules = reused.load();
  result.new_modules = h.tensors.size() - result.reused_modules;
  result.new_stored_bytes = writer->new_stored_bytes();

  result.sha256 = sha;
  QmWriter::NewQm qm;
  qm.label = result.label;
  qm.origin = "import";
  qm.source_name = BaseName(path);
  qm.source_sha256 = sha;
  qm.source_bytes = file.size();
  qm.has_gguf_layout = true;
  qm.gguf_version = h.version;
  qm.alignment = h.alignment;
  qm.n_kv = h.n_kv;
  ByteSpan kv = h.KvBytes(file.bytes());
  qm.metadata.assign(kv.begin(), kv.end());
  FQ_ASSIGN_OR_RETURN(result.qm_id, writer->Commit(qm));
  return result;
}

}  // namespace

}  // namespace fqpack::store
