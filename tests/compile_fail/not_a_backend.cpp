// Must NOT compile: a "backend" with memory but none of the ops (no matmul, no
// exit_scores, no host_view, ...) is rejected by the backend concept when a cache over it
// is used as the engine's Cache parameter.
#include "eexit/eexit.hpp"

struct MemoryOnly {
  template <class T>
  using buffer = std::vector<T>;
  template <class T>
  buffer<T> allocate(std::size_t n) {
    return buffer<T>(n);
  }
  template <class T>
  void upload(buffer<T>& dst, std::span<const T> src) {
    dst.assign(src.begin(), src.end());
  }
  template <class T>
  void download(std::span<T>, const buffer<T>&) {}
  void synchronize() {}
  template <class T>
  static T* data(buffer<T>& b) {
    return b.data();
  }
  // matmul, rmsnorm, rope, ..., exit_scores, host_view missing
};

eexit::Engine<eexit::FullDepth, eexit::PagedCache<MemoryOnly, 16>>* engine = nullptr;
int main() {
  return engine != nullptr;
}
