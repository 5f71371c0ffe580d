// Hostile files through the command a user runs: every crafted GGUF or
// .fqpack gets a one-line error that names the file and the defect, exit
// code 3 (corruption) or 5 (not supported), and the store is left exactly
// as it was.
#include <gtest/gtest.h>

#include <functional>

#include "pack/format.h"
#include "schema/gguf.h"
#include "schema/quant_types.h"
#include "tests/support/pack_util.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::cli {
namespace {

using testing::RunCommand;

struct Crafted {
  std::string name;  // also the file name
  std::function<Bytes(const Bytes& good)> make;
  int exit_code;
  std::string message_part;
};

Bytes Patched(Bytes b, size_t at, uint64_t v, int width) {
  for (int i = 0; i < width; ++i) b.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
  return b;
}

// A header written by hand around one tensor of the given shape and type,
// with `data` bytes after it.
Bytes OneTensor(uint32_t type, uint64_t ne0, uint64_t offset, size_t data, uint64_t ne1 = 1) {
  gguf::FileSpec spec;
  gguf::Metadata md;
  md.Set("general.architecture", gguf::Value::String("llama"));
  spec.n_kv = md.entries.size();
  spec.kv = gguf::EncodeMetadata(md);
  gguf::TensorInfo t;
  t.name = "blk.0.attn_q.weight";
  t.n_dims = ne1 == 1 ? 1 : 2;
  t.ne[0] = ne0;
  t.ne[1] = ne1;
  t.type = type;
  t.offset = offset;
  spec.tensors.push_back(t);
  Bytes b = gguf::EncodeHeader(spec);
  b.resize(b.size() + data, 0);
  return b;
}

class HostileFiles : public ::testing::Test {
 protected:
  int Fq(const std::string& args, std::string* out) {
    return RunCommand(testing::FqpackBinary() + " --store " + store_ + " " + args + " 2>&1", out);
  }
  void Write(const std::string& path, const Bytes& b) {
    ASSERT_TRUE(PublishFile(Env::Default(), path, b).ok());
  }

  // Runs `command` on each crafted file and checks exit code, message and
  // that the store did not change.
  void ExpectRefused(const std::vector<Crafted>& cases, const Bytes& good,
                     const std::string& suffix,
                     const std::function<std::string(const std::string& path)>& command) {
    const std::string before = testing::SnapshotStore(store_);
    for (const Crafted& c : cases) {
      const std::string path = tmp_.Join(c.name + suffix);
      Write(path, c.make(good));
      std::string out;
      const int rc = Fq(command(path), &out);
      EXPECT_EQ(rc, c.exit_code) << c.name << ": " << out;
      EXPECT_NE(out.find(c.message_part), std::string::npos) << c.name << ": " << out;
      EXPECT_NE(out.find(path), std::string::npos)
          << c.name << ": the error does not name the file: " << out;
      EXPECT_EQ(out.find('\n'), out.size() - 1) << c.name << ": not one line: " << out;
      EXPECT_EQ(out.rfind("fqpack: error: ", 0), 0u) << c.name << ": " << out;
      EXPECT_EQ(testing::SnapshotStore(store_), before) << c.name << ": the store changed";
    }
    EXPECT_EQ(testing::VerifyErrors(store_), "");
  }

