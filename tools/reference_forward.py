#!/usr/bin/python3
"""An independent, readable PyTorch forward of a Llama model (float64), from a llama2.c .bin
(interleaved-pair RoPE), an HF directory (rotate_half RoPE) or a llama GGUF file with F32,
F16 or BF16 tensors (interleaved-pair RoPE: llama.cpp's converter undoes HF's Q/K
permutation). It is the reference the C++ forward is tested against, so it favours
plainness over speed: no cache tricks, every step of a token attends over the full prefix
recomputed from scratch.

Weights stay in their stored dtype and are widened to float64 where they are used (exact for
bf16, f16 and f32), so a bf16 1B model costs its bf16 bytes plus one layer in float64.
RoPE: Llama 3 "rope_scaling" (rope_type "llama3") from config.json, or llama.cpp's
rope_freqs.weight factors from GGUF; tied embeddings (tie_word_embeddings, or a GGUF file
without output.weight) reuse the embedding matrix as the LM head; GQA repeats each KV head
for n_heads / n_kv_heads query heads.

usage: /usr/bin/python3 tools/reference_forward.py MODEL TOKEN_ID...   (prints argmax per position)
       /usr/bin/python3 tools/reference_forward.py MODEL --greedy N TOKEN_ID...
           (N greedy tokens after the prompt ids, as JSON: tokens and each step's top-1 minus
           top-2 logit, so that a comparison of two engines can stop at a near-tie)
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama2c_to_hf  # noqa: E402
import safetensors_io  # noqa: E402


class Model:
    """Weights in nn.Linear (out, in) layout (stored dtype, widened on use); rope:
    'interleaved' or 'half'; inv_freq: the head_dim/2 RoPE frequencies, float64."""

    def __init__(self, cfg, tok, layers, norm, lm_head, rope, inv_freq=None):
        self.cfg, self.tok, self.layers, self.norm, self.lm_head = cfg, tok, layers, norm, lm_head
        self.rope = rope
        self.inv_freq = default_inv_freq(cfg["theta"], cfg["head_dim"]) if inv_freq is None else inv_freq


def default_inv_freq(theta, head_dim):
    """theta^(-2i/head_dim), i < head_dim/2, in float64."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def llama3_inv_freq(theta, head_dim, rs):
    """Llama 3.1's frequency scaling (Meta's apply_scaling; transformers' "llama3" rope type),
    in float64: a frequency whose wavelength 2*pi/f is longer than
    original_max_position_embeddings / low_freq_factor is divided by factor; shorter than
    original_max_position_embeddings / high_freq_factor it is kept; in between (both ends
    included) it is interpolated, s*f + (1-s)*f/factor with
    s = (original_max_position_embeddings / wavelength - low_freq_factor) /
        (high_freq_factor - low_freq_factor)."""
    f = default_inv_freq(theta, head_dim)
    factor, lo, hi = float(rs["factor"]), float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
    old = float(rs["original_max_position_embeddings"])
    out = []
    for x in f.tolist():
        wavelen = 2 * math.pi / x
        if wavelen > old / lo:
            out.append(x / factor)
        elif wavelen < old / hi:
            out.append(x)
        else:
            s = (old / wavelen - lo) / (hi - lo)
            out.append(s * x + (1 - s) * x / factor)
    return torch.tensor(out, dtype=torch.float64)


def hf_inv_freq(c, theta, head_dim):
    """RoPE frequencies of a config.json: plain, or "llama3" rope_scaling; others refused."""
    rs = c.get("rope_scaling")
    if not rs:
        return default_inv_freq(theta, head_dim)
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "default":
        return default_inv_freq(theta, head_dim)
    if kind != "llama3":
        raise ValueError("reference_forward: rope_scaling type %r is not implemented" % kind)
    return llama3_inv_freq(theta, head_dim, rs)


