#include "store/catalog.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cmath>
#include <limits>

#include "store/store.h"
#include "tests/support/test_util.h"

namespace fqpack::store {
namespace {

// Runs `sql` on the store's index through a connection of its own: how a
// test plants a row that fqpack would never write.
void Sql(const std::string& path, const std::string& sql) {
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

ModuleKey Key(uint8_t b) {
  ModuleKey k;
  k.bytes.fill(b);
  return k;
}

// Every kind of value a JSON column may hold.
JsonFields AllKinds() {
  JsonFields f;
  f.Set("metric", std::string("kl"))
      .Set("stem", int64_t{2})
      .Set("neg", int64_t{-7})
      .Set("big", std::numeric_limits<uint64_t>::max())
      .Set("eps", static_cast<double>(1e-5f))
      .Set("half", 0.5)
      .Set("include_embed", true)
      .Set("nothing", std::monostate{})
      .Set("quote", std::string("a\"b\\c\n\xc3\xa9"))
      .Set("slots", std::vector<std::string>{"blk.0.attn_q.weight", "output.weight"})
      .Set("empty", std::vector<std::string>{});
  return f;
}

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.Join("store");
    ASSERT_TRUE(Store::Init(Env::Default(), dir_).ok());
    auto s = Store::Open(Env::Default(), dir_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }

  // A model of two slots with two QMs (the second without a GGUF layout or
  // params) over three blobs.
  void AddModel() {
    NewModelRows m;
    m.name = "m";
    m.arch = "llama";
    m.hparams = AllKinds();
    m.gguf_version = 3;
    m.n_kv = 5;
    m.metadata = {1, 2, 3};
    SlotInfo a;
    a.idx = 0;
    a.name = "blk.0.attn_q.weight";
    a.kind = "attn_q";
    a.layer = 0;
    a.shape.n_dims = 2;
    a.shape.ne = {32, 4, 1, 1};
    SlotInfo b = a;
    b.idx = 1;
    b.name = "output_norm.weight";
    b.kind = "norm";
    b.layer = -1;
    b.shape.n_dims = 1;
    b.shape.ne = {32, 1, 1, 1};
    m.slots = {a, b};

    NewQmRows hi;
    hi.label = "F32";
    hi.params.Set("method", std::string("rtn")).Set("damp", 0.01);
    hi.source_name = "m-F32.gguf";
    hi.source_sha256 = std::string(64, 'a');
    hi.source_bytes = 4096;
    hi.layout = QmGgufLayout{3, 32, 5, {9, 8, 7}};
    for (int i = 0; i < 2; ++i) {
      ModuleRef r;
      r.slot_idx = i;
      r.key = Key(static_cast<uint8_t>(1 + i));
      r.desc = m.slots[i].shape;
      r.desc.qtype = 0;
      r.raw_bytes = r.desc.n_elements() * 4;
      r.stored_bytes = 100 + i;
      r.file_pos = 1 - i;
      r.file_offset = 64 * i;
      hi.modules.push_back(r);
      hi.new_blobs.push_back(r);
    }
    auto ids = store_->catalog().AddQm(&m, 0, hi);
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    model_id_ = ids->first;
    hi_id_ = ids->second;

    NewQmRows lo;
    lo.label = "Q8";
    lo.origin = "quantize";
    lo.modules = hi.modules;
    lo.modules[0].key = Key(3);
    lo.modules[0].desc.qtype = 8;  // Q8_0: 34 bytes per 32 weights
    lo.modules[0].raw_bytes = 4 * 34;
    lo.modules[0].file_pos = -1;
    lo.modules[0].file_offset = -1;
    lo.modules[1].file_pos = -1;
    lo.modules[1].file_offset = -1;
    lo.new_blobs = {lo.modules[0]};
    auto lo_ids = store_->catalog().AddQm(nullptr, model_id_, lo);
    ASSERT_TRUE(lo_ids.ok()) << lo_ids.status().ToString();
    lo_id_ = lo_ids->second;
  }

  int64_t AddEnsemble() {
    NewEnsemble e;
    e.model_id = model_id_;
    e.name = "walk";
    e.up_qm_id = hi_id_;
    e.low_qm_id = lo_id_;
    e.library = {"F32", "Q8"};
    e.params = AllKinds();
    e.calib_sha256 = "abc";
    e.calib_text = {'h', 'i'};
    NewEqm up;
    up.step = 0;
    up.footprint = 640;
    up.calib_metric = 0.25;
    up.modules = {Key(1), Key(2)};
    up.source_qm_ids = {hi_id_, hi_id_};
    NewEqm low = up;
    low.step = 1;
    low.footprint = 264;
    low.calib_metric = NAN;
    low.calib_ppl = 3.5;
    low.modules = {Key(3), Key(2)};
    low.source_qm_ids = {lo_id_, 0};
    auto id = store_->catalog().AddEnsemble(e, {up, low});
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : 0;
  }

  DynamicModelInfo Dynamic() {
    DynamicModelInfo d;
    d.model_id = model_id_;
    d.hi_qm_id = hi_id_;
    d.lo_qm_id = lo_id_;
    d.n_weights = 160;
    d.hi_bytes = 640;
    d.lo_bytes = 264;
    d.target_bits = 20;
    d.calib_bits = 19.5;
    d.calib_tokens = 4;
    d.calib_starts = 1;
    d.entropies = {0.5, 1.25, 3.0};
    d.calib_sha256 = "def";
    d.params.Set("n_ctx", int64_t{32}).Set("metric", std::string("kl"));
    d.units = {{0, "blk.0", 0, 0.25, 376, 1.25}, {1, "output_norm.weight", -1, 0.125, 0, INFINITY}};
    return d;
  }

  std::string IndexPath() const { return dir_ + "/index.sqlite"; }

  testing::TempDir tmp_;
  std::string dir_;
  std::unique_ptr<Store> store_;
  int64_t model_id_ = 0, hi_id_ = 0, lo_id_ = 0;
};

TEST(JsonFields, EncodesAsCompactJsonInWriteOrder) {
  EXPECT_EQ(
      ToJson(AllKinds()),
      "{\"metric\":\"kl\",\"stem\":2,\"neg\":-7,\"big\":18446744073709551615,\"eps\":9."
      "999999747378752e-06,"
      "\"half\":0.5,\"include_embed\":true,\"nothing\":null,\"quote\":\"a\\\"b\\\\c\\n\xc3\xa9\","
      "\"slots\":[\"blk.0.attn_q.weight\",\"output.weight\"],\"empty\":[]}");
  EXPECT_EQ(ToJson(JsonFields()), "{}");
  EXPECT_EQ(ToJson(std::vector<std::string>{"Q8_0", "a\"b"}), "[\"Q8_0\",\"a\\\"b\"]");
  JsonFields f;
  f.Set("a", int64_t{1}).Set("b", int64_t{2}).Set("a", std::string("x"));
  EXPECT_EQ(ToJson(f), "{\"a\":\"x\",\"b\":2}") << "Set replaces in place";
}

TEST(JsonFields, TypedAccessors) {
  const JsonFields f = AllKinds();
  EXPECT_EQ(f.String("metric"), "kl");
  EXPECT_EQ(f.String("stem"), "") << "not a string";
  EXPECT_EQ(f.Int("stem").value_or(-1), 2);
  EXPECT_EQ(f.Int("neg").value_or(-1), -7);
  EXPECT_FALSE(f.Int("big").has_value()) << "above INT64_MAX";
  EXPECT_FALSE(f.Int("metric").has_value());
  EXPECT_FALSE(f.Int("absent").has_value());
  EXPECT_TRUE(f.Bool("include_embed"));
  EXPECT_FALSE(f.Bool("stem"));
  EXPECT_TRUE(f.Has("nothing"));
  EXPECT_FALSE(f.Has("absent"));
}

TEST_F(CatalogTest, ModelSlotsQmsAndModulesRoundTrip) {
  AddModel();
  Catalog& cat = store_->catalog();
  auto models = cat.ListModels();
  ASSERT_TRUE(models.ok()) << models.status().ToString();
  ASSERT_EQ(models->size(), 1u);
  const ModelInfo& m = models->front();
  EXPECT_EQ(m.id, model_id_);
  EXPECT_EQ(m.name, "m");
  EXPECT_EQ(m.arch, "llama");
  EXPECT_EQ(m.hparams, AllKinds());
  EXPECT_EQ(m.gguf_version, 3u);
  EXPECT_EQ(m.n_kv, 5u);
  EXPECT_EQ(m.metadata, (Bytes{1, 2, 3}));
  EXPECT_EQ(m.created_at.size(), 20u);

  auto slots = cat.Slots(model_id_);
  ASSERT_TRUE(slots.ok());
  ASSERT_EQ(slots->size(), 2u);
  EXPECT_EQ((*slots)[0].name, "blk.0.attn_q.weight");
  EXPECT_EQ((*slots)[0].kind, "attn_q");
  EXPECT_EQ((*slots)[0].layer, 0);
  EXPECT_EQ((*slots)[0].shape.ne[1], 4u);
  EXPECT_EQ((*slots)[1].layer, -1);
  EXPECT_EQ((*slots)[1].shape.n_dims, 1u);

  auto qms = cat.ListQms(model_id_);
  ASSERT_TRUE(qms.ok());
  ASSERT_EQ(qms->size(), 2u);
  const QmInfo& hi = (*qms)[0];
  EXPECT_EQ(hi.label, "F32");
  EXPECT_EQ(hi.origin, "import");
  EXPECT_EQ(hi.weight_bytes, 640u);
  EXPECT_DOUBLE_EQ(hi.bits_per_weight, 32.0);
  EXPECT_FALSE(hi.partial);
  EXPECT_EQ(hi.params.String("method"), "rtn");
  EXPECT_FALSE(hi.params.Int("damp").has_value());
  EXPECT_EQ(std::get<double>(*hi.params.Find("damp")), 0.01);
  EXPECT_EQ(hi.source_name, "m-F32.gguf");
  EXPECT_EQ(hi.source_bytes, 4096u);
  const QmInfo& lo = (*qms)[1];
  EXPECT_EQ(lo.label, "Q8");
  EXPECT_EQ(lo.origin, "quantize");
  EXPECT_TRUE(lo.params.empty());
  EXPECT_EQ(lo.source_name, "");
  EXPECT_EQ(lo.weight_bytes, 4u * 34 + 128);

  auto layout = cat.QmLayout(hi_id_);
  ASSERT_TRUE(layout.ok());
  ASSERT_TRUE(layout->has_value());
  EXPECT_EQ((*layout)->alignment, 32u);
  EXPECT_EQ((*layout)->n_kv, 5u);
  EXPECT_EQ((*layout)->metadata, (Bytes{9, 8, 7}));
  auto no_layout = cat.QmLayout(lo_id_);
  ASSERT_TRUE(no_layout.ok());
  EXPECT_FALSE(no_layout->has_value());

  auto mods = cat.QmModules(hi_id_);
  ASSERT_TRUE(mods.ok()) << mods.status().ToString();
  ASSERT_EQ(mods->size(), 2u);
  EXPECT_EQ((*mods)[0].key, Key(1));
  EXPECT_EQ((*mods)[0].qm_id, hi_id_);
  EXPECT_EQ((*mods)[0].file_pos, 1);
  EXPECT_EQ((*mods)[1].file_offset, 64);
  EXPECT_EQ((*mods)[1].stored_bytes, 101u);
  auto lo_mods = cat.QmModules(lo_id_);
  ASSERT_TRUE(lo_mods.ok());
  EXPECT_EQ((*lo_mods)[0].desc.qtype, 8u);
  EXPECT_EQ((*lo_mods)[0].file_pos, -1);
  EXPECT_EQ((*lo_mods)[1].key, Key(2)) << "the shared module is one blob";

  auto blob = cat.FindBlob(Key(3));
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(blob->raw_bytes, 136u);
  EXPECT_TRUE(cat.FindBlob(Key(9)).status().IsNotFound());

  auto stats = cat.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->blobs, 3u);
  EXPECT_EQ(stats->references, 4u);
  EXPECT_EQ(*cat.StoredBytes(), 100u + 101 + 100);
}

TEST_F(CatalogTest, EnsembleAndEqmsRoundTrip) {
  AddModel();
  const int64_t id = AddEnsemble();
  Catalog& cat = store_->catalog();
  auto e = cat.EnsembleById(id);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->name, "walk");
  EXPECT_EQ(e->library, (std::vector<std::string>{"F32", "Q8"}));
  EXPECT_EQ(e->params, AllKinds());
  EXPECT_EQ(e->calib_sha256, "abc");
  EXPECT_EQ(e->up_qm_id, hi_id_);
  EXPECT_EQ(e->low_qm_id, lo_id_);
  auto newest = cat.FindEnsemble(model_id_, "");
  ASSERT_TRUE(newest.ok());
  EXPECT_EQ(newest->id, id);
  EXPECT_EQ(*cat.CalibText(id), (Bytes{'h', 'i'}));
  EXPECT_TRUE(cat.CalibText(id + 1).status().IsNotFound());

