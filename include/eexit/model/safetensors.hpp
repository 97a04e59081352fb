#pragma once
// The safetensors format: an 8-byte little-endian header length n, n bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}), then
// the data; offsets are relative to the end of the header. Every field comes from a file we
// do not trust, so each one is checked before it is used to size or address anything.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eexit/core/dtype.hpp"
#include "eexit/core/error.hpp"
#include "eexit/model/weights.hpp"

namespace eexit::safetensors {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and is converted in place");

// A JSON header longer than this is not a model header but a corrupt or hostile file;
// the reference implementation uses the same bound.
inline constexpr std::uint64_t max_header_bytes = 100ull << 20;

struct TensorInfo {
  std::string name;
  // Meaningful only when supported: the element types the loaders convert to fp32.
  dtype type = dtype::f32;
  bool supported = false;
  std::string type_name;  // as written in the file ("F32", "I64", ...)
  std::size_t element_size = 0;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // absolute file offsets, begin <= end <= file size

  std::uint64_t bytes() const noexcept { return end - begin; }
  std::uint64_t numel() const noexcept { return bytes() / element_size; }
};

struct Header {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::uint64_t data_offset = 0;  // 8 + header length

  const TensorInfo* find(std::string_view name) const {
    for (const auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

namespace detail {

struct DtypeEntry {
  std::string_view name;
  std::size_t size;
  bool supported;
  dtype type;
};

// Every element type of the safetensors spec: the ones we cannot convert still parse, so a
// checkpoint that carries, say, an I64 buffer next to its weights loads as long as we never
// read that buffer.
inline constexpr DtypeEntry dtype_table[] = {
    {"F32", 4, true, dtype::f32},      {"F16", 2, true, dtype::f16},
    {"BF16", 2, true, dtype::bf16},    {"F64", 8, false, dtype::f32},
    {"I64", 8, false, dtype::f32},     {"U64", 8, false, dtype::f32},
    {"I32", 4, false, dtype::f32},     {"U32", 4, false, dtype::f32},
    {"I16", 2, false, dtype::f32},     {"U16", 2, false, dtype::f32},
    {"I8", 1, false, dtype::f32},      {"U8", 1, false, dtype::f32},
    {"BOOL", 1, false, dtype::f32},    {"F8_E4M3", 1, false, dtype::f32},
    {"F8_E5M2", 1, false, dtype::f32},
};

inline std::string where(std::string_view file, std::string_view tensor) {
  std::string s(file);
  if (!tensor.empty()) {
    s += ": tensor '";
    s += tensor;
    s += "'";
  }
  return s;
}

// a * b, or false when it does not fit in 64 bits.
inline bool mul_fits(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
  return !__builtin_mul_overflow(a, b, &out);
}

inline std::string shape_str(std::span<const std::int64_t> shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + ")";
}

inline std::uint64_t read_u64_le(const unsigned char* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// A non-negative JSON integer, or false (floats, negatives, strings do not count).
inline bool as_u64(const nlohmann::json& j, std::uint64_t& out) noexcept {
  if (j.is_number_unsigned()) {
    out = j.get<std::uint64_t>();
    return true;
  }
  if (j.is_number_integer()) {
    const auto v = j.get<std::int64_t>();
    if (v < 0) return false;
    out = std::uint64_t(v);
    return true;
  }
  return false;
}

inline TensorInfo parse_tensor(const std::string& name, const nlohmann::json& j,
                               std::uint64_t data_offset, std::uint64_t file_size,
                               std::string_view file) {
  const std::string w = where(file, name);
  if (!j.is_object()) throw error(w, "tensor entry is not a JSON object");
  TensorInfo t;
  t.name = name;

  const auto dt = j.find("dtype");
  if (dt == j.end() || !dt->is_string()) throw error(w, "field 'dtype' missing or not a string");
  const auto& dname = dt->get_ref<const std::string&>();
  for (const auto& e : dtype_table) {
    if (e.name == dname) {
      t.type = e.type;
      t.supported = e.supported;
      t.element_size = e.size;
      t.type_name = dname;
    }
  }
  if (t.element_size == 0) throw error(w, "unknown dtype '" + dname + "'");

  const auto sh = j.find("shape");
  if (sh == j.end() || !sh->is_array()) throw error(w, "field 'shape' missing or not an array");
  std::uint64_t numel = 1;
  for (const auto& d : *sh) {
    std::uint64_t v;
    if (!as_u64(d, v) || v > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
      throw error(w, "field 'shape' holds a value that is not a non-negative integer");
    if (!mul_fits(numel, v, numel)) throw error(w, "field 'shape': element count overflows");
    t.shape.push_back(std::int64_t(v));
  }
  std::uint64_t nbytes;
  if (!mul_fits(numel, t.element_size, nbytes))
    throw error(w, "field 'shape': byte size overflows");

  const auto off = j.find("data_offsets");
  std::uint64_t b, e;
  if (off == j.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0], b) ||
      !as_u64((*off)[1], e))
    throw error(w, "field 'data_offsets' must be two non-negative integers");
  if (b > e)
    throw error(w,
                "field 'data_offsets': begin " + std::to_string(b) + " > end " + std::to_string(e));
  // data_offset <= file_size was checked by the caller, so this cannot wrap.
  const std::uint64_t data_size = file_size - data_offset;
  if (e > data_size)
    throw error(w, "field 'data_offsets': end " + std::to_string(e) +
                       " lies past the end of the file (data section holds " +
                       std::to_string(data_size) + " bytes)");
  if (e - b != nbytes)
    throw error(w, "field 'data_offsets' spans " + std::to_string(e - b) + " bytes but shape " +
                       shape_str(t.shape) + " of " + dname + " needs " + std::to_string(nbytes));
  t.begin = data_offset + b;
  t.end = data_offset + e;
  return t;
}

}  // namespace detail

// Parses and validates the header. bytes is the whole file or a prefix of it that holds at
// least the 8-byte length and the JSON; file_size is the size of the whole file (tensor
// offsets are checked against it). Throws eexit::error naming the file and tensor/field.
inline Header parse_header(std::span<const unsigned char> bytes, std::uint64_t file_size,
                           std::string_view file) {
  const std::string f(file);
  if (bytes.size() > file_size) throw error(f, "prefix is longer than the file size given");
  if (bytes.size() < 8) throw error(f, "file too short for a safetensors header length");
  const std::uint64_t n = detail::read_u64_le(bytes.data());
  if (n > max_header_bytes)
    throw error(f, "header length " + std::to_string(n) + " exceeds the limit of " +
                       std::to_string(max_header_bytes) + " bytes");
  if (n + 8 > file_size)
    throw error(f, "header length " + std::to_string(n) + " exceeds the file size " +
                       std::to_string(file_size));
  if (n + 8 > bytes.size()) throw error(f, "header is longer than the bytes read");

  const auto* json_begin = bytes.data() + 8;
  nlohmann::json j = nlohmann::json::parse(json_begin, json_begin + n, nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) throw error(f, "header is not well-formed JSON");
  if (!j.is_object()) throw error(f, "header is not a JSON object");

  Header h;
  h.data_offset = n + 8;
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw error(f + ": __metadata__", "not a JSON object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          throw error(f + ": __metadata__." + mk, "metadata values must be strings");
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(detail::parse_tensor(key, value, h.data_offset, file_size, file));
  }
  return h;
}

// An open safetensors file: header parsed at construction, tensors read on demand.
class File {
 public:
  explicit File(std::string path) : path_(std::move(path)) {
    in_.open(path_, std::ios::binary);
    if (!in_) throw error(path_, "cannot open file");
    in_.seekg(0, std::ios::end);
    const auto end = in_.tellg();
    if (end < 0) throw error(path_, "cannot determine the file size");
    size_ = std::uint64_t(end);
    in_.seekg(0);
    // Read the length first, so a hostile length never sizes a buffer before it is checked.
    unsigned char len_bytes[8];
    const std::size_t got = read_at(0, len_bytes, size_ < 8 ? std::size_t(size_) : 8);
    std::uint64_t n = got == 8 ? detail::read_u64_le(len_bytes) : 0;
    if (got < 8 || n > max_header_bytes || n + 8 > size_) {
      // parse_header produces the precise message from what we have.
      header_ = parse_header(std::span<const unsigned char>(len_bytes, got), size_, path_);
      throw error(path_, "invalid header length");  // not reached: parse_header throws
    }
    std::vector<unsigned char> prefix(std::size_t(n + 8));
    if (read_at(0, prefix.data(), prefix.size()) != prefix.size())
      throw error(path_, "short read of the header");
    header_ = parse_header(prefix, size_, path_);
  }

  const std::string& path() const noexcept { return path_; }
  const Header& header() const noexcept { return header_; }
  std::uint64_t size() const noexcept { return size_; }

  // Reads a tensor as fp32, checking that it exists, has exactly the expected shape and an
  // element type we convert.
  std::vector<float> read(std::string_view name, std::span<const std::int64_t> shape) {
    const TensorInfo* t = checked(name, shape);
    std::vector<unsigned char> raw = bytes_of(*t, name);
    std::vector<float> out(t->numel());
    convert_to_f32(t->type, raw.data(), out.data(), out.size());
    return out;
  }
  std::vector<float> read(std::string_view name, std::initializer_list<std::int64_t> shape) {
    return read(name, std::span<const std::int64_t>(shape.begin(), shape.size()));
  }

  // Reads a weight matrix in its stored precision (as unset) or converted to as, with
  // read's checks.
  Weight read_weight(std::string_view name, std::initializer_list<std::int64_t> shape,
                     std::optional<dtype> as) {
    const TensorInfo* t = checked(name, std::span<const std::int64_t>(shape.begin(), shape.size()));
    std::vector<unsigned char> raw = bytes_of(*t, name);
    Weight w = Weight::packed(t->type, t->numel(), std::move(raw));
    return as ? w.converted(*as) : w;
  }

 private:
  const TensorInfo* checked(std::string_view name, std::span<const std::int64_t> shape) const {
    const TensorInfo* t = header_.find(name);
    const std::string w = detail::where(path_, name);
    if (!t) throw error(w, "tensor missing");
    if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end()))
      throw error(
          w, "shape " + detail::shape_str(t->shape) + ", expected " + detail::shape_str(shape));
    if (!t->supported)
      throw error(w, "dtype " + t->type_name + " is not supported (F32, F16 or BF16 only)");
    return t;
  }
  std::vector<unsigned char> bytes_of(const TensorInfo& t, std::string_view name) {
    std::vector<unsigned char> raw(t.bytes());
    if (read_at(t.begin, raw.data(), raw.size()) != raw.size())
      throw error(detail::where(path_, name), "short read (file changed or truncated?)");
    return raw;
  }
  std::size_t read_at(std::uint64_t offset, unsigned char* dst, std::size_t n) {
    in_.clear();
    in_.seekg(std::streamoff(offset));
    in_.read(reinterpret_cast<char*>(dst), std::streamsize(n));
    return std::size_t(in_.gcount());
  }

  std::string path_;
  std::ifstream in_;
  std::uint64_t size_ = 0;
  Header header_;
};

}  // namespace eexit::safetensors
