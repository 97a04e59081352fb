// Tests of eexit::Rng and eexit::Sampler: greedy, each filter on hand-computed examples, the
// chain order, draw frequencies, determinism, penalties, logprobs and validation.
#include "eexit/sampling/sampler.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "eexit/sampling/rng.hpp"

namespace {

using eexit::Sampler;
using eexit::SamplingParams;
using eexit::TokenProb;

constexpr float ninf = -std::numeric_limits<float>::infinity();

std::vector<double> softmax(const std::vector<double>& x) {
  const double m = *std::max_element(x.begin(), x.end());
  std::vector<double> p(x.size());
  double z = 0;
  for (std::size_t i = 0; i < x.size(); ++i) z += (p[i] = std::exp(x[i] - m));
  for (auto& v : p) v /= z;
  return p;
}

// token -> probability, for order-independent comparison.
std::map<int, double> as_map(std::span<const TokenProb> d) {
  std::map<int, double> m;
  for (const auto& tp : d) m[tp.token] = tp.prob;
  return m;
}

void check_dist(std::span<const TokenProb> got, const std::map<int, double>& want,
                double tol = 1e-9) {
  const auto g = as_map(got);
  REQUIRE(g.size() == want.size());
  for (const auto& [tok, p] : want) {
    INFO("token " << tok);
    REQUIRE(g.count(tok) == 1);
    CHECK(g.at(tok) == doctest::Approx(p).epsilon(tol));
  }
}

std::vector<float> random_logits(std::size_t n, std::uint64_t seed, float scale = 3.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Straightforward reference of the whole chain (full sort, no cleverness).
std::map<int, double> reference(const SamplingParams& p, std::vector<float> l,
                                const std::vector<int>& prompt, const std::vector<int>& gen) {
  std::map<int, int> count;
  for (int t : gen) ++count[t];
  std::vector<bool> seen(l.size(), false);
  for (int t : prompt) seen[std::size_t(t)] = true;
  for (int t : gen) seen[std::size_t(t)] = true;
  for (std::size_t i = 0; i < l.size(); ++i) {
    if (!seen[i]) continue;
    float& x = l[i];
    x = x > 0.0f ? x / p.repetition_penalty : x * p.repetition_penalty;
    const int c = count.count(int(i)) ? count[int(i)] : 0;
    if (c > 0) x -= p.presence_penalty + p.frequency_penalty * float(c);
  }
  if (p.temperature == 0.0f) {
    return {{int(std::max_element(l.begin(), l.end()) - l.begin()), 1.0}};
  }
  std::vector<std::pair<double, int>> c;  // (-x, id): ascending sort = best first, low id
  for (std::size_t i = 0; i < l.size(); ++i) c.push_back({-double(l[i]) / p.temperature, int(i)});
  std::sort(c.begin(), c.end());
  if (p.top_k > 0 && std::size_t(p.top_k) < c.size()) c.resize(std::size_t(p.top_k));
  std::vector<double> x;
  for (auto& e : c) x.push_back(-e.first);
  auto pr = softmax(x);
  if (p.top_p < 1.0f) {
    double cum = 0;
    std::size_t keep = pr.size();
    for (std::size_t i = 0; i < pr.size(); ++i)
      if ((cum += pr[i]) >= p.top_p) {
        keep = i + 1;
        break;
      }
    c.resize(keep);
    x.resize(keep);
    pr = softmax(x);
  }
  std::map<int, double> out;
  std::vector<double> kept;
  std::vector<int> ids;
  for (std::size_t i = 0; i < pr.size(); ++i)
    if (pr[i] >= p.min_p * pr[0]) {
      kept.push_back(x[i]);
      ids.push_back(c[i].second);
    }
  pr = softmax(kept);
  for (std::size_t i = 0; i < ids.size(); ++i) out[ids[i]] = pr[i];
  return out;
}

}  // namespace

TEST_CASE("rng: splitmix64 seeding and xoshiro256** match the reference streams") {
  std::uint64_t s = 0;
  CHECK(eexit::splitmix64(s) == 0xe220a8397b1dcdafull);  // published splitmix64(0)
  CHECK(eexit::splitmix64(s) == 0x6e789e6aa1b965f4ull);
  eexit::Rng r0(0);
  CHECK(r0.next() == 0x99ec5f36cb75f2b4ull);
  CHECK(r0.next() == 0xbf6e1f784956452aull);
  CHECK(r0.next() == 0x1a5f849d4933e6e0ull);
  eexit::Rng r42(42);
  CHECK(r42.next() == 0x15780b2e0c2ec716ull);
  CHECK(r42.next() == 0x6104d9866d113a7eull);
  r42.reseed(42);
  CHECK(r42.next() == 0x15780b2e0c2ec716ull);

  eexit::Rng r(7);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = r.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
  }
  CHECK(sum / 100000 == doctest::Approx(0.5).epsilon(0.01));
}