  auto eqms = cat.ListEqms(id);
  ASSERT_TRUE(eqms.ok());
  ASSERT_EQ(eqms->size(), 2u);
  EXPECT_EQ((*eqms)[0].footprint, 640u);
  EXPECT_EQ((*eqms)[0].calib_metric, 0.25);
  EXPECT_TRUE(std::isnan((*eqms)[0].calib_ppl));
  EXPECT_TRUE(std::isnan((*eqms)[1].calib_metric));
  EXPECT_EQ((*eqms)[1].calib_ppl, 3.5);
  auto mods = cat.EqmModules((*eqms)[1].id);
  ASSERT_TRUE(mods.ok());
  ASSERT_EQ(mods->size(), 2u);
  EXPECT_EQ((*mods)[0].key, Key(3));
  EXPECT_EQ((*mods)[0].qm_id, lo_id_);
  EXPECT_EQ((*mods)[1].qm_id, 0) << "no source QM recorded";
  auto bytes = cat.EnsembleModuleBytes(id);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->first, 640u + 136);

  auto manifest = cat.EqmManifest(id, 1);
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_EQ(manifest->label, "eqm:1");
  EXPECT_EQ(manifest->slots[0].key, Key(3));
}

TEST_F(CatalogTest, DynamicModelRoundTrips) {
  AddModel();
  const DynamicModelInfo d = Dynamic();
  auto id = store_->catalog().PutDynamicModel(d);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto back = store_->catalog().FindDynamicModel(model_id_, "F32", "Q8");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, *id);
  EXPECT_EQ(back->hi_label, "F32");
  EXPECT_EQ(back->lo_label, "Q8");
  EXPECT_EQ(back->n_weights, 160u);
  EXPECT_EQ(back->calib_bits, 19.5);
  EXPECT_EQ(back->entropies, d.entropies);
  EXPECT_EQ(back->params, d.params);
  EXPECT_EQ(back->calib_sha256, "def");
  ASSERT_EQ(back->units.size(), 2u);
  EXPECT_EQ(back->units[0].name, "blk.0");
  EXPECT_EQ(back->units[0].threshold, 1.25);
  EXPECT_EQ(back->units[0].extra_bytes, 376);
  EXPECT_EQ(back->units[1].layer, -1);
  EXPECT_TRUE(std::isinf(back->units[1].threshold));
}

