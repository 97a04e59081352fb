#pragma once
// eexit::Rng: a small seeded random number generator for sampling.
// xoshiro256** (Blackman & Vigna) with its state expanded from a 64-bit seed by splitmix64.
// Integer-only, so the stream of a seed is bit-identical on every platform and compiler.
#include <cstdint>
#include <limits>

namespace eexit {

// One step of splitmix64: advances `state` and returns the next output.
constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  using result_type = std::uint64_t;

  constexpr explicit Rng(std::uint64_t seed = 0) noexcept { reseed(seed); }

  // Restarts the stream of `seed`. splitmix64 never yields an all-zero xoshiro state.
  constexpr void reseed(std::uint64_t seed) noexcept {
    std::uint64_t sm = seed;
    for (auto& w : s_) w = splitmix64(sm);
  }

  // The next 64 random bits (xoshiro256**).
  constexpr std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1): the top 53 bits as a multiple of 2^-53 (exact, never 1.0).
  constexpr double uniform() noexcept { return double(next() >> 11) * 0x1.0p-53; }

  // UniformRandomBitGenerator, so that <random> distributions accept an Rng.
  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }
  constexpr result_type operator()() noexcept { return next(); }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }
  std::uint64_t s_[4] = {};
};

}  // namespace eexit
