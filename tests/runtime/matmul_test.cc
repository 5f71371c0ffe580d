#include "runtime/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/quant/quant.h"
#include "schema/quant_types.h"
#include "schema/thread_pool.h"
#include "tests/runtime/quant_test_util.h"

namespace fqpack::runtime {
namespace {

namespace qt = quant::testing;

struct Matrix {
  uint32_t type;
  int64_t rows, cols;
  Bytes bytes;
  std::vector<float> dequantized;

  WeightView view() const {
    return {type, cols, rows, bytes.data(), static_cast<size_t>(qt::RowBytesOf(type, cols))};
  }
};

Matrix RandomMatrix(uint32_t type, int64_t rows, int64_t cols, std::mt19937* rng) {
  Matrix m{type, rows, cols, {}, {}};
  const std::vector<float> values = qt::RandomValues(rows * cols, rng, 0.05f);
  m.bytes = qt::Quantize(type, values, rows, cols);
  m.dequantized = qt::Dequantize(type, m.bytes, rows, cols);
  return m;
}

// The reference of MatMul: each token's activations converted by the
// activation quantizer of the weight type and dequantized again, then
// multiplied in double.
void ExpectMatMulMatchesReference(const Matrix& m, int64_t n_tokens, ThreadPool* pool,
                                  std::mt19937* rng) {
  SCOPED_TRACE(QTypeName(m.type) + " " + std::to_string(m.rows) + "x" + std::to_string(m.cols) +
               " tokens=" + std::to_string(n_tokens) +
               " threads=" + std::to_string(pool != nullptr ? pool->size() : 0));
  const uint32_t act_type = quant::FindTraits(m.type)->vec_dot_type;
  const std::vector<float> x = qt::RandomValues(n_tokens * m.cols, rng, 2.0f);
  const std::vector<float> xd =
      qt::Dequantize(act_type, qt::Quantize(act_type, x, n_tokens, m.cols), n_tokens, m.cols);
  std::vector<float> y(static_cast<size_t>(n_tokens * m.rows), -12345.0f);
  MatMul(m.view(), x.data(), n_tokens, y.data(), pool);
  int failures = 0;
  for (int64_t t = 0; t < n_tokens && failures < 5; ++t) {
    for (int64_t r = 0; r < m.rows && failures < 5; ++r) {
      const qt::RefDot ref =
          qt::DotInDouble(m.dequantized.data() + r * m.cols, xd.data() + t * m.cols, m.cols);
      const float got = y[t * m.rows + r];
      const double tol = qt::DotTolerance(m.type, m.bytes.data() + r * m.view().row_bytes,
                                          xd.data() + t * m.cols, m.cols, ref);
      if (std::fabs(got - ref.value) > tol) {
        ADD_FAILURE() << "token " << t << " row " << r << ": " << got << " vs " << ref.value;
        ++failures;
      }
    }
  }
}

int64_t ColsFor(uint32_t type) {
  switch (qt::BlockElems(type)) {
    case 1:
      return 172;  // the odd ffn width of stories260K
    case 32:
      return 320;
    default:
      return 768;
  }
}

TEST(MatMul, EveryTypeDecodeAndBatchedOnOneAndThreeThreads) {
  std::mt19937 rng(42);
  ThreadPool one(1), three(3);
  for (uint32_t type : qt::WeightTypes()) {
    const Matrix m = RandomMatrix(type, 37, ColsFor(type), &rng);
    for (ThreadPool* pool : {&one, &three}) {
      for (int64_t n_tokens : {1, 2, 7, 9}) ExpectMatMulMatchesReference(m, n_tokens, pool, &rng);
    }
  }
}

// MatMulSameInput runs one token through several matrices in one parallel
// loop whose shares cross from one matrix into the next; every output must
// be what MatMul gives for that matrix alone on one thread, bit for bit
// (each row is one kernel call on the same converted activation), and
// every row must be written (the outputs start as NaN).
TEST(MatMulSameInput, GivesWhatMatMulGivesForEachMatrix) {
  std::mt19937 rng(49);
  ThreadPool one(1), two(2), three(3), five(5);
  const auto type = [](const char* name) { return ParseQTypeName(name).value(); };
  const int64_t cols = 768;
  // Sets as a layer has them: Q, K, V with K and V small (grouped-query
  // attention) and in another type (Q4_K_M's V is Q6_K); gate and up; types
  // whose activations differ (Q8_K, Q8_0, F16's F32, int8-act), so the
  // activation is converted more than once; sizes on both sides of the
  // threshold under which a step runs on one thread.
  const std::vector<std::vector<std::pair<uint32_t, int64_t>>> sets = {
      {{type("Q4_K"), 600}, {type("Q4_K"), 37}, {type("Q6_K"), 37}},
      {{type("Q5_K"), 300}, {type("Q5_K"), 300}},
      {{type("Q8_0"), 150}, {type("Q4_0"), 90}, {type("F16"), 40}, {type("int4-g64"), 200}},
      {{type("Q3_K"), 5}, {type("Q2_K"), 3}},
      {{type("IQ4_NL"), 1000}},
  };
  for (const auto& set : sets) {
    std::vector<Matrix> ms;
    std::vector<WeightView> views;
    std::string names;
    for (const auto& [t, rows] : set) {
      ms.push_back(RandomMatrix(t, rows, cols, &rng));
      names += QTypeName(t) + "x" + std::to_string(rows) + " ";
    }
    for (const Matrix& m : ms) views.push_back(m.view());
    for (int64_t n_tokens : {1, 3}) {
      const std::vector<float> x = qt::RandomValues(n_tokens * cols, &rng, 2.0f);
      std::vector<std::vector<float>> want;
      for (const Matrix& m : ms) {
        want.emplace_back(static_cast<size_t>(n_tokens * m.rows));
        MatMul(m.view(), x.data(), n_tokens, want.back().data(), &one);
      }
      for (ThreadPool* pool : {&one, &two, &three, &five}) {
        SCOPED_TRACE(names + "tokens=" + std::to_string(n_tokens) +
                     " threads=" + std::to_string(pool->size()));
        std::vector<std::vector<float>> got;
        std::vector<float*> ys;
        for (const Matrix& m : ms) got.emplace_back(static_cast<size_t>(n_tokens * m.rows), NAN);
        for (auto& g : got) ys.push_back(g.data());
        MatMulSameInput(views, x.data(), n_tokens, ys, pool);
        for (size_t i = 0; i < ms.size(); ++i) {
          for (size_t j = 0; j < got[i].size(); ++j) {
            // Bit for bit, NaN included (none is expected).
            ASSERT_EQ(std::memcmp(&got[i][j], &want[i][j], sizeof(float)), 0)
                << "matrix " << i << " output " << j << ": " << got[i][j] << " vs " << want[i][j];
          }
        }
      }
    }
  }
}

// The decode step's shares shrink geometrically; on any thread count every
// row of a large matrix is still computed once, as on one thread.
TEST(MatMul, OneTokenOnManyThreadsWritesEveryRowAsOnOne) {
  std::mt19937 rng(50);
  ThreadPool one(1);
  for (const char* name : {"Q4_K", "Q8_0", "int3-g64"}) {
    const Matrix m = RandomMatrix(ParseQTypeName(name).value(), 4099, 512, &rng);
    const std::vector<float> x = qt::RandomValues(512, &rng, 2.0f);
    std::vector<float> want(4099);
    MatMul(m.view(), x.data(), 1, want.data(), &one);
    for (int threads : {2, 3, 4, 7, 16}) {
      ThreadPool pool(threads);
      std::vector<float> got(4099, NAN);
      MatMul(m.view(), x.data(), 1, got.data(), &pool);
      for (size_t r = 0; r < got.size(); ++r) {
        ASSERT_EQ(std::memcmp(&got[r], &want[r], sizeof(float)), 0)
            << name << " threads=" << threads << " row " << r;
      }
    }
  }
}

// The decode shares start at 0, end at 1, and each is 1 - 1/(2T) the size
// of the one before.
TEST(DecodeShares, CoverTheStepAndShrinkGeometrically) {
  for (int threads : {1, 2, 3, 8}) {
    const int64_t n = DecodeShareCount(threads);
    EXPECT_EQ(n, 4 * threads);
    EXPECT_EQ(DecodeShareStart(0, threads), 0.0);
    EXPECT_EQ(DecodeShareStart(n, threads), 1.0);
    const double ratio = 1.0 - 1.0 / (2.0 * threads);
    for (int64_t s = 1; s < n; ++s) {
      const double size = DecodeShareStart(s + 1, threads) - DecodeShareStart(s, threads);
      const double before = DecodeShareStart(s, threads) - DecodeShareStart(s - 1, threads);
      EXPECT_NEAR(size / before, ratio, 1e-9) << "threads " << threads << " share " << s;
    }
  }
}

TEST(MatMul, PortableKernelsGiveTheSameResults) {
  std::mt19937 rng(43);
  ThreadPool pool(2);
  quant::SetSimdEnabled(false);
  for (uint32_t type : qt::WeightTypes()) {
    const Matrix m = RandomMatrix(type, 11, ColsFor(type), &rng);
    for (int64_t n_tokens : {1, 6}) ExpectMatMulMatchesReference(m, n_tokens, &pool, &rng);
  }
  quant::SetSimdEnabled(true);
}

TEST(MatMul, ManyRowsAndTokensSpanSeveralRowBlocks) {
  // Enough rows that the batched path splits them into several blocks and
  // the pool into several chunks, and a token count that leaves a partial
  // tile.
  std::mt19937 rng(44);
  ThreadPool pool(3);
  for (QType type : {QType::kQ4_K, QType::kQ8_0, QType::kF32}) {
    const Matrix m = RandomMatrix(ToId(type), 515, 512, &rng);
    ExpectMatMulMatchesReference(m, 1, &pool, &rng);
    ExpectMatMulMatchesReference(m, 23, &pool, &rng);
  }
}

TEST(MatMul, FewRowsManyTokensSplitsTheTokens) {
  // Too few rows to feed three threads: the batched path splits the tokens
  // into ranges as well, and every (row, token) must still be written once.
  std::mt19937 rng(47);
  ThreadPool pool(3);
  for (QType type : {QType::kQ6_K, QType::kQ5_1, QType::kF16}) {
    const Matrix m = RandomMatrix(ToId(type), 6, ColsFor(ToId(type)), &rng);
    for (int64_t n_tokens : {37, 64}) ExpectMatMulMatchesReference(m, n_tokens, &pool, &rng);
  }
}

TEST(MatMul, WithoutAPoolRunsOnTheCallingThread) {
  std::mt19937 rng(48);
  for (QType type : {QType::kQ4_0, QType::kQ3_K}) {
    const Matrix m = RandomMatrix(ToId(type), 9, ColsFor(ToId(type)), &rng);
    for (int64_t n_tokens : {1, 17}) ExpectMatMulMatchesReference(m, n_tokens, nullptr, &rng);
  }
}

TEST(MatMul, RowStrideLongerThanARow) {
  // A view whose rows are padded: row r starts at r * row_bytes, and the
  // padding must never be read as weights.
  std::mt19937 rng(45);
  ThreadPool pool(2);
  const Matrix m = RandomMatrix(ToId(QType::kQ8_0), 5, 64, &rng);
  const size_t row = qt::RowBytesOf(m.type, m.cols), stride = row + 30;
  Bytes padded(stride * m.rows, 0xFF);
  for (int64_t r = 0; r < m.rows; ++r) std::copy_n(&m.bytes[r * row], row, &padded[r * stride]);
  WeightView v = m.view();
  v.data = padded.data();
  v.row_bytes = stride;
  std::vector<float> x(64, 1.0f), y_padded(5), y(5);
  MatMul(v, x.data(), 1, y_padded.data(), &pool);
  MatMul(m.view(), x.data(), 1, y.data(), &pool);
  EXPECT_EQ(y_padded, y);
}

TEST(GetRows, ReturnsTheDequantizedRows) {
  std::mt19937 rng(46);
  for (uint32_t type : qt::WeightTypes()) {
    const Matrix m = RandomMatrix(type, 9, ColsFor(type), &rng);
    const std::vector<int32_t> idx = {8, 0, 3, 3};
    std::vector<float> dst(idx.size() * m.cols);
    GetRows(m.view(), idx.data(), static_cast<int64_t>(idx.size()), dst.data());
    for (size_t i = 0; i < idx.size(); ++i) {
      for (int64_t k = 0; k < m.cols; ++k) {
        ASSERT_EQ(dst[i * m.cols + k], m.dequantized[idx[i] * m.cols + k])
            << QTypeName(type) << " row " << idx[i] << " col " << k;
      }
    }
  }
}

TEST(CheckExecutable, UnsupportedTypeNamesTensorAndType) {
  Status s = CheckExecutable(ToId(QType::kIQ2_XXS), "blk.3.ffn_down.weight");
  EXPECT_EQ(s.code(), Status::Code::kNotSupported);
  EXPECT_NE(s.message().find("blk.3.ffn_down.weight"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("IQ2_XXS"), std::string::npos) << s.ToString();
  // Activation-only and unknown types are not weights either.
  EXPECT_EQ(CheckExecutable(ToId(QType::kQ8_K), "w").code(), Status::Code::kNotSupported);
  EXPECT_NE(CheckExecutable(12345, "").message().find("type#12345"), std::string::npos);
  for (uint32_t type : qt::WeightTypes()) {
    EXPECT_TRUE(CheckExecutable(type, "w").ok()) << QTypeName(type);
    EXPECT_TRUE(CanExecute(type)) << QTypeName(type);
  }
}

TEST(CheckWeight, RejectsRowsThatAreNotWholeBlocks) {
  uint8_t byte = 0;
  WeightView v{ToId(QType::kQ4_K), 300, 2, &byte, 1000};
  Status s = CheckWeight(v, "blk.0.attn_q.weight");
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("blk.0.attn_q.weight"), std::string::npos) << s.ToString();

  v.cols = 256;
  v.row_bytes = 143;  // a Q4_K row of 256 is 144 bytes
  EXPECT_EQ(CheckWeight(v, "w").code(), Status::Code::kInvalidArgument);
  v.row_bytes = 144;
  EXPECT_TRUE(CheckWeight(v, "w").ok());
  v.type = ToId(QType::kIQ2_XXS);
  EXPECT_EQ(CheckWeight(v, "w").code(), Status::Code::kNotSupported);
}

}  // namespace
}  // namespace fqpack::runtime
