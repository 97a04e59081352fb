#pragma once
// GGUF (llama.cpp's model file), versions 2 and 3: a reader for the whole container
// (metadata of every type, tensor infos, raw tensor bytes) and the llama architecture on
// top of it (ModelConfig + ModelWeights).
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count
// times {string key, u32 value_type, value}; tensor_count times {string name, u32 n_dims,
// u64 ne[n_dims] (ne[0] innermost), u32 ggml_type, u64 offset}; zero padding up to
// general.alignment (32 when absent); tensor data, each tensor at data_start + offset.
// A string is u64 length + bytes (no NUL); an array is u32 element type, u64 count,
// elements. A 2-D weight with ne = [in, out] is row-major (out, in): nn.Linear's layout.
//
// Every malformed file throws eexit::error naming the file and the field or tensor; the
// parser reads through a bounds-checked cursor and never trusts a count before checking it
// against the bytes that are left.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eexit/core/dtype.hpp"
#include "eexit/core/error.hpp"
#include "eexit/model/config.hpp"
#include "eexit/model/weights.hpp"

namespace eexit::gguf {

enum class value_type : std::uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

// ggml_type numbers of the tensor types this reader knows.
enum class tensor_type : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  bf16 = 30,
};

// Block geometry of a tensor type: blck elements take type_size bytes.
struct TypeTraits {
  std::string_view name;
  std::uint64_t blck = 0, type_size = 0;  // 0 = unknown type
};

inline TypeTraits traits(tensor_type t) noexcept {
  switch (t) {
    case tensor_type::f32:
      return {"F32", 1, 4};
    case tensor_type::f16:
      return {"F16", 1, 2};
    case tensor_type::bf16:
      return {"BF16", 1, 2};
    case tensor_type::q8_0:
      return {"Q8_0", 32, 34};  // f16 d, int8 q[32]
    case tensor_type::q4_0:
      return {"Q4_0", 32, 18};  // f16 d, u8 q[16] (two nibbles each)
    case tensor_type::q5_0:
      return {"Q5_0", 32, 22};  // f16 d, u8 qh[4] (bit 4 of each q), qs[16]
    case tensor_type::q5_1:
      return {"Q5_1", 32, 24};  // f16 d, m, u8 qh[4], qs[16]
    case tensor_type::q4_k:
      return {"Q4_K", 256, 144};  // f16 d, dmin, u8 scales[12], q[128]
    case tensor_type::q5_k:
      return {"Q5_K", 256, 176};  // f16 d, dmin, u8 scales[12], qh[32], qs[128]
    case tensor_type::q6_k:
      return {"Q6_K", 256, 210};  // u8 ql[128], qh[64], i8 scales[16], f16 d
  }
  return {};
}

// Whether the file at path starts with GGUF's magic (false when it cannot be read).
inline bool has_magic(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return f.gcount() == 4 && std::string_view(magic, 4) == "GGUF";
}

// One metadata value. A scalar is stored as an array of one element, so every accessor
// works on both; integers of every width (and bool) live in ints (a u64 above INT64_MAX
// keeps its bit pattern: elem says how to read it), f32/f64 in reals.
struct Value {
  value_type type = value_type::u8;  // array for arrays
  value_type elem = value_type::u8;  // the element type (== type for a scalar)
  std::vector<std::int64_t> ints;    // (count) integer and bool elements
  std::vector<double> reals;         // (count) f32 and f64 elements
  std::vector<std::string> strings;  // (count) string elements

  bool is_array() const noexcept { return type == value_type::array; }
  bool is_integer() const noexcept {
    return elem != value_type::f32 && elem != value_type::f64 && elem != value_type::string;
  }
  std::size_t size() const noexcept {
    return elem == value_type::string                           ? strings.size()
           : elem == value_type::f32 || elem == value_type::f64 ? reals.size()
                                                                : ints.size();
  }
};

struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> ne;  // (n_dims) ggml order: ne[0] is the innermost (row) length
  tensor_type type = tensor_type::f32;
  std::uint64_t offset = 0;  // from the start of the data section
  std::uint64_t n_elements = 0, n_bytes = 0;
  std::span<const std::uint8_t> data;  // (n_bytes) inside the file's bytes
};

// Sanity bounds far above real models; they keep every size product below 2^63.
inline constexpr std::uint32_t max_dims = 4;  // GGML_MAX_DIMS
inline constexpr std::int64_t max_ne = std::int64_t(1) << 40;
inline constexpr std::uint64_t max_elements = std::uint64_t(1) << 50;
inline constexpr std::uint64_t max_alignment = 1u << 20;

namespace detail {

// Bounds-checked little-endian reads over the file's bytes.
class Cursor {
 public:
  Cursor(std::span<const std::uint8_t> b, const std::string& where) : b_(b), where_(where) {}
  std::uint64_t pos() const noexcept { return pos_; }
  std::uint64_t left() const noexcept { return b_.size() - pos_; }