TEST_CASE("sampler: greedy is argmax, ties to the lowest id, and consumes no randomness") {
  Sampler s(SamplingParams{}, 1);
  std::vector<float> l = {0.1f, 2.5f, -1.0f, 2.5f, 0.0f};
  CHECK(s.sample(l).token == 1);
  l = {ninf, -3.0f, ninf};
  CHECK(s.sample(l).token == 1);

  const auto big = random_logits(32000, 5);
  const int want = int(std::max_element(big.begin(), big.end()) - big.begin());
  CHECK(s.sample(big).token == want);
  const auto d = s.distribution(big);
  REQUIRE(d.size() == 1);
  CHECK(d[0].token == want);
  CHECK(d[0].prob == 1.0);
}

TEST_CASE("sampler: top_k keeps the k best, renormalised, ties to the lower id") {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  Sampler s(p, 1);
  const std::vector<float> l = {1.0f, 4.0f, 3.0f, 2.0f, 0.0f};
  const double a = 1.0 / (1.0 + std::exp(-1.0));
  check_dist(s.distribution(l), {{1, a}, {2, 1.0 - a}});
  const auto d = s.distribution(l);
  CHECK(d[0].token == 1);  // token-id order
  CHECK(d[1].token == 2);

  const std::vector<float> tie = {2.0f, 5.0f, 2.0f, 2.0f};
  check_dist(s.distribution(tie),
             {{1, std::exp(3.0) / (std::exp(3.0) + 1.0)}, {0, 1.0 / (std::exp(3.0) + 1.0)}});

  p.top_k = 10;  // k >= vocab: off
  Sampler all(p, 1);
  auto sm = softmax({1, 4, 3, 2, 0});
  check_dist(all.distribution(l), {{0, sm[0]}, {1, sm[1]}, {2, sm[2]}, {3, sm[3]}, {4, sm[4]}});
}

// A distribution with known probabilities: token i has probability q[i].
static const std::vector<double> q = {0.10, 0.50, 0.05, 0.20, 0.15};
static std::vector<float> q_logits() {
  std::vector<float> l;
  for (double v : q) l.push_back(float(std::log(v)));
  return l;
}
// Exact probabilities of the float logits (what the sampler sees).
static std::vector<double> q_exact() {
  std::vector<double> x;
  for (float f : q_logits()) x.push_back(f);
  return softmax(x);
}

TEST_CASE("sampler: top_p keeps the smallest best-first prefix reaching top_p") {
  SamplingParams p;
  p.temperature = 1.0f;
  const auto e = q_exact();
  p.top_p = 0.75f;  // 0.5 + 0.2 = 0.7 < 0.75, + 0.15 = 0.85 -> {1, 3, 4}
  Sampler s(p, 1);
  const double z = e[1] + e[3] + e[4];
  check_dist(s.distribution(q_logits()), {{1, e[1] / z}, {3, e[3] / z}, {4, e[4] / z}});
  const auto d = s.distribution(q_logits());  // token-id order
  CHECK(d[0].token == 1);
  CHECK(d[1].token == 3);
  CHECK(d[2].token == 4);

  p.top_p = 0.4f;  // the best token alone reaches it
  Sampler one(p, 1);
  check_dist(one.distribution(q_logits()), {{1, 1.0}});

  p.top_p = 0.94f;  // 0.95 of mass in 4 tokens: all but the 0.05 token
  Sampler most(p, 1);
  const double z4 = 1.0 - e[2];
  check_dist(most.distribution(q_logits()),
             {{0, e[0] / z4}, {1, e[1] / z4}, {3, e[3] / z4}, {4, e[4] / z4}});
}

