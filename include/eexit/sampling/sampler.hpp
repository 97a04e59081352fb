#pragma once
// Per-sequence token sampling: penalties, temperature, top-k, top-p, min-p, seeded draw, and
// the logprobs a client asked for.
//
// Order of processing (as vLLM / HF transformers):
//   raw logits -> penalties -> [temperature == 0: argmax, done] -> temperature -> top_k
//   -> top_p -> min_p -> softmax -> one draw from the Sampler's own Rng.
// Logprobs are always computed from the RAW model logits (log_softmax before penalties and
// temperature; what vLLM calls "raw logprobs"), so they describe the model, not the sampler.
//
// Determinism: a Sampler's output depends only on its params, its seed, the tokens given to
// set_prompt()/accept() and the logits. Filters rank by a total order (higher logit first, ties
// to the lower token id), so the kept set is exact; the draw walks the kept tokens in token-id
// order with double sums; each non-greedy sample consumes exactly one Rng draw (greedy none).
// Cost per call for a 32k vocab is O(vocab): top_k selects (no sort), top_p finds its cut with
// one bucketed pass over the mass and sorts only the bucket where the cut falls.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/sampling/rng.hpp"

namespace eexit {

struct SamplingParams {
  float temperature = 0.0f;           // 0 = greedy (argmax; ties -> lowest id)
  int top_k = 0;                      // 0 = off
  float top_p = 1.0f;                 // 1 = off
  float min_p = 0.0f;                 // 0 = off (keep tokens with p >= min_p * p_max)
  float repetition_penalty = 1.0f;    // HF/llama.cpp style over prompt + generated tokens:
                                      //   logit > 0 ? logit / p : logit * p
  float presence_penalty = 0.0f;      // OpenAI style over generated tokens:
                                      //   logit -= presence * (count > 0)
  float frequency_penalty = 0.0f;     //   logit -= frequency * count
  std::optional<std::uint64_t> seed;  // none = the engine picks one
  int logprobs = -1;  // -1: none; 0: logprob of the chosen token; k > 0: also the top-k
                      // alternatives (by raw logit, best first); at most 20

  static constexpr int max_logprobs = 20;

  // Throws eexit::error("sampling", ...) naming the first bad field.
  void validate() const {
    auto bad = [](const char* field, const std::string& why) {
      throw error("sampling", std::string(field) + " " + why);
    };
    if (!std::isfinite(temperature) || temperature < 0.0f)
      bad("temperature", "must be finite and >= 0, got " + std::to_string(temperature));
    if (top_k < 0) bad("top_k", "must be >= 0 (0 = off), got " + std::to_string(top_k));
    if (!(top_p > 0.0f && top_p <= 1.0f))
      bad("top_p", "must be in (0, 1], got " + std::to_string(top_p));
    if (!(min_p >= 0.0f && min_p <= 1.0f))
      bad("min_p", "must be in [0, 1], got " + std::to_string(min_p));
    if (!std::isfinite(repetition_penalty) || !(repetition_penalty > 0.0f))
      bad("repetition_penalty",
          "must be finite and > 0 (1 = off), got " + std::to_string(repetition_penalty));
    if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
      bad("presence_penalty", "must be in [-2, 2], got " + std::to_string(presence_penalty));
    if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
      bad("frequency_penalty", "must be in [-2, 2], got " + std::to_string(frequency_penalty));
    if (logprobs < -1 || logprobs > max_logprobs)
      bad("logprobs", "must be in [-1, 20] (-1 = none), got " + std::to_string(logprobs));
  }
};

struct TokenLogprob {
  int token;
  float logprob;
};

// One entry of the distribution a Sampler draws from.
struct TokenProb {
  int token;
  double prob;
};

struct SampleResult {
  int token;
  float logprob = 0.0f;           // filled when params.logprobs >= 0 (raw log_softmax)
  std::vector<TokenLogprob> top;  // params.logprobs alternatives, best first
};

// Per-sequence sampler: owns the RNG and the token counts for penalties, so that a sequence's
// output depends only on its own seed and tokens, never on what else is in the batch.
// The engine resolves the seed: Sampler(p, p.seed.value_or(engine_chosen_seed)).
// Scratch buffers are kept between calls: after the first call with a given vocab size,
// sample() allocates nothing except the returned `top` (when logprobs > 0).
class Sampler {
 public:
  Sampler(const SamplingParams& p, std::uint64_t seed) : params_(p), seed_(seed), rng_(seed) {
    params_.validate();
  }

