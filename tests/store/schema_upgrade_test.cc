// Store schema versions: a version 1 store (before dynamic precision) opens,
// is upgraded in place to version 2 with its rows intact, and then holds
// dynamic precision models; removing a QM removes the models built on it.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <string>

#include "schema/store_sql.h"
#include "store/gc.h"
#include "store/gguf_import.h"
#include "store/store.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

using testing::TempDir;
using testing::TestDataPath;

void Sql(const std::string& path, const std::string& sql) {
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

DynamicModelInfo SmallModel(Store* st, int64_t model_id, const std::string& hi,
                            const std::string& lo) {
  DynamicModelInfo d;
  d.model_id = model_id;
  d.hi_qm_id = st->FindQm(model_id, hi)->id;
  d.lo_qm_id = st->FindQm(model_id, lo)->id;
  d.n_weights = 1000;
  d.hi_bytes = 800;
  d.lo_bytes = 500;
  d.target_bits = 5;
  d.calib_bits = 4.99;
  d.calib_tokens = 4;
  d.calib_starts = 1;
  d.entropies = {0.5, 1.25, 3.0};
  DynamicUnitInfo a;
  a.name = "blk.0";
  a.layer = 0;
  a.sensitivity = 0.2;
  a.extra_bytes = 200;
  a.threshold = 1.25;
  DynamicUnitInfo b;
  b.name = "output.weight";
  b.sensitivity = 0.1;
  b.extra_bytes = 100;  // threshold stays +inf: never hi
  d.units = {a, b};
  return d;
}

TEST(SchemaUpgrade, AVersion1StoreOpensUpgradedWithItsRowsIntact) {
  FQ_REQUIRE_TESTDATA();
  TempDir tmp;
  const std::string dir = tmp.Join("store");
  ASSERT_TRUE(Store::Init(Env::Default(), dir).ok());
  {
    auto st = Store::Open(Env::Default(), dir);
    ASSERT_TRUE(st.ok());
    for (const char* q : {"Q4_K_M", "Q2_K"}) {
      ASSERT_TRUE(
          ImportGguf(st->get(),
                     TestDataPath(std::string("models/stories260K/stories260K-") + q + ".gguf"), {})
              .ok());
    }
  }
  // What fqpack 0.1 wrote: the same tables without version 2's, user_version 1.
  Sql(dir + "/index.sqlite",
      "DROP TABLE dynamic_unit; DROP TABLE dynamic_model; PRAGMA user_version = 1");
  const std::string before = testing::SnapshotStore(dir);
  ASSERT_NE(before.find("Q2_K"), std::string::npos);

  auto st = Store::Open(Env::Default(), dir);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(testing::IndexQueryInt(dir, "PRAGMA user_version"), schema::kStoreSchemaVersion);
  EXPECT_EQ(
      testing::IndexQueryInt(
          dir, "SELECT count(*) FROM sqlite_master WHERE name IN ('dynamic_model','dynamic_unit')"),
      2);
  auto m = (*st)->FindModel("stories260K");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*st)->ListQms(m->id)->size(), 2u);
  EXPECT_TRUE((*st)->ListDynamicModels(m->id)->empty());
  EXPECT_EQ(testing::VerifyErrors(dir), "");

  ASSERT_TRUE((*st)->PutDynamicModel(SmallModel(st->get(), m->id, "Q4_K_M", "Q2_K")).ok());
  auto back = (*st)->FindDynamicModel(m->id, "Q4_K_M", "Q2_K");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->entropies, (std::vector<double>{0.5, 1.25, 3.0}));
  ASSERT_EQ(back->units.size(), 2u);
  EXPECT_EQ(back->units[0].threshold, 1.25);
  EXPECT_TRUE(std::isinf(back->units[1].threshold));
  EXPECT_EQ(back->units[1].layer, -1);
  EXPECT_DOUBLE_EQ(back->hi_bits(), 6.4);
  st->reset();
  // Opening again changes nothing.
  auto again = Store::Open(Env::Default(), dir);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->ListDynamicModels(m->id)->size(), 1u);
}

TEST(SchemaUpgrade, RemovingAQmRemovesTheDynamicModelsBuiltOnIt) {
  FQ_REQUIRE_TESTDATA();
  TempDir tmp;
  const std::string dir = tmp.Join("store");
  ASSERT_TRUE(Store::Init(Env::Default(), dir).ok());
  auto st = Store::Open(Env::Default(), dir);
  ASSERT_TRUE(st.ok());
  for (const char* q : {"Q6_K", "Q4_K_M", "Q2_K"}) {
    ASSERT_TRUE(
        ImportGguf(st->get(),
                   TestDataPath(std::string("models/stories260K/stories260K-") + q + ".gguf"), {})
            .ok());
  }
  const int64_t model = (*st)->FindModel("stories260K")->id;
  ASSERT_TRUE((*st)->PutDynamicModel(SmallModel(st->get(), model, "Q6_K", "Q2_K")).ok());
  ASSERT_TRUE((*st)->PutDynamicModel(SmallModel(st->get(), model, "Q4_K_M", "Q2_K")).ok());
  ASSERT_TRUE(RemoveQm(st->get(), "stories260K", "Q6_K").ok());
  auto left = (*st)->ListDynamicModels(model);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ(left->front().hi_label, "Q4_K_M");
  EXPECT_EQ(testing::IndexQueryInt(dir, "SELECT count(*) FROM dynamic_unit"), 2)
      << "its units went with it";
  auto missing = (*st)->FindDynamicModel(model, "Q6_K", "Q2_K");
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_NE(missing.status().message().find("hi=Q4_K_M,lo=Q2_K"), std::string::npos)
      << "names what there is";
  ASSERT_TRUE(RemoveModel(st->get(), "stories260K").ok());
  EXPECT_EQ(testing::IndexQueryInt(dir, "SELECT count(*) FROM dynamic_model"), 0);
}

}  // namespace
}  // namespace fqpack::store
