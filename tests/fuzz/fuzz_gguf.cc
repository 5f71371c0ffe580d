// gguf::ParseFile on arbitrary bytes (what `fqpack import` runs first). When
// a file parses, every tensor's bytes and every metadata value are read
// through the public getters, and the parse is checked against the encoders
// that byte-exact export relies on: the metadata and the header encode back
// to the very bytes they were read from.

#include <algorithm>
#include <string>

#include "schema/gguf.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/fuzz_target.h"

namespace fqpack::fuzz {
namespace {

// A getter's error for a key that is present can only be its wrong type.
template <typename T>
bool PresentKeyResult(const Result<T>& r) {
  return r.ok() || r.status().IsInvalidArgument();
}

void CheckValue(const gguf::Metadata& md, const gguf::KeyValue& kv) {
  using gguf::ValueType;
  const gguf::Value& v = kv.value;
  FQ_FUZZ_CHECK(md.Find(kv.key) == &v, "Find('" + kv.key + "') is not the entry (keys are unique)");
  FQ_FUZZ_CHECK(md.Has(kv.key), kv.key);
  (void)gguf::ValueTypeName(v.type);

  Result<std::string> s = md.GetString(kv.key);
  FQ_FUZZ_CHECK(PresentKeyResult(s) && s.ok() == (v.type == ValueType::kString), kv.key);
  Result<bool> b = md.GetBool(kv.key);
  FQ_FUZZ_CHECK(PresentKeyResult(b) && b.ok() == (v.type == ValueType::kBool), kv.key);
  Result<uint64_t> u = md.GetUint(kv.key);
  Result<int64_t> i = md.GetInt(kv.key);
  Result<double> f = md.GetFloat(kv.key);
  FQ_FUZZ_CHECK(PresentKeyResult(u) && PresentKeyResult(i) && PresentKeyResult(f), kv.key);
  uint64_t uv = 0;
  int64_t iv = 0;
  double fv = 0;
  FQ_FUZZ_CHECK(u.ok() == v.AsUint(&uv) && i.ok() == v.AsInt(&iv) && f.ok() == v.AsDouble(&fv),
                kv.key);
  if (u.ok()) FQ_FUZZ_CHECK(*u == uv, kv.key);
  if (i.ok()) FQ_FUZZ_CHECK(*i == iv, kv.key);
  if (v.is_integer() || v.is_number()) FQ_FUZZ_CHECK(v.is_number() && f.ok(), kv.key);

  Result<std::vector<std::string>> sa = md.GetStringArray(kv.key);
  Result<std::vector<float>> fa = md.GetFloatArray(kv.key);
  Result<std::vector<int64_t>> ia = md.GetIntArray(kv.key);
  FQ_FUZZ_CHECK(PresentKeyResult(sa) && PresentKeyResult(fa) && PresentKeyResult(ia), kv.key);
  if (v.type != ValueType::kArray) {
    FQ_FUZZ_CHECK(!sa.ok() && !fa.ok() && !ia.ok(), kv.key + ": an array getter took a scalar");
    return;
  }
  const size_t n = v.size();
  if (sa.ok()) FQ_FUZZ_CHECK(sa->size() == n, kv.key);
  if (fa.ok()) FQ_FUZZ_CHECK(fa->size() == n, kv.key);
  if (ia.ok()) FQ_FUZZ_CHECK(ia->size() == n, kv.key);
  // Element views; a few are enough, the getters above read them all.
  for (size_t k = 0; k < std::min<size_t>(n, 16); ++k) {
    const gguf::Value e = v.At(k);
    FQ_FUZZ_CHECK(e.type == v.elem_type, kv.key + ": element type");
    if (v.elem_type == ValueType::kString) FQ_FUZZ_CHECK(e.str == v.StringAt(k), kv.key);
  }
}

}  // namespace
}  // namespace fqpack::fuzz

FQ_FUZZ_ENTRY(fuzz_gguf)(const uint8_t* data, size_t size) {
  using namespace fqpack;
  const ByteSpan file(data, size);
  Result<gguf::Header> h = gguf::ParseFile(file, "fuzz.gguf");
  if (!h.ok()) {
    FQ_FUZZ_CHECK(fuzz::IsDataError(h.status()), h.status().ToString());
    return 0;
  }
  FQ_FUZZ_CHECK(h->kv_begin <= h->kv_end && h->kv_end <= h->header_end &&
                    h->header_end <= h->data_offset && h->file_size == size,
                "section bounds");
  FQ_FUZZ_CHECK(h->alignment != 0 && h->data_offset % h->alignment == 0, "alignment");

  for (size_t i = 0; i < h->tensors.size(); ++i) {
    const gguf::TensorInfo& t = h->tensors[i];
    FQ_FUZZ_CHECK(t.n_dims >= 1 && t.n_dims <= gguf::kMaxDims, t.name);
    (void)t.ShapeString();
    (void)t.n_elements();
    const ByteSpan bytes = h->TensorBytes(file, i);
    FQ_FUZZ_CHECK(bytes.size() == t.nbytes && bytes.data() >= data + h->data_offset &&
                      bytes.data() + bytes.size() <= data + size,
                  t.name + ": data outside the data section");
    (void)fuzz::TouchBytes(bytes);
  }

  const gguf::Metadata& md = h->metadata;
  FQ_FUZZ_CHECK(md.entries.size() == h->n_kv, "n_kv");
  for (const gguf::KeyValue& kv : md.entries) fuzz::CheckValue(md, kv);
  const std::string missing = "fuzz.no such key";
  if (md.Find(missing) == nullptr) {
    FQ_FUZZ_CHECK(md.GetString(missing).status().IsNotFound() &&
                      md.GetUint(missing).status().IsNotFound() &&
                      md.GetIntArray(missing).status().IsNotFound(),
                  "a missing key is NotFound");
  }

  // Byte-exact export writes the stored KV section and the tensor infos back
  // through these encoders.
  const ByteSpan kv = h->KvBytes(file);
  const Bytes encoded = gguf::EncodeMetadata(md);
  FQ_FUZZ_CHECK(std::equal(encoded.begin(), encoded.end(), kv.begin(), kv.end()),
                "EncodeMetadata does not give back the bytes it parsed");
  Result<gguf::Metadata> again = gguf::ParseMetadata(kv, h->n_kv, "fuzz.gguf kv");
  FQ_FUZZ_CHECK(again.ok(), "the KV section of a parsed file does not parse alone: " +
                                again.status().ToString());
  FQ_FUZZ_CHECK(gguf::EncodeMetadata(*again) == encoded, "ParseMetadata differs from ParseFile");

  gguf::FileSpec spec;
  spec.version = h->version;
  spec.n_kv = h->n_kv;
  spec.kv.assign(kv.begin(), kv.end());
  spec.tensors = h->tensors;
  spec.alignment = h->alignment;
  const Bytes header = gguf::EncodeHeader(spec);
  FQ_FUZZ_CHECK(
      header.size() >= h->header_end &&
          std::equal(header.begin(), header.begin() + static_cast<ptrdiff_t>(h->header_end), data),
      "EncodeHeader does not give back the header it parsed");
  return 0;
}
