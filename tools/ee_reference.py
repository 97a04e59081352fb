#!/usr/bin/python3
"""Independent PyTorch reference of early-exit greedy decoding (one sequence, float64) over an
exported HF early-exit model; writes tests/fixtures/ee_reference.json.

Regenerate the fixture with (from the repository root):
    /usr/bin/python3 tools/ee_reference.py [--model models/eexit-shakespeare] [--out FILE]

The forward is written again here on purpose (it does not import the training script's
model): config.json + model.safetensors in, plain tensor code out.

Semantics (what the C++ engine's early-exit decode must reproduce):
  - Prompt tokens (BOS + text, from the model's tokenizer) run full depth, K/V cached per
    layer. The first generated token is the argmax of the last prompt position's full-depth
    logits (exit layer L-1): prefill rows never exit.
  - Decoding the previous token at position p: h = embed; for l in 0..L-1: h = layer_l(h),
    which writes K/V of layer l at p. If l is exit point e (early_exit.exit_layers[e]):
    logits_e = lm_head(rmsnorm(h, final_norm)) (shared head), score = measure(...); if
    score >= thresholds[e]: token = argmax(logits_e) (ties -> lowest id), exit layer = l, then
    the KV fill: for every skipped layer j in l+1..L-1, K_j/V_j at p = RoPE_p(Wk_j ·
    rmsnorm(h, attn_norm_j)), Wv_j · rmsnorm(h, attn_norm_j) with h the exit hidden state
    (attention and MLP of skipped layers do not run); stop. Otherwise after the last layer:
    token = argmax(final logits), exit layer = L-1.
  - Measures: "max-prob" = max softmax; "margin" = top1 - top2 softmax probability;
    "entropy" = NEGATIVE entropy (natural log), higher = more confident; "cosine" = cosine
    similarity of h at this exit and h at the previous exit point (the first exit point
    compares with the embedding output); "classifier" = sigmoid(w · rmsnorm(h, final_norm) + b)
    with model.exit_heads.e.classifier.{weight,bias}.
  - Generation stops after max_new_tokens tokens (EOS is not special-cased).

Fixture keys (tests/fixtures/ee_reference.json):
  "model":       model directory, relative to the repository root
  "n_layers", "exit_layers", "bos_id": from config.json
  "tokenizer":   [{"text": str, "ids": [int]}]: held-out passages (and one synthetic string)
                 with the ids our Python tokenizer gives, BOS (the post-processor) included
  "prompts":     [{"text": str, "ids": [int]}]: decode prompts, ids with BOS
  "runs":        [{"prompt": index into prompts, "measure": str, "thresholds": [float per
                 exit point] (the first max-prob run uses config.json's defaults),
                 "max_new_tokens": int, "tokens": [int] (generated ids, the prompt
                 excluded), "exit_layers": [int] (per generated token; the first is L-1,
                 from prefill), "scores": [[float]] (per generated token, the scores at the
                 exit points it reached; [] for the first), "min_threshold_gap": float
                 (smallest |score - threshold| of the run), "min_logit_gap": float (smallest
                 top1 - top2 logit of the chosen exits: near-ties would make float32 differ)}]
  "kv_fill":     {"run": index into runs, "prompt": index, "step": index into that run's
                 tokens of the generated token whose decode step exited early, "position":
                 its decode position p (prompt length + step - 1: the previous token is fed
                 at p), "exit_layer": int, "layers": [{"layer": j, "k": [n_kv_heads*head_dim],
                 "v": [n_kv_heads*head_dim]}] for every filled layer j (K after RoPE), read
                 from the cache after the run ended; compare at 1e-4 relative}
"""
import argparse
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402
import train_bpe  # noqa: E402  (the tokenizer only)

DTYPE = torch.float64


