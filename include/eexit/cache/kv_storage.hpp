#pragma once
// K/V pools of one cache: per layer, K and V of (n_slots, kv_dim), in backend memory, fp32
// or f16 (dtype::f16: IEEE half bits, on a backend that declares stores_f16_kv).
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "eexit/core/dtype.hpp"
#include "eexit/core/error.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/model/config.hpp"

namespace eexit {

// Whether Backend's ops (store_kv, attention, fill_kv) take f16 K/V pools.
template <class Backend>
inline constexpr bool stores_f16_kv = requires {
  requires Backend::stores_f16_kv;
};

// The K/V precisions a cache can hold: "f32" or "f16" (llama.cpp's --cache-type-k/-v f16).
inline dtype parse_kv_dtype(const std::string& s) {
  if (s == "f32") return dtype::f32;
  if (s == "f16") return dtype::f16;
  throw error("kv-dtype", "unknown K/V precision '" + s + "' (expected f32 or f16)");
}

}  // namespace eexit

namespace eexit::detail {

template <class Backend>
class KvStorage {
 public:
  KvStorage(Backend& be, const ModelConfig& cfg, std::size_t n_slots, dtype kv = dtype::f32)
      : be_(&be), n_layers_(cfg.n_layers), kv_dim_(cfg.kv_dim()), n_slots_(n_slots), type_(kv) {
    if (n_slots == 0) throw error("kv cache", "no KV slots: give the cache at least one block");
    if (kv != dtype::f32 && kv != dtype::f16)
      throw error("kv cache", "K/V precision " + std::string(dtype_name(kv)) +
                                  " is not supported (f32 or f16)");
    if (kv == dtype::f16 && !stores_f16_kv<Backend>)
      throw error("kv cache", std::string("the ") + Backend::name +
                                  " backend keeps K/V in f32 only (--kv-dtype f32)");
    const std::size_t per = n_slots * std::size_t(kv_dim_);
    if (per > std::numeric_limits<std::size_t>::max() / 4 / std::size_t(n_layers_))
      throw error("kv cache", "requested size overflows");
    if (kv == dtype::f16)
      data16_ = be.template allocate<std::uint16_t>(per * 2 * std::size_t(n_layers_));
    else
      data_ = be.template allocate<float>(per * 2 * std::size_t(n_layers_));
  }
  KvLayerView view(int layer, std::int32_t block_size) {
    const std::size_t per = n_slots_ * std::size_t(kv_dim_), at = std::size_t(layer) * 2 * per;
    if (type_ == dtype::f16) {
      std::uint16_t* base = Backend::data(data16_) + at;
      return KvLayerView{nullptr, nullptr, block_size, kv_dim_, base, base + per};
    }
    float* base = Backend::data(data_) + at;
    return KvLayerView{base, base + per, block_size, kv_dim_};
  }
  // Test hook: fill every slot of every layer with x (e.g. NaN, to find unwritten slots;
  // rounded to f16 in an f16 cache).
  void fill(float x) {
    if (type_ == dtype::f16) {
      if constexpr (stores_f16_kv<Backend>)
        be_->fill(Backend::data(data16_), data16_.size(), f32_to_f16(x));
    } else {
      be_->fill(Backend::data(data_), data_.size(), x);
    }
  }
  std::size_t n_slots() const noexcept { return n_slots_; }
  int n_layers() const noexcept { return n_layers_; }
  std::int32_t kv_dim() const noexcept { return kv_dim_; }
  dtype kv_dtype() const noexcept { return type_; }

 private:
  Backend* be_;
  int n_layers_;
  std::int32_t kv_dim_;
  std::size_t n_slots_;
  dtype type_;
  typename Backend::template buffer<float> data_;            // fp32 pools, or empty
  typename Backend::template buffer<std::uint16_t> data16_;  // f16 pools, or empty
};

}  // namespace eexit::detail
