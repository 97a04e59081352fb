#!/usr/bin/python3
"""Writes tests/fixtures/cpu_ops.json: PyTorch references for every CpuBackend op.

Regenerate (from the repository root):
    /usr/bin/python3 tools/make_ops_fixture.py [OUT_JSON]

Inputs are seeded random values rounded to 3 decimals and then to float32 (short in
JSON, exact in C++). References are computed in float64 from those float32 inputs and
stored rounded to float32 (shortest decimal that round-trips). Tests compare within
1e-5 relative (1e-6 absolute near zero): see tests/backend/cpu_ops_test.cpp.

RoPE: the backend op takes inv_freq as float32, so the reference rotates with the
float64 frequencies rounded to float32 (stored as "inv_freq"); the test separately checks
that eexit::detail::rope_inv_freq(config) gives those frequencies. Without that rounding,
angles at position p would differ by p * 6e-8 relative, far above the tolerance at p ~ 1000.
"""
import json
import math
import os
import sys

import numpy as np
import torch

torch.manual_seed(20240611)
F64 = torch.float64


def f32_list(t):
    # str(np.float32) is the shortest decimal that reads back as the same float32.
    return [float(str(np.float32(v))) for v in t.reshape(-1).tolist()]


def rand(*shape, scale=1.0):
    """float64 tensor holding float32 values with 3 decimals (uniform in [-scale, scale])."""
    t = (torch.rand(*shape, dtype=F64) * 2 - 1) * scale
    return torch.from_numpy(np.round(t.numpy(), 3).astype(np.float32).astype(np.float64))


# ---- matmul: y (M, N) = x (M, K) · Wᵀ (N, K) + b ------------------------------------------
def matmul_cases():
    cases = []
    for m, k, n, bias in [(1, 172, 7, True), (5, 172, 12, False), (37, 172, 5, True),
                          (5, 16, 9, False), (37, 20, 8, True), (1, 64, 4, False)]:
        x = rand(m, k)
        w = rand(n, k, scale=0.25)
        b = rand(n) if bias else None
        y = x @ w.T
        if b is not None:
            y = y + b
        c = {"rows": m, "in": k, "out": n, "x": f32_list(x), "w": f32_list(w), "y": f32_list(y)}
        if b is not None:
            c["bias"] = f32_list(b)
        cases.append(c)
    return cases


# ---- rmsnorm: y = x / sqrt(mean(x²) + eps) * w ----------------------------------------------
def rmsnorm_cases():
    cases = []
    for rows, dim, scale in [(3, 172, 2.0), (2, 64, 1e-2), (1, 7, 1.0)]:
        x = rand(rows, dim, scale=1.0) * scale  # scale 1e-2: eps matters
        x = x.to(torch.float32).to(F64)
        w = rand(dim, scale=1.5)
        eps = 1e-5
        eps64 = float(np.float32(eps))  # the backend receives eps as float
        y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps64) * w
        cases.append({"rows": rows, "dim": dim, "eps": eps, "x": f32_list(x), "w": f32_list(w),
                      "y": f32_list(y)})
    return cases


