// The real llama.cpp ladders of ../shared/data: identical tensors across
// files are stored once, and export gives every file back byte for byte.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "schema/gguf.h"
#include "schema/sha256.h"
#include "store/gguf_export.h"
#include "store/gguf_import.h"
#include "store/naming.h"
#include "store/store.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

std::vector<std::string> LadderFiles(const std::string& model) {
  std::vector<std::string> out;
  auto names = Env::Default()->GetChildren(testing::TestDataPath("models/" + model));
  if (!names.ok()) return out;
  for (const std::string& n : *names) {
    if (n.size() > 5 && n.substr(n.size() - 5) == ".gguf")
      out.push_back(testing::TestDataPath("models/" + model + "/" + n));
  }
  std::sort(out.begin(), out.end());
  return out;
}

void CheckLadder(const std::string& model) {
  const std::vector<std::string> files = LadderFiles(model);
  ASSERT_GE(files.size(), 7u);
  // Count unique tensors independently: (type, shape, sha256 of bytes).
  std::set<std::string> unique;
  size_t total = 0;
  for (const std::string& f : files) {
    auto m = Env::Default()->MapFile(f);
    ASSERT_TRUE(m.ok());
    auto h = gguf::ParseFile(m->bytes(), f);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    for (size_t i = 0; i < h->tensors.size(); ++i) {
      const auto& t = h->tensors[i];
      unique.insert(std::to_string(t.type) + ":" + t.ShapeString() + ":" +
                    Sha256::HexOf(h->TensorBytes(m->bytes(), i)));
      ++total;
    }
  }
  testing::TempDir tmp;
  const std::string dir = tmp.Join("store");
  ASSERT_TRUE(Store::Init(Env::Default(), dir).ok());
  auto store = Store::Open(Env::Default(), dir);
  ASSERT_TRUE(store.ok());
  for (const std::string& f : files) {
    auto r = ImportGguf(store->get(), f, {});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->model, model);
  }
  auto stats = (*store)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->blobs, unique.size()) << model;
  EXPECT_EQ(stats->references, total);
  EXPECT_LT(stats->unique_raw_bytes, stats->logical_bytes);
  std::printf("%s: %zu tensors in %zu files, %zu unique; %llu of %llu bytes stored once\n",
              model.c_str(), total, files.size(), unique.size(),
              static_cast<unsigned long long>(stats->unique_raw_bytes),
              static_cast<unsigned long long>(stats->logical_bytes));
  EXPECT_EQ(testing::VerifyErrors(dir), "");
  for (const std::string& f : files) {
    const NameGuess g = GuessNamesFromFile(f);
    const std::string out = tmp.Join("out.gguf");
    auto r = ExportQmGguf(store->get(), model, g.label, out);
    ASSERT_TRUE(r.ok()) << f << ": " << r.status().ToString();
    EXPECT_TRUE(*ReadFileBytes(Env::Default(), out) == *ReadFileBytes(Env::Default(), f))
        << f << " differs";
  }
}

TEST(Ladder, Stories260KStoredOnceAndExportedByteForByte) {
  FQ_REQUIRE_TESTDATA();
  CheckLadder("stories260K");
}

TEST(Ladder, TinyStories3MStoredOnceAndExportedByteForByte) {
  FQ_REQUIRE_TESTDATA();
  CheckLadder("tinystories-3M");
}

}  // namespace
}  // namespace fqpack::store
