#!/usr/bin/python3
"""Float64 reference figures of a model for the C++ forward to be compared with: logits (final
head and each shared exit head) and every layer's K/V at chosen positions of a prompt.

usage: /usr/bin/python3 tools/reference_dump.py MODEL OUT.json --tokens N [--seed S]
           [--vocab-below V] [--check P1,P2,...] [--exit-layers L1,L2,...]
       /usr/bin/python3 tools/reference_dump.py MODEL OUT.json --ids ID,ID,... [...]

MODEL: anything tools/reference_forward.py loads (HF directory, GGUF, llama2.c .bin). The
prompt is N token ids drawn uniformly from [0, V) by torch's generator seeded with S (or
--ids), fed at positions 0..N-1 in one causal pass. OUT.json holds:
  tokens, check (positions), inv_freq (head_dim/2 RoPE frequencies, float64),
  logits[i] (vocab) at check[i], exit_logits[e][i] through the final norm + shared head
  after layer exit_layers[e] (LayerSkip's exit), k[l][i] / v[l][i] (n_kv_heads * head_dim,
  K after RoPE in the model's own pair layout, as a KV cache holds it).
Numbers are float64 written with repr (round-trips exactly).
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_forward as ref  # noqa: E402


def dump(model_path, tokens, check, exit_layers):
    t0 = time.time()
    m = ref.load(model_path)
    trace = {}
    with torch.no_grad():
        logits = ref.forward(m, tokens, trace=trace)
        exits = [ref.head(m, trace["h"][e][check]) for e in exit_layers]
    return {
        "model": os.path.basename(os.path.normpath(model_path)),
        "tokens": tokens,
        "check": check,
        "inv_freq": m.inv_freq.tolist(),
        "exit_layers": exit_layers,
        "logits": logits[check].tolist(),
        "exit_logits": [x.tolist() for x in exits],
        "k": [k[check].tolist() for k in trace["k"]],
        "v": [v[check].tolist() for v in trace["v"]],
        "seconds": round(time.time() - t0, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--tokens", type=int, help="prompt length (random ids)")
    ap.add_argument("--ids", help="comma-separated prompt ids instead of random ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-below", type=int, help="draw ids below this (default: the vocab)")
    ap.add_argument("--check", help="positions to dump (default: all)")
    ap.add_argument("--exit-layers", default="", help="shared-head exits to dump, e.g. 3")
    a = ap.parse_args()
    if a.ids:
        tokens = [int(x) for x in a.ids.split(",")]
    else:
        vocab = a.vocab_below or ref.load(a.model).tok.shape[0]
        g = torch.Generator().manual_seed(a.seed)
        tokens = torch.randint(0, vocab, (a.tokens,), generator=g).tolist()
    check = [int(x) for x in a.check.split(",")] if a.check else list(range(len(tokens)))
    assert all(0 <= p < len(tokens) for p in check), "--check positions must be < the prompt length"
    exits = [int(x) for x in a.exit_layers.split(",") if x]
    out = dump(a.model, tokens, check, exits)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, a.out)
    print("%s: %d positions checked of %d, %.1f s" % (a.out, len(check), len(tokens), out["seconds"]))


if __name__ == "__main__":
    main()
