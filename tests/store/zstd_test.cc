// The zstd frames of blobs and pack payloads come from files: a frame's
// declared content size is checked against what its blocks can hold before
// that size is allocated.
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "store/blob_store.h"

namespace fqpack::store {
namespace {

// A single-segment frame with an 8-byte content size field declaring
// `declared` bytes, holding one raw block of `payload`.
Bytes RawBlockFrame(uint64_t declared, const Bytes& payload) {
  Bytes f;
  PutU32(&f, 0xFD2FB528);  // magic
  PutU8(&f, 0xE0);         // FCS field of 8 bytes, single segment, no checksum, no dictionary
  PutU64(&f, declared);
  const uint32_t block =
      1u | (0u << 1) | (static_cast<uint32_t>(payload.size()) << 3);  // last, raw
  PutU8(&f, block & 0xff);
  PutU8(&f, (block >> 8) & 0xff);
  PutU8(&f, (block >> 16) & 0xff);
  PutRaw(&f, payload.data(), payload.size());
  return f;
}

TEST(Zstd, AHandBuiltFrameDecodes) {
  Bytes payload(100);
  std::iota(payload.begin(), payload.end(), 0);
  Result<Bytes> out = ZstdDecompress(RawBlockFrame(100, payload), 100, "frame");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, payload);
}

// 100 bytes on disk declaring a terabyte: refused from the block headers,
// before anything of that size is allocated.
TEST(Zstd, RefusesADeclaredSizeItsBlocksCannotHold) {
  const uint64_t tera = uint64_t{1} << 40;
  Result<Bytes> out = ZstdDecompress(RawBlockFrame(tera, Bytes(100, 7)), tera, "liar.zst");
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(out.status().IsCorruption());
  EXPECT_NE(out.status().message().find("can hold at most 100"), std::string::npos)
      << out.status().ToString();
  EXPECT_EQ(out.status().message().rfind("liar.zst", 0), 0u);
}

TEST(Zstd, RefusesBrokenBlockHeaders) {
  Bytes f = RawBlockFrame(100, Bytes(100, 7));
  f.resize(f.size() - 1);  // the raw block runs past the end
  Result<Bytes> out = ZstdDecompress(f, 100, "cut.zst");
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(out.status().IsCorruption()) << out.status().ToString();
}

// What zstd legitimately expands a lot, a run of zeros, still decodes.
TEST(Zstd, HighlyCompressibleModulesStillDecode) {
  const Bytes zeros(3 << 20, 0);
  Result<Bytes> frame = ZstdCompress(zeros, 1);
  ASSERT_TRUE(frame.ok());
  EXPECT_LT(frame->size(), zeros.size() / kZstdMaxExpansion * 4);
  Result<Bytes> out = ZstdDecompress(*frame, zeros.size(), "zeros.zst");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, zeros);
}

TEST(Zstd, EveryPrefixAndFlipOfARealFrameIsCleanOrExact) {
  std::mt19937 rng(3);
  Bytes data(70000);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(i % 251 < 100 ? 0 : rng());
  const Bytes frame = *ZstdCompress(data, 3);
  for (size_t n = 0; n < frame.size(); ++n) {
    Result<Bytes> out = ZstdDecompress(ByteSpan(frame).subspan(0, n), data.size(), "prefix");
    EXPECT_FALSE(out.ok()) << n;
  }
  for (int i = 0; i < 2000; ++i) {
    Bytes f = frame;
    f[rng() % f.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    Result<Bytes> out = ZstdDecompress(f, data.size(), "flip");
    if (out.ok()) {
      EXPECT_EQ(*out, data);
    } else {
      EXPECT_TRUE(out.status().IsCorruption()) << out.status().ToString();
    }
  }
}

}  // namespace
}  // namespace fqpack::store