  // Tokens that count for repetition_penalty (replaces any earlier prompt).
  void set_prompt(std::span<const int> prompt) {
    for (int t : prompt) check_token(t);  // all or nothing
    for (auto& [tok, c] : counts_) c.in_prompt = false;
    std::erase_if(counts_, [](const auto& kv) { return kv.second.generated == 0; });
    for (int t : prompt) counts_[t].in_prompt = true;
  }

  // A generated token (counts for all penalties).
  void accept(int token) {
    check_token(token);
    ++counts_[token].generated;
  }

  // Times `token` was accept()ed.
  int generated_count(int token) const {
    auto it = counts_.find(token);
    return it == counts_.end() ? 0 : it->second.generated;
  }

  // Samples the next token from `logits` (one row, vocab-sized). Does not accept it: the
  // engine calls accept() after. Throws eexit::error for empty logits, NaN or +inf logits,
  // all -inf logits, or a prompt/accepted token id outside the vocab.
  SampleResult sample(std::span<const float> logits) {
    const std::span<const TokenProb> dist = distribution(logits);
    int token = dist.front().token;
    if (params_.temperature > 0.0f) {
      // Exactly one draw per non-greedy sample, whatever the candidate count.
      double total = 0.0;
      for (const auto& tp : dist) total += tp.prob;
      const double u = rng_.uniform() * total;
      double cum = 0.0;
      token = dist.back().token;
      for (const auto& tp : dist) {
        cum += tp.prob;
        if (u < cum) {
          token = tp.token;
          break;
        }
      }
    }
    return result_for(logits, token);
  }

  // The result for `token` chosen from these logits by someone else (self-speculation's
  // kept draft or residual draw), with the logprobs sample() would give it when asked.
  SampleResult result_for(std::span<const float> logits, int token) {
    SampleResult r{token, 0.0f, {}};
    if (params_.logprobs >= 0) fill_logprobs(logits, r);
    return r;
  }

  // The distribution sample() draws from after penalties, temperature and the filters:
  // the tokens with probability > 0, normalised, in token-id order. Greedy (temperature 0)
  // gives the argmax with probability 1. The span stays valid until the next call on this
  // Sampler. Consumes no randomness.
  std::span<const TokenProb> distribution(std::span<const float> logits) {
    check_logits(logits);
    apply_penalties(logits);

    if (params_.temperature == 0.0f) {
      const auto it = std::max_element(work_.begin(), work_.end());  // first max = lowest id
      dist_.assign(1, TokenProb{int(it - work_.begin()), 1.0});
      return dist_;
    }

    // Temperature, shifted so that the best token has x = 0: x = (l - max) / T. The shift
    // changes no probability and keeps a tiny T from overflowing. Masked (-inf) tokens drop.
    const double m = *std::max_element(work_.begin(), work_.end());
    const double inv_t = 1.0 / double(params_.temperature);
    const int vocab = int(work_.size());
    cand_.clear();
    for (int i = 0; i < vocab; ++i) {
      const float l = work_[std::size_t(i)];
      if (l != -std::numeric_limits<float>::infinity())
        cand_.push_back(Cand{(double(l) - m) * inv_t, 0.0, i});
    }
    // cand_ stays in token-id order through every filter: each filter finds its boundary
    // token in a scratch copy (selection, no full sort) and then erases what ranks after it.

    // top_k: the k best by (x, then lower id).
    const std::size_t k = std::size_t(params_.top_k);
    if (k > 0 && k < cand_.size()) keep_up_to(kth_best(k));

    // Unnormalised probabilities w = exp(x) (the best token has w = 1).
    double z = 0.0;
    for (auto& c : cand_) z += (c.w = std::exp(c.x));

    // top_p: the smallest best-first prefix whose mass reaches top_p (always >= 1 token).
    if (params_.top_p < 1.0f) {
      const double target = double(params_.top_p) * z;
      keep_up_to(mass_boundary(target));
    }

    // min_p: p / p_max = w / 1, since the best token is always kept.
    if (params_.min_p > 0.0f) {
      const double mp = params_.min_p;
      std::erase_if(cand_, [mp](const Cand& c) { return c.w < mp; });
    }

    // softmax
    z = 0.0;
    for (const auto& c : cand_) z += c.w;
    dist_.clear();
    for (const auto& c : cand_) {
      const double p = c.w / z;
      if (p > 0.0) dist_.push_back(TokenProb{c.token, p});
    }
    return dist_;
  }