TEST_CASE("sampler: min_p keeps p >= min_p * p_max, after temperature") {
  SamplingParams p;
  p.temperature = 1.0f;
  const auto e = q_exact();
  p.min_p = 0.35f;  // threshold 0.175: {1, 3}
  Sampler s(p, 1);
  check_dist(s.distribution(q_logits()), {{1, e[1] / (e[1] + e[3])}, {3, e[3] / (e[1] + e[3])}});
  p.min_p = 0.25f;  // threshold 0.125: {1, 3, 4}
  Sampler s2(p, 1);
  const double z = e[1] + e[3] + e[4];
  check_dist(s2.distribution(q_logits()), {{1, e[1] / z}, {3, e[3] / z}, {4, e[4] / z}});

  // T = 2 flattens: p_i / p_max = (q_i / q_max)^(1/2) = .447 .632 .548 .316 for 0, 3, 4, 2.
  p.temperature = 2.0f;
  p.min_p = 0.5f;  // -> {1, 3, 4}
  Sampler s3(p, 1);
  std::vector<double> x;
  for (float f : q_logits()) x.push_back(double(f) / 2.0);
  const auto t = softmax(x);
  const double zt = t[1] + t[3] + t[4];
  check_dist(s3.distribution(q_logits()), {{1, t[1] / zt}, {3, t[3] / zt}, {4, t[4] / zt}});

  p.temperature = 1.0f;
  p.min_p = 1.0f;  // only the max (and its ties)
  Sampler s4(p, 1);
  check_dist(s4.distribution(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f}), {{1, 0.5}, {2, 0.5}});
}

TEST_CASE("sampler: the chain order is temperature -> top_k -> top_p -> min_p") {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  p.top_p = 0.6f;  // after top_k: {0.714, 0.286} -> only token 1 (top_p first would keep 1, 3)
  Sampler s(p, 1);
  check_dist(s.distribution(q_logits()), {{1, 1.0}});

  // top_p after temperature: T = 2 makes q = .5 no longer enough for top_p = 0.4.
  SamplingParams pt;
  pt.temperature = 2.0f;
  pt.top_p = 0.4f;
  Sampler st(pt, 1);
  CHECK(st.distribution(q_logits()).size() == 2);
}

TEST_CASE("sampler: the whole chain matches a full-sort reference on random cases") {
  std::mt19937 g(11);
  for (int trial = 0; trial < 40; ++trial) {
    SamplingParams p;
    p.temperature = std::uniform_real_distribution<float>(0.2f, 2.0f)(g);
    p.top_k = std::array{0, 1, 5, 50, 700}[g() % 5];
    p.top_p = std::array{1.0f, 0.9f, 0.5f, 0.1f}[g() % 4];
    p.min_p = std::array{0.0f, 0.01f, 0.2f}[g() % 3];
    p.repetition_penalty = std::array{1.0f, 1.3f, 0.8f}[g() % 3];
    p.presence_penalty = std::array{0.0f, 0.5f, -1.0f}[g() % 3];
    p.frequency_penalty = std::array{0.0f, 0.25f, 2.0f}[g() % 3];
    const std::size_t vocab = trial % 4 == 3 ? 32000 : trial % 2 ? 3000 : 600;
    const auto l = random_logits(vocab, 100 + trial, trial % 3 ? 2.0f : 0.5f);
    std::vector<int> prompt, gen;
    for (int i = 0; i < 20; ++i) prompt.push_back(int(g() % 600));
    for (int i = 0; i < 30; ++i) gen.push_back(int(g() % 40));
    Sampler s(p, 3);
    s.set_prompt(prompt);
    for (int t : gen) s.accept(t);
    INFO("trial " << trial << " T=" << p.temperature << " k=" << p.top_k << " p=" << p.top_p
                  << " min_p=" << p.min_p);
    const auto d = s.distribution(l);
    check_dist(d, reference(p, l, prompt, gen), 1e-6);
    for (std::size_t i = 1; i < d.size(); ++i) REQUIRE(d[i - 1].token < d[i].token);
    const int tok = s.sample(l).token;
    CHECK(as_map(s.distribution(l)).count(tok) == 1);
  }
}

