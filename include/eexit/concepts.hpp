#pragma once
// Every concept that constrains eexit's compile-time parameters, in one place (DESIGN.md
// §4): backend, kv_cache, exit_model, fills_cache, confidence_measure, batch_rule, policy.
// Each one states what the engine or the model calls, so a type that lacks a member fails
// with the concept's name in the message rather than deep inside the engine.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "eexit/core/dtype.hpp"
#include "eexit/core/enums.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/model/config.hpp"
#include "eexit/policy/exit_rows.hpp"

namespace eexit {

// Memory and every op the model and the engine call, on raw pointers into the backend's
// own memory. host_view is how host code reads backend rows: no copy on a host backend,
// a download into the caller's staging vector on a device backend.
template <class B>
concept backend = requires(B& b, const float* cx, float* x, const std::int32_t* ids,
                           std::int32_t* iout, std::size_t n, const RowKv* rk,
                           const KvLayerView& kv, const KvLayerView* kvs,
                           typename B::template buffer<float>& buf, std::span<const float> host,
                           std::span<float> host_out, WeightView wv, std::vector<float>& fstage,
                           std::vector<std::int32_t>& istage) {
  { b.template allocate<float>(n) } -> std::same_as<typename B::template buffer<float>>;
  b.template upload<float>(buf, host);
  b.template download<float>(host_out, buf);
  b.synchronize();
  { B::data(buf) } -> std::same_as<float*>;
  b.matmul(cx, n, n, cx, n, x, cx);
  b.matmul(cx, n, n, wv, n, x, cx);  // a weight in its stored precision (core/dtype.hpp)
  b.rmsnorm(cx, cx, x, n, n, 1e-5f);
  b.rope(x, n, n, n, rk, cx, rope_style::half);
  b.store_kv(cx, cx, n, rk, kv);
  b.attention(cx, x, n, n, n, n, rk, kv);
  b.swiglu(cx, cx, x, n);
  b.add(x, cx, n);
  // Fused: q, k, v of one input; silu(x·W_gateᵀ) ⊙ (x·W_upᵀ); x += a·Wᵀ (each equal to
  // the ops in sequence).
  b.matmul_qkv(cx, n, n, wv, wv, wv, n, n, x, x, x, cx, cx, cx);
  b.matmul_swiglu(cx, n, n, wv, wv, n, x, x);
  b.matmul_add(cx, n, n, wv, n, x, x);
  b.embed(ids, n, wv, n, x);
  b.gather_rows(cx, ids, n, n, x);
  b.copy(cx, x, n);
  b.fill(x, n, 0.0f);
  b.sigmoid(x, n);
  b.fill_kv(cx, n, n, rk, kvs, n, n, cx, rope_style::half);
  // (rows, vocab) logits -> (rows, 3) max prob, top-1 - top-2 prob, entropy; (rows) argmax
  b.exit_scores(cx, n, n, x, iout);
  { b.host_view(cx, n, fstage) } -> std::same_as<const float*>;
  { b.host_view(ids, n, istage) } -> std::same_as<const std::int32_t*>;
};

// A KV cache: reserve is a value (false = full), never an exception.
template <class C>
concept kv_cache = backend<typename C::backend_type> &&
    requires(C& c, const C& cc, typename C::seq_id s, std::int32_t n, int layer) {
  { c.reserve(s, n) } -> std::same_as<bool>;
  c.release(s);
  c.truncate(s, n);
  { cc.length(s) } -> std::convertible_to<std::int32_t>;
  { cc.free_tokens() } -> std::convertible_to<std::int64_t>;
  { cc.capacity_tokens() } -> std::convertible_to<std::int64_t>;
  { cc.block_size() } -> std::convertible_to<std::int32_t>;
  { cc.blocks_used() } -> std::convertible_to<std::int32_t>;
  { cc.blocks_total() } -> std::convertible_to<std::int32_t>;
  { cc.block_table(s) } -> std::same_as<const std::int32_t*>;
  { c.view(layer) } -> std::same_as<KvLayerView>;
};

// A KV cache with automatic prefix caching (PagedCache): a new sequence starts on the
// cached blocks of its prompt's longest known prefix; prefill rows' blocks become known.
// Optional: the scheduler and the engine check it with if constexpr.
template <class C>
concept prefix_caching_cache = kv_cache<C> &&
    requires(C& c, const C& cc, typename C::seq_id s, std::span<const std::int32_t> tokens,
             std::int32_t n) {
  { c.match_prefix(s, tokens) } -> std::convertible_to<std::int32_t>;
  c.commit_full_depth(s, tokens, n);
  { cc.blocks_cached() } -> std::convertible_to<std::int32_t>;
};

// A model the engine can run layer by layer and exit from.
template <class M>
concept exit_model = requires(M& m, const M& cm, typename M::Workspace& ws, const std::int32_t* ids,
                              float* x, const float* cx, std::size_t n, const RowKv* rk,
                              const KvLayerView& kv, int l) {
  requires backend<typename M::backend_type>;
  { m.backend() } -> std::same_as<typename M::backend_type&>;
  { cm.config() } -> std::same_as<const ModelConfig&>;
  { cm.exit_layers() } -> std::convertible_to<std::span<const int>>;
  { cm.n_exits() } -> std::convertible_to<int>;
  { cm.has_classifier(l) } -> std::convertible_to<bool>;
  { m.make_workspace(n) } -> std::same_as<typename M::Workspace>;
  m.embed(ids, n, x);
  m.forward_layer(l, x, n, rk, kv, ws);
  m.exit_logits(l, cx, n, x, ws);
  m.kv_from_hidden(l, cx, n, rk, kv, ws);
  m.exit_classifier(l, cx, n, x, ws);
};

// The model can fill the cache type's skipped layers (the paper's KV fill).
template <class M, class C>
concept fills_cache = requires(M& m, typename M::Workspace& ws, const float* cx, std::size_t n,
                               const RowKv* rk, C& cache, int l) {
  m.kv_fill(l, cx, n, rk, cache, ws);
};

// A confidence measure: one score per active row, higher = more confident.
template <class M>
concept confidence_measure = requires(const M& m, const ExitRows& r, float* out) {
  { m.needs() } -> std::same_as<ExitNeeds>;
  m.score(r, out);
  { m.name() } -> std::convertible_to<std::string_view>;
};

// A batch rule: which rows leave, given which rows are confident.
template <class R>
concept batch_rule = requires(const R& r, std::span<const std::uint8_t> conf,
                              std::span<std::uint8_t> leave) {
  r.apply(conf, leave);
  { r.name() } -> std::convertible_to<std::string_view>;
};

// What the engine asks a policy at run time (DESIGN.md §3).
template <class P>
concept policy = std::copy_constructible<P> &&
    requires(P& p, const P& cp, const ExitRows& rows, std::span<std::uint8_t> conf,
             std::span<std::uint8_t> leave, int exit) {
  { cp.name() } -> std::convertible_to<std::string_view>;
  // false: the engine never computes exit heads (FullDepth).
  { cp.evaluates_exits() } -> std::convertible_to<bool>;
  // What to compute for the active decode rows at exit point `exit`.
  { cp.needs(exit) } -> std::same_as<ExitNeeds>;
  // Per row: is it confident, and does it leave here. A row that leaves is sampled from
  // this exit's head and its skipped layers' K/V are filled before the step ends.
  p.decide(rows, conf, leave);
};

}  // namespace eexit
