#!/usr/bin/python3
"""Minimal GGUF v3 reader/writer (numpy only) for eexit's tests: an implementation of the
container and of llama.cpp's published Q8_0 / Q4_0 reference quantizers that shares no
code with the C++ reader it checks.

  requantize IN.gguf OUT.gguf --type q8_0|q4_0|f16|bf16 [--expected EXP.gguf]
             [--exit-layers 2 --thresholds 0.5 --measure max-prob]
      Rewrites IN's 2-D weights as --type (rows whose length is not a multiple of 32 stay
      F16, as llama.cpp falls back), metadata copied. --expected writes the same model with
      every tensor as F32 holding what numpy dequantizes from OUT's blocks.
  tiny OUT.gguf [--type q8_0|q4_0|f16|bf16|f32] [--vocab llama|gpt2] [--seed N]
      A random tiny llama (dim 32, 2 layers, GQA 4/2, MLP 64) with a small vocabulary of
      that kind: the fuzzer's seed corpus (tests/fuzz/seeds/gguf).
  q4k | q5k | q6k OUT.gguf EXPECTED.gguf [--seed N]
      A (3, 512) tensor of random Q4_K / Q5_K / Q6_K super-blocks (no quantizer: random
      scales, mins and bits; the first blocks' scales are the f16 edge cases: zeros of both
      signs, subnormals) and its numpy dequantization per ggml's dequantize_row_q*_K, as F32.
  kmix OUT.gguf [EXPECTED.gguf] [--dim 256 --hidden 256 --layers 2 --heads 2 --kv-heads 1
       --vocab 32 --context 64] [--seed N]   (the 110M shape: --dim 768 --hidden 2048
       --layers 12 --heads 12 --kv-heads 12 --vocab 32000 --context 2048)
      A random tiny tied llama in llama.cpp's Q4_K_M mix (Q4_K, Q5_K, Q6_K; Q5_0 / Q5_1 /
      Q8_0 / F16 where a row is not whole super-blocks, as llama.cpp falls back), and the same
      model all F32 as numpy dequantizes it. --dim 256 --hidden 32 --layers 1 is the fuzz
      seed (under 64 KB).
  random OUT.gguf --vocab-from VOCAB.gguf [--shape 110m|1b] [--dim D --layers L --heads H
         --kv-heads K --hidden F] [--seed N]
      A random Llama of a benchmark shape, F32, in the layout llama.cpp's converter writes
      (tensor names, ne order, Q/K rows in GGUF's interleaved-pair RoPE order: the weights
      are drawn in that order, so no permutation is applied), with the tokenizer.ggml.*
      metadata of VOCAB.gguf (e.g. ggml-vocab-llama-spm.gguf) so llama.cpp loads it. Scales
      keep the greedy tokens away from ties (see random_model): one file both engines read.
  from-hf HF_DIR OUT.gguf [--type f32|bf16|f16]
      A LlamaForCausalLM checkpoint (config.json + safetensors, sharded or not) as GGUF, laid
      out as llama.cpp's convert_hf_to_gguf.py writes it: Q/K rows permuted back to
      interleaved-pair RoPE order, 2-D weights as --type (default: as stored), norms F32,
      no output.weight when tie_word_embeddings, and "llama3" rope_scaling as the tensor
      rope_freqs.weight (head_dim/2 F32 divisors of the frequencies; llama.cpp writes no
      rope.scaling.* key for it). config.json's early_exit block becomes
      eexit.early_exit.*; a tokenizer.json beside it adds its tokens and merges.
  vocab TOKENIZER.json OUT.gguf [--pre gpt-2|llama-bpe] [--bos ID --eos ID --eot ID]
      A vocab-only GGUF (tokenizer.ggml.model "gpt2") from a byte-level BPE tokenizer.json,
      the way llama.cpp's converter lays it out (tokens, token_type, merges, bos/eos/eot;
      bos and eos default to the first special token).

Block layouts (ggml-common.h): Q8_0 = {f16 d; int8 q[32]}, x = d*q; Q4_0 = {f16 d; u8 q[16]},
x[j] = d*((q[j] & 15) - 8), x[j+16] = d*((q[j] >> 4) - 8).
"""
import argparse
import json
import math
import mmap
import os
import struct
import sys

import numpy as np

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
_SCALAR = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
           T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}
G_F32, G_F16, G_Q4_0, G_Q8_0, G_BF16 = 0, 1, 2, 8, 30
G_Q5_0, G_Q5_1, G_Q4_K, G_Q5_K, G_Q6_K = 6, 7, 12, 13, 14
_GEOM = {G_F32: (1, 4), G_F16: (1, 2), G_BF16: (1, 2), G_Q8_0: (32, 34), G_Q4_0: (32, 18),
         G_Q5_0: (32, 22), G_Q5_1: (32, 24), G_Q4_K: (256, 144), G_Q5_K: (256, 176), G_Q6_K: (256, 210)}


