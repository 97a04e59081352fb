// Thresholds: one for all exits or one per exit, CALM's decay, and validation.
#include "eexit/policy/thresholds.hpp"

#include <doctest/doctest.h>

#include <cmath>

#include "eexit/core/error.hpp"

using eexit::Thresholds;

TEST_CASE("one threshold serves every exit point; a list gives each its own") {
  Thresholds t;
  t.values = {0.7f};
  CHECK(t.at(0, 0, 10) == 0.7f);
  CHECK(t.at(3, 9, 10) == 0.7f);
  t.values = {0.9f, 0.5f};
  CHECK(t.at(0, 5, 10) == 0.9f);
  CHECK(t.at(1, 5, 10) == 0.5f);
}

TEST_CASE("CALM's decay: lambda at t = 0, easing towards 0.9 lambda over N tokens") {
  Thresholds t;
  t.values = {0.8f};
  t.calm_decay = true;
  t.tau = 4.0f;
  CHECK(t.at(0, 0, 100) == doctest::Approx(0.8));
  // λ·e^(−τ·t/N)/10 + 9λ/10 at t = N/2: 0.08·e^−2 + 0.72
  CHECK(t.at(0, 50, 100) == doctest::Approx(0.08 * std::exp(-2.0) + 0.72));
  CHECK(t.at(0, 100, 100) == doctest::Approx(0.08 * std::exp(-4.0) + 0.72));
  CHECK(t.at(0, 100, 100) < t.at(0, 10, 100));
}

TEST_CASE("thresholds are validated against the model's exit points") {
  Thresholds t;
  t.values = {0.5f, 0.4f};
  CHECK_NOTHROW(t.validate(2));
  CHECK_THROWS_AS(t.validate(3), eexit::error);
  t.values = {};
  CHECK_THROWS_AS(t.validate(2), eexit::error);
  t.values = {NAN};
  CHECK_THROWS_AS(t.validate(2), eexit::error);
}
