#!/usr/bin/python3
"""Writes a random-weight Llama checkpoint in Hugging Face layout, for benchmarks.

usage: /usr/bin/python3 tools/make_random_model.py OUTDIR [--dim 768 --layers 12 --heads 12
       --kv-heads 12 --hidden 2048 --vocab 32000 --max-seq-len 2048 --seed 0]

OUTDIR gets config.json (as transformers writes it for LlamaForCausalLM) and
model.safetensors (F32, untied lm_head). Weights ~ N(0, 0.02), norms 1, all drawn from
one seeded generator in a fixed order, so the same arguments give the same bytes.
The default shape is GPT-2-small-like: ~110M parameters streamed per decode token.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def make(dim, layers, heads, kv_heads, hidden, vocab, seed):
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
    t["lm_head.weight"] = normal(vocab, dim)
    return t


def config(dim, layers, heads, kv_heads, hidden, vocab, max_seq_len):
    # The keys transformers writes for LlamaForCausalLM (save_pretrained sorts them).
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
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
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.44.2",
        "use_cache": True,
        "vocab_size": vocab,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--max-seq-len", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    kv_heads = a.kv_heads if a.kv_heads is not None else a.heads
    os.makedirs(a.outdir, exist_ok=True)
    tensors = make(a.dim, a.layers, a.heads, kv_heads, a.hidden, a.vocab, a.seed)
    cfg = config(a.dim, a.layers, a.heads, kv_heads, a.hidden, a.vocab, a.max_seq_len)
    # Weights first, config last: a directory with a config.json is complete.
    tmp = os.path.join(a.outdir, "model.safetensors.tmp")
    n = safetensors_io.write(tmp, tensors, {"format": "pt"})
    os.replace(tmp, os.path.join(a.outdir, "model.safetensors"))
    with open(os.path.join(a.outdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    params = sum(x.numel() for x in tensors.values())
    print(f"{a.outdir}: {params / 1e6:.1f}M parameters, {n / 2**20:.0f} MiB of F32 weights")


if __name__ == "__main__":
    main()