class Reader:
    def __init__(self, path):
        # Mapped, and tensors are views into the map: a multi-GB file is not copied.
        with open(path, "rb") as f:
            self.b = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.p = 0
        assert self.b[:4] == b"GGUF", "not GGUF"
        self.p = 4
        self.version, n_t, n_kv = self._u("<I"), self._u("<Q"), self._u("<Q")
        self.kv = []  # (key, type, value, elem type for arrays)
        for _ in range(n_kv):
            key = self._str()
            t = self._u("<I")
            if t == T_ARR:
                et, n = self._u("<I"), self._u("<Q")
                self.kv.append((key, t, [self._val(et) for _ in range(n)], et))
            else:
                self.kv.append((key, t, self._val(t), None))
        self.align = dict((k, v) for k, _, v, _ in self.kv).get("general.alignment", 32)
        infos = []
        for _ in range(n_t):
            name = self._str()
            nd = self._u("<I")
            ne = [self._u("<Q") for _ in range(nd)]
            infos.append((name, ne, self._u("<I"), self._u("<Q")))
        data = (self.p + self.align - 1) // self.align * self.align
        self.tensors = []  # (name, ne, ggml type, raw bytes: a memoryview of the map)
        view = memoryview(self.b)
        for name, ne, t, off in infos:
            self.tensors.append((name, ne, t, view[data + off: data + off + n_bytes(t, ne)]))

    def _u(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def _str(self):
        n = self._u("<Q")
        s = self.b[self.p: self.p + n].decode("utf-8")
        self.p += n
        return s

    def _val(self, t):
        return self._str() if t == T_STR else self._u(_SCALAR[t])


class Writer:
    def __init__(self, align=32):
        self.kv, self.tensors, self.align = [], [], align

    def add(self, key, t, value, elem=None):
        self.kv.append((key, t, value, elem))

    def tensor(self, name, ne, t, raw):
        """raw: the bytes, or a callable that makes them when the file is written (then
        n_bytes(t, ne) of them), so that a multi-GB model is never held in memory whole."""
        self.tensors.append((name, list(ne), t, raw))

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _val(self, t, v):
        return self._str(v) if t == T_STR else struct.pack(_SCALAR[t], v)

    def write(self, path):
        out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv)))
        for key, t, v, et in self.kv:
            out += self._str(key) + struct.pack("<I", t)
            if t == T_ARR:
                out += struct.pack("<IQ", et, len(v))
                for x in v:
                    out += self._val(et, x)
            else:
                out += self._val(t, v)
        off = 0
        for name, ne, t, raw in self.tensors:
            out += self._str(name) + struct.pack("<I", len(ne))
            out += b"".join(struct.pack("<Q", d) for d in ne) + struct.pack("<IQ", t, off)
            size = n_bytes(t, ne) if callable(raw) else len(raw)
            off += (size + self.align - 1) // self.align * self.align
        out += bytes(-len(out) % self.align)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(bytes(out))
            for _, ne, t, raw in self.tensors:
                b = raw() if callable(raw) else raw
                assert len(b) == n_bytes(t, ne), "tensor bytes do not match its shape"
                f.write(b)
                f.write(bytes(-len(b) % self.align))


def n_bytes(t, ne):
    blck, size = _GEOM[t]
    return int(np.prod(ne)) // blck * size


