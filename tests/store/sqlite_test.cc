// The thin SQLite layer: a failed bind is an error of the statement, never a
// silent NULL.
#include "store/sqlite.h"

#include <gtest/gtest.h>

#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

TEST(Stmt, AFailedBindIsAnErrorOfStepAndRun) {
  testing::TempDir tmp;
  auto db = Db::Open(Env::Default(), tmp.Join("t.sqlite"), Db::Mode::kReadWriteCreate);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t (x NOT NULL)").ok());
  auto st = (*db)->Prepare("INSERT INTO t VALUES (?)");
  ASSERT_TRUE(st.ok());
  st->Bind(2, int64_t{7});  // there is no parameter 2
  Status s = st->Run();
  ASSERT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("INSERT INTO t VALUES (?)"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(tmp.Join("t.sqlite")), std::string::npos) << s.ToString();
  EXPECT_FALSE(st->Step().ok()) << "the error stays until Reset";
  st->Reset();
  st->Bind(1, int64_t{7});
  EXPECT_TRUE(st->Run().ok());
  EXPECT_EQ(*(*db)->QueryInt("SELECT count(*) FROM t"), 1);
}

}  // namespace
}  // namespace fqpack::store