# ---- RoPE -----------------------------------------------------------------------------
def inv_freq_of(theta, head_dim, scaling):
    """transformers' default inv_freq, then _compute_llama3_parameters when scaling."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=F64) / head_dim))
    if scaling is None:
        return inv
    factor, low, high, old = (scaling["factor"], scaling["low_freq_factor"],
                              scaling["high_freq_factor"], scaling["original_max_position"])
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, inv_l)


def rope_interleaved(x, pos, inv):
    # llama2.c / Meta: pairs (2i, 2i+1) as complex numbers times e^{i·pos·inv}.
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    ang = pos[:, None] * inv[None, :]  # (rows, half)
    rot = torch.polar(torch.ones_like(ang), ang)[:, None, :]  # (rows, 1, half)
    return torch.view_as_real(xc * rot).reshape(x.shape)


def rope_half(x, pos, inv):
    # HF: q * cos + rotate_half(q) * sin, with cos/sin repeated over both halves.
    ang = pos[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], -1)[:, None, :]  # (rows, 1, head_dim)
    h = x.shape[-1] // 2
    rot_half = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * emb.cos() + rot_half * emb.sin()


def rope_cases():
    cases = []
    specs = [
        ("interleaved", 3, 8, [0, 1, 5, 17, 100, 1000], None),
        ("half", 3, 8, [0, 1, 5, 17, 100, 1000], None),
        # head_dim 16 at theta 1e4 puts frequencies in all three Llama 3 bands
        # (wavelength < 2048 kept, 6283 interpolated, 19869 divided by factor).
        ("half", 2, 16, [0, 3, 1000, 5000], {"factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0,
                                             "original_max_position": 8192}),
        ("interleaved", 2, 16, [2, 777], {"factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0,
                                          "original_max_position": 8192}),
    ]
    for style, n_heads, hd, positions, scaling in specs:
        theta = 10000.0
        inv32 = inv_freq_of(theta, hd, scaling).to(torch.float32).to(F64)  # exact float32 values
        x = rand(len(positions), n_heads, hd)
        pos = torch.tensor(positions, dtype=F64)
        y = (rope_interleaved if style == "interleaved" else rope_half)(x, pos, inv32)
        c = {"style": style, "n_heads": n_heads, "head_dim": hd, "rope_theta": theta,
             "positions": positions, "inv_freq": f32_list(inv32), "x": f32_list(x),
             "y": f32_list(y)}
        if scaling is not None:
            c["rope_scaling"] = scaling
        cases.append(c)
    return cases


# ---- causal GQA attention over per-sequence K/V -------------------------------------------
# head_dim 8 takes the backend's any-head_dim path; the second case (head_dim 64, GQA 3:1,
# contexts over several cache blocks) its register path: heads 4 at a time, a full chunk
# and a chunk of 2, heads of one chunk reading different kv heads.
def attention_case(n_heads=4, n_kv=2, hd=8, seq_lens=(11, 6),
                   rows=((0, 10), (0, 3), (1, 5), (1, 0), (0, 0), (0, 7))):  # (sequence, position)
    kv = [(rand(n, n_kv, hd), rand(n, n_kv, hd)) for n in seq_lens]
    q = rand(len(rows), n_heads, hd)
    out = torch.zeros_like(q)
    group = n_heads // n_kv
    for r, (s, p) in enumerate(rows):
        k, v = kv[s]
        k = k[: p + 1].repeat_interleave(group, dim=1)  # (p+1, n_heads, hd)
        v = v[: p + 1].repeat_interleave(group, dim=1)
        att = torch.einsum("hd,thd->ht", q[r], k) / math.sqrt(hd)
        out[r] = torch.einsum("ht,thd->hd", torch.softmax(att, -1), v)
    return {"n_heads": n_heads, "n_kv_heads": n_kv, "head_dim": hd,
            "seqs": [{"k": f32_list(k), "v": f32_list(v), "len": n}
                     for (k, v), n in zip(kv, seq_lens)],
            "rows": [{"seq": s, "pos": p} for s, p in rows],
            "q": f32_list(q), "out": f32_list(out)}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "fixtures",
                                                              "cpu_ops.json")
    gate = torch.cat([rand(60, scale=6.0), torch.tensor([-30.0, -20.0, 0.0, 20.0], dtype=F64)])
    up = rand(gate.numel(), scale=2.0)
    a, b = rand(50, scale=3.0), rand(50, scale=3.0)
    table = rand(10, 6)
    tokens = [3, 0, 9, 3, 7]
    fixture = {
        "generator": "tools/make_ops_fixture.py (float64 PyTorch, stored as float32)",
        "matmul": matmul_cases(),
        "rmsnorm": rmsnorm_cases(),
        "rope": rope_cases(),
        "attention": attention_case(),
        "swiglu": {"gate": f32_list(gate), "up": f32_list(up),
                   "out": f32_list(torch.nn.functional.silu(gate) * up)},
        "add": {"x": f32_list(a), "y": f32_list(b), "out": f32_list(a + b)},
        "embed": {"dim": 6, "table": f32_list(table), "tokens": tokens,
                  "out": f32_list(table[tokens])},
    }
    # Drawn last, so that the cases above keep their values.
    fixture["attention_hd64"] = attention_case(6, 2, 64, (37, 21),
                                               ((0, 36), (1, 20), (0, 16), (1, 3), (0, 0)))
    with open(out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