  template <class T>
  T scalar(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(std::string_view what) {
    const auto n = scalar<std::uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), std::size_t(n));
    pos_ += n;
    return s;
  }
  // A count of items of at least min_bytes each must fit in what is left.
  std::uint64_t count(std::string_view what, std::uint64_t min_bytes) {
    const auto n = scalar<std::uint64_t>(what);
    if (n > left() / min_bytes)
      throw error(where_ + ": " + std::string(what),
                  "count " + std::to_string(n) + " exceeds what the file can hold");
    return n;
  }
  [[noreturn]] void fail(std::string_view what, std::string_view why) const {
    throw error(where_ + ": " + std::string(what), why);
  }

 private:
  void need(std::uint64_t n, std::string_view what) const {
    if (n > left())
      fail(what, "truncated at byte " + std::to_string(pos_) + " (needs " + std::to_string(n) +
                     " more bytes, " + std::to_string(left()) + " left)");
  }
  std::span<const std::uint8_t> b_;
  std::uint64_t pos_ = 0;
  const std::string& where_;
};

inline std::uint64_t min_size(value_type t) noexcept {
  switch (t) {
    case value_type::u8:
    case value_type::i8:
    case value_type::boolean:
      return 1;
    case value_type::u16:
    case value_type::i16:
      return 2;
    case value_type::u32:
    case value_type::i32:
    case value_type::f32:
      return 4;
    default:
      return 8;  // u64, i64, f64, and a string's length
  }
}

inline bool known(value_type t) noexcept {
  return std::uint32_t(t) <= 12;
}

// Appends one element of type t to v.
inline void read_element(Cursor& c, value_type t, Value& v, const std::string& what) {
  switch (t) {
    case value_type::u8:
      v.ints.push_back(c.scalar<std::uint8_t>(what));
      return;
    case value_type::i8:
      v.ints.push_back(c.scalar<std::int8_t>(what));
      return;
    case value_type::u16:
      v.ints.push_back(c.scalar<std::uint16_t>(what));
      return;
    case value_type::i16:
      v.ints.push_back(c.scalar<std::int16_t>(what));
      return;
    case value_type::u32:
      v.ints.push_back(c.scalar<std::uint32_t>(what));
      return;
    case value_type::i32:
      v.ints.push_back(c.scalar<std::int32_t>(what));
      return;
    case value_type::u64:
      v.ints.push_back(std::bit_cast<std::int64_t>(c.scalar<std::uint64_t>(what)));
      return;
    case value_type::i64:
      v.ints.push_back(c.scalar<std::int64_t>(what));
      return;
    case value_type::f32:
      v.reals.push_back(c.scalar<float>(what));
      return;
    case value_type::f64:
      v.reals.push_back(c.scalar<double>(what));
      return;
    case value_type::boolean: {
      const auto b = c.scalar<std::uint8_t>(what);
      if (b > 1) c.fail(what, "bool value " + std::to_string(b) + " is neither 0 nor 1");
      v.ints.push_back(b);
      return;
    }
    case value_type::string:
      v.strings.push_back(c.string(what));
      return;
    case value_type::array:
      break;
  }
  c.fail(what, "unexpected value type");
}

inline Value read_value(Cursor& c, const std::string& what) {
  Value v;
  v.type = value_type(c.scalar<std::uint32_t>(what + " (type)"));
  if (!known(v.type)) c.fail(what, "unknown value type " + std::to_string(std::uint32_t(v.type)));
  if (v.type != value_type::array) {
    v.elem = v.type;
    read_element(c, v.elem, v, what);
    return v;
  }
  v.elem = value_type(c.scalar<std::uint32_t>(what + " (array type)"));
  if (!known(v.elem))
    c.fail(what, "unknown array element type " + std::to_string(std::uint32_t(v.elem)));
  // llama.cpp writes no nested arrays; refusing them also bounds the recursion.
  if (v.elem == value_type::array) c.fail(what, "nested arrays are not supported");
  const std::uint64_t n = c.count(what + " (array length)", min_size(v.elem));
  const std::size_t reserve = std::size_t(n);
  if (v.elem == value_type::string) {
    v.strings.reserve(reserve);
  } else if (v.elem == value_type::f32 || v.elem == value_type::f64) {
    v.reals.reserve(reserve);
  } else {
    v.ints.reserve(reserve);
  }
  for (std::uint64_t i = 0; i < n; ++i) read_element(c, v.elem, v, what);
  return v;
}

}  // namespace detail

// A parsed GGUF file. parse() reads a caller's bytes (which must outlive the result);
// open() maps a file read-only and keeps the mapping alive with the result.
class File {
 public:
  static File parse(std::span<const std::uint8_t> bytes, std::string where) {
    File f;
    f.where_ = std::move(where);
    f.bytes_ = bytes;
    f.parse_all();
    return f;
  }

  static File open(const std::string& path) {
    auto m = std::make_shared<Mapping>(path);
    File f = parse(m->bytes(), path);
    f.mapping_ = std::move(m);
    return f;
  }

