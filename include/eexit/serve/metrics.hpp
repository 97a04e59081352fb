#pragma once
// What the service counts (ServiceMetrics, a snapshot refreshed after every engine-thread
// iteration) and its Prometheus text exposition for GET /metrics.
#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace eexit::serve {

// Upper bounds (seconds) of the step-time histogram buckets; +Inf is implicit.
inline constexpr std::array<double, 12> step_time_buckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

// A consistent snapshot of the service and its engine, refreshed after every iteration.
struct ServiceMetrics {
  std::int64_t submitted = 0;
  std::int64_t finished_stop = 0, finished_length = 0, finished_abort = 0, finished_error = 0;
  std::int64_t rejected = 0, queue_full = 0;
  std::int64_t prompt_tokens = 0, generated_tokens = 0, steps = 0, preemptions = 0;
  std::int64_t running = 0, waiting = 0;
  std::int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  // Prefix caching: prompt tokens taken from cached blocks (not computed), and the blocks
  // no request holds that keep their K/V for a later prompt.
  std::int64_t prefix_cached_tokens = 0, kv_blocks_cached = 0;
  std::array<std::int64_t, step_time_buckets.size() + 1> step_time_counts{};  // last: +Inf
  double step_time_sum_s = 0.0;
  std::vector<std::int32_t> exit_layers;     // layer of each exit point
  std::vector<std::int64_t> exit_histogram;  // tokens per exit point
  std::int64_t loop_iterations = 0;          // engine-thread wake-ups (idle must not spin)
  // Self-speculation (EngineStats): verify passes, drafts proposed and accepted, tokens
  // the verify passes emitted.
  std::int64_t verify_passes = 0, draft_tokens = 0, accepted_drafts = 0, speculative_tokens = 0;
};

// The Prometheus text format (version 0.0.4) of a snapshot.
inline std::string prometheus_text(const ServiceMetrics& m) {
  std::ostringstream o;
  auto counter = [&](const char* name, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n";
  };
  auto gauge = [&](const char* name, const char* help, std::int64_t v) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n"
      << name << " " << v << "\n";
  };
  counter("eexit_requests_total", "Requests by outcome.");
  const std::pair<const char*, std::int64_t> outcomes[] = {
      {"stop", m.finished_stop},   {"length", m.finished_length}, {"abort", m.finished_abort},
      {"error", m.finished_error}, {"rejected", m.rejected},      {"queue_full", m.queue_full}};
  for (auto& [k, v] : outcomes) o << "eexit_requests_total{outcome=\"" << k << "\"} " << v << "\n";
  counter("eexit_prompt_tokens_total", "Prompt tokens computed (recomputation included).");
  o << "eexit_prompt_tokens_total " << m.prompt_tokens << "\n";
  counter("eexit_prefix_cache_hit_tokens_total",
          "Prompt tokens whose KV came from the prefix cache (not computed).");
  o << "eexit_prefix_cache_hit_tokens_total " << m.prefix_cached_tokens << "\n";
  {
    const std::int64_t all = m.prefix_cached_tokens + m.prompt_tokens;
    o << "# HELP eexit_prefix_cache_hit_rate Prefix cache hit tokens over all prompt tokens "
         "(hit + computed).\n# TYPE eexit_prefix_cache_hit_rate gauge\n"
      << "eexit_prefix_cache_hit_rate "
      << (all ? double(m.prefix_cached_tokens) / double(all) : 0.0) << "\n";
  }
  counter("eexit_generated_tokens_total", "Tokens generated.");
  o << "eexit_generated_tokens_total " << m.generated_tokens << "\n";
  counter("eexit_preemptions_total", "Sequences preempted for lack of KV blocks.");
  o << "eexit_preemptions_total " << m.preemptions << "\n";
  const std::tuple<const char*, const char*, std::int64_t> speculation[] = {
      {"eexit_verify_passes_total", "Self-speculation: verify passes (one per drafting row).",
       m.verify_passes},
      {"eexit_draft_tokens_total", "Self-speculation: draft tokens proposed.", m.draft_tokens},
      {"eexit_accepted_drafts_total", "Self-speculation: draft tokens accepted.",
       m.accepted_drafts},
      {"eexit_speculative_tokens_total", "Self-speculation: tokens emitted by verify passes.",
       m.speculative_tokens}};
  for (auto& [name, help, v] : speculation) {
    counter(name, help);
    o << name << " " << v << "\n";
  }
  gauge("eexit_requests_running", "Requests in the running batch.", m.running);
  gauge("eexit_requests_waiting", "Requests waiting for admission.", m.waiting);
  gauge("eexit_kv_blocks_used", "KV cache blocks in use.", m.kv_blocks_used);
  gauge("eexit_kv_blocks_total", "KV cache blocks in the pool.", m.kv_blocks_total);
  gauge("eexit_kv_blocks_cached",
        "KV cache blocks no request holds, kept for prefix reuse (evicted when needed).",
        m.kv_blocks_cached);
  o << "# HELP eexit_step_seconds Engine step time.\n# TYPE eexit_step_seconds histogram\n";
  std::int64_t cum = 0;
  for (std::size_t b = 0; b < step_time_buckets.size(); ++b) {
    cum += m.step_time_counts[b];
    o << "eexit_step_seconds_bucket{le=\"" << step_time_buckets[b] << "\"} " << cum << "\n";
  }
  cum += m.step_time_counts.back();
  o << "eexit_step_seconds_bucket{le=\"+Inf\"} " << cum << "\n";
  o << "eexit_step_seconds_sum " << m.step_time_sum_s << "\neexit_step_seconds_count " << cum
    << "\n";
  // Exit layers: a histogram over the layer each generated token left at.
  o << "# HELP eexit_exit_layer Layer (0-based) whose exit produced each token.\n"
       "# TYPE eexit_exit_layer histogram\n";
  cum = 0;
  for (std::size_t e = 0; e < m.exit_histogram.size(); ++e) {
    cum += m.exit_histogram[e];
    if (e < m.exit_layers.size())
      o << "eexit_exit_layer_bucket{le=\"" << m.exit_layers[e] << "\"} " << cum << "\n";
  }
  o << "eexit_exit_layer_bucket{le=\"+Inf\"} " << cum << "\n";
  double sum = 0;
  for (std::size_t e = 0; e < m.exit_histogram.size() && e < m.exit_layers.size(); ++e)
    sum += double(m.exit_histogram[e]) * m.exit_layers[e];
  o << "eexit_exit_layer_sum " << sum << "\neexit_exit_layer_count " << cum << "\n";
  return o.str();
}

}  // namespace eexit::serve
