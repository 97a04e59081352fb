// The CPU matmul with weights kept in bf16 / f16 / Q8_0 / Q4_0: against a float64 reference
// over the same rounded (dequantized) weights, bitwise equal to the fp32 kernel over those
// weights widened (the typed kernels differ from it only in how W is loaded: the
// dequantized values are exact in fp32), and batch invariant.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/model/weights.hpp"
#include "matmul_test_helpers.hpp"

using eexit::test::bitwise_equal;
using eexit::test::random;

TEST_CASE(
    "bf16 / f16 / Q8_0 / Q4_0 weight matmul: float64 reference, fp32-kernel bits, batch "
    "invariance") {
  MESSAGE("kernel: " << std::string(eexit::detail::kernel_isa()));
  std::mt19937 rng(99);
  // Q8_0 / Q4_0 and bf16 with fp32 activations: the paths that are exact on the
  // dequantized weights (the int8- and bf16-activation defaults have cpu_quant_matmul_test
  // and cpu_bf16_matmul_test).
  eexit::CpuBackend one(1, eexit::matmul_impl::invariant, eexit::quant_act::f32,
                        eexit::bf16_act::f32),
      two(2, eexit::matmul_impl::invariant, eexit::quant_act::f32, eexit::bf16_act::f32);
  constexpr std::size_t M = 7;
  // K not a multiple of 16 (tails), N not a multiple of 8 (partial tiles), and a shape
  // large enough to split over two threads.
  // Quantized rows are whole 32-weight blocks.
  const std::vector<std::pair<std::size_t, std::size_t>>
      shapes = {{13, 172}, {64, 64}, {3, 9}, {260, 1000}},
      qshapes = {{13, 96}, {64, 64}, {3, 32}, {260, 1024}};
  for (const eexit::dtype t :
       {eexit::dtype::bf16, eexit::dtype::f16, eexit::dtype::q8_0, eexit::dtype::q4_0}) {
    CAPTURE(eexit::dtype_name(t));
    double worst = 0.0;
    for (const auto& [N, K] : eexit::is_quantized(t) ? qshapes : shapes) {
      CAPTURE(N);
      CAPTURE(K);
      const auto x = random(rng, M * K), bias = random(rng, N);
      const eexit::Weight w = eexit::Weight(random(rng, N * K)).converted(t);
      REQUIRE(w.type() == t);
      REQUIRE(w.byte_size() == eexit::row_bytes(t, N * K));
      const std::vector<float> wr = w.to_f32();  // the rounded weights, exactly
      const eexit::WeightView wv(t, w.bytes());
      std::vector<float> y(M * N), yf(M * N);
      one.matmul(x.data(), M, K, wv, N, y.data(), bias.data());
      one.matmul(x.data(), M, K, wr.data(), N, yf.data(), bias.data());
      CHECK(bitwise_equal(y.data(), yf.data(), M * N));
      // float64 reference: error relative to sum |x*w| (the scale of rounding in a dot).
      for (std::size_t m = 0; m < M; ++m)
        for (std::size_t n = 0; n < N; ++n) {
          double ref = bias[n], mag = std::fabs(double(bias[n]));
          for (std::size_t k = 0; k < K; ++k) {
            ref += double(x[m * K + k]) * double(wr[n * K + k]);
            mag += std::fabs(double(x[m * K + k]) * double(wr[n * K + k]));
          }
          worst = std::max(worst, std::fabs(double(y[m * N + n]) - ref) / mag);
        }
      // Batch invariance: each row alone, and on two threads, gives the same bits.
      std::size_t bad = 0;
      for (std::size_t m = 0; m < M; ++m) {
        std::vector<float> y1(N);
        two.matmul(x.data() + m * K, 1, K, wv, N, y1.data(), bias.data());
        bad += !bitwise_equal(y1.data(), y.data() + m * N, N);
      }
      CHECK(bad == 0);
      std::vector<float> y2(M * N);
      two.matmul(x.data(), M, K, wv, N, y2.data(), bias.data());
      CHECK(bitwise_equal(y2.data(), y.data(), M * N));
    }
    MESSAGE(eexit::dtype_name(t) << " matmul vs float64: max |y - ref| / sum|x*w| " << worst);
    CHECK(worst <= 1e-6);
  }
}