TEST_CASE("sampler: temperature draws follow softmax(logits / T) (chi-square, fixed seed)") {
  SamplingParams p;
  p.temperature = 0.7f;
  const std::vector<float> l = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f};
  std::vector<double> x;
  for (float f : l) x.push_back(double(f) / double(p.temperature));
  const auto want = softmax(x);
  check_dist(Sampler(p, 1).distribution(l),
             {{0, want[0]}, {1, want[1]}, {2, want[2]}, {3, want[3]}, {4, want[4]}});

  for (std::uint64_t seed : {1ull, 2ull, 12345ull}) {
    Sampler s(p, seed);
    constexpr int n = 20000;
    std::vector<int> count(l.size(), 0);
    for (int i = 0; i < n; ++i) ++count[std::size_t(s.sample(l).token)];
    double chi2 = 0;
    for (std::size_t i = 0; i < l.size(); ++i) {
      const double e = n * want[i];
      chi2 += (count[i] - e) * (count[i] - e) / e;
    }
    INFO("seed " << seed << " chi2 " << chi2);
    CHECK(chi2 < 18.47);  // chi-square, 4 degrees of freedom, p = 0.001
  }

  // With top_k = 3 the two worst tokens never come out; the rest keep their ratios.
  p.top_k = 3;
  Sampler s(p, 9);
  std::vector<int> count(l.size(), 0);
  for (int i = 0; i < 20000; ++i) ++count[std::size_t(s.sample(l).token)];
  CHECK(count[2] == 0);
  CHECK(count[3] == 0);
  const double z = want[0] + want[1] + want[4];
  double chi2 = 0;
  for (std::size_t i : {0u, 1u, 4u}) {
    const double e = 20000 * want[i] / z;
    chi2 += (count[i] - e) * (count[i] - e) / e;
  }
  CHECK(chi2 < 13.82);  // 2 degrees of freedom, p = 0.001

  // Masked (-inf) tokens are never drawn.
  SamplingParams hot;
  hot.temperature = 5.0f;
  Sampler m(hot, 4);
  const std::vector<float> masked = {0.0f, ninf, 0.0f, ninf};
  for (int i = 0; i < 1000; ++i) {
    const int t = m.sample(masked).token;
    REQUIRE((t == 0 || t == 2));
  }
}

TEST_CASE("sampler: same seed -> same tokens, different seed -> different tokens") {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.95f;
  p.frequency_penalty = 0.3f;
  const auto l = random_logits(4000, 8, 1.0f);
  auto run = [&](std::uint64_t seed, Sampler* noise) {
    Sampler s(p, seed);
    s.set_prompt(std::vector<int>{1, 2, 3});
    std::vector<int> out;
    for (int i = 0; i < 60; ++i) {
      if (noise) noise->accept(noise->sample(l).token);  // another sequence in the "batch"
      out.push_back(s.sample(l).token);
      s.accept(out.back());
    }
    return out;
  };
  const auto a = run(77, nullptr);
  Sampler other(p, 5);
  CHECK(run(77, &other) == a);
  CHECK(run(77, nullptr) == a);
  CHECK(run(78, nullptr) != a);
  CHECK(std::set<int>(a.begin(), a.end()).size() > 10);
}

TEST_CASE("sampler: penalties change the logits exactly as the formulas say") {
  SamplingParams p;  // greedy: the penalty flips the argmax
  p.repetition_penalty = 1.25f;
  const std::vector<float> l = {2.0f, 1.8f, -1.0f, -0.9f};
  {
    Sampler s(p, 1);
    CHECK(s.sample(l).token == 0);
    s.set_prompt(std::vector<int>{0, 0, 3});  // 2 / 1.25 = 1.6 < 1.8
    CHECK(s.sample(l).token == 1);
    s.set_prompt(std::vector<int>{});  // replaced, not added
    CHECK(s.sample(l).token == 0);
    s.accept(0);  // generated tokens count for the repetition penalty too
    CHECK(s.sample(l).token == 1);
  }
  {  // exact values through the distribution: logits {1.6, 1.8, -1.0, -1.125} at T = 1
    p.temperature = 1.0f;
    Sampler s(p, 1);
    s.set_prompt(std::vector<int>{0, 3, 0});
    const auto w = softmax({double(2.0f / 1.25f), 1.8f, -1.0f, double(-0.9f * 1.25f)});
    check_dist(s.distribution(l), {{0, w[0]}, {1, w[1]}, {2, w[2]}, {3, w[3]}}, 1e-12);
  }
  SamplingParams pf;
  pf.presence_penalty = 0.3f;
  pf.frequency_penalty = 0.2f;
  const std::vector<float> m = {3.0f, 2.5f, 0.0f, 0.0f};
  {
    Sampler s(pf, 1);
    s.set_prompt(std::vector<int>{0, 0, 0});  // the prompt does not count for these
    CHECK(s.sample(m).token == 0);
    s.accept(0);
    s.accept(0);  // 3 - (0.3 + 0.2 * 2) = 2.3 < 2.5
    CHECK(s.sample(m).token == 1);
    CHECK(s.generated_count(0) == 2);
  }
  {
    pf.temperature = 1.0f;
    Sampler s(pf, 1);
    s.accept(0);
    s.accept(0);
    s.accept(2);
    const double l0 = double(3.0f - (0.3f + 0.2f * 2.0f));
    const double l2 = double(0.0f - (0.3f + 0.2f * 1.0f));
    const auto w = softmax({l0, 2.5, l2, 0.0});
    check_dist(s.distribution(m), {{0, w[0]}, {1, w[1]}, {2, w[2]}, {3, w[3]}}, 1e-12);
  }
  {  // presence alone: 3 - 0.3 = 2.7 > 2.5, whatever the count
    SamplingParams pp;
    pp.presence_penalty = 0.3f;
    Sampler s(pp, 1);
    for (int i = 0; i < 5; ++i) s.accept(0);
    CHECK(s.sample(m).token == 0);
  }
  {  // negative penalties encourage repetition
    SamplingParams pn;
    pn.frequency_penalty = -2.0f;
    Sampler s(pn, 1);
    s.accept(1);
    CHECK(s.sample(m).token == 1);  // 2.5 + 2 = 4.5 > 3
  }
}