  const std::string& where() const noexcept { return where_; }
  std::uint32_t version() const noexcept { return version_; }
  std::uint64_t alignment() const noexcept { return alignment_; }
  std::uint64_t data_offset() const noexcept { return data_offset_; }
  const std::map<std::string, Value, std::less<>>& metadata() const noexcept { return kv_; }
  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }

  const Value* find(std::string_view key) const {
    const auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
  }
  const TensorInfo* tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

  // Typed metadata access; a wrong type or an out-of-range value throws naming the key.
  std::string field(std::string_view key) const {
    return where_ + ": metadata '" + std::string(key) + "'";
  }
  std::optional<std::int64_t> integer(std::string_view key, std::int64_t lo,
                                      std::int64_t hi) const {
    const Value* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_array() || !v->is_integer() || v->elem == value_type::boolean)
      throw error(field(key), "must be an integer");
    const std::int64_t x = v->ints[0];
    if ((v->elem == value_type::u64 && x < 0) || x < lo || x > hi)
      throw error(field(key), "value " + as_text(*v) + " out of range [" + std::to_string(lo) +
                                  ", " + std::to_string(hi) + "]");
    return x;
  }
  std::optional<double> real(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_array() || (v->elem != value_type::f32 && v->elem != value_type::f64))
      throw error(field(key), "must be a float");
    return v->reals[0];
  }
  std::optional<bool> boolean(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_array() || v->elem != value_type::boolean) throw error(field(key), "must be a bool");
    return v->ints[0] != 0;
  }
  std::optional<std::string> string(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_array() || v->elem != value_type::string) throw error(field(key), "must be a string");
    return v->strings[0];
  }
  // An array of the given element kind (any integer type when elem is u8... i64, bool).
  const Value* array(std::string_view key, bool integers, bool reals, bool strings) const {
    const Value* v = find(key);
    if (!v) return nullptr;
    const bool ok =
        v->is_array() && ((integers && v->is_integer()) ||
                          (reals && (v->elem == value_type::f32 || v->elem == value_type::f64)) ||
                          (strings && v->elem == value_type::string));
    if (!ok) throw error(field(key), "must be an array of the expected element type");
    return v;
  }

  static std::string as_text(const Value& v) {
    if (v.elem == value_type::u64) return std::to_string(std::bit_cast<std::uint64_t>(v.ints[0]));
    return std::to_string(v.ints[0]);
  }

 private:
  // A read-only private mapping of a whole file (empty files map to an empty span).
  class Mapping {
   public:
    explicit Mapping(const std::string& path) {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw error(path, "cannot open file");
      struct stat st {};
      if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw error(path, "not a regular file");
      }
      size_ = std::size_t(st.st_size);
      if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
          ::close(fd);
          throw error(path, "cannot map file");
        }
        data_ = p;
      }
      ::close(fd);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() {
      if (data_) ::munmap(data_, size_);
    }
    std::span<const std::uint8_t> bytes() const noexcept {
      return {static_cast<const std::uint8_t*>(data_), size_};
    }

   private:
    void* data_ = nullptr;
    std::size_t size_ = 0;
  };

  void parse_all() {
    detail::Cursor c(bytes_, where_);
    const auto magic = c.scalar<std::uint32_t>("header field 'magic'");
    if (magic != 0x46554747u)  // "GGUF" as a little-endian u32
      c.fail("header field 'magic'", "not a GGUF file");
    version_ = c.scalar<std::uint32_t>("header field 'version'");
    if (version_ != 2 && version_ != 3)
      c.fail("header field 'version'",
             "version " + std::to_string(version_) + " is not supported (only 2 and 3)");
    // Minimal sizes: a tensor info is name length + n_dims + type + offset; a KV is key
    // length + type + a one-byte value.
    const std::uint64_t n_tensors = c.scalar<std::uint64_t>("header field 'tensor_count'");
    const std::uint64_t n_kv = c.count("header field 'kv_count'", 8 + 4 + 1);
    if (n_tensors > c.left() / (8 + 4 + 4 + 8))
      c.fail("header field 'tensor_count'",
             "count " + std::to_string(n_tensors) + " exceeds what the file can hold");

    for (std::uint64_t i = 0; i < n_kv; ++i) {
      const std::string what = "metadata entry " + std::to_string(i);
      std::string key = c.string(what + " (key)");
      Value v = detail::read_value(c, "metadata '" + key + "'");
      if (!kv_.emplace(key, std::move(v)).second) c.fail("metadata '" + key + "'", "duplicate key");
    }
    alignment_ = 32;
    if (find("general.alignment")) {
      const Value& a = *find("general.alignment");
      if (a.is_array() || a.elem != value_type::u32)
        throw error(field("general.alignment"), "must be a u32");
      alignment_ = std::uint64_t(a.ints[0]);
      if (alignment_ == 0 || !std::has_single_bit(alignment_) || alignment_ > max_alignment)
        throw error(field("general.alignment"), "value " + std::to_string(alignment_) +
                                                    " is not a power of two in [1, " +
                                                    std::to_string(max_alignment) + "]");
    }

    tensors_.reserve(std::size_t(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      TensorInfo t;
      t.name = c.string("tensor info " + std::to_string(i) + " (name)");
      const std::string w = "tensor '" + t.name + "'";
      const auto n_dims = c.scalar<std::uint32_t>(w + " (n_dims)");
      if (n_dims < 1 || n_dims > max_dims)
        c.fail(w, "n_dims " + std::to_string(n_dims) + " out of range [1, 4]");
      t.n_elements = 1;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const auto ne = c.scalar<std::uint64_t>(w + " (dims)");
        if (ne < 1 || ne > std::uint64_t(max_ne))
          c.fail(w,
                 "dimension " + std::to_string(d) + " = " + std::to_string(ne) + " out of range");
        if (t.n_elements > max_elements / ne) c.fail(w, "absurd element count");
        t.n_elements *= ne;
        t.ne.push_back(std::int64_t(ne));
      }
      const auto type = c.scalar<std::uint32_t>(w + " (type)");
      t.type = tensor_type(type);
      const TypeTraits tt = traits(t.type);
      if (tt.blck == 0) c.fail(w, "tensor type " + std::to_string(type) + " is not supported");
      if (std::uint64_t(t.ne[0]) % tt.blck != 0)
        c.fail(w, "row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                      std::string(tt.name) + " block size " + std::to_string(tt.blck));
      t.n_bytes = t.n_elements / tt.blck * tt.type_size;
      t.offset = c.scalar<std::uint64_t>(w + " (offset)");
      if (t.offset % alignment_ != 0)
        c.fail(w, "offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                      std::to_string(alignment_));
      if (!tensor_index_.emplace(t.name, tensors_.size()).second) c.fail(w, "duplicate name");
      tensors_.push_back(std::move(t));
    }

    // The data section starts at the next multiple of the alignment (a vocab-only file
    // may end before it).
    const std::uint64_t pos = c.pos();
    data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
    const std::uint64_t size = bytes_.size();
    for (TensorInfo& t : tensors_) {
      if (data_offset_ > size || t.offset > size - data_offset_ ||
          t.n_bytes > size - data_offset_ - t.offset)
        throw error(where_ + ": tensor '" + t.name + "'",
                    "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.n_bytes) +
                        ") lies outside the file's data section");
      t.data = bytes_.subspan(std::size_t(data_offset_ + t.offset), std::size_t(t.n_bytes));
    }
    // Tensors lie one after the other, each padded to the alignment (llama.cpp refuses any
    // other layout): as the type and element count fix a tensor's size, bytes that run into
    // the next tensor, or a gap before it, mean a type, shape or offset that does not match
    // the data (e.g. a tensor retyped without being rewritten).
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
    std::stable_sort(
        by_offset.begin(), by_offset.end(),
        [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const TensorInfo &a = *by_offset[i - 1], &b = *by_offset[i];
      // In the file, so no overflow: offset + n_bytes <= size.
      const std::uint64_t end = (a.offset + a.n_bytes + alignment_ - 1) / alignment_ * alignment_;
      if (end != b.offset)
        throw error(where_ + ": tensor '" + a.name + "'",
                    std::to_string(a.n_elements) + " " + std::string(traits(a.type).name) +
                        " elements take " + std::to_string(a.n_bytes) + " bytes from offset " +
                        std::to_string(a.offset) + ", but the next tensor, '" + b.name +
                        "', starts at " + std::to_string(b.offset) +
                        (end > b.offset ? " (overlap)" : " (a gap)") +
                        ": the data does not match the tensor's type and shape");
    }
  }

  std::string where_;
  std::span<const std::uint8_t> bytes_;
  std::shared_ptr<Mapping> mapping_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32, data_offset_ = 0;
  std::map<std::string, Value, std::less<>> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
};

// ---- dequantization (llama.cpp's published block layouts) --------------------------------

namespace detail {

// A block's f16 scale (d, dmin or m) at p, refused when it is inf or NaN: it would make
// the whole block's weights inf/NaN (0 * inf too), hence NaN logits, with no error.
inline float f16_scale(const std::uint8_t* p, std::size_t block, std::string_view field,
                       tensor_type t, std::string_view where) {
  const auto h = std::uint16_t(p[0] | p[1] << 8);
  if ((h & 0x7C00) == 0x7C00) {
    char bits[8];
    std::snprintf(bits, sizeof bits, "0x%04X", unsigned(h));
    throw error(std::string(where), std::string(traits(t).name) + " block " +
                                        std::to_string(block) + ": scale " + std::string(field) +
                                        " is " + ((h & 0x3FF) ? "NaN" : "inf") + " (f16 " + bits +
                                        ")");
  }
  return f16_to_f32(h);
}

}  // namespace detail

// THE per-tensor conversion: raw tensor bytes of type t -> out.size() floats, in the file's
// element order. data must hold exactly out.size() / blck blocks (TensorInfo guarantees it).
// A block whose f16 scale is inf or NaN throws, with `where` (the file and tensor) in the
// message.
inline void dequantize(tensor_type t, std::span<const std::uint8_t> data, std::span<float> out,
                       std::string_view where = "gguf::dequantize") {
  const TypeTraits tt = traits(t);
  if (tt.blck == 0 || out.size() % tt.blck != 0 ||
      data.size() != out.size() / tt.blck * tt.type_size)
    throw error(std::string(where), "data size does not match the element count");
  const std::uint8_t* p = data.data();
  float* y = out.data();
  const std::size_t nb = out.size() / tt.blck;
  auto scale = [&](const std::uint8_t* at, std::size_t b, std::string_view field) {
    return detail::f16_scale(at, b, field, t, where);
  };
  switch (t) {
    case tensor_type::f32:
      convert_to_f32(dtype::f32, p, y, out.size());
      return;
    case tensor_type::f16:
      convert_to_f32(dtype::f16, p, y, out.size());
      return;
    case tensor_type::bf16:
      convert_to_f32(dtype::bf16, p, y, out.size());
      return;
    case tensor_type::q8_0:
      for (std::size_t b = 0; b < nb; ++b, p += 34, y += 32) {
        const float d = scale(p, b, "d");
        for (int j = 0; j < 32; ++j) y[j] = d * float(std::int8_t(p[2 + j]));
      }
      return;
    case tensor_type::q4_0:
      // Low nibbles are elements 0..15, high nibbles 16..31; both offset by 8.
      for (std::size_t b = 0; b < nb; ++b, p += 18, y += 32) {
        const float d = scale(p, b, "d");
        for (int j = 0; j < 16; ++j) {
          y[j] = d * float((p[2 + j] & 0xF) - 8);
          y[j + 16] = d * float((p[2 + j] >> 4) - 8);
        }
      }
      return;
    case tensor_type::q5_0:
    case tensor_type::q5_1: {
      // As Q4_0/Q4_1 with a fifth bit per element: bit j of the u32 qh is element j's.
      // Q5_0: x = d*(q - 16); Q5_1: x = d*q + m.
      const bool q51 = t == tensor_type::q5_1;
      const std::size_t hdr = q51 ? 4 : 2;
      for (std::size_t b = 0; b < nb; ++b, p += tt.type_size, y += 32) {
        const float d = scale(p, b, "d"), m = q51 ? scale(p + 2, b, "m") : 0.0f;
        const std::uint8_t* h = p + hdr;
        const std::uint32_t qh = std::uint32_t(h[0]) | std::uint32_t(h[1]) << 8 |
                                 std::uint32_t(h[2]) << 16 | std::uint32_t(h[3]) << 24;
        const std::uint8_t* qs = h + 4;
        const int off = q51 ? 0 : 16;
        for (int j = 0; j < 16; ++j) {
          const int x0 = int((qs[j] & 0xF) | ((qh >> j) & 1) << 4) - off;
          const int x1 = int((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - off;
          y[j] = q51 ? d * float(x0) + m : d * float(x0);
          y[j + 16] = q51 ? d * float(x1) + m : d * float(x1);
        }
      }
      return;
    }
    case tensor_type::q4_k:
    case tensor_type::q5_k: {
      // 8 sub-blocks of 32: x = d*scale_j*q - dmin*min_j; 32 bytes of nibbles per pair of
      // sub-blocks (low nibbles first). Q5_K adds a fifth bit: qh[l] bit 2k is element l's
      // of sub-block 2k, bit 2k+1 of sub-block 2k+1.
      const bool q5 = t == tensor_type::q5_k;
      for (std::size_t b = 0; b < nb; ++b, p += tt.type_size) {
        const float d = scale(p, b, "d"), dmin = scale(p + 2, b, "dmin");
        const std::uint8_t* sc = p + 4;
        const std::uint8_t* qh = p + 16;
        const std::uint8_t* q = q5 ? p + 48 : p + 16;
        for (int j = 0; j < 8; j += 2, q += 32) {
          int s0, m0, s1, m1;
          eexit::detail::q4_k_scale_min(j, sc, s0, m0);
          eexit::detail::q4_k_scale_min(j + 1, sc, s1, m1);
          const float d0 = d * float(s0), n0 = dmin * float(m0);
          const float d1 = d * float(s1), n1 = dmin * float(m1);
          if (q5) {
            for (int l = 0; l < 32; ++l)
              *y++ = d0 * float((q[l] & 0xF) | ((qh[l] >> j) & 1) << 4) - n0;
            for (int l = 0; l < 32; ++l)
              *y++ = d1 * float((q[l] >> 4) | ((qh[l] >> (j + 1)) & 1) << 4) - n1;
          } else {
            for (int l = 0; l < 32; ++l) *y++ = d0 * float(q[l] & 0xF) - n0;
            for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] >> 4) - n1;
          }
        }
      }
      return;
    }
    case tensor_type::q6_k:
      // 16 sub-blocks of 16 with int8 scales: x = d*scale*(q - 32), q of 6 bits. Each half
      // (128 elements) takes 64 bytes of ql (low nibbles: elements 0..63, high: 64..127) and
      // 32 of qh (bits 2i..2i+1 of qh[l]: the top two bits of element l + 32i).
      for (std::size_t b = 0; b < nb; ++b, p += 210) {
        const float d = scale(p + 208, b, "d");
        const std::uint8_t* ql = p;
        const std::uint8_t* qh = p + 128;
        const auto* sc = reinterpret_cast<const std::int8_t*>(p + 192);
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
            const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
            const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            y[l] = d * float(sc[is]) * float(q1);
            y[l + 32] = d * float(sc[is + 2]) * float(q2);
            y[l + 64] = d * float(sc[is + 4]) * float(q3);
            y[l + 96] = d * float(sc[is + 6]) * float(q4);
          }
        }
      }
      return;
  }
}