TEST_F(CatalogTest, PackIndexCarriesTheSameRecords) {
  AddModel();
  const int64_t ensemble = AddEnsemble();
  ASSERT_TRUE(store_->catalog().PutDynamicModel(Dynamic()).ok());
  Catalog& cat = store_->catalog();

  auto w = PackIndexWriter::Create(Env::Default());
  ASSERT_TRUE(w.ok());
  const ModelInfo model = cat.ListModels()->front();
  ASSERT_TRUE((*w)->AddModel(model, *cat.Slots(model.id)).ok());
  uint64_t offset = 4096;
  for (uint8_t k : {1, 2, 3}) {
    ModuleRef r = *cat.FindBlob(Key(k));
    ASSERT_TRUE((*w)->AddBlob(r, r.raw_bytes, false, offset).ok());
    offset += 4096;
  }
  const std::vector<QmInfo> qms = *cat.ListQms(model.id);
  for (const QmInfo& q : qms) ASSERT_TRUE((*w)->AddQm(q, *cat.QmLayout(q.id)).ok());
  for (const QmInfo& q : qms) ASSERT_TRUE((*w)->AddQmModules(q.id, *cat.QmModules(q.id)).ok());
  const EnsembleInfo e = *cat.EnsembleById(ensemble);
  ASSERT_TRUE((*w)->AddEnsemble(e).ok());
  const std::vector<EqmInfo> eqms = *cat.ListEqms(ensemble);
  for (const EqmInfo& q : eqms) ASSERT_TRUE((*w)->AddEqm(q).ok());
  for (const EqmInfo& q : eqms) ASSERT_TRUE((*w)->AddEqmModules(q.id, *cat.EqmModules(q.id)).ok());
  const DynamicModelInfo d = cat.ListDynamicModels(model.id)->front();
  ASSERT_TRUE((*w)->AddDynamicModel(d).ok());
  ASSERT_TRUE((*w)->AddDynamicUnits(d).ok());
  ASSERT_TRUE((*w)->AddInfo("model", "m").ok());
  auto image = (*w)->Finish();
  ASSERT_TRUE(image.ok()) << image.status().ToString();

  auto pack = PackCatalog::Open(*image, "test.fqpack");
  ASSERT_TRUE(pack.ok()) << pack.status().ToString();
  PackCatalog& pc = **pack;
  EXPECT_EQ(*pc.Info("model"), "m");
  EXPECT_TRUE(pc.Info("nope").status().IsNotFound());
  const ModelInfo pm = pc.ListModels()->front();
  EXPECT_EQ(pm.hparams, model.hparams);
  EXPECT_EQ(pm.metadata, model.metadata);
  EXPECT_EQ(pm.created_at, model.created_at);
  const std::vector<QmInfo> pqms = *pc.ListQms(model.id);
  ASSERT_EQ(pqms.size(), 2u);
  EXPECT_EQ(pqms[0].params, qms[0].params);
  EXPECT_EQ(pqms[0].created_at, qms[0].created_at);
  EXPECT_EQ((*pc.QmLayout(hi_id_))->metadata, (Bytes{9, 8, 7}));
  EXPECT_FALSE(pc.QmLayout(lo_id_)->has_value());
  EXPECT_EQ((*pc.QmModules(hi_id_))[0].file_pos, 1);
  const EnsembleInfo pe = *pc.EnsembleById(ensemble);
  EXPECT_EQ(pe.library, e.library);
  EXPECT_EQ(pe.params, e.params);
  const std::vector<EqmInfo> peqms = *pc.ListEqms(ensemble);
  ASSERT_EQ(peqms.size(), 2u);
  EXPECT_TRUE(std::isnan(peqms[1].calib_metric));
  EXPECT_EQ((*pc.EqmModules(peqms[1].id))[0].qm_id, lo_id_);
  const DynamicModelInfo pd = *pc.FindDynamicModel(model.id, "F32", "Q8");
  EXPECT_EQ(pd.entropies, d.entropies);
  EXPECT_EQ(pd.params, d.params);
  EXPECT_EQ(pd.units.size(), 2u);
  auto payloads = pc.Payloads();
  ASSERT_TRUE(payloads.ok());
  ASSERT_EQ(payloads->size(), 3u);
  EXPECT_EQ(payloads->front().codec, "raw");
  EXPECT_EQ(payloads->front().offset.value_or(-1), 4096);
  EXPECT_TRUE(pc.IntegrityProblems()->empty());
  EXPECT_EQ(*pc.BrokenReferences(), 0);
}