TEST_CASE("sampler: top_p tiny equals greedy (with penalties and ties)") {
  SamplingParams g;
  g.repetition_penalty = 1.5f;
  g.presence_penalty = 0.5f;
  SamplingParams t = g;
  t.temperature = 0.8f;
  t.top_p = 1e-6f;
  Sampler sg(g, 1), st(t, 99);
  auto l = random_logits(32000, 21);
  l[17] = l[4000] = 20.0f;  // a tie at the top
  for (int i = 0; i < 50; ++i) {
    const int a = sg.sample(l).token;
    const int b = st.sample(l).token;
    REQUIRE(a == b);
    sg.accept(a);
    st.accept(b);
  }
  CHECK(sg.generated_count(17) > 0);
}

TEST_CASE("sampler: logprobs are the raw log_softmax, alternatives sorted best first") {
  const std::vector<float> l = {1.0f, 2.0f, 3.0f, 0.5f};
  double z = 0;
  for (float f : l) z += std::exp(double(f));
  const double lse = std::log(z);

  SamplingParams p;
  p.logprobs = 2;
  p.repetition_penalty = 2.0f;  // does not change the raw logprobs
  Sampler s(p, 1);
  s.set_prompt(std::vector<int>{2});  // 3 / 2 = 1.5 < 2: greedy picks 1
  auto r = s.sample(l);
  CHECK(r.token == 1);
  CHECK(r.logprob == doctest::Approx(2.0 - lse).epsilon(1e-6));
  REQUIRE(r.top.size() == 2);
  CHECK(r.top[0].token == 2);
  CHECK(r.top[0].logprob == doctest::Approx(3.0 - lse).epsilon(1e-6));
  CHECK(r.top[1].token == 1);
  CHECK(r.top[1].logprob == doctest::Approx(2.0 - lse).epsilon(1e-6));

  p.logprobs = 0;
  auto r0 = Sampler(p, 1).sample(l);
  CHECK(r0.logprob == doctest::Approx(3.0 - lse).epsilon(1e-6));
  CHECK(r0.top.empty());

  p.logprobs = -1;
  auto rn = Sampler(p, 1).sample(l);
  CHECK(rn.logprob == 0.0f);
  CHECK(rn.top.empty());

  p.logprobs = 20;  // more than the vocab: all of it
  CHECK(Sampler(p, 1).sample(l).top.size() == 4);

  // Large vocab: the top 20 equal a full sort; logprobs of all tokens sum to 1.
  const auto big = random_logits(32000, 3);
  p.temperature = 1.3f;
  Sampler sb(p, 4);
  auto rb = sb.sample(big);
  std::vector<int> ids(big.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return big[a] > big[b]; });
  REQUIRE(rb.top.size() == 20);
  double mb = *std::max_element(big.begin(), big.end()), zb = 0;
  for (float f : big) zb += std::exp(double(f) - mb);
  for (std::size_t i = 0; i < 20; ++i) {
    CHECK(rb.top[i].token == ids[i]);
    CHECK(rb.top[i].logprob == doctest::Approx(big[std::size_t(ids[i])] - mb - std::log(zb)));
    if (i > 0) CHECK(rb.top[i].logprob <= rb.top[i - 1].logprob);
  }
  CHECK(rb.logprob == doctest::Approx(big[std::size_t(rb.token)] - mb - std::log(zb)));

  // Ties among alternatives: lower id first.
  p.logprobs = 3;
  auto rt = Sampler(p, 1).sample(std::vector<float>{1.0f, 5.0f, 1.0f, 5.0f});
  CHECK(rt.top[0].token == 1);
  CHECK(rt.top[1].token == 3);
  CHECK(rt.top[2].token == 0);
}