// A tensor as ModelWeights holds it today: shape-checked and dequantized to fp32 through
// dequantize(). shape is in row-major order (outermost first), i.e. ne reversed.
inline const TensorInfo& checked_tensor(const File& f, const std::string& name,
                                        std::initializer_list<std::int64_t> shape) {
  const TensorInfo* t = f.tensor(name);
  const std::string w = f.where() + ": tensor '" + name + "'";
  if (!t) throw error(w, "missing");
  std::vector<std::int64_t> want(shape.begin(), shape.end());
  std::vector<std::int64_t> got(t->ne.rbegin(), t->ne.rend());
  // Trailing size-1 dims are how ggml pads; compare without them.
  while (got.size() > 1 && got.front() == 1 && got.size() > want.size()) got.erase(got.begin());
  if (got != want) {
    auto text = [](const std::vector<std::int64_t>& s) {
      std::string r = "(";
      for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
      return r + ")";
    };
    throw error(w, "shape " + text(got) + ", expected " + text(want));
  }
  return *t;
}

inline std::vector<float> read_f32(const File& f, const std::string& name,
                                   std::initializer_list<std::int64_t> shape) {
  const TensorInfo& t = checked_tensor(f, name, shape);
  std::vector<float> out(std::size_t(t.n_elements));
  dequantize(t.type, t.data, out, f.where() + ": tensor '" + name + "'");
  return out;
}

