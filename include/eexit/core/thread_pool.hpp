#pragma once
// A small fork-join pool for the CPU backend: parallel_for splits [0, n) into one
// contiguous range per thread. Each index is handled by exactly one thread and ranges
// depend only on n and the thread count, so results never depend on scheduling.
#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace eexit {

class ThreadPool {
 public:
  explicit ThreadPool(unsigned n_threads = 0) {
    if (n_threads == 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
    n_threads_ = n_threads;
    for (unsigned i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  unsigned size() const noexcept { return n_threads_; }

  // fn(begin, end) over [0, n), split into at most size() ranges of at least min_chunk.
  // Not reentrant: call it from one thread at a time (the engine thread).
  template <class Fn>
  void parallel_for(std::size_t n, Fn&& fn, std::size_t min_chunk = 1) {
    if (n == 0) return;
    const std::size_t parts = std::min<std::size_t>(
        n_threads_, std::max<std::size_t>(1, n / std::max<std::size_t>(1, min_chunk)));
    if (parts <= 1) {
      fn(std::size_t{0}, n);
      return;
    }
    std::function<void(std::size_t, std::size_t)> task = [&](std::size_t b, std::size_t e) {
      fn(b, e);
    };
    {
      std::lock_guard lk(mu_);
      task_ = &task;
      n_ = n;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    cv_.notify_all();
    run_part(0);
    std::unique_lock lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    task_ = nullptr;
  }

 private:
  void run_part(std::size_t part) {
    const std::size_t b = n_ * part / parts_, e = n_ * (part + 1) / parts_;
    if (b < e) (*task_)(b, e);
  }
  void work(unsigned index) {
    std::size_t seen = 0;
    for (;;) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return generation_ != seen; });
      seen = generation_;
      if (stop_) return;
      if (index >= parts_) continue;
      lk.unlock();
      run_part(index);
      lk.lock();
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  unsigned n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::function<void(std::size_t, std::size_t)>* task_ = nullptr;
  std::size_t n_ = 0, parts_ = 0, pending_ = 0, generation_ = 0;
  bool stop_ = false;
};

}  // namespace eexit
