#pragma once
// A small fork-join pool for the CPU backend: parallel_for splits [0, n) into contiguous
// chunks that the caller and the workers claim as they come. Each index is handled by
// exactly one thread; callers compute every index the same way whatever thread runs it
// (the CPU backend's ops are written so), so results never depend on scheduling.
//
// Why it looks like this: a decode step is ~10 ops per layer, each a few microseconds on
// small models. Waking a sleeping thread through a condition variable costs tens of
// microseconds, more than such an op, so (1) each op is split into no more parts than
// its work pays for (parallel_for_work: small ops run on the caller alone), and (2) a
// worker that has finished a part spins on the generation counter for a short while
// before it sleeps, so that the next op of the same step finds it awake. The spin is
// bounded (spin_ns) and yields, so that an idle engine, or a machine shared with other
// work, does not lose a core to it; and (3) chunks are claimed dynamically, so a worker the
// OS has descheduled delays an op by one chunk at most, not by its whole share.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace eexit {

class ThreadPool {
 public:
  // Work (in multiply-adds or element updates) below which a part is not worth a thread:
  // ~10 microseconds of vector arithmetic. A fork-join with the workers awake costs ~1-2
  // microseconds, but on a loaded machine a worker is often descheduled and the caller
  // waits for it; a part must be large enough to absorb that. (On the embedded dim-192
  // model this keeps batch-1 decode on the caller, where it is fastest.)
  static constexpr std::size_t min_work_per_part = 128 * 1024;
  // How long a worker keeps polling for the next op before it sleeps.
  static constexpr std::int64_t spin_ns = 200'000;

  explicit ThreadPool(unsigned n_threads = 0) {
    if (n_threads == 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
    n_threads_ = std::min(n_threads, 64u);  // chunk counts are 8 bits of claim_
    for (unsigned i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { work(); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lk(mu_);
      stop_.store(true, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  unsigned size() const noexcept { return n_threads_; }

  // How many parts n items of `work_per_item` each are worth (1 .. size()).
  std::size_t parts_for(std::size_t n, std::size_t work_per_item) const noexcept {
    const std::size_t total = n * std::max<std::size_t>(1, work_per_item);
    return std::clamp<std::size_t>(total / min_work_per_part, 1,
                                   std::min<std::size_t>(n_threads_, n));
  }

  // fn(begin, end) over [0, n), each item costing about work_per_item multiply-adds: as
  // many parts as the work pays for (see min_work_per_part), at most size().
  template <class Fn>
  void parallel_for_work(std::size_t n, std::size_t work_per_item, Fn&& fn) {
    if (n == 0) return;
    run(n, parts_for(n, work_per_item), fn);
  }

  // fn(begin, end) over [0, n), split into at most size() ranges of at least min_chunk.
  // Not reentrant: call it from one thread at a time (the engine thread).
  template <class Fn>
  void parallel_for(std::size_t n, Fn&& fn, std::size_t min_chunk = 1) {
    if (n == 0) return;
    run(n,
        std::min<std::size_t>(n_threads_,
                              std::max<std::size_t>(1, n / std::max<std::size_t>(1, min_chunk))),
        fn);
  }

 private:
  template <class Fn>
  void run(std::size_t n, std::size_t parts, Fn& fn) {
    if (parts <= 1) {
      fn(std::size_t{0}, n);
      return;
    }
    // More chunks than threads, claimed dynamically: a worker that the OS has descheduled
    // (the machine may be shared) holds up at most the chunk it has claimed, and the
    // caller takes the rest. Which thread runs a chunk never changes its results.
    const std::size_t chunks = std::min<std::size_t>({n, parts * 4, 255});
    // Type-erased without std::function: no allocation per op.
    ctx_ = &fn;
    call_ = [](void* c, std::size_t b, std::size_t e) { (*static_cast<Fn*>(c))(b, e); };
    n_ = n;
    done_.store(0, std::memory_order_relaxed);
    const std::uint64_t op = (claim_.load(std::memory_order_relaxed) >> 40) + 1;
    claim_.store((op & 0xffffff) << 40 | std::uint64_t(chunks) << 32, std::memory_order_release);
    {
      // The lock orders this publication with a worker that is about to sleep.
      std::lock_guard lk(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleeping_.load(std::memory_order_acquire) > 0) cv_.notify_all();
    claim_chunks();
    // Wait only for chunks that workers claimed and are still running.
    for (int i = 0; done_.load(std::memory_order_acquire) != chunks; ++i)
      if (i & 15)
        pause();
      else
        std::this_thread::yield();
  }

  // Runs chunks of the current op until none is left. claim_ = (op << 40) | (chunks << 32)
  // | next chunk: a successful claim proves the op is still running (it cannot finish
  // before this chunk is done), so ctx_, call_ and n_ are that op's.
  void claim_chunks() {
    std::uint64_t w = claim_.load(std::memory_order_acquire);
    for (;;) {
      const std::size_t chunks = (w >> 32) & 0xff, c = w & 0xffffffff;
      if (c >= chunks) return;
      if (!claim_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
        continue;
      const std::size_t b = n_ * c / chunks, e = n_ * (c + 1) / chunks;
      if (b < e) call_(ctx_, b, e);
      done_.fetch_add(1, std::memory_order_release);
      w = claim_.load(std::memory_order_acquire);
    }
  }

  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      // Poll for the next op for up to spin_ns, then sleep until one is published.
      std::uint64_t g = generation_.load(std::memory_order_acquire);
      if (g == seen) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; g == seen; ++i) {
          // Yield rather than only pause: on a machine with more runnable threads than
          // cores, a spinning worker must not hold the core its caller needs.
          if (i & 15)
            pause();
          else
            std::this_thread::yield();
          g = generation_.load(std::memory_order_acquire);
          if ((i & 255) == 255 &&
              std::chrono::steady_clock::now() - t0 > std::chrono::nanoseconds(spin_ns))
            break;
        }
      }
      if (g == seen) {
        std::unique_lock lk(mu_);
        sleeping_.fetch_add(1, std::memory_order_acq_rel);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        sleeping_.fetch_sub(1, std::memory_order_acq_rel);
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop_.load(std::memory_order_relaxed)) return;
      claim_chunks();
    }
  }

  unsigned n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  // Written by the caller before claim_ is published (release), read by a thread after a
  // successful claim of one of the op's chunks (acquire); stable until done_ counts it.
  void* ctx_ = nullptr;
  void (*call_)(void*, std::size_t, std::size_t) = nullptr;
  std::size_t n_ = 0;
  std::atomic<std::uint64_t> claim_{0};       // (op << 40) | (chunks << 32) | next chunk
  std::atomic<std::size_t> done_{0};          // chunks of the current op finished
  std::atomic<std::uint64_t> generation_{0};  // bumped per op: wakes the workers
  std::atomic<int> sleeping_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace eexit