  testing::TempDir tmp_;
  std::string store_ = tmp_.Join("store");
};

TEST_F(HostileFiles, CraftedGgufImports) {
  std::string out;
  ASSERT_EQ(Fq("init", &out), 0) << out;
  const Bytes good = testing::EncodeGguf(testing::SmallLlama(ToId(QType::kQ8_0), 3));
  ASSERT_EQ(Fq("import " + testing::WriteGguf(tmp_.Join("m-F32.gguf"),
                                              testing::SmallLlama(ToId(QType::kF32), 1)),
               &out),
            0)
      << out;
  const uint64_t n_kv_at = 16, first_key_at = 24;
  const std::vector<Crafted> cases = {
      {"empty", [](const Bytes&) { return Bytes(); }, 3, "not a GGUF file"},
      {"bad-magic", [](const Bytes& g) { return Patched(g, 0, 0x4e4f5441, 4); }, 3,
       "not a GGUF file"},
      {"version-4", [](const Bytes& g) { return Patched(g, 4, 4, 4); }, 5,
       "version 4 is not supported"},
      {"big-endian", [](const Bytes& g) { return Patched(g, 4, 3u << 24, 4); }, 5, "big-endian"},
      {"truncated",
       [](const Bytes& g) { return Bytes(g.begin(), g.begin() + static_cast<long>(g.size() / 2)); },
       3, "truncated"},
      {"absurd-kv-count", [&](const Bytes& g) { return Patched(g, n_kv_at, uint64_t{1} << 60, 8); },
       3, "metadata count"},
      {"absurd-key-length",
       [&](const Bytes& g) { return Patched(g, first_key_at, ~uint64_t{0}, 8); }, 3, "length"},
      // The tensor whose size wraps a bounds check done by addition: each
      // extent is allowed, their 2^64 - 2^43 bytes are not.
      {"wrapping-tensor",
       [](const Bytes&) {
         return OneTensor(ToId(QType::kF64), uint64_t{1} << 40, 0, 256, (uint64_t{1} << 21) - 1);
       },
       3, "past the end"},
      {"absurd-extent",
       [](const Bytes&) { return OneTensor(ToId(QType::kF64), (uint64_t{1} << 61) - 1, 0, 256); },
       3, "beyond any real tensor"},
      {"tensor-past-the-end",
       [](const Bytes&) { return OneTensor(ToId(QType::kF32), 1024, 0, 64); }, 3, "past the end"},
      {"unknown-type", [](const Bytes&) { return OneTensor(77, 32, 0, 256); }, 3,
       "unknown tensor type 77"},
      // A million-element array claimed by a file of a few hundred bytes.
      {"absurd-array",
       [](const Bytes&) {
         gguf::Metadata md;
         md.Set("a", gguf::Value::Array(gguf::ValueType::kBool, {gguf::Value::Bool(true)}));
         Bytes kv = gguf::EncodeMetadata(md);
         EncodeU64(kv.data() + 8 + 1 + 4 + 4, 1u << 30);
         Bytes b;
         PutU32(&b, gguf::kMagic);
         PutU32(&b, 3);
         PutU64(&b, 0);
         PutU64(&b, 1);
         PutRaw(&b, kv.data(), kv.size());
         return b;
       },
       3, "cannot fit"},
      {"nested-arrays",
       [](const Bytes&) {
         gguf::Value v = gguf::Value::Array(gguf::ValueType::kU8, {});
         for (int i = 0; i < 20; ++i) v = gguf::Value::Array(gguf::ValueType::kArray, {v});
         gguf::Metadata md;
         md.Set("deep", v);
         Bytes kv = gguf::EncodeMetadata(md);
         Bytes b;
         PutU32(&b, gguf::kMagic);
         PutU32(&b, 3);
         PutU64(&b, 0);
         PutU64(&b, 1);
         PutRaw(&b, kv.data(), kv.size());
         return b;
       },
       3, "nested too deeply"},
  };
  ExpectRefused(cases, good, ".gguf",
                [](const std::string& path) { return "import --model m " + path; });
}

TEST_F(HostileFiles, CraftedPacks) {
  std::string out;
  ASSERT_EQ(Fq("init", &out), 0) << out;
  const std::string synth = tmp_.Join("s-F32.gguf");
  ASSERT_EQ(Fq("synth -o " + synth + " --embd 64 --layers 1 --ff 128", &out), 0) << out;
  ASSERT_EQ(Fq("import " + synth, &out), 0) << out;
  ASSERT_EQ(Fq("quantize --bits 8", &out), 0) << out;
  const std::string pack = tmp_.Join("good.fqpack");
  ASSERT_EQ(Fq("pack --codec auto -o " + pack, &out), 0) << out;
  ASSERT_EQ(Fq("verify " + pack, &out), 0) << out;
  const Bytes good = *ReadFileBytes(Env::Default(), pack);
  auto rows = [](const std::string& sql) {
    return [sql](const Bytes& g) {
      Result<Bytes> b =
          testing::RewritePackIndex(g, "PRAGMA ignore_check_constraints = ON; " + sql);
      return b.ok() ? *b : Bytes();
    };
  };
  const std::vector<Crafted> cases = {
      {"empty", [](const Bytes&) { return Bytes(); }, 3, "not an fqpack file"},
      {"truncated",
       [](const Bytes& g) {
         return Bytes(g.begin(), g.begin() + static_cast<long>(g.size() - 10));
       },
       3, "footer"},
      {"footer-flip",
       [](const Bytes& g) {
         Bytes b = g;
         b[b.size() - 20] ^= 1;
         return b;
       },
       3, "footer"},
      {"newer-version",
       [](const Bytes& g) {
         // The footer's version field, and the footer's own checksum over it.
         Bytes b = Patched(g, g.size() - 24, 9, 8);
         const size_t footer = b.size() - pack::kFooterSize;
         EncodeU64(b.data() + footer + 56, pack::Checksum(ByteSpan(b).subspan(footer, 56)));
         return b;
       },
       5, "newer"},
      {"huge-raw-size",
       rows("UPDATE blob SET ne1 = 1 << 38, raw_bytes = 1 << 40, qtype = 0, n_dims = 2, ne0 = 1 "
            "WHERE hash = (SELECT hash FROM blob ORDER BY pack_offset LIMIT 1)"),
       3, "module"},
      {"offset-past-end",
       rows("UPDATE blob SET pack_offset = 1 << 50 WHERE hash = (SELECT hash FROM blob LIMIT 1)"),
       3, "outside the payload area"},
      {"index-version", rows("PRAGMA user_version = 77"), 5, "newer than this fqpack reads"},
  };
  for (const char* cmd : {"info", "verify", "export --qm int8-g64 -o /dev/null",
                          "run --qm int8-g64 -n 2 --prompt a"}) {
    SCOPED_TRACE(cmd);
    const std::string c = cmd;
    ExpectRefused(cases, good, ".fqpack", [&](const std::string& path) {
      const size_t sp = c.find(' ');
      return sp == std::string::npos ? c + " " + path : c.substr(0, sp) + " " + path + c.substr(sp);
    });
  }
}

}  // namespace
}  // namespace fqpack::cli
