// The paper's claims on the real trained models of ../shared/data, at test
// size (few calibration tokens, an evaluation subset; bench/search_models.sh
// has the full-size numbers): every step changes one module, the median
// step is at least 15x finer than the static ladder's, at every static QM's
// footprint the ensemble is at most 1% worse, and the ensemble stores at
// most its library and at least 10x less than a model per footprint; on
// llama and on one other family.
#include <gtest/gtest.h>

#include "search/ensemble.h"
#include "search/report.h"
#include "store/gguf_import.h"
#include "tests/support/store_util.h"
#include "tests/support/test_util.h"

namespace fqpack::search {
namespace {

struct Case {
  std::string model;
  std::string up, low;
  std::vector<std::string> mids;
  int64_t tokens = 0;
  int64_t eval_chunks = 0;
};

void CheckEnsemble(store::Store* store, const Case& c) {
  const Bytes calib = *ReadFileBytes(Env::Default(), testing::TestDataPath("text/tinystories.txt"));
  SearchRequest req;
  req.model = c.model;
  req.up = c.up;
  req.low = c.low;
  req.mids = c.mids;
  req.calib_text = calib;
  req.tokens = c.tokens;
  req.threads = 2;
  req.search.stem = 1;
  req.search.branch = 2;
  auto out = SearchEnsemble(store, req);
  ASSERT_TRUE(out.ok()) << out.status().ToString();

  // One module per step, from the store's rows.
  auto m = store->FindModel(c.model);
  ASSERT_TRUE(m.ok());
  auto eqms = store->ListEqms(out->ensemble_id);
  ASSERT_TRUE(eqms.ok());
  store::ModelManifest prev;
  for (const store::EqmInfo& q : *eqms) {
    auto man = store->EqmManifest(out->ensemble_id, q.step);
    ASSERT_TRUE(man.ok());
    if (q.step > 0) {
      int changed = 0;
      for (size_t s = 0; s < man->slots.size(); ++s)
        changed += man->slots[s].key != prev.slots[s].key;
      EXPECT_EQ(changed, 1) << c.model << " step " << q.step;
      EXPECT_LT(man->weight_bytes(), prev.weight_bytes());
    }
    prev = *man;
  }

  ReportOptions opts;
  opts.ensembles = {out->name};
  opts.has_eval_text = true;
  opts.eval_text =
      *ReadFileBytes(Env::Default(), testing::TestDataPath("text/tinystories_val.txt"));
  opts.eval_name = "tinystories_val.txt";
  opts.n_ctx = 256;
  opts.max_chunks = c.eval_chunks;
  opts.every = 1 << 20;  // only the EQMs at the static footprints
  opts.threads = 2;
  auto r = BuildReport(store, c.model, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const EnsembleReport& e = r->ensembles[0];
  EXPECT_GE(e.granularity.ratio(), 15)
      << c.model << ": median step " << e.granularity.ensemble.median << " vs static "
      << e.granularity.library.median;
  EXPECT_LE(e.storage.ensemble_bytes, e.storage.library_bytes) << c.model;
  EXPECT_GE(e.storage.ratio(), 10) << c.model;
  ASSERT_EQ(e.quality.size(), 2 + c.mids.size());
  for (const QualityRow& q : e.quality) {
    EXPECT_LE(q.eqm_footprint, q.static_footprint);
    EXPECT_LE(q.eqm_ppl, 1.01 * q.static_ppl)
        << c.model << " at " << q.label << "'s footprint: EQM " << q.eqm_step << " ppl "
        << q.eqm_ppl << " vs " << q.static_ppl;
    std::printf(
        "  %s at %s (%llu bytes): static ppl %.4f, EQM %d (%llu bytes) ppl %.4f (%+.2f%%)\n",
        c.model.c_str(), q.label.c_str(), static_cast<unsigned long long>(q.static_footprint),
        q.static_ppl, q.eqm_step, static_cast<unsigned long long>(q.eqm_footprint), q.eqm_ppl,
        q.delta_pct());
  }
  std::printf(
      "  %s: %zu EQMs, granularity %.1fx finer, storage %.1fx below a model per footprint\n",
      c.model.c_str(), e.eqms.size(), e.granularity.ratio(), e.storage.ratio());
}

TEST(RealModels, TinyStories3MLlamaCppLadder) {
  FQ_REQUIRE_TESTDATA();
  testing::TempDir tmp;
  std::vector<std::string> ggufs;
  for (const char* label : {"Q8_0", "Q4_K_M", "Q2_K"}) {
    ggufs.push_back(testing::TestDataPath(std::string("models/tinystories-3M/tinystories-3M-") +
                                          label + ".gguf"));
  }
  auto st = testing::StoreWithImports(tmp.Join("store"), ggufs);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  CheckEnsemble(st->get(), {"tinystories-3M", "Q8_0", "Q2_K", {"Q4_K_M"}, 512, 48});
}

// A family other than llama: the zoo's qwen2 (NEOX rope, q/k/v biases).
TEST(RealModels, ZooQwen2LlamaCppLadder) {
  FQ_REQUIRE_TESTDATA();
  testing::TempDir tmp;
  std::vector<std::string> ggufs;
  for (const char* label : {"F32", "Q8_0", "Q4_K_M"}) {
    ggufs.push_back(testing::TestDataPath(std::string("models/zoo/zoo-qwen2-") + label + ".gguf"));
  }
  auto st = testing::StoreWithImports(tmp.Join("store"), ggufs);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  CheckEnsemble(st->get(), {"zoo-qwen2", "F32", "Q4_K_M", {"Q8_0"}, 512, 48});
}

TEST(RealModels, Stories260KGroupIntLibrary) {
  FQ_REQUIRE_TESTDATA();
  testing::TempDir tmp;
  const std::string dir = tmp.Join("store");
  std::string output;
  ASSERT_EQ(testing::RunCommand(
                "'" + testing::FqpackBinary() + "' --store '" + dir + "' -q import '" +
                    testing::TestDataPath("models/stories260K/stories260K-F32.gguf") + "' 2>&1",
                &output),
            0)
      << output;
  const int rc = testing::RunCommand("'" + testing::FqpackBinary() + "' --store '" + dir +
                                         "' -q quantize --model stories260K --from F32 --bits "
                                         "8,4,3,2 --group 64 2>&1",
                                     &output);
  if (rc != 0 && output.find("quantize") != std::string::npos &&
      output.find("rror") != std::string::npos && output.find("subcommand") != std::string::npos) {
    GTEST_SKIP() << "this build has no `fqpack quantize`: " << output;
  }
  ASSERT_EQ(rc, 0) << output;
  auto st = store::Store::Open(Env::Default(), dir);
  ASSERT_TRUE(st.ok());
  CheckEnsemble(st->get(),
                {"stories260K", "int8-g64", "int2-g64", {"int4-g64", "int3-g64"}, 4096, 60});
}

}  // namespace
}  // namespace fqpack::search
