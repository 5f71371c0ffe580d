// fqpack's quantizers for the GGUF types against llama.cpp's own files: for
// every quantized tensor of llama.cpp's ladders (made without an imatrix),
// quantizing the same F32 tensor to the same type with fqpack's RTN must give
// an RMSE no worse than 1.05x llama.cpp's. tinystories-3M's tensors are real
// k-quants (Q2_K..Q6_K, Q4_0, Q8_0); stories260K's are the fallback types
// (Q8_0, Q5_0, Q5_1, IQ4_NL). Also: codec output decodes to exactly the
// values the codec meant (Encode agrees with the runtime's dequantizers).
#include "quantize/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "quantize/rtn.h"
#include "runtime/quant/quant.h"
#include "schema/env.h"
#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"
#include "tests/runtime/quant_test_util.h"
#include "tests/support/test_util.h"

namespace fqpack::quantize {
namespace {

// The bound the quantizers are held to against llama.cpp's files.
constexpr double kMaxRmseRatioToLlamaCpp = 1.05;

struct GgufFile {
  MappedFile file;
  gguf::Header header;
};

GgufFile Open(const std::string& relative) {
  const std::string path = fqpack::testing::TestDataPath(relative);
  Result<MappedFile> f = Env::Default()->MapFile(path);
  EXPECT_TRUE(f.ok()) << path;
  Result<gguf::Header> h = gguf::ParseFile(f->bytes(), path);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return {std::move(*f), std::move(*h)};
}

std::vector<float> AsFloats(const GgufFile& g, size_t i) {
  const gguf::TensorInfo& t = g.header.tensors[i];
  std::vector<float> out(t.n_elements());
  const runtime::quant::TypeTraits* traits = runtime::quant::FindTraits(t.type);
  const int64_t cols = static_cast<int64_t>(t.ne[0]);
  const int64_t rows = static_cast<int64_t>(t.n_elements()) / cols;
  const uint64_t row_bytes = RowBytes(t.type, t.ne[0]).value();
  ByteSpan bytes = g.header.TensorBytes(g.file.bytes(), i);
  for (int64_t r = 0; r < rows; ++r) {
    traits->dequantize(bytes.data() + r * row_bytes, out.data() + r * cols, cols);
  }
  return out;
}

double Rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s / static_cast<double>(a.size()));
}

struct Worst {
  double ratio = 0;
  std::string where;
  int tensors = 0;
};

// Compares every quantized tensor of `ladder` files with fqpack's RTN of the
// same F32 tensor; returns the worst ratio per type.
std::map<std::string, Worst> CompareLadder(const std::string& f32_path,
                                           const std::vector<std::string>& ladder) {
  const GgufFile f32 = Open(f32_path);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < f32.header.tensors.size(); ++i) index[f32.header.tensors[i].name] = i;
  std::map<std::string, Worst> worst;
  ThreadPool pool(2);
  for (const std::string& file : ladder) {
    const GgufFile q = Open(file);
    for (size_t i = 0; i < q.header.tensors.size(); ++i) {
      const gguf::TensorInfo& t = q.header.tensors[i];
      if (FindCodec(t.type) == nullptr) continue;  // float tensors
      const std::vector<float> ref = AsFloats(f32, index.at(t.name));
      const std::vector<float> theirs = AsFloats(q, i);
      const int64_t cols = static_cast<int64_t>(t.ne[0]);
      const int64_t rows = static_cast<int64_t>(t.n_elements()) / cols;
      Bytes mine(RowBytes(t.type, t.ne[0]).value() * rows);
      EXPECT_TRUE(QuantizeRtn(t.type, ref.data(), rows, cols, mine.data(), &pool).ok());
      const double ours = QuantizationRmse(t.type, mine.data(), ref.data(), rows, cols);
      const double llama = Rmse(theirs, ref);
      Worst& w = worst[QTypeName(t.type)];
      ++w.tensors;
      const double ratio = ours / llama;
      if (ratio > w.ratio) {
        w.ratio = ratio;
        w.where = file + ":" + t.name;
      }
      EXPECT_LE(ratio, kMaxRmseRatioToLlamaCpp)
          << file << " " << t.name << " " << QTypeName(t.type) << ": fqpack RMSE " << ours
          << ", llama.cpp " << llama;
    }
  }
  return worst;
}

TEST(QuantizeGguf, KQuantsAreAsGoodAsLlamaCppOnTinyStories3M) {
  FQ_REQUIRE_TESTDATA();
  const std::string dir = "models/tinystories-3M/";
  const std::map<std::string, Worst> worst =
      CompareLadder(dir + "tinystories-3M-F32.gguf",
                    {dir + "tinystories-3M-Q8_0.gguf", dir + "tinystories-3M-Q6_K.gguf",
                     dir + "tinystories-3M-Q5_K_M.gguf", dir + "tinystories-3M-Q4_K_M.gguf",
                     dir + "tinystories-3M-Q4_0.gguf", dir + "tinystories-3M-Q3_K_M.gguf",
                     dir + "tinystories-3M-Q2_K.gguf"});
  for (const char* type : {"Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0", "Q3_K", "Q2_K"}) {
    ASSERT_TRUE(worst.count(type)) << type << " not found in the ladder";
  }
  for (const auto& [type, w] : worst) {
    std::printf("  %-6s %3d tensors, worst RMSE ratio fqpack/llama.cpp %.4f (%s)\n", type.c_str(),
                w.tensors, w.ratio, w.where.c_str());
  }
}

TEST(QuantizeGguf, FallbackTypesAreAsGoodAsLlamaCppOnStories260K) {
  FQ_REQUIRE_TESTDATA();
  const std::string dir = "models/stories260K/";
  const std::map<std::string, Worst> worst =
      CompareLadder(dir + "stories260K-F32.gguf",
                    {dir + "stories260K-Q6_K.gguf", dir + "stories260K-Q5_K_M.gguf",
                     dir + "stories260K-Q4_K_M.gguf", dir + "stories260K-Q2_K.gguf"});
  for (const char* type : {"Q8_0", "Q5_1", "Q5_0", "IQ4_NL"}) {
    ASSERT_TRUE(worst.count(type)) << type << " not found in the ladder";
  }
  for (const auto& [type, w] : worst) {
    std::printf("  %-6s %3d tensors, worst RMSE ratio fqpack/llama.cpp %.4f (%s)\n", type.c_str(),
                w.tensors, w.ratio, w.where.c_str());
  }
}

}  // namespace
}  // namespace fqpack::quantize
