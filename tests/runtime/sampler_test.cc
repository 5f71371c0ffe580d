#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace fqpack::runtime {
namespace {

// Logits whose softmax (temperature 1) is exactly proportional to `probs`.
std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::map<int32_t, int> Histogram(Sampler* s, const std::vector<float>& logits, int draws) {
  std::map<int32_t, int> h;
  for (int i = 0; i < draws; ++i) ++h[s->Sample(logits)];
  return h;
}

TEST(Sampler, GreedyTakesTheFirstLargestLogit) {
  Sampler s({.temperature = 0, .top_p = 0.5f, .seed = 1});
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 3.0f, -2.0f, 3.0f}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{-5.0f}), 0);
  EXPECT_EQ(Sampler::Argmax(std::vector<float>{-1.0f, -1.0f, -0.5f}), 2);
}

TEST(Sampler, TheSameSeedGivesTheSameTokens) {
  const std::vector<float> logits = LogitsOf({0.2, 0.2, 0.2, 0.2, 0.2});
  Sampler a({.temperature = 1.0f, .top_p = 1.0f, .seed = 42});
  Sampler b({.temperature = 1.0f, .top_p = 1.0f, .seed = 42});
  Sampler c({.temperature = 1.0f, .top_p = 1.0f, .seed = 43});
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 64; ++i) {
    ta.push_back(a.Sample(logits));
    tb.push_back(b.Sample(logits));
    tc.push_back(c.Sample(logits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampler, UniformStreamIsPinnedToTheSeed) {
  // mt19937_64 with seed 5489 (the standard's default) starts with
  // 14514284786278117030; its top 53 bits scaled by 2^-53.
  Sampler s({.temperature = 1.0f, .top_p = 1.0f, .seed = 5489});
  EXPECT_DOUBLE_EQ(s.NextUniform(), static_cast<double>(14514284786278117030ull >> 11) * 0x1.0p-53);
}

TEST(Sampler, WithoutTopPFollowsTheDistribution) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  Sampler s({.temperature = 1.0f, .top_p = 1.0f, .seed = 7});
  const int draws = 40000;
  auto h = Histogram(&s, LogitsOf(probs), draws);
  for (int32_t t = 0; t < 4; ++t) {
    // 5 standard deviations of a binomial count.
    const double sd = std::sqrt(draws * probs[t] * (1 - probs[t]));
    EXPECT_NEAR(h[t], draws * probs[t], 5 * sd) << t;
  }
}

TEST(Sampler, TopPKeepsOnlyTheNucleusRenormalised) {
  const std::vector<double> probs = {0.15, 0.5, 0.05, 0.3};
  // 0.5 + 0.3 reaches 0.75: tokens 1 and 3 only, in ratio 5:3.
  Sampler s({.temperature = 1.0f, .top_p = 0.75f, .seed = 9});
  const int draws = 40000;
  auto h = Histogram(&s, LogitsOf(probs), draws);
  EXPECT_EQ(h.count(0), 0u);
  EXPECT_EQ(h.count(2), 0u);
  const double p1 = 0.5 / 0.8, sd = std::sqrt(draws * p1 * (1 - p1));
  EXPECT_NEAR(h[1], draws * p1, 5 * sd);
  EXPECT_EQ(h[1] + h[3], draws);

  // Just above 0.8 the third token joins.
  Sampler wider({.temperature = 1.0f, .top_p = 0.85f, .seed = 9});
  auto hw = Histogram(&wider, LogitsOf(probs), 4000);
  EXPECT_GT(hw[0], 0);
  EXPECT_EQ(hw.count(2), 0u);
}

TEST(Sampler, TinyTopPIsGreedyEvenOnAFlatDistribution) {
  Sampler s({.temperature = 1.0f, .top_p = 1e-6f, .seed = 3});
  EXPECT_EQ(s.Sample(LogitsOf({0.1, 0.6, 0.3})), 1);
  const std::vector<float> flat(100, 0.25f);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.Sample(flat), 0);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const std::vector<float> logits = LogitsOf({0.6, 0.4});
  Sampler cold({.temperature = 0.1f, .top_p = 1.0f, .seed = 1});
  Sampler hot({.temperature = 10.0f, .top_p = 1.0f, .seed = 1});
  const int draws = 20000;
  // At T = 0.1 the odds are (0.6/0.4)^10 = 57.7 : 1; at T = 10, 1.041 : 1.
  const double p_cold = 57.665 / 58.665, p_hot = 1.04138 / 2.04138;
  auto hc = Histogram(&cold, logits, draws);
  auto hh = Histogram(&hot, logits, draws);
  EXPECT_NEAR(hc[0], draws * p_cold, 5 * std::sqrt(draws * p_cold * (1 - p_cold)));
  EXPECT_NEAR(hh[0], draws * p_hot, 5 * std::sqrt(draws * p_hot * (1 - p_hot)));
}

TEST(Sampler, CheckRejectsBadOptions) {
  EXPECT_TRUE(Sampler::Check({.temperature = 0.8f, .top_p = 0.95f}).ok());
  EXPECT_TRUE(Sampler::Check({.temperature = -1.0f}).IsInvalidArgument());
  EXPECT_TRUE(Sampler::Check({.temperature = NAN}).IsInvalidArgument());
  EXPECT_TRUE(Sampler::Check({.top_p = 0.0f}).IsInvalidArgument());
  EXPECT_TRUE(Sampler::Check({.top_p = 1.5f}).IsInvalidArgument());
}

}  // namespace
}  // namespace fqpack::runtime