def f16_bits(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def quantize_q8_0(x):
    """(n,) f32 -> (raw bytes, dequantized f32), llama.cpp's quantize_row_q8_0_ref."""
    b = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(b).max(axis=1)
    d = amax / np.float32(127)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.round(b * inv[:, None]).astype(np.int8)  # roundf: half away from zero, see below
    # numpy rounds half to even; roundf rounds half away from zero: fix the ties.
    v = b * inv[:, None]
    q = np.where(np.abs(v - np.trunc(v)) == 0.5, np.trunc(v) + np.sign(v), q).astype(np.int8)
    d16 = f16_bits(d)
    raw = bytearray()
    for i in range(b.shape[0]):
        raw += d16[i].tobytes() + q[i].tobytes()
    deq = d16.astype(np.float32)[:, None] * q.astype(np.float32)
    return bytes(raw), deq.reshape(-1)


def quantize_q4_0(x):
    """(n,) f32 -> (raw bytes, dequantized f32), llama.cpp's quantize_row_q4_0_ref."""
    b = x.reshape(-1, 32).astype(np.float32)
    idx = np.abs(b).argmax(axis=1)  # first index of the largest magnitude, sign kept
    mx = b[np.arange(b.shape[0]), idx]
    d = (mx / np.float32(-8)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    # (int8_t)(x*id + 8.5f) truncates toward zero, then MIN(15, .)
    q = np.minimum(15, np.trunc(b * inv[:, None] + np.float32(8.5))).astype(np.uint8)
    d16 = f16_bits(d)
    raw = bytearray()
    for i in range(b.shape[0]):
        packed = (q[i, :16] | (q[i, 16:] << 4)).astype(np.uint8)
        raw += d16[i].tobytes() + packed.tobytes()
    deq = d16.astype(np.float32)[:, None] * (q.astype(np.float32) - 8)
    return bytes(raw), deq.reshape(-1)


def to_f32(t, raw):
    if t == G_F32:
        return np.frombuffer(raw, dtype=np.float32)
    if t == G_F16:
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32)
    if t == G_BF16:  # the high half of an f32: widening is exact
        return (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    raise ValueError("to_f32: only F32/F16/BF16 inputs")


def requantize(a):
    r = Reader(a.input)
    w, e = Writer(r.align), Writer(r.align)
    for kv in r.kv:
        if not kv[0].startswith("eexit.early_exit."):
            w.add(*kv)
            e.add(*kv)
    if a.exit_layers:
        for x in (w, e):
            x.add("eexit.early_exit.exit_layers", T_ARR, [int(v) for v in a.exit_layers.split(",")], T_I32)
            if a.thresholds:
                x.add("eexit.early_exit.thresholds", T_ARR, [float(v) for v in a.thresholds.split(",")], T_F32)
            if a.measure:
                x.add("eexit.early_exit.measure", T_STR, a.measure)
    for name, ne, t, raw in r.tensors:
        x = to_f32(t, raw)
        kind = a.type if len(ne) == 2 else "f32"
        if kind in ("q8_0", "q4_0") and ne[0] % 32 != 0:
            kind = "f16"
        if kind == "q8_0":
            raw2, deq = quantize_q8_0(x)
            g = G_Q8_0
        elif kind == "q4_0":
            raw2, deq = quantize_q4_0(x)
            g = G_Q4_0
        elif kind == "f16":
            h = x.astype(np.float16)
            raw2, deq, g = h.tobytes(), h.astype(np.float32), G_F16
        elif kind == "bf16":
            u = x.view(np.uint32).astype(np.uint64)
            u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
            raw2, g = u.tobytes(), G_BF16
            deq = (u.astype(np.uint32) << 16).view(np.float32)
        else:
            raw2, deq, g = x.astype(np.float32).tobytes(), x.astype(np.float32), G_F32
        w.tensor(name, ne, g, raw2)
        e.tensor(name, ne, G_F32, deq.astype(np.float32).tobytes())
    w.write(a.output)
    if a.expected:
        e.write(a.expected)


def tiny(a):
    rng = np.random.default_rng(a.seed)
    pieces = ["\u2581a", "\u2581the", "he", "ll", "o", "\u2581w", "or", "ld", "\u2581he", "llo", "!"]
    w = Writer()
    w.add("general.architecture", T_STR, "llama")
    for k, v in (("context_length", 64), ("embedding_length", 32), ("feed_forward_length", 64),
                 ("block_count", 2), ("attention.head_count", 4), ("attention.head_count_kv", 2),
                 ("rope.dimension_count", 8)):
        w.add("llama." + k, T_U32, v)
    w.add("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5)
    w.add("llama.rope.freq_base", T_F32, 10000.0)
    w.add("eexit.early_exit.exit_layers", T_ARR, [0], T_I32)
    if a.vocab == "llama":
        tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)] + pieces
        types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
        w.add("tokenizer.ggml.model", T_STR, "llama")
        w.add("tokenizer.ggml.scores", T_ARR, [0.0] * 259 + [-float(i) for i in range(len(pieces))], T_F32)
    else:
        tokens = [bytes_to_unicode()[i] for i in range(256)] + ["he", "ll", "hell", "<|end|>"]
        types = [1] * (len(tokens) - 1) + [3]
        w.add("tokenizer.ggml.model", T_STR, "gpt2")
        w.add("tokenizer.ggml.merges", T_ARR, ["h e", "l l", "he ll"], T_STR)
        w.add("tokenizer.ggml.eos_token_id", T_U32, len(tokens) - 1)
    w.add("tokenizer.ggml.tokens", T_ARR, tokens, T_STR)
    w.add("tokenizer.ggml.token_type", T_ARR, types, T_I32)
    n_vocab = len(tokens)

    def add(name, ne, quantize=True):
        x = (rng.standard_normal(int(np.prod(ne))) * 0.1).astype(np.float32)
        kind = a.type if quantize and len(ne) == 2 else "f32"
        if kind == "q8_0":
            w.tensor(name, ne, G_Q8_0, quantize_q8_0(x)[0])
        elif kind == "q4_0":
            w.tensor(name, ne, G_Q4_0, quantize_q4_0(x)[0])
        elif kind == "f16":
            w.tensor(name, ne, G_F16, x.astype(np.float16).tobytes())
        elif kind == "bf16":
            w.tensor(name, ne, G_BF16, (x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
        else:
            w.tensor(name, ne, G_F32, x.tobytes())

    add("token_embd.weight", [32, n_vocab])
    for l in range(2):
        p = "blk.%d." % l
        add(p + "attn_norm.weight", [32])
        add(p + "attn_q.weight", [32, 32])
        add(p + "attn_k.weight", [32, 16])
        add(p + "attn_v.weight", [32, 16])
        add(p + "attn_output.weight", [32, 32])
        add(p + "ffn_norm.weight", [32])
        add(p + "ffn_gate.weight", [32, 64])
        add(p + "ffn_down.weight", [64, 32])
        add(p + "ffn_up.weight", [32, 64])
    add("output_norm.weight", [32])
    w.write(a.output)


def q4k_scale_min(j, q):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


# Random blocks of the types a llama.cpp Q4_K_M / Q5_K_M / Q6_K file holds (K-quants and their
# fallbacks for rows that are not whole 256-element super-blocks), each field drawn at random
# (no quantizer) and dequantized here element by element from ggml-common.h's layouts:
#   Q5_0 = {f16 d; u8 qh[4]; u8 qs[16]}: q = nibble | bit e of qh (as a u32) << 4, x = d*(q-16),
#          element e < 16 in qs[e]'s low nibble, e >= 16 in qs[e-16]'s high nibble
#   Q5_1 = {f16 d; f16 m; u8 qh[4]; u8 qs[16]}: the same q, x = d*q + m
#   Q4_K = {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks s of 32 with 6-bit scale
#          and min (q4k_scale_min), element e = 64k + 32h + l in qs[32k + l]'s nibble h,
#          x = d*scale_s*q - dmin*min_s
#   Q5_K = {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: Q4_K plus bit s of qh[l]
#          as the fifth bit
#   Q6_K = {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: element e = 128t + 32g + l has its
#          low 4 bits in ql[64t + 32(g&1) + l] (nibble g>>1), its top 2 in qh[32t + l] bits
#          2g..2g+1, scale scales[8t + 2g + l/16]; x = d*scale*(q-32)
# The products are evaluated in float32 in the order ggml writes them ((d*scale)*q - dmin*min).
_E = np.arange(256)
_QMAX = {G_Q8_0: 127, G_Q5_0: 16, G_Q5_1: 31, G_Q4_K: 63 * 15, G_Q5_K: 63 * 31, G_Q6_K: 127 * 32}


def _f16_scales(rng, n, amp, edge):
    """n f16 scales ~ amp * N(0, 1); with edge, the first ones are the edge cases a file may
    hold: zero, negative zero, the smallest subnormal, a negative subnormal."""
    d = (rng.standard_normal(n) * amp).astype(np.float16)
    if edge:
        special = np.array([0x0000, 0x8000, 0x0001, 0x83FF], dtype=np.uint16).view(np.float16)
        d[:min(n, 4)] = special[:min(n, 4)]
    return d


def _k_scale_min(sc):
    """(n, 12) packed 6-bit scales and mins of Q4_K / Q5_K -> two (n, 8) arrays."""
    pairs = [q4k_scale_min(j, sc.T) for j in range(8)]
    return (np.stack([p[0] for p in pairs], axis=1).astype(np.float32),
            np.stack([p[1] for p in pairs], axis=1).astype(np.float32))


def random_blocks(g, rng, n, amp=0.01, edge=False):
    """n random blocks of ggml type g -> (raw bytes, (n * block) float32 dequantized)."""
    u8 = lambda k: rng.integers(0, 256, (n, k), dtype=np.uint8)
    b = lambda x: np.ascontiguousarray(x).view(np.uint8).reshape(n, -1)
    d = _f16_scales(rng, n, amp / _QMAX[g], edge)
    d32 = d.astype(np.float32)[:, None]
    if g == G_Q8_0:
        q = u8(32)
        raw = [b(d), q]
        x = d32 * q.view(np.int8).astype(np.float32)
    elif g in (G_Q5_0, G_Q5_1):
        m = _f16_scales(rng, n, amp, edge)
        qh, qs = u8(4), u8(16)
        e = np.arange(32)
        nib = (qs[:, e % 16] >> (4 * (e // 16))) & 15
        bits = qh.astype(np.uint32) << np.array([0, 8, 16, 24], dtype=np.uint32)
        hi = ((bits[:, 0] | bits[:, 1] | bits[:, 2] | bits[:, 3])[:, None] >> e.astype(np.uint32)) & 1
        q = (nib.astype(np.int32) | (hi.astype(np.int32) << 4)).astype(np.float32)
        if g == G_Q5_0:
            raw, x = [b(d), qh, qs], d32 * (q - np.float32(16))
        else:
            raw, x = [b(d), b(m), qh, qs], d32 * q + m.astype(np.float32)[:, None]
    elif g in (G_Q4_K, G_Q5_K):
        dmin = _f16_scales(rng, n, amp / 63 / 4, edge)
        sc, qs = u8(12), u8(128)
        qh = u8(32) if g == G_Q5_K else None
        scale, mn = _k_scale_min(sc)
        k, h, l, s = _E // 64, (_E // 32) % 2, _E % 32, _E // 32
        q = ((qs[:, 32 * k + l] >> (4 * h)) & 15).astype(np.int32)
        if qh is not None:
            q |= ((qh[:, l] >> s) & 1).astype(np.int32) << 4
        x = (d32 * scale)[:, s] * q.astype(np.float32) - (dmin.astype(np.float32)[:, None] * mn)[:, s]
        raw = [b(d), b(dmin), sc] + ([qh] if qh is not None else []) + [qs]
    elif g == G_Q6_K:
        ql, qh, sc = u8(128), u8(64), u8(16)
        t, gq, l = _E // 128, (_E // 32) % 4, _E % 32
        lo = (ql[:, 64 * t + 32 * (gq & 1) + l] >> (4 * (gq >> 1))) & 15
        top = (qh[:, 32 * t + l] >> (2 * gq)) & 3
        q = (lo.astype(np.int32) | (top.astype(np.int32) << 4)) - 32
        scale = sc.view(np.int8).astype(np.float32)[:, 8 * t + 2 * gq + l // 16]
        x = (d32 * scale) * q.astype(np.float32)
        raw = [ql, qh, sc, b(d)]
    else:
        raise ValueError("random_blocks: type %d" % g)
    raw = np.concatenate(raw, axis=1)
    assert raw.shape[1] == _GEOM[g][1]
    return raw.tobytes(), x.astype(np.float32).reshape(-1)


def kfixture(a, g, name):
    """A (3, 512) tensor of random blocks of type g and its numpy dequantization as F32."""
    rng = np.random.default_rng(a.seed)
    rows, cols = 3, 512
    raw, x = random_blocks(g, rng, rows * cols // _GEOM[g][0], edge=True)
    w, e = Writer(), Writer()
    for f in (w, e):
        f.add("general.architecture", T_STR, "llama")
    w.tensor(name, [cols, rows], g, raw)
    e.tensor(name, [cols, rows], G_F32, x.tobytes())
    w.write(a.output)
    e.write(a.expected)


_FALLBACK = {G_Q4_K: G_Q5_0, G_Q5_K: G_Q5_1, G_Q6_K: G_Q8_0}


def kmix(a):
    """A random tiny tied llama in the mix of llama.cpp's Q4_K_M (token embedding, attn_v and
    ffn_down Q6_K, ffn_up Q5_K, the rest Q4_K; a row that is not whole super-blocks falls
    back as llama.cpp's: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, else F16), norms F32, and
    EXPECTED: the same model with every tensor F32, as numpy dequantizes the blocks."""
    rng = np.random.default_rng(a.seed)
    d, hid, n_l, n_h, n_kv, voc = a.dim, a.hidden, a.layers, a.heads, a.kv_heads, a.vocab
    hd = 16 if a.heads == 2 else d // n_h  # (the test fixture's 2 heads of 16)
    w, e = Writer(), Writer()
    for f in (w, e):
        f.add("general.architecture", T_STR, "llama")
        for k, v in (("context_length", a.context), ("embedding_length", d), ("feed_forward_length", hid),
                     ("block_count", n_l), ("attention.head_count", n_h),
                     ("attention.head_count_kv", n_kv), ("attention.key_length", hd),
                     ("attention.value_length", hd), ("rope.dimension_count", hd),
                     ("vocab_size", voc)):
            f.add("llama." + k, T_U32, v)
        f.add("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5)
        f.add("llama.rope.freq_base", T_F32, 10000.0)

    def mat(name, ne, g, amp):
        if ne[0] % 256:
            g = _FALLBACK[g] if ne[0] % 32 == 0 else G_F16
        n = ne[0] * ne[1]
        if g == G_F16:
            h = (rng.standard_normal(n) * amp).astype(np.float16)
            raw, x = h.tobytes(), h.astype(np.float32)
        else:
            raw, x = random_blocks(g, rng, n // _GEOM[g][0], amp)
        w.tensor(name, ne, g, raw)
        e.tensor(name, ne, G_F32, x.tobytes())

    def norm(name):
        x = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
        w.tensor(name, [d], G_F32, x.tobytes())
        e.tensor(name, [d], G_F32, x.tobytes())

    mat("token_embd.weight", [d, voc], G_Q6_K, 1.0)
    for i in range(n_l):
        p = "blk.%d." % i
        norm(p + "attn_norm.weight")
        mat(p + "attn_q.weight", [d, n_h * hd], G_Q4_K, 2 * d ** -0.5)
        mat(p + "attn_k.weight", [d, n_kv * hd], G_Q4_K, 2 * d ** -0.5)
        mat(p + "attn_v.weight", [d, n_kv * hd], G_Q6_K, 2 * d ** -0.5)
        mat(p + "attn_output.weight", [n_h * hd, d], G_Q4_K if i % 2 else G_Q5_K, 2 * (n_h * hd) ** -0.5)
        norm(p + "ffn_norm.weight")
        mat(p + "ffn_gate.weight", [d, hid], G_Q4_K, 2 * d ** -0.5)
        mat(p + "ffn_down.weight", [hid, d], G_Q6_K, 2 * hid ** -0.5)
        mat(p + "ffn_up.weight", [d, hid], G_Q5_K, 2 * d ** -0.5)
    norm("output_norm.weight")
    w.write(a.output)
    if a.expected:
        e.write(a.expected)


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (as published with its encoder)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


# The benchmark shapes: llama2.c's stories110M, and a TinyLlama-1.1B-like GQA 32/8 shape.
SHAPES = {"110m": dict(dim=768, layers=12, heads=12, kv_heads=12, hidden=2048),
          "1b": dict(dim=2048, layers=16, heads=32, kv_heads=8, hidden=5632)}


def random_model(a):
    """Weights ~ N(0, 1/fan_in) (every block adds a unit-scale update to a unit-scale
    residual: attention is not flat and the layers matter), embeddings N(0, 1), norms 1, an
    untied output N(0, 16/dim): logits of std ~4, so the top two of a step are ~0.9 apart
    on average and a near-tie (< 1e-3) is rare. The output rows of every token that is not
    a normal piece (token_type != 1: <unk>, <s>, </s>, the 256 byte tokens) are zero:
    their logit is 0, far below the maximum, so greedy text is plain pieces that every
    detokenizer prints alike (the side-by-side gate compares text)."""
    shape = dict(SHAPES[a.shape])
    for k in ("dim", "layers", "heads", "kv_heads", "hidden"):
        if getattr(a, k) is not None:
            shape[k] = getattr(a, k)
    d, n_l, n_h, n_kv, f = (shape[k] for k in ("dim", "layers", "heads", "kv_heads", "hidden"))
    assert d % n_h == 0 and n_h % n_kv == 0, "dim % heads and heads % kv-heads must be 0"
    hd = d // n_h
    voc = Reader(a.vocab_from)
    tok = [kv for kv in voc.kv if kv[0].startswith("tokenizer.ggml.")]
    meta = dict((k, v) for k, _, v, _ in tok)
    n_vocab = len(meta["tokenizer.ggml.tokens"])
    not_normal = np.array([t != 1 for t in meta.get("tokenizer.ggml.token_type", [1] * n_vocab)])
    w = Writer()
    w.add("general.architecture", T_STR, "llama")
    w.add("general.name", T_STR, "eexit-random-%s-seed%d" % (a.shape, a.seed))
    w.add("general.file_type", T_U32, 0)  # LLAMA_FTYPE_ALL_F32
    for k, v in (("context_length", a.context), ("embedding_length", d), ("feed_forward_length", f),
                 ("block_count", n_l), ("attention.head_count", n_h), ("attention.head_count_kv", n_kv),
                 ("rope.dimension_count", hd), ("vocab_size", n_vocab)):
        w.add("llama." + k, T_U32, v)
    w.add("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5)
    w.add("llama.rope.freq_base", T_F32, 10000.0)
    for kv in tok:
        w.add(*kv)
    # One generator per tensor, seeded by (seed, index): a tensor's values do not depend on
    # when it is drawn, and each is made only while the file is written.
    idx = [0]

    def add(name, ne, std, zero_rows=None):
        i = idx[0]
        idx[0] += 1

        def make():
            g = np.random.default_rng([a.seed, i])
            x = g.standard_normal(int(np.prod(ne)), dtype=np.float32) * np.float32(std)
            if zero_rows is not None:
                x.reshape(ne[1], ne[0])[zero_rows] = 0
            return x.tobytes()
        w.tensor(name, ne, G_F32, make)

    def ones(name, n):
        w.tensor(name, [n], G_F32, np.ones(n, dtype=np.float32).tobytes())

    add("token_embd.weight", [d, n_vocab], 1.0)
    for l in range(n_l):
        p = "blk.%d." % l
        ones(p + "attn_norm.weight", d)
        add(p + "attn_q.weight", [d, n_h * hd], d ** -0.5)
        add(p + "attn_k.weight", [d, n_kv * hd], d ** -0.5)
        add(p + "attn_v.weight", [d, n_kv * hd], d ** -0.5)
        add(p + "attn_output.weight", [n_h * hd, d], (n_h * hd) ** -0.5)
        ones(p + "ffn_norm.weight", d)
        add(p + "ffn_gate.weight", [d, f], d ** -0.5)
        add(p + "ffn_down.weight", [f, d], f ** -0.5)
        add(p + "ffn_up.weight", [d, f], d ** -0.5)
    ones("output_norm.weight", d)
    add("output.weight", [d, n_vocab], 4 * d ** -0.5, zero_rows=not_normal)
    w.write(a.output)


class Safetensors:
    """The tensors of an HF directory (one file or shards), mapped: {name: (dtype, shape, raw)}."""

    def __init__(self, d):
        single = os.path.join(d, "model.safetensors")
        if os.path.exists(single):
            files = [single]
        else:
            with open(os.path.join(d, "model.safetensors.index.json")) as f:
                files = [os.path.join(d, x) for x in sorted(set(json.load(f)["weight_map"].values()))]
        self.t, self._maps = {}, []
        for path in files:
            with open(path, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps.append(m)
            (n,) = struct.unpack_from("<Q", m, 0)
            header = json.loads(m[8:8 + n])
            header.pop("__metadata__", None)
            for name, info in header.items():
                b, e = info["data_offsets"]
                self.t[name] = (info["dtype"], info["shape"], memoryview(m)[8 + n + b: 8 + n + e])

    def f32(self, name):
        """The tensor widened to float32 (exact from F16 / BF16), as (shape) numpy."""
        dt, shape, raw = self.t[name]
        if dt == "F32":
            x = np.frombuffer(raw, dtype=np.float32)
        elif dt == "F16":
            x = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        elif dt == "BF16":
            x = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError("%s: dtype %s not supported (F32, F16, BF16)" % (name, dt))
        return x.reshape(shape)


def bf16_bits(x):
    """float32 -> bf16 bits, rounded to nearest even (as llama.cpp's converter)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def llama3_rope_factors(c, head_dim):
    """What llama.cpp's converter writes as rope_freqs.weight for rope_type "llama3":
    frequencies theta^(-2i/d) in float32, each factor (a divisor of its frequency) 1 for a
    wavelength under original_max_position_embeddings / high_freq_factor, factor above
    original_max_position_embeddings / low_freq_factor, else 1 / ((1 - s) / factor + s) with
    s = (original_max_position_embeddings / wavelength - low_freq_factor) /
        (high_freq_factor - low_freq_factor)."""
    rs = c["rope_scaling"]
    base = np.float32(c.get("rope_theta", 10000.0))
    freqs = np.float32(1.0) / base ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
    factor = float(rs.get("factor", 8.0))
    lo, hi = float(rs.get("low_freq_factor", 1.0)), float(rs.get("high_freq_factor", 4.0))
    old = float(rs.get("original_max_position_embeddings", 8192))
    out = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            sm = (old / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - sm) / factor + sm))
    return np.array(out, dtype=np.float32)


def from_hf(a):
    with open(os.path.join(a.input, "config.json")) as f:
        c = json.load(f)
    arch = c.get("architectures", ["LlamaForCausalLM"])
    if c.get("model_type", "llama") != "llama" or arch != ["LlamaForCausalLM"]:
        raise SystemExit("from-hf: only LlamaForCausalLM checkpoints, not %s" % arch)
    st = Safetensors(a.input)
    n_head = c["num_attention_heads"]
    n_kv = c.get("num_key_value_heads", n_head)
    dim, n_layers = c["hidden_size"], c["num_hidden_layers"]
    head_dim = c.get("head_dim") or dim // n_head
    tied = bool(c.get("tie_word_embeddings", False))
    stored = {x[0] for x in st.t.values()}
    kind = a.type or ("bf16" if stored == {"BF16"} else "f16" if stored == {"F16"} else "f32")
    w = Writer()
    w.add("general.architecture", T_STR, "llama")
    w.add("general.name", T_STR, os.path.basename(os.path.normpath(a.input)))
    for k, v in (("block_count", n_layers), ("context_length", c["max_position_embeddings"]),
                 ("embedding_length", dim), ("feed_forward_length", c["intermediate_size"]),
                 ("attention.head_count", n_head), ("attention.head_count_kv", n_kv)):
        w.add("llama." + k, T_U32, v)
    w.add("llama.rope.freq_base", T_F32, float(c.get("rope_theta", 10000.0)))
    w.add("llama.attention.layer_norm_rms_epsilon", T_F32, float(c.get("rms_norm_eps", 1e-5)))
    if "head_dim" in c:  # newer converters write these when config.json has head_dim
        w.add("llama.attention.key_length", T_U32, head_dim)
        w.add("llama.attention.value_length", T_U32, head_dim)
    w.add("general.file_type", T_U32, {"f32": 0, "f16": 1, "bf16": 32}[kind])  # LLAMA_FTYPE_*
    w.add("llama.vocab_size", T_U32, c["vocab_size"])
    w.add("llama.rope.dimension_count", T_U32, head_dim)
    rs = c.get("rope_scaling") or {}
    rope_type = rs.get("rope_type", rs.get("type"))
    if rope_type not in (None, "default", "llama3"):
        raise SystemExit("from-hf: rope_scaling type %r is not supported" % rope_type)
    ee = c.get("early_exit") or {}
    if ee.get("exit_layers"):
        w.add("eexit.early_exit.exit_layers", T_ARR, [int(x) for x in ee["exit_layers"]], T_I32)
        if ee.get("thresholds"):
            w.add("eexit.early_exit.thresholds", T_ARR, [float(x) for x in ee["thresholds"]], T_F32)
        if ee.get("measure"):
            w.add("eexit.early_exit.measure", T_STR, ee["measure"])
    tok = os.path.join(a.input, "tokenizer.json")
    if os.path.exists(tok):
        # Llama 3's pre-tokenizer (llama.cpp names it by hashing; its vocabulary size says it here)
        pre = "llama-bpe" if c["vocab_size"] == 128256 else "gpt-2"
        for kv in vocab_kv(tok, add_ids=False, pre=pre):
            w.add(*kv)
    eos = c.get("eos_token_id")
    if c.get("bos_token_id") is not None:
        w.add("tokenizer.ggml.bos_token_id", T_U32, int(c["bos_token_id"]))
    if eos is not None:
        w.add("tokenizer.ggml.eos_token_id", T_U32, int(eos[0] if isinstance(eos, list) else eos))

    def permute(x, heads):  # HF's rotate_half rows -> Meta's interleaved pairs, per head
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    def add(gname, hfname, heads=None):
        dt, shape, _ = st.t[hfname]
        t = kind if len(shape) == 2 else "f32"  # 1-D tensors (norms) stay F32, as llama.cpp
        g = {"f32": G_F32, "f16": G_F16, "bf16": G_BF16}[t]

        def make():
            if t == "bf16" and dt == "BF16" and heads is None:
                return bytes(st.t[hfname][2])  # as stored: no rounding
            x = st.f32(hfname)
            if heads is not None:
                x = permute(x, heads)
            if t == "bf16":  # exact for bf16 input (a permutation of bf16 values)
                return bf16_bits(x).tobytes()
            return np.ascontiguousarray(x.astype(np.float16 if t == "f16" else np.float32)).tobytes()
        w.tensor(gname, shape[::-1], g, make)

    add("token_embd.weight", "model.embed_tokens.weight")
    for l in range(n_layers):
        p, h = "blk.%d." % l, "model.layers.%d." % l
        add(p + "attn_norm.weight", h + "input_layernorm.weight")
        add(p + "attn_q.weight", h + "self_attn.q_proj.weight", n_head)
        add(p + "attn_k.weight", h + "self_attn.k_proj.weight", n_kv)
        add(p + "attn_v.weight", h + "self_attn.v_proj.weight")
        add(p + "attn_output.weight", h + "self_attn.o_proj.weight")
        add(p + "ffn_norm.weight", h + "post_attention_layernorm.weight")
        add(p + "ffn_gate.weight", h + "mlp.gate_proj.weight")
        add(p + "ffn_down.weight", h + "mlp.down_proj.weight")
        add(p + "ffn_up.weight", h + "mlp.up_proj.weight")
    add("output_norm.weight", "model.norm.weight")
    if not tied:
        add("output.weight", "lm_head.weight")
    if rope_type == "llama3":
        w.tensor("rope_freqs.weight", [head_dim // 2], G_F32, llama3_rope_factors(c, head_dim).tobytes())
    w.write(a.output)


def vocab_kv(path, add_ids=True, pre="gpt-2"):
    """tokenizer.ggml.* metadata of a byte-level BPE tokenizer.json, as llama.cpp lays it out
    (tokens, token_type, merges; bos/eos = the first special token when add_ids)."""
    j = json.load(open(path, encoding="utf-8"))
    m = j["model"]
    assert m["type"] == "BPE", "byte-level BPE tokenizer.json expected"
    n = max(list(m["vocab"].values()) + [t["id"] for t in j.get("added_tokens", [])]) + 1
    tokens, types = [""] * n, [1] * n
    for piece, i in m["vocab"].items():
        tokens[i] = piece
    for t in j.get("added_tokens", []):
        tokens[t["id"]] = t["content"]
        types[t["id"]] = 3 if t.get("special") else 4
    merges = [x if isinstance(x, str) else " ".join(x) for x in m["merges"]]
    kv = [("tokenizer.ggml.model", T_STR, "gpt2", None), ("tokenizer.ggml.pre", T_STR, pre, None),
          ("tokenizer.ggml.tokens", T_ARR, tokens, T_STR),
          ("tokenizer.ggml.token_type", T_ARR, types, T_I32),
          ("tokenizer.ggml.merges", T_ARR, merges, T_STR)]
    specials = [t["id"] for t in j.get("added_tokens", []) if t.get("special")]
    if specials and add_ids:
        kv.append(("tokenizer.ggml.eos_token_id", T_U32, specials[0], None))
        kv.append(("tokenizer.ggml.bos_token_id", T_U32, specials[0], None))
    # As llama.cpp's converter: add_bos_token from tokenizer_config.json beside the file.
    cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
    add_bos = os.path.exists(cfg) and bool(json.load(open(cfg)).get("add_bos_token", False))
    kv.append(("tokenizer.ggml.add_bos_token", T_BOOL, add_bos, None))
    return kv


def vocab(a):
    w = Writer()
    w.add("general.architecture", T_STR, "llama")
    for kv in vocab_kv(a.tokenizer, add_ids=False, pre=a.pre):
        w.add(*kv)
    j = json.load(open(a.tokenizer, encoding="utf-8"))
    specials = [t["id"] for t in j.get("added_tokens", []) if t.get("special")]
    bos = a.bos if a.bos is not None else (specials[0] if specials else None)
    eos = a.eos if a.eos is not None else (specials[0] if specials else None)
    if bos is not None:
        w.add("tokenizer.ggml.bos_token_id", T_U32, bos)
    if eos is not None:
        w.add("tokenizer.ggml.eos_token_id", T_U32, eos)
    if a.eot is not None:
        w.add("tokenizer.ggml.eot_token_id", T_U32, a.eot)
    w.write(a.output)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("requantize")
    q.add_argument("input")
    q.add_argument("output")
    q.add_argument("--type", required=True, choices=["q8_0", "q4_0", "f16", "bf16", "f32"])
    q.add_argument("--expected")
    q.add_argument("--exit-layers")
    q.add_argument("--thresholds")
    q.add_argument("--measure")
    t = sub.add_parser("tiny")
    t.add_argument("output")
    t.add_argument("--type", default="f32", choices=["q8_0", "q4_0", "f16", "bf16", "f32"])
    t.add_argument("--vocab", default="llama", choices=["llama", "gpt2"])
    t.add_argument("--seed", type=int, default=0)
    for name in ("q4k", "q5k", "q6k"):
        k = sub.add_parser(name)
        k.add_argument("output")
        k.add_argument("expected")
        k.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("kmix")
    m.add_argument("output")
    m.add_argument("expected", nargs="?")
    m.add_argument("--dim", type=int, default=256)
    m.add_argument("--hidden", type=int, default=256)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--heads", type=int, default=2)
    m.add_argument("--kv-heads", type=int, default=1)
    m.add_argument("--vocab", type=int, default=32)
    m.add_argument("--context", type=int, default=64)
    m.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("random")
    r.add_argument("output")
    r.add_argument("--vocab-from", required=True)
    r.add_argument("--shape", default="110m", choices=sorted(SHAPES))
    for k in ("dim", "layers", "heads", "kv-heads", "hidden"):
        r.add_argument("--" + k, type=int)
    r.add_argument("--context", type=int, default=2048)
    r.add_argument("--seed", type=int, default=0)
    h = sub.add_parser("from-hf")
    h.add_argument("input")
    h.add_argument("output")
    h.add_argument("--type", choices=["f32", "bf16", "f16"], help="2-D weights (default: as stored)")
    v = sub.add_parser("vocab")
    v.add_argument("tokenizer")
    v.add_argument("output")
    v.add_argument("--pre", default="gpt-2", help="tokenizer.ggml.pre (llama-bpe: Llama 3)")
    for k in ("bos", "eos", "eot"):
        v.add_argument("--" + k, type=int, help=f"tokenizer.ggml.{k}_token_id")
    a = p.parse_args()
    {"requantize": requantize, "tiny": tiny, "random": random_model, "vocab": vocab,
     "from-hf": from_hf, "kmix": kmix, "q4k": lambda a: kfixture(a, G_Q4_K, "q4k"),
     "q5k": lambda a: kfixture(a, G_Q5_K, "q5k"), "q6k": lambda a: kfixture(a, G_Q6_K, "q6k")}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