class Model:
    def __init__(self, path):
        with open(os.path.join(path, "config.json")) as f:
            c = json.load(f)
        t = {k: v.to(DTYPE) for k, v in safetensors_io.read_dir(path).items()}
        self.n_layers = c["num_hidden_layers"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads", self.n_heads)
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.n_heads
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.bos_id = c["bos_token_id"]
        ee = c["early_exit"]
        assert ee.get("head", "shared") == "shared", "this reference implements the shared head"
        self.exit_layers = ee["exit_layers"]
        self.thresholds = ee.get("thresholds")
        self.embed = t["model.embed_tokens.weight"]  # (vocab, dim)
        self.lm_head = self.embed if c.get("tie_word_embeddings") else t["lm_head.weight"]
        self.final_norm = t["model.norm.weight"]
        self.layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            self.layers.append({k: t[p + n] for k, n in [
                ("attn_norm", "input_layernorm.weight"), ("wq", "self_attn.q_proj.weight"),
                ("wk", "self_attn.k_proj.weight"), ("wv", "self_attn.v_proj.weight"),
                ("wo", "self_attn.o_proj.weight"), ("ffn_norm", "post_attention_layernorm.weight"),
                ("w_gate", "mlp.gate_proj.weight"), ("w_up", "mlp.up_proj.weight"),
                ("w_down", "mlp.down_proj.weight")]})
        self.classifiers = []
        if ee.get("classifier"):
            for e in range(len(self.exit_layers)):
                p = f"model.exit_heads.{e}.classifier."
                self.classifiers.append((t[p + "weight"].view(-1), t[p + "bias"].view(())))

    def rmsnorm(self, x, w):
        return x / torch.sqrt((x * x).mean() + self.eps) * w

    def rope(self, x, pos):
        """x: (heads, head_dim); HF rotate_half: pairs (i, i + head_dim/2)."""
        hd = self.head_dim
        freqs = self.theta ** (-torch.arange(0, hd, 2, dtype=DTYPE) / hd)  # (hd/2)
        cos, sin = torch.cos(pos * freqs), torch.sin(pos * freqs)
        a, b = x[:, : hd // 2], x[:, hd // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def kv(self, l, h, pos):
        """K (post-RoPE) and V of layer l for hidden state h at pos: (n_kv, head_dim) each."""
        L = self.layers[l]
        n = self.rmsnorm(h, L["attn_norm"])
        k = self.rope((L["wk"] @ n).view(self.n_kv, self.head_dim), pos)
        v = (L["wv"] @ n).view(self.n_kv, self.head_dim)
        return k, v

    def layer(self, l, h, pos, cache):
        """One block for one token at pos; writes cache[l][pos] = (K, V) first."""
        L = self.layers[l]
        cache[l][pos] = self.kv(l, h, pos)
        n = self.rmsnorm(h, L["attn_norm"])
        q = self.rope((L["wq"] @ n).view(self.n_heads, self.head_dim), pos)  # (H, hd)
        K = torch.stack([cache[l][s][0] for s in range(pos + 1)])  # (pos+1, KV, hd)
        V = torch.stack([cache[l][s][1] for s in range(pos + 1)])
        rep = self.n_heads // self.n_kv  # query head i reads kv head i // rep
        out = []
        for i in range(self.n_heads):
            att = (K[:, i // rep] @ q[i]) / math.sqrt(self.head_dim)  # (pos+1)
            out.append(att.softmax(0) @ V[:, i // rep])
        h = h + L["wo"] @ torch.cat(out)
        n = self.rmsnorm(h, L["ffn_norm"])
        g = L["w_gate"] @ n
        return h + L["w_down"] @ (g * torch.sigmoid(g) * (L["w_up"] @ n))

    def head(self, h):
        return self.lm_head @ self.rmsnorm(h, self.final_norm)


def argmax_lowest(x):
    return int((x == x.max()).nonzero()[0, 0])


def logit_gap(x):
    top = torch.topk(x, 2).values
    return float(top[0] - top[1])


def score(m, measure, e, logits, h, h_prev):
    p = logits.softmax(0)
    if measure == "max-prob":
        return float(p.max())
    if measure == "margin":
        top = torch.topk(p, 2).values
        return float(top[0] - top[1])
    if measure == "entropy":
        return float((p * torch.log_softmax(logits, 0)).sum())  # = -entropy
    if measure == "cosine":
        return float(h @ h_prev / (h.norm() * h_prev.norm()))
    if measure == "classifier":
        w, b = m.classifiers[e]
        return float(torch.sigmoid(w @ m.rmsnorm(h, m.final_norm) + b))
    raise ValueError(measure)


def decode(m, prompt_ids, measure, thresholds, max_new_tokens):
    """Greedy early-exit decoding; returns (tokens, exit_layers, scores, gaps, cache)."""
    L = m.n_layers
    cache = [dict() for _ in range(L)]  # cache[l][pos] = (K, V)
    for pos, tok in enumerate(prompt_ids):  # prefill: full depth
        h = m.embed[tok]
        for l in range(L):
            h = m.layer(l, h, pos, cache)
    last = m.head(h)
    tokens, exits, scores = [argmax_lowest(last)], [L - 1], [[]]
    thr_gap, lg_gap = math.inf, logit_gap(last)
    pos = len(prompt_ids)
    while len(tokens) < max_new_tokens:
        h = m.embed[tokens[-1]]
        h_prev = h  # the previous exit point's hidden state (cosine); first: the embedding
        step_scores, done = [], False
        for l in range(L):
            h = m.layer(l, h, pos, cache)
            if l in m.exit_layers:
                e = m.exit_layers.index(l)
                logits = m.head(h)
                s = score(m, measure, e, logits, h, h_prev)
                step_scores.append(s)
                thr_gap = min(thr_gap, abs(s - thresholds[e]))
                h_prev = h
                if s >= thresholds[e]:
                    tokens.append(argmax_lowest(logits))
                    exits.append(l)
                    lg_gap = min(lg_gap, logit_gap(logits))
                    for j in range(l + 1, L):  # KV fill from the exit hidden state
                        cache[j][pos] = m.kv(j, h, pos)
                    done = True
                    break
        if not done:
            logits = m.head(h)
            tokens.append(argmax_lowest(logits))
            exits.append(L - 1)
            lg_gap = min(lg_gap, logit_gap(logits))
        scores.append(step_scores)
        pos += 1
    return tokens, exits, scores, thr_gap, lg_gap, cache


PROMPTS = ["ROMEO:\n", "First Citizen:\nWe are accounted poor", "KING RICHARD II:\nO, that I were"]
# (measure, thresholds per exit point): max-prob with config.json's default thresholds
# (None; exits often) and with high ones (exits rarely), then the other measures with
# thresholds that give a mix of exits at both exit points and full depth.
RUNS = [
    ("max-prob", None),
    ("max-prob", [0.9, 0.8]),
    ("margin", [0.4, 0.3]),
    ("entropy", [-1.5, -2.0]),
    ("cosine", [0.25, 0.965]),
    ("classifier", [0.75, 0.85]),
]
MAX_NEW = 24


def tokenizer_cases(tok, held):
    """Held-out passages at fixed offsets plus one synthetic string (contractions, digits,
    runs of spaces, non-ASCII letters and punctuation)."""
    cases = []
    for frac in (0.0, 0.2, 0.45, 0.7, 0.93):
        a = int(len(held) * frac)
        cases.append(held[a:a + 400])
    cases.append("I'll've 'tis o'er, they're 1234 ducats --  twice!\n\n  \tCafé naïve—ﬁn. ")
    return [{"text": s, "ids": tok.encode(s)} for s in cases]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/eexit-shakespeare")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "ee_reference.json"))
    args = ap.parse_args()
    mdir = os.path.join(ROOT, args.model)
    m = Model(mdir)
    tok = train_bpe.load(mdir)
    with open(train_bpe.DEFAULT_DATA, encoding="utf-8") as f:
        _, held = train_bpe.split_text(f.read())

    prompts = [{"text": p, "ids": tok.encode(p)} for p in PROMPTS]
    runs, kv_fill = [], None
    for pi, p in enumerate(prompts):
        for measure, thr in RUNS:
            if measure == "classifier" and not m.classifiers:
                continue
            thr = thr or m.thresholds
            toks, exits, scores, tg, lg, cache = decode(m, p["ids"], measure, thr, MAX_NEW)
            runs.append({"prompt": pi, "measure": measure, "thresholds": thr,
                         "max_new_tokens": MAX_NEW, "tokens": toks, "exit_layers": exits,
                         "scores": [[round(s, 6) for s in ss] for ss in scores],
                         "min_threshold_gap": tg, "min_logit_gap": lg})
            early = [i for i, x in enumerate(exits) if x < m.n_layers - 1]
            print(f"prompt {pi} {measure:10s} {thr}: exits {exits} early {len(early)}/"
                  f"{MAX_NEW - 1}, min gaps: threshold {tg:.2e}, logit {lg:.2e}")
            if tg < 1e-4 or lg < 1e-4:
                print("    WARNING: a near-tie; float32 engines may legitimately differ here")
            print("   ", repr(tok.decode(toks)))
            if kv_fill is None and pi == 0 and measure == "max-prob" and early:
                s = early[0]
                pos = len(p["ids"]) + s - 1
                kv_fill = {"run": len(runs) - 1, "prompt": pi, "step": s, "position": pos,
                           "exit_layer": exits[s],
                           "layers": [{"layer": j,
                                       "k": [float(x) for x in cache[j][pos][0].reshape(-1)],
                                       "v": [float(x) for x in cache[j][pos][1].reshape(-1)]}
                                      for j in range(exits[s] + 1, m.n_layers)]}
    fixture = {"model": args.model, "n_layers": m.n_layers, "exit_layers": m.exit_layers,
               "bos_id": m.bos_id, "tokenizer": tokenizer_cases(tok, held), "prompts": prompts,
               "runs": runs, "kv_fill": kv_fill}
    with open(args.out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