def load_bin(path):
    p, w = llama2c_to_hf.read_llama2c(path)
    d = lambda t: t.to(torch.float64)  # noqa: E731
    layers = [dict(attn_norm=d(w["rms_att"][i]), wq=d(w["wq"][i]), wk=d(w["wk"][i]),
                   wv=d(w["wv"][i]), wo=d(w["wo"][i]), ffn_norm=d(w["rms_ffn"][i]),
                   w_gate=d(w["w1"][i]), w_down=d(w["w2"][i]), w_up=d(w["w3"][i]))
              for i in range(p["n_layers"])]
    cfg = dict(dim=p["dim"], n_heads=p["n_heads"], n_kv_heads=p["n_kv_heads"],
               head_dim=p["dim"] // p["n_heads"], eps=1e-5, theta=10000.0)
    return Model(cfg, d(w["tok"]), layers, d(w["rms_final"]), d(w["wcls"]), "interleaved")


def load_hf_dir(path):
    with open(os.path.join(path, "config.json")) as f:
        c = json.load(f)
    t = safetensors_io.read_dir(path)  # stored dtype; widened to float64 where used
    n_heads = c["num_attention_heads"]
    cfg = dict(dim=c["hidden_size"], n_heads=n_heads,
               n_kv_heads=c.get("num_key_value_heads", n_heads),
               head_dim=c.get("head_dim") or c["hidden_size"] // n_heads,
               eps=c.get("rms_norm_eps", 1e-6), theta=c.get("rope_theta", 10000.0))
    layers = []
    for i in range(c["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        layers.append(dict(attn_norm=t[pre + "input_layernorm.weight"],
                           wq=t[pre + "self_attn.q_proj.weight"],
                           wk=t[pre + "self_attn.k_proj.weight"],
                           wv=t[pre + "self_attn.v_proj.weight"],
                           wo=t[pre + "self_attn.o_proj.weight"],
                           ffn_norm=t[pre + "post_attention_layernorm.weight"],
                           w_gate=t[pre + "mlp.gate_proj.weight"],
                           w_up=t[pre + "mlp.up_proj.weight"],
                           w_down=t[pre + "mlp.down_proj.weight"]))
    tok = t["model.embed_tokens.weight"]
    lm_head = tok if c.get("tie_word_embeddings", False) else t["lm_head.weight"]
    return Model(cfg, tok, layers, t["model.norm.weight"], lm_head, "half",
                 hf_inv_freq(c, cfg["theta"], cfg["head_dim"]))


def load_gguf(path):
    import gguf_tool  # numpy GGUF reader
    r = gguf_tool.Reader(path)
    meta = dict((k, v) for k, _, v, _ in r.kv)
    t = {}
    for name, ne, typ, raw in r.tensors:
        assert typ in (gguf_tool.G_F32, gguf_tool.G_F16, gguf_tool.G_BF16), \
            "reference_forward reads F32 / F16 / BF16 GGUF tensors only: " + name
        # F16 and BF16 widen to F32 exactly; float64 on use.
        t[name] = torch.from_numpy(gguf_tool.to_f32(typ, raw).copy()).view(*ne[::-1])
    a = "llama."
    n_heads = meta[a + "attention.head_count"]
    dim = meta[a + "embedding_length"]
    cfg = dict(dim=dim, n_heads=n_heads, n_kv_heads=meta.get(a + "attention.head_count_kv", n_heads),
               head_dim=meta.get(a + "attention.key_length", dim // n_heads),
               eps=meta.get(a + "attention.layer_norm_rms_epsilon", 1e-5),
               theta=meta.get(a + "rope.freq_base", 10000.0))
    assert meta.get(a + "rope.scaling.type", "none") == "none", "RoPE scaling type not implemented"
    inv_freq = default_inv_freq(cfg["theta"], cfg["head_dim"])
    if "rope_freqs.weight" in t:  # llama.cpp: frequency i is divided by factor i (Llama 3)
        inv_freq = inv_freq / t["rope_freqs.weight"].to(torch.float64)
    names = dict(attn_norm="attn_norm", wq="attn_q", wk="attn_k", wv="attn_v", wo="attn_output",
                 ffn_norm="ffn_norm", w_gate="ffn_gate", w_up="ffn_up", w_down="ffn_down")
    layers = [{k: t["blk.%d.%s.weight" % (i, v)] for k, v in names.items()}
              for i in range(meta[a + "block_count"])]
    tok = t["token_embd.weight"]
    return Model(cfg, tok, layers, t["output_norm.weight"], t.get("output.weight", tok), "interleaved",
                 inv_freq)


def load(path):
    if os.path.isdir(path):
        return load_hf_dir(path)
    with open(path, "rb") as f:
        return load_gguf(path) if f.read(4) == b"GGUF" else load_bin(path)


def f64(t):
    return t.to(torch.float64)


def rmsnorm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * f64(w)


def rope(x, positions, freqs, style):
    """x: (T, heads, head_dim); freqs: (head_dim/2) float64 frequencies."""
    hd = x.shape[-1]
    ang = torch.tensor(positions, dtype=torch.float64)[:, None] * freqs[None, :]  # (T, hd/2)
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]  # (T, 1, hd/2)
    if style == "interleaved":  # pairs (2i, 2i+1), as llama2.c run.c
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out
    a, b = x[..., : hd // 2], x[..., hd // 2:]  # pairs (i, i + hd/2), as HF rotate_half
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def head(m, x):
    """Logits of hidden states x (T, dim) through the final norm and the LM head (LayerSkip's
    shared exit head, at any layer)."""
    return rmsnorm(x, m.norm, m.cfg["eps"]) @ f64(m.lm_head).T  # (T, vocab)


def forward(m, tokens, positions=None, trace=None, q_chunk=256):
    """Logits (T, vocab) for tokens at positions (default 0..T-1), causal over the sequence.
    trace: a dict that gets, per layer, "k" and "v" (T, n_kv_heads * head_dim; K after RoPE,
    as a cache holds them) and "h" (T, dim; the residual stream after the layer). Attention
    runs over chunks of q_chunk query rows: the same sums, less memory for long prompts."""
    c = m.cfg
    T = len(tokens)
    positions = list(range(T)) if positions is None else positions
    H, KV, hd = c["n_heads"], c["n_kv_heads"], c["head_dim"]
    x = f64(m.tok[torch.tensor(tokens)])  # (T, dim)
    for L in m.layers:
        h = rmsnorm(x, L["attn_norm"], c["eps"])
        q = rope((h @ f64(L["wq"]).T).view(T, H, hd), positions, m.inv_freq, m.rope)  # (T, H, hd)
        k = rope((h @ f64(L["wk"]).T).view(T, KV, hd), positions, m.inv_freq, m.rope)  # (T, KV, hd)
        v = (h @ f64(L["wv"]).T).view(T, KV, hd)  # (T, KV, hd)
        if trace is not None:
            trace.setdefault("k", []).append(k.reshape(T, KV * hd))
            trace.setdefault("v", []).append(v.reshape(T, KV * hd))
        rep = H // KV  # GQA: query head j reads kv head j // rep
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (T, H, hd)
        o = torch.empty(T, H * hd, dtype=torch.float64)
        for a in range(0, T, q_chunk):  # query rows a..b-1 attend to keys 0..row
            b = min(T, a + q_chunk)
            mask = torch.full((b - a, T), float("-inf"), dtype=torch.float64).triu(a + 1)
            att = torch.einsum("thd,shd->hts", q[a:b], k) / hd ** 0.5 + mask  # (H, b-a, T)
            o[a:b] = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(b - a, H * hd)
        x = x + o @ f64(L["wo"]).T
        h = rmsnorm(x, L["ffn_norm"], c["eps"])
        g = h @ f64(L["w_gate"]).T
        x = x + (g * torch.sigmoid(g) * (h @ f64(L["w_up"]).T)) @ f64(L["w_down"]).T
        if trace is not None:
            trace.setdefault("h", []).append(x)
    return head(m, x)  # (T, vocab)


def greedy(m, ids, n):
    """n greedy tokens after ids, and the top-1 minus top-2 logit of each step."""
    ids, out, margins = list(ids), [], []
    for _ in range(n):
        top = forward(m, ids)[-1].topk(2)
        out.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        ids.append(out[-1])
    return out, margins


if __name__ == "__main__":
    model = load(sys.argv[1])
    if len(sys.argv) > 3 and sys.argv[2] == "--greedy":
        toks, margins = greedy(model, [int(a) for a in sys.argv[4:]] or [1], int(sys.argv[3]))
        print(json.dumps({"tokens": toks, "margins": margins}))
        sys.exit(0)
    ids = [int(a) for a in sys.argv[2:]] or [1]
    print(forward(model, ids).argmax(-1).tolist())
