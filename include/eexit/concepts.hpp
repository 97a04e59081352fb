#pragma once
// The concepts that constrain eexit's compile-time parameters (DESIGN.md §4). Each one
// states what the engine calls, so a type that lacks a member fails with the concept's
// name in the message rather than deep inside the engine.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "eexit/core/dtype.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/model/config.hpp"

namespace eexit {

// Memory and the ops the model needs, on raw pointers into the backend's own memory.
template <class B>
concept backend = requires(B& b, const float* cx, float* x, const std::int32_t* ids, std::size_t n,
                           const RowKv* rk, const KvLayerView& kv,
                           typename B::template buffer<float>& buf, std::span<const float> host,
                           std::span<float> host_out, WeightView wv) {
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
  b.embed(ids, n, wv, n, x);
  b.gather_rows(cx, ids, n, n, x);
  b.copy(cx, x, n);
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

// A model the engine can run layer by layer and exit from.
template <class M>
concept exit_model = requires(M& m, const M& cm, typename M::Workspace& ws, const std::int32_t* ids,
                              float* x, const float* cx, std::size_t n, const RowKv* rk,
                              const KvLayerView& kv, int l) {
  typename M::backend_type;
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

}  // namespace eexit
