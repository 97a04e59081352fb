#!/usr/bin/python3
"""Writes a random-weight Llama checkpoint in Hugging Face layout, for benchmarks.

usage: /usr/bin/python3 tools/make_random_model.py OUTDIR [--dim 768 --layers 12 --heads 12
       --kv-heads 12 --hidden 2048 --vocab 32000 --max-seq-len 2048 --seed 0]
       [--preset llama-3.2-1b] [--tied] [--dtype f32|bf16] [--rope-llama3]
       [--exit-layers 3,7]

OUTDIR gets config.json (as transformers writes it for LlamaForCausalLM) and
model.safetensors (F32 and an untied lm_head unless --dtype / --tied say otherwise).
Weights ~ N(0, 0.02), norms 1, all drawn from one seeded generator in a fixed order, so
the same arguments give the same bytes. The default shape is GPT-2-small-like: ~110M
parameters streamed per decode token.

--preset llama-3.2-1b is the config of meta-llama/Llama-3.2-1B and of
facebook/layerskip-llama3.2-1B (dim 2048, 16 layers, 32/8 heads, hidden 8192, vocab
128256, tied embeddings, rope_theta 500000 with "llama3" rope scaling, bf16); other flags
given after it override its values (a --vocab below its bos/eos ids moves them to the last
two ids). --exit-layers adds our "early_exit" block with no exit
head weights, i.e. LayerSkip's recipe: each exit uses the final norm and the shared head.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def make(dim, layers, heads, kv_heads, hidden, vocab, seed, tied=False, dtype=torch.float32):
    if dim % heads or heads % kv_heads:
        raise ValueError("heads must divide dim and kv_heads must divide heads")
    head_dim = dim // heads
    kv = kv_heads * head_dim
    g = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.empty(*shape).normal_(0.0, 0.02, generator=g)

    t = {"model.embed_tokens.weight": normal(vocab, dim)}
    for l in range(layers):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = torch.ones(dim)
        t[p + "self_attn.q_proj.weight"] = normal(dim, dim)
        t[p + "self_attn.k_proj.weight"] = normal(kv, dim)
        t[p + "self_attn.v_proj.weight"] = normal(kv, dim)
        t[p + "self_attn.o_proj.weight"] = normal(dim, dim)
        t[p + "post_attention_layernorm.weight"] = torch.ones(dim)
        t[p + "mlp.gate_proj.weight"] = normal(hidden, dim)
        t[p + "mlp.up_proj.weight"] = normal(hidden, dim)
        t[p + "mlp.down_proj.weight"] = normal(dim, hidden)
    t["model.norm.weight"] = torch.ones(dim)
    if not tied:
        t["lm_head.weight"] = normal(vocab, dim)
    return {k: v.to(dtype) for k, v in t.items()}


PRESETS = {
    # meta-llama/Llama-3.2-1B's config.json (and facebook/layerskip-llama3.2-1B's).
    "llama-3.2-1b": dict(dim=2048, layers=16, heads=32, kv_heads=8, hidden=8192, vocab=128256,
                         max_seq_len=131072, tied=True, dtype="bf16", rope_llama3=True,
                         rope_theta=500000.0, bos=128000, eos=128001),
}


def config(dim, layers, heads, kv_heads, hidden, vocab, max_seq_len, tied=False,
           dtype="f32", rope_llama3=False, rope_theta=10000.0, bos=1, eos=2, exit_layers=None):
    # The keys transformers writes for LlamaForCausalLM (save_pretrained sorts them).
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "head_dim": dim // heads,
        "hidden_act": "silu",
        "hidden_size": dim,
        "initializer_range": 0.02,
        "intermediate_size": hidden,
        "max_position_embeddings": max_seq_len,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        if rope_llama3 else None,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tied,
        "torch_dtype": {"f32": "float32", "bf16": "bfloat16"}[dtype],
        "transformers_version": "4.44.2",
        "use_cache": True,
        "vocab_size": vocab,
    } | ({"early_exit": {"exit_layers": exit_layers}} if exit_layers else {})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--dim", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int, help="default: --heads")
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--max-seq-len", type=int)
    ap.add_argument("--tied", action="store_true", default=None, help="tie_word_embeddings")
    ap.add_argument("--dtype", choices=["f32", "bf16"])
    ap.add_argument("--rope-llama3", action="store_true", default=None,
                    help='"llama3" rope_scaling as Llama 3.1/3.2 configure it')
    ap.add_argument("--exit-layers", help="comma-separated layer indices, e.g. 3,7")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    o = dict(dim=768, layers=12, heads=12, kv_heads=None, hidden=2048, vocab=32000,
             max_seq_len=2048, tied=False, dtype="f32", rope_llama3=False, rope_theta=10000.0,
             bos=1, eos=2)
    if a.preset:
        o.update(PRESETS[a.preset])
    for k in ("dim", "layers", "heads", "kv_heads", "hidden", "vocab", "max_seq_len", "tied",
              "dtype", "rope_llama3"):
        if getattr(a, k) is not None:
            o[k] = getattr(a, k)
    if o["kv_heads"] is None:
        o["kv_heads"] = o["heads"]
    if max(o["bos"], o["eos"]) >= o["vocab"]:  # a preset's ids past a smaller --vocab:
        o["bos"], o["eos"] = o["vocab"] - 2, o["vocab"] - 1  # at its end, as Llama 3's are
    exits = [int(x) for x in a.exit_layers.split(",")] if a.exit_layers else None
    os.makedirs(a.outdir, exist_ok=True)
    tensors = make(o["dim"], o["layers"], o["heads"], o["kv_heads"], o["hidden"], o["vocab"],
                   a.seed, o["tied"], {"f32": torch.float32, "bf16": torch.bfloat16}[o["dtype"]])
    cfg = config(o["dim"], o["layers"], o["heads"], o["kv_heads"], o["hidden"], o["vocab"],
                 o["max_seq_len"], o["tied"], o["dtype"], o["rope_llama3"], o["rope_theta"],
                 o["bos"], o["eos"], exits)
    # Weights first, config last: a directory with a config.json is complete.
    tmp = os.path.join(a.outdir, "model.safetensors.tmp")
    n = safetensors_io.write(tmp, tensors, {"format": "pt"})
    os.replace(tmp, os.path.join(a.outdir, "model.safetensors"))
    with open(os.path.join(a.outdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    params = sum(x.numel() for x in tensors.values())
    print(f"{a.outdir}: {params / 1e6:.1f}M parameters, {n / 2**20:.0f} MiB of {o['dtype']} weights")


if __name__ == "__main__":
    main()
