#pragma once
// Enums shared by models and backends (a backend's rope op takes one; so does ModelConfig).
#include <cstdint>

namespace eexit {

// How RoPE pairs the elements of a head. llama2.c checkpoints (and GGUF) rotate
// adjacent pairs (2i, 2i+1); HF checkpoints permute Q/K so that element i pairs
// with i + head_dim/2 ("rotate_half").
enum class rope_style : std::uint8_t { interleaved, half };

}  // namespace eexit