TEST_CASE("embed widens bf16 / f16 rows and dequantizes Q8_0 / Q4_0 rows exactly") {
  std::mt19937 rng(5);
  eexit::CpuBackend be(1);
  constexpr std::size_t V = 10, D = 64;
  for (const eexit::dtype t :
       {eexit::dtype::bf16, eexit::dtype::f16, eexit::dtype::q8_0, eexit::dtype::q4_0}) {
    const eexit::Weight w = eexit::Weight(random(rng, V * D)).converted(t);
    const std::vector<float> wr = w.to_f32();
    const std::int32_t ids[] = {3, 0, 9, 3};
    std::vector<float> out(4 * D);
    be.embed(ids, 4, eexit::WeightView(t, w.bytes()), D, out.data());
    for (std::size_t r = 0; r < 4; ++r)
      CHECK(bitwise_equal(out.data() + r * D, wr.data() + std::size_t(ids[r]) * D, D));
  }
}

TEST_CASE("Q8_0 / Q4_0 quantization: llama.cpp's block layout and error bounds") {
  // One block by hand: Q4_0 puts element j in the low nibble of byte j, element j + 16 in
  // the high nibble, each as q + 8, with d = (value of largest magnitude) / -8.
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f;  // largest magnitude: d = 1, q = x + 8
  x[1] = 3.0f;
  x[16] = 7.0f;
  x[17] = -1.0f;
  const eexit::Weight q4 = eexit::Weight(x).converted(eexit::dtype::q4_0);
  const auto* b = static_cast<const unsigned char*>(q4.bytes());
  CHECK(eexit::f16_to_f32(std::uint16_t(b[0] | b[1] << 8)) == 1.0f);
  CHECK(b[2] == (0 | 15 << 4));  // x[0] = -8 -> 0, x[16] = 7 -> 15
  CHECK(b[3] == (11 | 7 << 4));  // x[1] = 3 -> 11, x[17] = -1 -> 7
  CHECK(b[4] == (8 | 8 << 4));   // zeros -> 8
  CHECK(q4.to_f32() == x);
  // Q8_0: d = max|x| / 127, q = round(x / d).
  const eexit::Weight q8 = eexit::Weight(x).converted(eexit::dtype::q8_0);
  const auto* c = static_cast<const unsigned char*>(q8.bytes());
  CHECK(eexit::f16_to_f32(std::uint16_t(c[0] | c[1] << 8)) ==
        eexit::f16_to_f32(eexit::f32_to_f16(8.0f / 127.0f)));
  CHECK(std::int8_t(c[2]) == -127);
  CHECK(std::int8_t(c[18]) == 111);  // round(7 * 127 / 8) = round(111.1)
  // Error bounds on random data, in units of the block's step d: rounding gives 1/2, the
  // fp16 rounding of d (relative 2^-11) up to 127 (Q8_0) or 8 (Q4_0) times that, and Q4_0
  // clamps q + 8 at 15, so values near +8d (opposite the largest's sign) err by up to 1.
  std::mt19937 rng(3);
  const auto v = random(rng, 32 * 64);
  for (const eexit::dtype t : {eexit::dtype::q8_0, eexit::dtype::q4_0}) {
    const auto w = eexit::Weight(v).converted(t).to_f32();
    double worst = 0.0;
    for (std::size_t k = 0; k < 64; ++k) {
      float amax = 0.0f;
      for (std::size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[k * 32 + j]));
      const double step = t == eexit::dtype::q8_0 ? amax / 127.0 : amax / 8.0;
      for (std::size_t j = 0; j < 32; ++j)
        worst = std::max(worst, std::fabs(double(w[k * 32 + j]) - v[k * 32 + j]) / step);
    }
    MESSAGE(eexit::dtype_name(t) << ": max |w - x| / d over blocks " << worst);
    CHECK(worst <= (t == eexit::dtype::q8_0 ? 0.5 + 127.0 / 2048 : 1.0 + 8.0 / 2048));
  }
}