TEST_CASE("sampler: validate() rejects every bad value, accepts the boundaries") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto bad = [](auto set) {
    SamplingParams p;
    set(p);
    CHECK_THROWS_AS(p.validate(), eexit::error);
    try {
      p.validate();
    } catch (const eexit::error& e) {
      CHECK(e.where() == "sampling");
    }
    CHECK_THROWS_AS(Sampler(p, 1), eexit::error);
  };
  for (float v : {nan, inf, -inf, -0.5f}) bad([v](SamplingParams& p) { p.temperature = v; });
  for (float v : {nan, 0.0f, -0.1f, 1.0001f, inf}) bad([v](SamplingParams& p) { p.top_p = v; });
  for (float v : {nan, -0.01f, 1.01f, inf}) bad([v](SamplingParams& p) { p.min_p = v; });
  bad([](SamplingParams& p) { p.top_k = -1; });
  for (float v : {nan, 0.0f, -1.0f, inf}) bad([v](SamplingParams& p) { p.repetition_penalty = v; });
  for (float v : {nan, -2.01f, 2.01f, inf, -inf}) {
    bad([v](SamplingParams& p) { p.presence_penalty = v; });
    bad([v](SamplingParams& p) { p.frequency_penalty = v; });
  }
  bad([](SamplingParams& p) { p.logprobs = 21; });
  bad([](SamplingParams& p) { p.logprobs = -2; });

  SamplingParams ok;
  CHECK_NOTHROW(ok.validate());
  ok.temperature = 100.0f;
  ok.top_p = 1.0f;
  ok.min_p = 1.0f;
  ok.top_k = 1000000;
  ok.repetition_penalty = 1e-3f;
  ok.presence_penalty = -2.0f;
  ok.frequency_penalty = 2.0f;
  ok.logprobs = 20;
  CHECK_NOTHROW(ok.validate());
  ok.min_p = 0.0f;
  ok.top_p = 1e-9f;
  ok.logprobs = -1;
  CHECK_NOTHROW(ok.validate());
}

TEST_CASE("sampler: bad logits and token ids are errors") {
  SamplingParams p;
  p.temperature = 1.0f;
  Sampler s(p, 1);
  CHECK_THROWS_AS(s.sample(std::vector<float>{}), eexit::error);
  CHECK_THROWS_AS(s.sample(std::vector<float>{0.0f, std::nanf("")}), eexit::error);
  CHECK_THROWS_AS(s.sample(std::vector<float>{0.0f, -ninf}), eexit::error);
  CHECK_THROWS_AS(s.sample(std::vector<float>{ninf, ninf}), eexit::error);
  CHECK_THROWS_AS(s.accept(-1), eexit::error);
  CHECK_THROWS_AS(s.set_prompt(std::vector<int>{3, -4}), eexit::error);
  s.accept(5);
  CHECK_THROWS_AS(s.sample(std::vector<float>{0.0f, 1.0f}), eexit::error);  // 5 >= vocab 2
  CHECK_NOTHROW(s.sample(std::vector<float>(6, 0.0f)));
}

TEST_CASE("sampler: extreme temperatures stay finite") {
  SamplingParams p;
  p.temperature = 1e-30f;  // (l - max) / T would overflow without the shift
  Sampler s(p, 1);
  const std::vector<float> l = {1e30f, 3e38f, -3e38f, 2e38f};
  check_dist(s.distribution(l), {{1, 1.0}});
  p.temperature = 1e30f;  // uniform
  Sampler u(p, 1);
  check_dist(u.distribution(std::vector<float>{1.0f, 2.0f, 3.0f}),
             {{0, 1.0 / 3}, {1, 1.0 / 3}, {2, 1.0 / 3}});
}