// A weight matrix kept as stored where the CPU kernels take its type (F32, F16, BF16,
// Q8_0, Q4_0, and Q4_K / Q5_K / Q6_K with rows of whole super-blocks: llama.cpp's Q4_K_M /
// Q5_K_M / Q6_K mixes; the bytes are copied out of the mapping as they are), else
// dequantized to fp32 (Q5_0, Q5_1: the mixes' fallbacks; a K-quant whose rows are not whole
// super-blocks). A block-quantized matrix must have rows of whole blocks.
inline Weight read_weight(const File& f, const std::string& name,
                          std::initializer_list<std::int64_t> shape) {
  const TensorInfo& t = checked_tensor(f, name, shape);
  std::optional<dtype> kept;
  switch (t.type) {
    case tensor_type::f16:
      kept = dtype::f16;
      break;
    case tensor_type::bf16:
      kept = dtype::bf16;
      break;
    case tensor_type::q8_0:
      kept = dtype::q8_0;
      break;
    case tensor_type::q4_0:
      kept = dtype::q4_0;
      break;
    case tensor_type::q4_k:
      kept = dtype::q4_k;
      break;
    case tensor_type::q5_k:
      kept = dtype::q5_k;
      break;
    case tensor_type::q6_k:
      kept = dtype::q6_k;
      break;
    default:
      break;
  }
  const std::int64_t row = *(shape.end() - 1);
  if (kept && is_kquant(*kept) && row % std::int64_t(kquant_block) != 0) kept.reset();
  if (!kept) return Weight(read_f32(f, name, shape));
  if (is_quantized(*kept) && row % std::int64_t(quant_block) != 0)
    throw error(f.where() + ": tensor '" + name + "'",
                "rows of " + std::to_string(row) + " weights are not whole 32-weight blocks");
  if (is_quantized(*kept) || is_kquant(*kept)) {
    // kept packed: its block scales checked as dequantize checks them
    const std::size_t bytes = traits(t.type).type_size;
    const std::string where = f.where() + ": tensor '" + name + "'";
    const bool dmin = *kept == dtype::q4_k || *kept == dtype::q5_k;
    const std::size_t d_at = *kept == dtype::q6_k ? 208 : 0;
    for (std::size_t b = 0; b * bytes < t.data.size(); ++b) {
      detail::f16_scale(t.data.data() + b * bytes + d_at, b, "d", t.type, where);
      if (dmin) detail::f16_scale(t.data.data() + b * bytes + 2, b, "dmin", t.type, where);
    }
  }
  return Weight::packed(*kept, std::size_t(t.n_elements),
                        std::vector<unsigned char>(t.data.begin(), t.data.end()));
}

}  // namespace eexit::gguf