  const SamplingParams& params() const { return params_; }
  std::uint64_t seed() const { return seed_; }

 private:
  struct Cand {
    double x;  // shifted, temperature-scaled logit (best = 0)
    double w;  // exp(x)
    int token;
  };
  struct Count {
    int generated = 0;
    bool in_prompt = false;
  };

  // Total order: higher logit first, ties to the lower token id.
  static bool better(const Cand& a, const Cand& b) {
    return a.x > b.x || (a.x == b.x && a.token < b.token);
  }

  // Erases from cand_ every candidate that ranks after `last` (keeps token-id order).
  void keep_up_to(const Cand& last) {
    const Cand b = last;  // `last` may live in sel_; copy before erasing
    std::erase_if(cand_, [&b](const Cand& c) { return better(b, c); });
  }

  // The k-th best candidate (1-based). Small k: one pass keeping a sorted list of the best
  // (few insertions on average); large k: nth_element on a copy.
  const Cand& kth_best(std::size_t k) {
    sel_.clear();
    if (k > 256) {
      sel_.assign(cand_.begin(), cand_.end());
      std::nth_element(sel_.begin(), sel_.begin() + std::ptrdiff_t(k - 1), sel_.end(), better);
      return sel_[k - 1];
    }
    for (const Cand& c : cand_) {
      if (sel_.size() == k) {
        if (!better(c, sel_.back())) continue;
        sel_.pop_back();
      }
      sel_.insert(std::upper_bound(sel_.begin(), sel_.end(), c, better), c);
    }
    return sel_.back();
  }

  // The candidate at which the best-first cumulative mass (of w) first reaches `target`.
  // O(n): buckets of x (width 1/32, the last one open-ended) are in best-first order, so one
  // pass finds the bucket where the mass crosses, and only that bucket is sorted.
  const Cand& mass_boundary(double target) {
    constexpr int nb = 1024;
    constexpr double per_unit = 32.0;
    auto bucket = [](double x) {  // x <= 0; a higher x gives a lower (earlier) bucket
      const double t = -x * per_unit;
      return t < double(nb - 1) ? int(t) : nb - 1;
    };
    bucket_mass_.assign(nb, 0.0);
    for (const Cand& c : cand_) bucket_mass_[std::size_t(bucket(c.x))] += c.w;
    double acc = 0.0;
    int b = 0;
    for (; b < nb; ++b) {
      if (acc + bucket_mass_[std::size_t(b)] >= target) break;
      acc += bucket_mass_[std::size_t(b)];
    }
    if (b == nb) {  // rounding kept the target out of reach: keep everything
      return *std::max_element(cand_.begin(), cand_.end(), better);  // the worst
    }
    sel_.clear();
    for (const Cand& c : cand_)
      if (bucket(c.x) == b) sel_.push_back(c);
    std::sort(sel_.begin(), sel_.end(), better);
    for (const Cand& c : sel_)
      if ((acc += c.w) >= target) return c;
    return sel_.back();  // rounding: the whole bucket
  }

