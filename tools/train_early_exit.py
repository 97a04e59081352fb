#!/usr/bin/python3
"""Trains eexit's embedded default model: a small Llama with early exits, on tinyshakespeare.

Model (exactly what eexit's CPU forward computes): token embedding (tied with the LM head),
L blocks of  x += Wo·attn(RoPE(Wq·n), RoPE(Wk·n), Wv·n) with n = RMSNorm(x) (eps 1e-5, with
weight), GQA, HF rotate_half RoPE (theta 10000);  x += Wdown·(silu(Wgate·n) * Wup·n);
no biases; final RMSNorm + LM head. Exit points after layers EXIT_LAYERS (0-based) and the
last layer; every exit uses the shared head (final RMSNorm + LM head, as LayerSkip).

Loss: sum_e w_e · CE(exit e) / sum_e w_e with w = EXIT_WEIGHTS (0.25, 0.5, 1 for the exits
after layers 1, 3, 5). A fixed weighting instead of LayerSkip's rotating curriculum: with
only 6 layers every step can afford all three heads (the shared head is one matmul), and
weights that grow with depth keep the full-depth model close to what a final-only loss
gives while making the early exits usable.
Optionally (default on) a confidence classifier per early exit, trained afterwards with the
backbone frozen: sigmoid(w · RMSNorm(h_e, final_norm) + b) predicts "argmax at this exit
== argmax at full depth" (logistic regression on training windows).

Data: ../shared/data/tinyshakespeare.txt; the first 90% of its characters train (the
tokenizer too), the last 10% is held out. Tokenizer: tools/train_bpe.py (run first, or
this script runs it). Training windows: BOS + 255 tokens at seeded random offsets.
Evaluation: held-out text as consecutive windows of BOS + 255 tokens; perplexity per
exit = exp(mean CE over every predicted token); agreement = how often an exit's argmax
equals the full-depth argmax at the same position (teacher-forced greedy).

Deterministic: torch.manual_seed, torch.use_deterministic_algorithms(True), a fixed thread
count (1 by default, see --threads) and step count (no wall-clock decisions).

usage: /usr/bin/python3 tools/train_early_exit.py [--steps N] [--out DIR] [--bench]
  writes DIR/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
  TRAINING.md}; DIR defaults to models/eexit-shakespeare.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402
import train_bpe  # noqa: E402

SEED = 1337
DIM, N_LAYERS, N_HEADS, N_KV_HEADS, HIDDEN, VOCAB = 192, 6, 6, 2, 512, 1024
HEAD_DIM = DIM // N_HEADS
CONTEXT, MAX_POS = 256, 512
EPS, THETA = 1e-5, 10000.0
EXIT_LAYERS = [1, 3]  # plus the last layer, implicitly
EXIT_WEIGHTS = [0.25, 0.5, 1.0]
BATCH = 8
LR, MIN_LR, WARMUP, WEIGHT_DECAY = 3e-3, 3e-4, 40, 0.1
STEPS = 1000


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def rope_tables(T):
    freqs = THETA ** (-torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freqs[None, :]  # (T, hd/2)
    ang = torch.cat([ang, ang], -1)  # (T, hd): HF duplicates the half-table
    return ang.cos().float(), ang.sin().float()


def rotate_half(x):
    a, b = x[..., : HEAD_DIM // 2], x[..., HEAD_DIM // 2:]
    return torch.cat([-b, a], -1)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        self.input_layernorm = torch.nn.Parameter(torch.ones(DIM))
        self.q_proj, self.k_proj = lin(DIM, N_HEADS * HEAD_DIM), lin(DIM, N_KV_HEADS * HEAD_DIM)
        self.v_proj, self.o_proj = lin(DIM, N_KV_HEADS * HEAD_DIM), lin(N_HEADS * HEAD_DIM, DIM)
        self.post_attention_layernorm = torch.nn.Parameter(torch.ones(DIM))
        self.gate_proj, self.up_proj = lin(DIM, HIDDEN), lin(DIM, HIDDEN)
        self.down_proj = lin(HIDDEN, DIM)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        n = rmsnorm(x, self.input_layernorm)
        q = self.q_proj(n).view(B, T, N_HEADS, HEAD_DIM).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(n).view(B, T, N_KV_HEADS, HEAD_DIM).transpose(1, 2)  # (B, KV, T, hd)
        v = self.v_proj(n).view(B, T, N_KV_HEADS, HEAD_DIM).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        # GQA: query head j reads kv head j // rep (expand, so the backward is a plain sum)
        rep = N_HEADS // N_KV_HEADS
        k = k[:, :, None].expand(B, N_KV_HEADS, rep, T, HEAD_DIM).reshape(B * N_HEADS, T, HEAD_DIM)
        v = v[:, :, None].expand(B, N_KV_HEADS, rep, T, HEAD_DIM).reshape(B * N_HEADS, T, HEAD_DIM)
        q = q.reshape(B * N_HEADS, T, HEAD_DIM)
        # mask + q·kᵀ/sqrt(hd) in one pass over the (B*H, T, T) scores: elementwise passes
        # over that tensor dominate a CPU step at this size
        att = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=1.0 / math.sqrt(HEAD_DIM))
        o = torch.bmm(att.softmax(-1), v).view(B, N_HEADS, T, HEAD_DIM)
        o = o.transpose(1, 2).reshape(B, T, N_HEADS * HEAD_DIM)
        x = x + self.o_proj(o)
        n = rmsnorm(x, self.post_attention_layernorm)
        return x + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class EarlyExitLlama(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(VOCAB, DIM)
        self.layers = torch.nn.ModuleList(Block() for _ in range(N_LAYERS))
        self.norm = torch.nn.Parameter(torch.ones(DIM))
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2 init; residual outputs scaled by 1/sqrt(2L)
                std = 0.02 / math.sqrt(2 * N_LAYERS) if name.endswith(("o_proj.weight",
                                                                       "down_proj.weight")) else 0.02
                torch.nn.init.normal_(p, 0.0, std)
        cos, sin = rope_tables(CONTEXT)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def head(self, h):
        """The shared exit head: final RMSNorm + tied LM head."""
        return rmsnorm(h, self.norm) @ self.embed_tokens.weight.T

    def forward(self, idx):
        """Hidden states at every exit point: [after EXIT_LAYERS..., after the last layer]."""
        T = idx.shape[1]
        x = self.embed_tokens(idx)
        cos, sin, mask = self.cos[:T], self.sin[:T], self.mask[:T, :T]
        outs = []
        for l, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask)
            if l in EXIT_LAYERS or l == N_LAYERS - 1:
                outs.append(x)
        return outs


def load_data(path):
    with open(path, encoding="utf-8") as f:
        train_text, held_text = train_bpe.split_text(f.read())
    return train_text, held_text


def batch(data, gen):
    """BATCH windows: BOS + CONTEXT-1 tokens; targets the next tokens."""
    ix = torch.randint(0, len(data) - CONTEXT, (BATCH,), generator=gen)
    seq = torch.stack([data[i:i + CONTEXT] for i in ix.tolist()])  # (B, CONTEXT)
    bos = torch.full((BATCH, 1), VOCAB - 1, dtype=torch.long)
    x = torch.cat([bos, seq[:, :-1]], 1)
    return x, seq


def eval_windows(data):
    """Consecutive held-out windows (BOS + up to CONTEXT-1 tokens), every token predicted once."""
    out, n = [], CONTEXT - 1
    for s in range(0, len(data), n):
        tgt = data[s:s + n]
        out.append((torch.cat([torch.tensor([VOCAB - 1]), tgt[:-1]])[None], tgt[None]))
        # the window's input is BOS + tgt[:-1]; predictions are tgt (first one from BOS alone)
    return out


@torch.no_grad()
def evaluate(model, windows):
    n_exits = len(EXIT_LAYERS) + 1
    nll = [0.0] * n_exits
    agree = [0] * n_exits
    count = 0
    for x, y in windows:
        logits = [model.head(h) for h in model(x)]
        final = logits[-1].argmax(-1)
        for e, lg in enumerate(logits):
            nll[e] += F.cross_entropy(lg.view(-1, VOCAB), y.view(-1), reduction="sum").item()
            agree[e] += (lg.argmax(-1) == final).sum().item()
        count += y.numel()
    return [math.exp(v / count) for v in nll], [a / count for a in agree], count


@torch.no_grad()
def exit_features(model, windows):
    """Per exit: (normed hidden states (N, DIM), max-prob (N,), agree-with-final (N,))."""
    feats = [[] for _ in EXIT_LAYERS]
    for x, _ in windows:
        hs = model(x)
        final = model.head(hs[-1]).argmax(-1).view(-1)
        for e in range(len(EXIT_LAYERS)):
            n = rmsnorm(hs[e], model.norm).view(-1, DIM)
            lg = n @ model.embed_tokens.weight.T
            feats[e].append((n, lg.softmax(-1).max(-1).values, (lg.argmax(-1) == final).float()))
    return [tuple(torch.cat(c) for c in zip(*f)) for f in feats]


def train_classifier(n, label, steps=300):
    """Logistic regression sigmoid(w·n + b) -> P(label); full-batch Adam, deterministic."""
    w = torch.zeros(DIM, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.02)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(n @ w + b, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def auc(score, label):
    """Area under the ROC curve: P(score of an agreeing token > score of a disagreeing one)."""
    order = score.double().argsort()
    rank = torch.empty(len(score), dtype=torch.float64)
    rank[order] = torch.arange(1, len(score) + 1, dtype=torch.float64)
    pos = label.sum().item()
    neg = len(label) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    return float((rank[label > 0.5].sum() - pos * (pos + 1) / 2) / (pos * neg))


def pick_threshold(score, label, target=0.9):
    """Lowest threshold whose exited tokens agree with full depth at least `target` of the
    time (scores sorted high to low; the agreement of the top-k as k grows)."""
    order = score.argsort(descending=True)
    s, lab = score[order], label[order]
    prec = lab.cumsum(0) / torch.arange(1, len(lab) + 1)
    ok = (prec >= target).nonzero()
    if len(ok) == 0:
        return 1.0
    k = ok[-1].item()
    return round(float(s[k]), 3)


def export(model, out, classifiers, thresholds):
    sd = {"model.embed_tokens.weight": model.embed_tokens.weight}
    for l, L in enumerate(model.layers):
        pre = f"model.layers.{l}."
        sd[pre + "input_layernorm.weight"] = L.input_layernorm
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[pre + f"self_attn.{name}.weight"] = getattr(L, name).weight
        sd[pre + "post_attention_layernorm.weight"] = L.post_attention_layernorm
        for name in ("gate_proj", "up_proj", "down_proj"):
            sd[pre + f"mlp.{name}.weight"] = getattr(L, name).weight
    sd["model.norm.weight"] = model.norm
    for e, (w, b) in enumerate(classifiers):
        sd[f"model.exit_heads.{e}.classifier.weight"] = w.view(1, DIM)
        sd[f"model.exit_heads.{e}.classifier.bias"] = b.view(1)
    sd = {k: v.detach().float().contiguous() for k, v in sd.items()}
    safetensors_io.write(os.path.join(out, "model.safetensors"), sd, {"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": VOCAB - 1,
        "eos_token_id": VOCAB - 1,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": DIM,
        "initializer_range": 0.02,
        "intermediate_size": HIDDEN,
        "max_position_embeddings": MAX_POS,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": N_HEADS,
        "num_hidden_layers": N_LAYERS,
        "num_key_value_heads": N_KV_HEADS,
        "pretraining_tp": 1,
        "rms_norm_eps": EPS,
        "rope_scaling": None,
        "rope_theta": THETA,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.44.0",
        "use_cache": True,
        "vocab_size": VOCAB,
        "early_exit": {
            "exit_layers": EXIT_LAYERS,
            "head": "shared",
            "classifier": bool(classifiers),
            "measure": "max-prob",
            "thresholds": thresholds,
        },
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def lr_at(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * t))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=train_bpe.DEFAULT_DATA)
    ap.add_argument("--out", default=train_bpe.DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=STEPS)
    # One intra-op thread: on the shared 2-core machine OpenMP's barriers made 2 threads 2.5x
    # slower than 1, and one thread makes the float results independent of the core count.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-classifier", action="store_true")
    ap.add_argument("--bench", action="store_true", help="time 5 steps and stop")
    args = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)

    os.makedirs(args.out, exist_ok=True)
    train_text, held_text = load_data(args.data)
    tok_path = os.path.join(args.out, "tokenizer.json")
    if not os.path.exists(tok_path):  # the tokenizer is a product of train_bpe.py
        merges = train_bpe.train(train_text)
        vocab, special = train_bpe.build(merges)
        with open(tok_path, "w", encoding="utf-8") as f:
            json.dump(train_bpe.tokenizer_json(vocab, merges, special), f, ensure_ascii=False,
                      indent=1)
            f.write("\n")
        with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
            json.dump(train_bpe.tokenizer_config(special), f, indent=2)
            f.write("\n")
    tok = train_bpe.load(tok_path)
    assert tok.special_id == VOCAB - 1
    train_ids = torch.tensor(tok.encode(train_text, add_special=False))
    held_ids = torch.tensor(tok.encode(held_text, add_special=False))
    print(f"tokens: train {len(train_ids)}, held-out {len(held_ids)}", flush=True)

    model = EarlyExitLlama()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(SEED)
    wsum = sum(EXIT_WEIGHTS)
    steps = 5 if args.bench else args.steps
    t_train = time.time()
    log = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps)
        x, y = batch(train_ids, gen)
        losses = [F.cross_entropy(model.head(h).view(-1, VOCAB), y.view(-1)) for h in model(x)]
        loss = sum(w * l for w, l in zip(EXIT_WEIGHTS, losses)) / wsum
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            msg = (f"step {step:5d} lr {lr_at(step, steps):.2e} loss {loss.item():.3f} exits "
                   + " ".join(f"{l.item():.3f}" for l in losses)
                   + f" ({time.time() - t_train:.0f}s)")
            log.append(msg)
            print(msg, flush=True)
    train_s = time.time() - t_train
    if args.bench:
        print(f"{n_params} params; {train_s / steps:.2f} s/step at batch {BATCH}x{CONTEXT}")
        return

    model.eval()
    ppl, agree, n_eval = evaluate(model, eval_windows(held_ids))
    # Classifiers and thresholds come from training windows only (seeded, not the held-out).
    cal_gen = torch.Generator().manual_seed(SEED + 1)
    cal = [batch(train_ids, cal_gen) for _ in range(16)]
    feats = exit_features(model, cal)
    classifiers = []
    if not args.no_classifier:
        with torch.enable_grad():
            classifiers = [train_classifier(n, lab) for n, _, lab in feats]
    thresholds = [pick_threshold(mp, lab) for _, mp, lab in feats]
    export(model, args.out, classifiers, thresholds)

    # What the default thresholds do on the held-out text (teacher-forced estimate).
    hf = exit_features(model, eval_windows(held_ids))
    remaining = torch.ones(len(hf[0][1]), dtype=torch.bool)
    rows = []
    for e, (_, mp, lab) in enumerate(hf):
        fire = remaining & (mp >= thresholds[e])
        rows.append((fire.float().mean().item(),
                     lab[fire].mean().item() if fire.any() else float("nan")))
        remaining &= ~fire
    clf_rows = []
    for e, (w, b) in enumerate(classifiers):
        n, mp, lab = hf[e]
        clf_rows.append((auc(torch.sigmoid(n @ w + b), lab), auc(mp, lab), lab.mean().item()))
    total_s = time.time() - t0
    write_report(args, n_params, len(train_ids), len(held_ids), n_eval, ppl, agree, thresholds,
                 rows, clf_rows, train_s, total_s, steps, log)
    print(f"held-out ppl {ppl}, agreement {agree}, thresholds {thresholds}, {total_s:.0f}s")


def write_report(args, n_params, n_train, n_held, n_eval, ppl, agree, thresholds, rows, clf_rows,
                 train_s, total_s, steps, log):
    names = [f"exit after layer {l} ({l + 1} of {N_LAYERS} layers)" for l in EXIT_LAYERS]
    names.append(f"full depth (layer {N_LAYERS - 1})")
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# eexit-shakespeare: how it was trained",
        "",
        "A small Llama-architecture model with early exits, trained from scratch by",
        "`tools/train_early_exit.py` on tinyshakespeare (first 90% of the characters; the last",
        "10% is held out and used only for the numbers below). Ours to ship: our script, our data",
        "split, our tokenizer (`tools/train_bpe.py`).",
        "",
        "## Shape",
        f"- dim {DIM}, {N_LAYERS} layers, {N_HEADS} heads (head_dim {HEAD_DIM}), {N_KV_HEADS} KV "
        f"heads (GQA), SwiGLU hidden {HIDDEN}, vocab {VOCAB}, tied embeddings, no biases",
        f"- RMSNorm eps {EPS}, RoPE theta {THETA:g} (HF rotate_half), trained context {CONTEXT}, "
        f"max_position_embeddings {MAX_POS}",
        f"- {n_params} parameters, F32 safetensors",
        f"- exit points after layers {EXIT_LAYERS} (0-based) and the last layer; shared head "
        "(final RMSNorm + LM head, as LayerSkip)"
        + ("; a classifier (linear dim->1 + sigmoid on RMSNorm(h, final norm)) per early exit"
           if clf_rows else ""),
        "",
        "## Tokenizer",
        f"Byte-level BPE, GPT-2 split rules and bytes-to-unicode, 256 byte tokens (id = byte) + "
        f"767 merges + `<|endoftext|>` = {VOCAB - 1}, used as BOS and EOS (the post-processor "
        "prepends it). Trained on the first 90% only; ties broken lexicographically.",
        "",
        "## Training",
        f"- loss: weighted mean of the cross-entropies at every exit, weights {EXIT_WEIGHTS} "
        "(early to final); the fixed weights grow with depth so the final exit stays the "
        "priority while the early exits learn to predict the next token from their hidden state",
        f"- {steps} steps of AdamW (betas 0.9/0.95, weight decay {WEIGHT_DECAY} on matrices), "
        f"batch {BATCH} x {CONTEXT} tokens (BOS + 255 at seeded random offsets), lr {LR} with "
        f"{WARMUP} warmup steps and cosine decay to {MIN_LR}, grad clip 1.0, seed {SEED}",
        f"- tokens: {n_train} train, {n_held} held-out",
        "- classifiers (backbone frozen): logistic regression on 16 x 256 training-window "
        "tokens, label = exit argmax equals full-depth argmax" if clf_rows else
        "- no classifiers",
        "- default thresholds (`max-prob`): per exit, the lowest max-probability at which the "
        "exited training tokens agree with full depth 90% of the time",
        "",
        "Command (from the repository root):",
        "```",
        "/usr/bin/python3 tools/train_bpe.py",
        "/usr/bin/python3 tools/train_early_exit.py" + (
            f" --steps {steps}" if steps != STEPS else ""),
        "```",
        f"Wall time: {total_s / 60:.1f} min ({train_s / 60:.1f} min of training steps) with "
        f"torch.set_num_threads({args.threads}) on {cpu} ({platform.machine()}, "
        f"{os.cpu_count()} cores visible, shared with other jobs), torch {torch.__version__}.",
        "",
        "## Held-out results (last 10% of tinyshakespeare)",
        f"{n_eval} predicted tokens (windows of BOS + 255 tokens). Agreement = fraction of "
        "positions where the exit's argmax equals the full-depth argmax (teacher-forced greedy).",
        "",
        "| exit point | perplexity | agreement with full depth |",
        "|---|---|---|",
    ]
    for name, p, a in zip(names, ppl, agree):
        lines.append(f"| {name} | {p:.2f} | {a * 100:.1f}% |")
    lines += [
        "",
        f"With the default thresholds {thresholds} (max-prob; a token leaves at the first exit "
        "whose score reaches its threshold), teacher-forced on the held-out text:",
        "",
        "| exit point | threshold | tokens exiting here | their agreement with full depth |",
        "|---|---|---|---|",
    ]
    rest = 1.0
    for e, (frac, ag) in enumerate(rows):
        lines.append(f"| {names[e]} | {thresholds[e]} | {frac * 100:.1f}% | {ag * 100:.1f}% |")
        rest -= frac
    lines.append(f"| {names[-1]} | - | {rest * 100:.1f}% | 100% |")
    if clf_rows:
        lines += ["", "How well each confidence score separates held-out tokens whose exit argmax "
                  "agrees with full depth from those that do not (ROC AUC; 0.5 = chance):", "",
                  "| exit point | classifier AUC | max-prob AUC | agreement base rate |",
                  "|---|---|---|---|"]
        for e, (a_clf, a_mp, base) in enumerate(clf_rows):
            lines.append(f"| {names[e]} | {a_clf:.3f} | {a_mp:.3f} | {base * 100:.1f}% |")
        lines += ["", "The linear classifier on the hidden state does not beat the softmax "
                  "max-probability here, so `max-prob` is the default measure; the classifier "
                  "heads ship so that the `classifier` measure can be exercised."]
    lines += ["", "## Training log", "```"] + log + ["```", ""]
    with open(os.path.join(args.out, "TRAINING.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
