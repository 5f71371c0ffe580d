// The block codecs and RTN: blocks decode (with runtime/quant's
// dequantizers) to exactly the values the codec chose, round-trip error
// bounds per type and bit width on random and on real weights, the scale
// search beats min/max, and the bytes do not depend on threads.
#include "quantize/rtn.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "quantize/codec.h"
#include "runtime/quant/quant.h"
#include "schema/env.h"
#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"
#include "tests/runtime/quant_test_util.h"
#include "tests/support/test_util.h"

namespace fqpack::quantize {
namespace {

using runtime::quant::testing::RandomValues;

std::vector<uint32_t> GroupIntTypes() {
  std::vector<uint32_t> types;
  for (uint32_t b : {2u, 3u, 4u, 5u, 6u, 8u}) {
    for (uint32_t g : {32u, 64u, 128u}) types.push_back(GroupIntId(b, g));
  }
  return types;
}

// The GGUF types fqpack quantizes to: the rows of the type table with a
// codec. Each needs a bound in kRandomBounds.
std::vector<uint32_t> GgufTypes() {
  std::vector<uint32_t> types;
  for (const runtime::quant::TypeTraits& t : runtime::quant::AllTraits()) {
    if (t.gguf && t.codec.kind != runtime::quant::CodecShape::Kind::kNone) types.push_back(t.type);
  }
  return types;
}

double Rms(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += double(v) * v;
  return std::sqrt(s / static_cast<double>(x.size()));
}

double RelativeRmse(uint32_t type, const std::vector<float>& w, int64_t rows, int64_t cols,
                    ThreadPool* pool = nullptr) {
  Bytes q(RowBytes(type, cols).value() * rows);
  EXPECT_TRUE(QuantizeRtn(type, w.data(), rows, cols, q.data(), pool).ok()) << QTypeName(type);
  return QuantizationRmse(type, q.data(), w.data(), rows, cols) / Rms(w);
}

TEST(QuantizeCodec, BlocksDecodeToTheValuesTheCodecChose) {
  std::mt19937 rng(21);
  std::vector<uint32_t> types = GroupIntTypes();
  for (uint32_t t : GgufTypes()) types.push_back(t);
  for (uint32_t type : types) {
    const BlockCodec* codec = FindCodec(type);
    ASSERT_NE(codec, nullptr) << QTypeName(type);
    std::vector<int> lengths = {codec->block_elems()};
    if (IsGroupIntType(type)) {
      // A row's last group may be any length up to the group size.
      lengths.insert(lengths.end(), {1, 5, 31, codec->block_elems() - 1});
      if (codec->block_elems() > 33) lengths.push_back(33);
    }
    for (int n : lengths) {
      for (int variant = 0; variant < 4; ++variant) {
        std::vector<float> x = RandomValues(n, &rng, 0.05f);
        if (variant == 1) {
          for (float& v : x) v = std::fabs(v) + 0.02f;  // all positive: offsets matter
        } else if (variant == 2) {
          std::fill(x.begin(), x.end(), 0.0f);
        } else if (variant == 3) {
          std::fill(x.begin(), x.end(), -0.3f);
        }
        BlockGrid g;
        codec->Fit(x.data(), n, nullptr, &g);
        std::vector<int> q(n);
        for (int e = 0; e < n; ++e) {
          q[e] = g.Nearest(e, x[e]);
          ASSERT_GE(q[e], g.qmin);
          ASSERT_LE(q[e], g.qmax);
        }
        Bytes block(codec->BlockBytes(n));
        codec->Encode(g, q.data(), block.data());
        std::vector<float> y(n);
        runtime::quant::FindTraits(type)->dequantize(block.data(), y.data(), n);
        for (int e = 0; e < n; ++e) {
          ASSERT_EQ(y[e], g.Value(e, q[e]))
              << QTypeName(type) << " n=" << n << " variant " << variant << " element " << e;
        }
        if (variant >= 2) {
          // A constant block is represented exactly by the offset types;
          // the symmetric ones at least come close.
          for (int e = 0; e < n; ++e) EXPECT_NEAR(y[e], x[e], 0.3 * 0.05) << QTypeName(type);
        }
      }
    }
  }
}

// Relative RMSE bounds (RMSE over the weights' RMS) of RTN on Gaussian
// weights whose scale drifts every 32 values with 1% outliers
// (RandomValues). Each is 1.2x what the codecs reach, so a quantizer that
// got worse fails.
const std::map<std::string, double> kRandomBounds = {
    {"int2-g32", 0.41},   {"int2-g64", 0.49},    {"int2-g128", 0.56},  {"int3-g32", 0.21},
    {"int3-g64", 0.27},   {"int3-g128", 0.34},   {"int4-g32", 0.099},  {"int4-g64", 0.134},
    {"int4-g128", 0.177}, {"int5-g32", 0.047},   {"int5-g64", 0.065},  {"int5-g128", 0.087},
    {"int6-g32", 0.023},  {"int6-g64", 0.032},   {"int6-g128", 0.044}, {"int8-g32", 0.0058},
    {"int8-g64", 0.0079}, {"int8-g128", 0.0108}, {"Q8_0", 0.0089},     {"Q6_K", 0.0275},
    {"Q5_K", 0.049},      {"Q5_1", 0.047},       {"Q5_0", 0.073},      {"Q4_K", 0.10},
    {"Q4_1", 0.099},      {"Q4_0", 0.143},       {"IQ4_NL", 0.114},    {"Q3_K", 0.21},
    {"Q2_K", 0.34}};

TEST(QuantizeRtn, RoundTripBoundsOnRandomWeights) {
  std::mt19937 rng(5);
  const int64_t rows = 16, cols = 1024;
  const std::vector<float> w = RandomValues(rows * cols, &rng, 0.02f);
  std::vector<uint32_t> types = GroupIntTypes();
  for (uint32_t t : GgufTypes()) types.push_back(t);
  for (uint32_t type : types) {
    const double rel = RelativeRmse(type, w, rows, cols);
    EXPECT_LE(rel, kRandomBounds.at(QTypeName(type))) << QTypeName(type);
    std::printf("  %-9s relative RMSE %.4f\n", QTypeName(type).c_str(), rel);
  }
}

TEST(QuantizeRtn, EveryExtraBitHalvesTheError) {
  // A uniform grid with one more bit has half the step: the error drops by
  // about 2x per bit; less from 2 to 3 bits, where the outliers' clipping
  // still weighs.
  std::mt19937 rng(6);
  const int64_t rows = 8, cols = 2048;
  const std::vector<float> w = RandomValues(rows * cols, &rng, 0.02f);
  for (uint32_t g : {32u, 64u, 128u}) {
    double prev = 1;
    for (uint32_t b : {2u, 3u, 4u, 5u, 6u, 8u}) {
      const double rel = RelativeRmse(GroupIntId(b, g), w, rows, cols);
      const double expected_drop = b == 8 ? 3.5 : b == 3 ? 1.5 : 1.8;  // 6 -> 8 is two bits
      if (b > 2) {
        EXPECT_GT(prev / rel, expected_drop) << "int" << b << "-g" << g;
      }
      prev = rel;
    }
  }
}

TEST(QuantizeRtn, SearchBeatsMinMax) {
  // The table's reference quantizer takes each group's min and max; the
  // scale/offset search must do better on every type.
  std::mt19937 rng(7);
  const int64_t rows = 16, cols = 172;
  const std::vector<float> w = RandomValues(rows * cols, &rng, 0.02f);
  for (uint32_t type : GroupIntTypes()) {
    const Bytes minmax = runtime::quant::testing::Quantize(type, w, rows, cols);
    const double minmax_rmse = QuantizationRmse(type, minmax.data(), w.data(), rows, cols);
    const double search = RelativeRmse(type, w, rows, cols) * Rms(w);
    EXPECT_LT(search, minmax_rmse) << QTypeName(type);
  }
}

TEST(QuantizeRtn, BytesDoNotDependOnThreads) {
  std::mt19937 rng(8);
  const int64_t rows = 37, cols = 300;
  const std::vector<float> w = RandomValues(rows * cols, &rng, 0.02f);
  ThreadPool pool(2);
  for (uint32_t type : {GroupIntId(3, 64), ToId(QType::kF16), ToId(QType::kIQ4_NL)}) {
    const int64_t c = type == ToId(QType::kIQ4_NL) ? 288 : cols;
    Bytes a(RowBytes(type, c).value() * rows), b(a.size());
    ASSERT_TRUE(QuantizeRtn(type, w.data(), rows, c, a.data(), nullptr).ok());
    ASSERT_TRUE(QuantizeRtn(type, w.data(), rows, c, b.data(), &pool).ok());
    EXPECT_EQ(a, b) << QTypeName(type);
  }
}

TEST(QuantizeRtn, RejectsWhatItCannotMake) {
  std::vector<float> w(2 * 172, 0.1f);
  Bytes out(4096);
  const Status rows = QuantizeRtn(ToId(QType::kQ4_K), w.data(), 2, 172, out.data(), nullptr);
  EXPECT_TRUE(rows.IsInvalidArgument()) << rows.ToString();
  const Status type = QuantizeRtn(ToId(QType::kIQ2_XXS), w.data(), 1, 256, out.data(), nullptr);
  EXPECT_TRUE(type.IsNotSupported()) << type.ToString();
  EXPECT_FALSE(CanQuantizeTo(ToId(QType::kIQ2_XXS)));
  EXPECT_TRUE(CanQuantizeTo(ToId(QType::kQ6_K)));
  EXPECT_TRUE(CanQuantizeTo(GroupIntId(5, 128)));
}

// Relative RMSE bounds of the group-int types on stories260K's real
// weights (every matrix, the 172-wide ffn_down included), about 1.2x what
// RTN reaches.
const std::map<int, double> kRealBoundsG64 = {{2, 0.42},  {3, 0.20},  {4, 0.096},
                                              {5, 0.048}, {6, 0.024}, {8, 0.0062}};

TEST(QuantizeRtn, RoundTripBoundsOnRealWeights) {
  FQ_REQUIRE_TESTDATA();
  const std::string path = fqpack::testing::TestDataPath("models/stories260K/stories260K-F32.gguf");
  Result<MappedFile> file = Env::Default()->MapFile(path);
  ASSERT_TRUE(file.ok());
  Result<gguf::Header> h = gguf::ParseFile(file->bytes(), path);
  ASSERT_TRUE(h.ok());
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    const uint32_t type = GroupIntId(static_cast<uint32_t>(bits), 64);
    double err2 = 0, ref2 = 0;
    for (size_t i = 0; i < h->tensors.size(); ++i) {
      const gguf::TensorInfo& t = h->tensors[i];
      if (t.n_dims < 2) continue;
      const int64_t cols = static_cast<int64_t>(t.ne[0]);
      const int64_t rows = static_cast<int64_t>(t.ne[1]);
      std::vector<float> w(t.n_elements());
      std::memcpy(w.data(), h->TensorBytes(file->bytes(), i).data(), w.size() * 4);
      const double rel = RelativeRmse(type, w, rows, cols);
      const double rms = Rms(w);
      err2 += rel * rel * rms * rms * static_cast<double>(w.size());
      ref2 += rms * rms * static_cast<double>(w.size());
      EXPECT_LE(rel, 1.5 * kRealBoundsG64.at(bits)) << t.name << " " << QTypeName(type);
    }
    const double rel = std::sqrt(err2 / ref2);
    EXPECT_LE(rel, kRealBoundsG64.at(bits)) << QTypeName(type);
    std::printf("  %-9s relative RMSE over the model %.4f\n", QTypeName(type).c_str(), rel);
  }
}

}  // namespace
}  // namespace fqpack::quantize