  static void check_token(int t) {
    if (t < 0) throw error("sampling", "negative token id " + std::to_string(t));
  }

  void check_logits(std::span<const float> logits) const {
    if (logits.empty()) throw error("sampling", "empty logits");
    if (logits.size() > std::size_t(std::numeric_limits<int>::max()))
      throw error("sampling", "vocab too large");
    constexpr float inf = std::numeric_limits<float>::infinity();
    bool bad = false, any_finite = false;
    for (float l : logits) {  // branch-free so that it vectorises
      bad |= !(l < inf);      // NaN or +inf
      any_finite |= l > -inf;
    }
    if (bad) throw error("sampling", "logits contain NaN or +inf");
    if (!any_finite) throw error("sampling", "every logit is -inf");
    for (const auto& [tok, c] : counts_)
      if (std::size_t(tok) >= logits.size())
        throw error("sampling", "token id " + std::to_string(tok) + " outside the vocab of " +
                                    std::to_string(logits.size()));
  }

  // work_ = logits with the penalties applied; finite logits stay finite, -inf stays masked.
  void apply_penalties(std::span<const float> logits) {
    work_.assign(logits.begin(), logits.end());
    const float rep = params_.repetition_penalty;
    const float pres = params_.presence_penalty;
    const float freq = params_.frequency_penalty;
    constexpr float big = std::numeric_limits<float>::max();
    for (const auto& [tok, c] : counts_) {
      float& l = work_[std::size_t(tok)];
      if (!std::isfinite(l)) continue;
      if (rep != 1.0f) l = l > 0.0f ? l / rep : l * rep;
      if (c.generated > 0) l -= pres + freq * float(c.generated);
      l = std::clamp(l, -big, big);
    }
  }

  // Raw log_softmax of the model's logits (before penalties and temperature).
  void fill_logprobs(std::span<const float> logits, SampleResult& r) {
    const double m = *std::max_element(logits.begin(), logits.end());
    double s = 0.0;
    for (float l : logits) s += std::exp(double(l) - m);
    const double lse = m + std::log(s);
    r.logprob = float(double(logits[std::size_t(r.token)]) - lse);
    const std::size_t k = std::min<std::size_t>(std::size_t(params_.logprobs), logits.size());
    if (k == 0) return;
    // Best k by raw logit (ties to the lower id): one pass with a small sorted list.
    r.top.reserve(k);
    auto beats = [&](int a, int b) {  // token a ranks before token b
      const float la = logits[std::size_t(a)], lb = logits[std::size_t(b)];
      return la > lb || (la == lb && a < b);
    };
    std::vector<int>& best = top_ids_;
    best.clear();
    const int vocab = int(logits.size());
    for (int i = 0; i < vocab; ++i) {
      if (best.size() == k && !beats(i, best.back())) continue;
      if (best.size() == k) best.pop_back();
      auto pos =
          std::upper_bound(best.begin(), best.end(), i, [&](int a, int b) { return beats(a, b); });
      best.insert(pos, i);
    }
    for (int t : best)
      r.top.push_back(TokenLogprob{t, float(double(logits[std::size_t(t)]) - lse)});
  }

  SamplingParams params_;
  std::uint64_t seed_;
  Rng rng_;
  std::unordered_map<int, Count> counts_;
  std::vector<float> work_;
  std::vector<Cand> cand_;
  std::vector<Cand> sel_;
  std::vector<double> bucket_mass_;
  std::vector<TokenProb> dist_;
  std::vector<int> top_ids_;
};

}  // namespace eexit
