#pragma once
// The names of the run-time policy choices, in one place: the CLI (eexit-generate), the
// server (flags and the OpenAI request's early_exit.policy) and the benchmarks map names
// to types here, and print the lists below in their help text and errors.
//
//   policy  full | all-confident | split | self-spec | adaptive -> AnyRule (NeverExit,
//           ExitWhenAllConfident, ExitConfidentRows, SpeculateFromExit, AdaptiveRule)
//   measure max-prob | margin | entropy | cosine | classifier -> AnyMeasure
//   fill    exit-state | deferred -> AnyFill (FillFromExitState, DeferredRecompute)
//
// The names come from each stock type's name(), listed by the variants in AnyRule and
// AnyMeasure; a new rule or measure is one more alternative there and appears here.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "eexit/policy/exit_policy.hpp"
#include "eexit/policy/fill.hpp"
#include "eexit/policy/measures.hpp"
#include "eexit/policy/names.hpp"
#include "eexit/policy/rules.hpp"
#include "eexit/policy/thresholds.hpp"

namespace eexit {

using measure_alternatives = decltype(AnyMeasure::m);

inline std::vector<std::string_view> policy_names() {
  return detail::alternative_names<AnyRule::alternatives>();
}
inline std::vector<std::string_view> measure_names() {
  return detail::alternative_names<measure_alternatives>();
}
// "full | all-confident | split", for help text.
inline std::string policy_names_help() {
  return detail::joined_names<AnyRule::alternatives>(" | ");
}
inline std::string measure_names_help() {
  return detail::joined_names<measure_alternatives>(" | ");
}
inline std::vector<std::string_view> fill_names() {
  return detail::alternative_names<AnyFill::alternatives>();
}
inline std::string fill_names_help() {
  return detail::joined_names<AnyFill::alternatives>(" | ");
}
inline bool is_policy_name(std::string_view n) {
  const auto v = policy_names();
  return std::find(v.begin(), v.end(), n) != v.end();
}

// eexit::error("policy" / "measure", ...) listing the valid names when n is none of them.
inline AnyRule rule_from_name(std::string_view n) {
  return AnyRule::from_name(n);
}
inline AnyMeasure measure_from_name(std::string_view n) {
  return AnyMeasure::from_name(n);
}
inline AnyFill fill_from_name(std::string_view n) {
  return AnyFill::from_name(n);
}

// A runtime policy from names: `policy` picks the batch rule ("full" computes no exit
// heads; "self-spec" is the self-speculative decode mode, drafting as `spec` says and
// scoring drafts with `measure`; "adaptive" the cost-model rule), `measure` the confidence
// measure, `fill` how the skipped layers' K/V are written.
inline RuntimePolicy make_runtime_policy(std::string_view policy,
                                         std::string_view measure = "max-prob",
                                         Thresholds thresholds = {}, Speculation spec = {},
                                         std::string_view fill = "exit-state") {
  RuntimePolicy p;
  p.rule = rule_from_name(policy);
  if (auto* s = std::get_if<SpeculateFromExit>(&p.rule.r)) {
    spec.validate();
    s->spec = spec;
  }
  p.measure = measure_from_name(measure);
  p.fill = fill_from_name(fill);
  p.thresholds = std::move(thresholds);
  return p;
}

}  // namespace eexit
