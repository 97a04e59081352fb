#pragma once
// How ops address the KV cache: every cache exposes block tables over a pool of
// (n_slots, kv_dim) K and V, so one attention kernel serves paged and contiguous layouts.
// A pool holds fp32 (k, v) or IEEE half bits (k16, v16: --kv-dtype f16, half the bytes that
// attention reads per cached position; each K/V row is rounded once, when it is written).
#include <cstddef>
#include <cstdint>

namespace eexit {

// Where one row's K/V live: the row's sequence block table and position.
// slot(t) = block_table[t / block_size] * block_size + t % block_size.
struct RowKv {
  const std::int32_t* block_table = nullptr;
  std::int32_t pos = 0;  // position of this row's token; attention covers 0..pos
};

// One layer of a KV cache: K and V pools of (n_slots, kv_dim), in one of two precisions:
// fp32 (k, v set; k16, v16 null) or f16 (k16, v16 set; k, v null).
struct KvLayerView {
  float* k = nullptr;
  float* v = nullptr;
  std::int32_t block_size = 0;
  std::int32_t kv_dim = 0;
  std::uint16_t* k16 = nullptr;
  std::uint16_t* v16 = nullptr;

  bool half() const noexcept { return k16 != nullptr; }
  std::size_t slot(const RowKv& r, std::int32_t t) const noexcept {
    return std::size_t(r.block_table[t / block_size]) * std::size_t(block_size) +
           std::size_t(t % block_size);
  }
};

}  // namespace eexit