TEST_F(CatalogTest, AMalformedJsonColumnIsCorruptionNamingIt) {
  AddModel();
  const int64_t id = AddEnsemble();
  store_.reset();
  Sql(IndexPath(), "UPDATE ensemble SET library = '[\"F32\", ' WHERE id = " + std::to_string(id));
  auto s = Store::Open(Env::Default(), dir_);
  ASSERT_TRUE(s.ok());
  auto e = (*s)->catalog().EnsembleById(id);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().IsCorruption()) << e.status().ToString();
  EXPECT_NE(e.status().message().find("ensemble 'walk': column library"), std::string::npos)
      << e.status().ToString();
  EXPECT_TRUE((*s)->catalog().ListEnsembles(model_id_).status().IsCorruption());
  // The rest of the index still reads.
  EXPECT_TRUE((*s)->catalog().ListQms(model_id_).ok());
  s->reset();

  Sql(IndexPath(), "UPDATE ensemble SET library = '[\"F32\",\"Q8\"]', params = '[1]' WHERE id = " +
                       std::to_string(id));
  s = Store::Open(Env::Default(), dir_);
  ASSERT_TRUE(s.ok());
  auto p = (*s)->catalog().EnsembleById(id);
  ASSERT_TRUE(p.status().IsCorruption());
  EXPECT_NE(p.status().message().find("column params: not a JSON object"), std::string::npos)
      << p.status().ToString();
  s->reset();

  Sql(IndexPath(), "UPDATE model SET hparams = '{\"rope\":{\"base\":1}}'");
  Sql(IndexPath(), "UPDATE qm SET params = '{\"method\":' WHERE label = 'F32'");
  s = Store::Open(Env::Default(), dir_);
  ASSERT_TRUE(s.ok());
  auto m = (*s)->catalog().ListModels();
  ASSERT_TRUE(m.status().IsCorruption());
  EXPECT_NE(m.status().message().find("model 'm': column hparams: member 'rope'"),
            std::string::npos)
      << m.status().ToString();
  auto q = (*s)->catalog().FindQm(model_id_, "Q8");
  ASSERT_TRUE(q.status().IsCorruption());
  EXPECT_NE(q.status().message().find("qm 'F32': column params"), std::string::npos)
      << q.status().ToString();
  s->reset();

  Sql(IndexPath(), "UPDATE model SET hparams = '" + std::string(100, '[') + "'");
  s = Store::Open(Env::Default(), dir_);
  ASSERT_TRUE(s.ok());
  auto deep = (*s)->catalog().ListModels();
  ASSERT_TRUE(deep.status().IsCorruption());
  EXPECT_NE(deep.status().message().find("nested deeper"), std::string::npos)
      << deep.status().ToString();
}

