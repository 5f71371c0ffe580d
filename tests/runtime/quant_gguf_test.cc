// The dequantizers and kernels on tensors that llama.cpp quantized: every
// quantized tensor of the test ladders, dequantized, must be close to the
// same tensor of the F32 file, and MatMul on real tensors must match the
// double reference.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "runtime/matmul.h"
#include "runtime/quant/quant.h"
#include "schema/env.h"
#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"
#include "tests/runtime/quant_test_util.h"
#include "tests/support/test_util.h"

namespace fqpack::runtime {
namespace {

namespace qt = quant::testing;

struct GgufFile {
  MappedFile mapped;
  gguf::Header header;
  std::map<std::string, size_t> by_name;

  ByteSpan Data(size_t i) const { return header.TensorBytes(mapped.bytes(), i); }
};

GgufFile Open(const std::string& relative) {
  GgufFile f;
  const std::string path = ::fqpack::testing::TestDataPath(relative);
  Result<MappedFile> mapped = Env::Default()->MapFile(path);
  EXPECT_TRUE(mapped.ok()) << mapped.status().ToString();
  if (!mapped.ok()) return f;
  f.mapped = std::move(*mapped);
  Result<gguf::Header> h = gguf::ParseFile(f.mapped.bytes(), path);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  if (!h.ok()) return f;
  f.header = std::move(*h);
  for (size_t i = 0; i < f.header.tensors.size(); ++i) f.by_name[f.header.tensors[i].name] = i;
  return f;
}

std::vector<float> DequantizeTensor(const GgufFile& f, size_t i) {
  const gguf::TensorInfo& t = f.header.tensors[i];
  const int64_t cols = static_cast<int64_t>(t.ne[0]);
  const int64_t rows = static_cast<int64_t>(t.n_elements() / t.ne[0]);
  Bytes bytes(f.Data(i).begin(), f.Data(i).end());
  return qt::Dequantize(t.type, bytes, rows, cols);
}

// Largest RMSE of a dequantized tensor relative to the RMS of the F32
// tensor, per type. Measured on the two ladders (llama.cpp's quantizers, no
// imatrix; the worst tensor of each type): F16 0.00021, Q8_0 0.0062, Q6_K
// 0.018, Q5_K 0.036, Q5_1 0.042, Q5_0 0.050, Q4_K 0.072, IQ4_NL 0.084, Q4_0
// 0.087, Q3_K 0.15, Q2_K 0.30. The bounds leave about 40% headroom; a wrong
// bit position or scale in a layout costs far more than that.
const std::map<uint32_t, double>& RmseBounds() {
  static const std::map<uint32_t, double> bounds = {
      {ToId(QType::kF16), 0.0005}, {ToId(QType::kQ8_0), 0.009},  {ToId(QType::kQ6_K), 0.025},
      {ToId(QType::kQ5_K), 0.05},  {ToId(QType::kQ5_1), 0.06},   {ToId(QType::kQ5_0), 0.07},
      {ToId(QType::kQ4_K), 0.10},  {ToId(QType::kIQ4_NL), 0.12}, {ToId(QType::kQ4_0), 0.12},
      {ToId(QType::kQ3_K), 0.21},  {ToId(QType::kQ2_K), 0.42},
  };
  return bounds;
}

struct Ladder {
  std::string f32;
  std::vector<std::string> quantized;
  std::vector<QType> expected_types;  // each must occur somewhere in the ladder
};

void CheckLadder(const Ladder& ladder) {
  const GgufFile ref = Open(ladder.f32);
  ASSERT_FALSE(ref.header.tensors.empty());
  std::map<uint32_t, double> worst;
  ThreadPool pool(2);
  std::mt19937 rng(7);
  for (const std::string& name : ladder.quantized) {
    SCOPED_TRACE(name);
    const GgufFile f = Open(name);
    ASSERT_FALSE(f.header.tensors.empty());
    std::map<uint32_t, bool> matmul_done;
    for (size_t i = 0; i < f.header.tensors.size(); ++i) {
      const gguf::TensorInfo& t = f.header.tensors[i];
      if (t.type == ToId(QType::kF32)) continue;
      SCOPED_TRACE(t.name + " " + QTypeName(t.type));
      ASSERT_TRUE(CanExecute(t.type));
      auto it = ref.by_name.find(t.name);
      ASSERT_NE(it, ref.by_name.end());
      ASSERT_EQ(ref.header.tensors[it->second].type, ToId(QType::kF32));
      ASSERT_EQ(ref.header.tensors[it->second].ne, t.ne);
      const std::vector<float> got = DequantizeTensor(f, i);
      const std::vector<float> want = DequantizeTensor(ref, it->second);
      double err = 0, sum = 0;
      for (size_t k = 0; k < got.size(); ++k) {
        err += (static_cast<double>(got[k]) - want[k]) * (static_cast<double>(got[k]) - want[k]);
        sum += static_cast<double>(want[k]) * want[k];
      }
      const double rel = std::sqrt(err / sum);
      worst[t.type] = std::max(worst[t.type], rel);

      // One MatMul per type and file, on the real tensor.
      if (t.n_dims == 2 && !matmul_done[t.type]) {
        matmul_done[t.type] = true;
        const int64_t cols = static_cast<int64_t>(t.ne[0]), rows = static_cast<int64_t>(t.ne[1]);
        const uint32_t act_type = quant::FindTraits(t.type)->vec_dot_type;
        const WeightView v{t.type, cols, rows, f.Data(i).data(),
                           static_cast<size_t>(qt::RowBytesOf(t.type, cols))};
        ASSERT_TRUE(CheckWeight(v, t.name).ok());
        const int64_t n_tokens = 5;
        const std::vector<float> x = qt::RandomValues(n_tokens * cols, &rng);
        const std::vector<float> xd =
            qt::Dequantize(act_type, qt::Quantize(act_type, x, n_tokens, cols), n_tokens, cols);
        std::vector<float> y(n_tokens * rows);
        MatMul(v, x.data(), n_tokens, y.data(), &pool);
        for (int64_t tok = 0; tok < n_tokens; ++tok) {
          for (int64_t r = 0; r < rows; ++r) {
            const qt::RefDot d =
                qt::DotInDouble(got.data() + r * cols, xd.data() + tok * cols, cols);
            ASSERT_NEAR(
                y[tok * rows + r], d.value,
                qt::DotTolerance(t.type, v.data + r * v.row_bytes, xd.data() + tok * cols, cols, d))
                << "token " << tok << " row " << r;
          }
        }
      }
    }
  }
  for (QType type : ladder.expected_types) {
    EXPECT_TRUE(worst.count(ToId(type))) << QTypeName(ToId(type)) << " not found in the ladder";
  }
  for (const auto& [type, rel] : worst) {
    auto bound = RmseBounds().find(type);
    ASSERT_NE(bound, RmseBounds().end()) << QTypeName(type);
    EXPECT_LT(rel, bound->second) << QTypeName(type);
    std::cout << "[ rmse     ] " << QTypeName(type) << ": " << rel << " (bound " << bound->second
              << ")\n";
  }
}

TEST(QuantGguf, TinyStories3MLadderDequantizesCloseToF32) {
  FQ_REQUIRE_TESTDATA();
  const std::string dir = "models/tinystories-3M/tinystories-3M-";
  CheckLadder({dir + "F32.gguf",
               {dir + "F16.gguf", dir + "Q8_0.gguf", dir + "Q6_K.gguf", dir + "Q5_K_M.gguf",
                dir + "Q4_K_M.gguf", dir + "Q4_0.gguf", dir + "Q3_K_M.gguf", dir + "Q2_K.gguf"},
               {QType::kQ8_0, QType::kQ6_K, QType::kQ5_K, QType::kQ4_K, QType::kQ4_0, QType::kQ3_K,
                QType::kQ2_K}});
}

TEST(QuantGguf, Stories260KLadderDequantizesCloseToF32) {
  FQ_REQUIRE_TESTDATA();
  const std::string dir = "models/stories260K/stories260K-";
  CheckLadder({dir + "F32.gguf",
               {dir + "F16.gguf", dir + "Q6_K.gguf", dir + "Q5_K_M.gguf", dir + "Q5_K_S.gguf",
                dir + "Q4_K_M.gguf", dir + "Q4_K_S.gguf", dir + "Q3_K_M.gguf", dir + "Q2_K.gguf"},
               {QType::kF16, QType::kQ8_0, QType::kQ5_0, QType::kQ5_1, QType::kIQ4_NL}});
}

}  // namespace
}  // namespace fqpack::runtime
