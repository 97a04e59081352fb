#pragma once
// K/V pools of one cache: per layer, K and V of (n_slots, kv_dim), in backend memory.
#include <cstdint>
#include <limits>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/model/config.hpp"

namespace eexit::detail {

template <class Backend>
class KvStorage {
 public:
  KvStorage(Backend& be, const ModelConfig& cfg, std::size_t n_slots)
      : be_(&be), n_layers_(cfg.n_layers), kv_dim_(cfg.kv_dim()), n_slots_(n_slots) {
    if (n_slots == 0) throw error("kv cache", "no KV slots: give the cache at least one block");
    const std::size_t per = n_slots * std::size_t(kv_dim_);
    if (per > std::numeric_limits<std::size_t>::max() / 2 / std::size_t(n_layers_))
      throw error("kv cache", "requested size overflows");
    data_ = be.template allocate<float>(per * 2 * std::size_t(n_layers_));
  }
  KvLayerView view(int layer, std::int32_t block_size) {
    float* base = Backend::data(data_) + std::size_t(layer) * 2 * n_slots_ * std::size_t(kv_dim_);
    return KvLayerView{base, base + n_slots_ * std::size_t(kv_dim_), block_size, kv_dim_};
  }
  // Test hook: fill every slot of every layer with x (e.g. NaN, to find unwritten slots).
  void fill(float x) { be_->fill(Backend::data(data_), data_.size(), x); }
  std::size_t n_slots() const noexcept { return n_slots_; }
  int n_layers() const noexcept { return n_layers_; }
  std::int32_t kv_dim() const noexcept { return kv_dim_; }

 private:
  Backend* be_;
  int n_layers_;
  std::int32_t kv_dim_;
  std::size_t n_slots_;
  typename Backend::template buffer<float> data_;
};

}  // namespace eexit::detail