TEST_F(CatalogTest, RemovingRowsCountsWhatWent) {
  AddModel();
  const int64_t id = AddEnsemble();
  Catalog& cat = store_->catalog();
  EXPECT_EQ(*cat.EnsemblesOnQm(hi_id_), 1);
  RemovedRows r;
  ASSERT_TRUE(cat.RemoveEnsemble(id, &r).ok());
  EXPECT_EQ(r.ensembles, 1u);
  EXPECT_EQ(r.eqms, 2u);
  EXPECT_EQ(r.references, 4u);
  EXPECT_EQ(*cat.EnsemblesOnQm(hi_id_), 0);
  std::vector<std::pair<ModuleKey, uint64_t>> dead;
  std::vector<ModuleKey> live;
  ASSERT_TRUE(cat.SweepBlobRows(false, &dead, &live).ok());
  EXPECT_TRUE(dead.empty());
  EXPECT_EQ(live.size(), 3u);
  RemovedRows q;
  ASSERT_TRUE(cat.RemoveQm(lo_id_, &q).ok());
  EXPECT_EQ(q.qms, 1u);
  EXPECT_EQ(q.references, 2u);
  dead.clear();
  live.clear();
  ASSERT_TRUE(cat.SweepBlobRows(true, &dead, &live).ok());
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].first, Key(3));
  EXPECT_EQ(live.size(), 2u);
}

}  // namespace
}  // namespace fqpack::store