namespace {

// The per-element sequence that defines the kernel (cpu_kernels.hpp, xwt_tile), written
// out scalar: 16 lanes, lane l summing x[k] * w[k] for k = l mod 16 in k order with a fused
// multiply-add; the lanes reduced by pairwise halves; + the tail (k % 16 products, one
// fma chain); + bias. w: the weights widened to fp32 (exact for bf16 / f16).
float defined_dot(const float* x, const float* w, std::size_t K, float bias) {
  float lane[16] = {};
  const std::size_t K16 = K / 16 * 16;
  for (std::size_t k = 0; k < K16; k += 16)
    for (std::size_t l = 0; l < 16; ++l) lane[l] = std::fma(x[k + l], w[k + l], lane[l]);
  for (std::size_t half = 8; half >= 1; half /= 2)
    for (std::size_t l = 0; l < half; ++l) lane[l] += lane[l + half];
  float tail = 0.0f;
  for (std::size_t k = K16; k < K; ++k) tail = std::fma(x[k], w[k], tail);
  return lane[0] + tail + bias;
}

}  // namespace

TEST_CASE(
    "f32 / bf16 / f16 matmul: every row count, tile and thread split gives the defined bits") {
  std::mt19937 rng(2024);
  // bf16 weights with fp32 activations: the sequence defined here (bf16_act::bf16, the
  // default, is cpu_bf16.hpp's own, tested in cpu_bf16_matmul_test).
  using eexit::bf16_act, eexit::matmul_impl, eexit::quant_act;
  eexit::CpuBackend one(1, matmul_impl::invariant, quant_act::int8, bf16_act::f32),
      two(2, matmul_impl::invariant, quant_act::int8, bf16_act::f32);
  // Row counts through every kernel path: 1 and 2 (decode tiles), 3..48 (W streamed once,
  // 6-row tiles and their remainders), 49+ (prefill: W blocked in L2). (N, K): N not a
  // multiple of 4 or 8 (single-output tiles), K with a tail; 300 x 1000 is more than one
  // prefill block of W for every weight type (128 f32 / 256 16-bit rows at K = 1000);
  // K = 2100 runs in k chunks (1024, 1024, 48 and a tail of 4) in blocks of 56 or 64.
  const std::size_t row_counts[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,   10, 11,
                                    12, 13, 14, 15, 16, 17, 48, 49, 128, 130};
  constexpr std::size_t max_rows = 130;
  const std::pair<std::size_t, std::size_t> shapes[] = {{37, 200}, {300, 1000}, {70, 2100}};
  for (const eexit::dtype t : {eexit::dtype::f32, eexit::dtype::bf16, eexit::dtype::f16}) {
    CAPTURE(eexit::dtype_name(t));
    for (const auto& [N, K] : shapes) {
      CAPTURE(N);
      CAPTURE(K);
      const auto x = random(rng, max_rows * K), bias = random(rng, N);
      const eexit::Weight w = eexit::Weight(random(rng, N * K)).converted(t);
      const std::vector<float> wr = w.to_f32();  // the rounded weights, exactly
      const eexit::WeightView wv(t, w.bytes());
      std::vector<float> ref(max_rows * N);  // (max_rows, N)
      for (std::size_t m = 0; m < max_rows; ++m)
        for (std::size_t n = 0; n < N; ++n)
          ref[m * N + n] = defined_dot(&x[m * K], &wr[n * K], K, bias[n]);
      for (const std::size_t M : row_counts) {
        CAPTURE(M);
        std::vector<float> y1(M * N), y2(M * N);
        one.matmul(x.data(), M, K, wv, N, y1.data(), bias.data());
        two.matmul(x.data(), M, K, wv, N, y2.data(), bias.data());
        CHECK(bitwise_equal(y1.data(), ref.data(), M * N));
        CHECK(bitwise_equal(y2.data(), ref.data(), M * N));
      }
    }
  }
}