namespace eexit {

// ---- the llama architecture ---------------------------------------------------------------

namespace detail::gguf_llama {

// Bounds as the other loaders use: above any real model, below overflow.
inline constexpr std::int64_t max_dim = 1 << 20;
inline constexpr std::int64_t max_vocab = 1 << 22;
inline constexpr std::int64_t max_layers = 1 << 12;
inline constexpr std::int64_t max_positions = 1 << 24;

inline int required(const gguf::File& f, const std::string& key, std::int64_t lo, std::int64_t hi) {
  const auto v = f.integer(key, lo, hi);
  if (!v) throw error(f.field(key), "missing");
  return int(*v);
}

inline float positive(const gguf::File& f, const std::string& key, float fallback) {
  const auto v = f.real(key);
  if (!v) return fallback;
  if (!std::isfinite(*v) || *v <= 0 || *v > 1e30) throw error(f.field(key), "must be > 0");
  return float(*v);
}

// eexit.early_exit.*: the GGUF spelling of config.json's "early_exit" block (shared heads
// only: a GGUF file has no tensors for dedicated heads yet).
inline void parse_early_exit(const gguf::File& f, ModelConfig& c) {
  const gguf::Value* layers = f.array("eexit.early_exit.exit_layers", true, false, false);
  const bool any = layers || f.find("eexit.early_exit.thresholds") ||
                   f.find("eexit.early_exit.measure") || f.find("eexit.early_exit.head");
  if (!any) return;
  const std::string wl = f.field("eexit.early_exit.exit_layers");
  if (!layers) throw error(wl, "missing (the other eexit.early_exit keys need it)");
  ExitConfig& e = c.early_exit;
  for (std::size_t i = 0; i < layers->ints.size(); ++i) {
    const std::int64_t v = layers->ints[i];
    if (v < 0 || v >= c.n_layers - 1 || layers->elem == gguf::value_type::boolean)
      throw error(wl, "layer " + std::to_string(v) + " out of range [0, " +
                          std::to_string(c.n_layers - 2) + "] (the last layer is implicit)");
    if (!e.exit_layers.empty() && v <= e.exit_layers.back())
      throw error(wl, "must be strictly increasing");
    e.exit_layers.push_back(int(v));
  }
  if (const auto head = f.string("eexit.early_exit.head"); head && *head != "shared")
    throw error(f.field("eexit.early_exit.head"),
                "only \"shared\" exit heads are read from GGUF, not \"" + *head + "\"");
  if (const auto m = f.string("eexit.early_exit.measure")) {
    if (m->empty()) throw error(f.field("eexit.early_exit.measure"), "must not be empty");
    e.measure = *m;
  }
  if (const gguf::Value* th = f.array("eexit.early_exit.thresholds", false, true, false)) {
    const std::string wt = f.field("eexit.early_exit.thresholds");
    if (th->reals.size() != e.exit_layers.size())
      throw error(wt, "has " + std::to_string(th->reals.size()) + " entries for " +
                          std::to_string(e.exit_layers.size()) + " exit layers");
    for (double t : th->reals) {
      if (!(std::abs(t) <= double(std::numeric_limits<float>::max())))
        throw error(wt, "must be finite numbers");
      e.thresholds.push_back(float(t));
    }
  }
}

}  // namespace detail::gguf_llama

// The llama architecture's metadata -> ModelConfig. Works on vocab-only files too (their
// hyper-parameters are those of the model they came from).
inline ModelConfig gguf_config(const gguf::File& f) {
  using namespace detail::gguf_llama;
  const auto arch = f.string("general.architecture");
  if (!arch) throw error(f.field("general.architecture"), "missing");
  if (*arch != "llama")
    throw error(f.field("general.architecture"),
                "architecture '" + *arch + "' is not supported (only \"llama\")");
  const std::string a = "llama.";
  ModelConfig c;
  // llama.cpp's converter un-permutes HF's Q/K rows back to Meta's layout, so GGUF pairs
  // adjacent elements like llama2.c.
  c.rope = rope_style::interleaved;
  c.dim = required(f, a + "embedding_length", 1, max_dim);
  c.hidden_dim = required(f, a + "feed_forward_length", 1, max_dim);
  c.n_layers = required(f, a + "block_count", 1, max_layers);
  c.n_heads = required(f, a + "attention.head_count", 1, max_dim);
  c.n_kv_heads = int(f.integer(a + "attention.head_count_kv", 1, c.n_heads).value_or(c.n_heads));
  if (c.n_heads % c.n_kv_heads != 0)
    throw error(f.field(a + "attention.head_count_kv"), std::to_string(c.n_kv_heads) +
                                                            " does not divide the head count " +
                                                            std::to_string(c.n_heads));
  if (const auto kl = f.integer(a + "attention.key_length", 1, max_dim)) {
    c.head_dim = int(*kl);
  } else {
    if (c.dim % c.n_heads != 0)
      throw error(f.field(a + "attention.head_count"),
                  std::to_string(c.n_heads) + " does not divide the embedding length " +
                      std::to_string(c.dim));
    c.head_dim = c.dim / c.n_heads;
  }
  if (const auto vl = f.integer(a + "attention.value_length", 1, max_dim); vl && *vl != c.head_dim)
    throw error(f.field(a + "attention.value_length"), "must equal the key length");
  if (c.head_dim % 2 != 0)
    throw error(f.field(a + "attention.key_length"), "head size must be even (RoPE pairs)");
  if (std::int64_t(c.n_heads) * c.head_dim > max_dim)
    throw error(f.field(a + "attention.head_count"), "head count * head size is absurdly large");
  if (const auto rd = f.integer(a + "rope.dimension_count", 0, max_dim); rd && *rd != c.head_dim)
    throw error(f.field(a + "rope.dimension_count"), std::to_string(*rd) + " != head size " +
                                                         std::to_string(c.head_dim) +
                                                         " (partial RoPE is not supported)");
  c.rope_theta = positive(f, a + "rope.freq_base", 10000.0f);
  c.rms_eps = positive(f, a + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (const auto st = f.string(a + "rope.scaling.type"); st && *st != "none")
    throw error(f.field(a + "rope.scaling.type"), "RoPE scaling '" + *st + "' is not supported");
  if (const auto fac = f.real(a + "rope.scale_linear"); fac && *fac != 1.0)
    throw error(f.field(a + "rope.scale_linear"), "linear RoPE scaling is not supported");
  c.max_seq_len = required(f, a + "context_length", 1, max_positions);

  const gguf::Value* tokens = f.array("tokenizer.ggml.tokens", false, false, true);
  if (const auto vs = f.integer(a + "vocab_size", 1, max_vocab)) {
    c.vocab_size = int(*vs);
  } else if (tokens) {
    c.vocab_size = int(tokens->strings.size());
  } else if (const gguf::TensorInfo* t = f.tensor("token_embd.weight"); t && t->ne.size() == 2) {
    c.vocab_size = int(t->ne[1]);
  } else {
    throw error(f.field(a + "vocab_size"), "missing (and no tokenizer.ggml.tokens)");
  }
  if (c.vocab_size < 1 || c.vocab_size > max_vocab)
    throw error(f.field(a + "vocab_size"), "out of range");
  if (tokens && std::int64_t(tokens->strings.size()) != c.vocab_size)
    throw error(f.field("tokenizer.ggml.tokens"), "has " + std::to_string(tokens->strings.size()) +
                                                      " tokens for vocabulary size " +
                                                      std::to_string(c.vocab_size));
  c.bos_id = int(f.integer("tokenizer.ggml.bos_token_id", 0, c.vocab_size - 1).value_or(1));
  c.eos_ids = {int(f.integer("tokenizer.ggml.eos_token_id", 0, c.vocab_size - 1).value_or(2))};
  if (const auto eot = f.integer("tokenizer.ggml.eot_token_id", 0, c.vocab_size - 1))
    c.add_eos(int(*eot));
  if (const auto eom = f.integer("tokenizer.ggml.eom_token_id", 0, c.vocab_size - 1))
    c.add_eos(int(*eom));
  // Llama 3's end-of-generation tokens, by their text, as llama.cpp finds them: a base
  // model's GGUF names only <|end_of_text|>, an Instruct one only <|eot_id|>, yet a chat reply
  // ends with <|eot_id|> and a tool call with <|eom_id|>. Control tokens only.
  if (tokens) {
    const gguf::Value* types = f.find("tokenizer.ggml.token_type");
    for (std::size_t i = 0; i < tokens->strings.size(); ++i) {
      const std::string& t = tokens->strings[i];
      if (t.size() < 10 || t[0] != '<' || t[1] != '|') continue;
      if (t != "<|end_of_text|>" && t != "<|eot_id|>" && t != "<|eom_id|>") continue;
      if (types && types->is_array() && i < types->ints.size() && types->ints[i] == 3)
        c.add_eos(int(i));
    }
  }
  c.tied_embeddings = f.tensor("output.weight") == nullptr;
  parse_early_exit(f, c);
  return c;
}

// Loads a llama-architecture GGUF into ModelWeights: norms through gguf::read_f32 ->
// gguf::dequantize, matrices kept in their stored type (gguf::read_weight).
inline ModelWeights load_gguf(const gguf::File& f) {
  const std::string& path = f.where();
  ModelWeights m;
  m.config = gguf_config(f);
  const ModelConfig& c = m.config;
  // Llama 3 RoPE scaling as llama.cpp's converter writes it: head_dim/2 F32 divisors of the
  // frequencies (rope_freqs.weight; llama.cpp divides each RoPE frequency by its factor).
  if (f.tensor("rope_freqs.weight")) {
    m.config.rope_freq_factors =
        gguf::read_f32(f, "rope_freqs.weight", {std::int64_t(c.head_dim / 2)});
    for (float x : m.config.rope_freq_factors)
      if (!(std::isfinite(x) && x > 0))
        throw error(path + ": tensor 'rope_freqs.weight'", "factors must be finite and > 0");
  }
  const std::int64_t d = c.dim, h = c.hidden_dim, v = c.vocab_size, q = c.q_dim(), kv = c.kv_dim();
  m.tok_embedding = gguf::read_weight(f, "token_embd.weight", {v, d});
  m.layers.resize(std::size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string pre = "blk." + std::to_string(l) + ".";
    LayerWeights& L = m.layers[std::size_t(l)];
    L.attn_norm = gguf::read_f32(f, pre + "attn_norm.weight", {d});
    L.wq = gguf::read_weight(f, pre + "attn_q.weight", {q, d});
    L.wk = gguf::read_weight(f, pre + "attn_k.weight", {kv, d});
    L.wv = gguf::read_weight(f, pre + "attn_v.weight", {kv, d});
    L.wo = gguf::read_weight(f, pre + "attn_output.weight", {d, q});
    L.ffn_norm = gguf::read_f32(f, pre + "ffn_norm.weight", {d});
    L.w_gate = gguf::read_weight(f, pre + "ffn_gate.weight", {h, d});
    L.w_down = gguf::read_weight(f, pre + "ffn_down.weight", {d, h});
    L.w_up = gguf::read_weight(f, pre + "ffn_up.weight", {h, d});
  }
  m.final_norm = gguf::read_f32(f, "output_norm.weight", {d});
  if (!c.tied_embeddings) m.lm_head = gguf::read_weight(f, "output.weight", {v, d});
  return m;
}

inline ModelWeights load_gguf(const std::string& path) {
  return load_gguf(gguf::File::open(path));
}

}  // namespace eexit
