#!/usr/bin/python3
"""Converts a llama2.c checkpoint (legacy v0 or float32 v1) to a Hugging Face
LlamaForCausalLM directory: config.json + model.safetensors (or shards + index).

usage: /usr/bin/python3 tools/llama2c_to_hf.py IN.bin OUTDIR [--dtype f32|f16|bf16] [--shards N]

llama2.c rotates adjacent pairs (2i, 2i+1) of each head; HF's rotate_half pairs i with
i + head_dim/2. As transformers' convert_llama_weights_to_hf.py does, the rows of q_proj
and k_proj are permuted per head so that the HF model gives the same logits.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

MAGIC = 0x616B3432  # "ak42"


def read_llama2c(path):
    """Returns (params dict, {name: float32 tensor}) with llama2.c names, layers stacked."""
    with open(path, "rb") as f:
        data = f.read()
    if struct.unpack_from("<I", data, 0)[0] == MAGIC:
        version = struct.unpack_from("<i", data, 4)[0]
        if version != 1:
            raise ValueError(f"{path}: version {version} not supported")
        dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", data, 8)
        shared = data[36] != 0
        offset = 256
    else:
        version = 0
        dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", data, 0)
        shared = vocab > 0
        vocab = abs(vocab)
        offset = 28
    hd = dim // n_heads
    kv = n_kv * hd
    floats = np.frombuffer(data, dtype="<f4", offset=offset)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        t = torch.from_numpy(floats[pos:pos + n].copy()).reshape(shape)
        pos += n
        return t

    w = {}
    if version == 0:
        w["tok"] = take(vocab, dim)
        w["rms_att"] = take(n_layers, dim)
    else:
        w["rms_att"] = take(n_layers, dim)
        w["rms_ffn"] = take(n_layers, dim)
        w["rms_final"] = take(dim)
        w["tok"] = take(vocab, dim)
    w["wq"] = take(n_layers, dim, dim)
    w["wk"] = take(n_layers, kv, dim)
    w["wv"] = take(n_layers, kv, dim)
    w["wo"] = take(n_layers, dim, dim)
    if version == 0:
        w["rms_ffn"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    if version == 0:
        w["rms_final"] = take(dim)
        take(seq_len, hd // 2)  # freq_cis real
        take(seq_len, hd // 2)  # freq_cis imag
    w["wcls"] = w["tok"] if shared else take(vocab, dim)
    if pos != floats.size:
        raise ValueError(f"{path}: {floats.size - pos} trailing floats")
    params = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
                  n_kv_heads=n_kv, vocab_size=vocab, seq_len=seq_len, shared=shared)
    return params, w


def permute(w, n_heads, dim1, dim2):
    """transformers' permute: interleaved-pair rows -> rotate_half rows, per head."""
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def to_hf(params, w):
    """Returns (config dict, {HF name: float32 tensor})."""
    p = params
    dim, n_heads, n_kv = p["dim"], p["n_heads"], p["n_kv_heads"]
    kv = n_kv * (dim // n_heads)
    t = {"model.embed_tokens.weight": w["tok"]}
    for i in range(p["n_layers"]):
        pre = f"model.layers.{i}."
        t[pre + "input_layernorm.weight"] = w["rms_att"][i]
        t[pre + "self_attn.q_proj.weight"] = permute(w["wq"][i], n_heads, dim, dim)
        t[pre + "self_attn.k_proj.weight"] = permute(w["wk"][i], n_kv, kv, dim)
        t[pre + "self_attn.v_proj.weight"] = w["wv"][i]
        t[pre + "self_attn.o_proj.weight"] = w["wo"][i]
        t[pre + "post_attention_layernorm.weight"] = w["rms_ffn"][i]
        t[pre + "mlp.gate_proj.weight"] = w["w1"][i]
        t[pre + "mlp.up_proj.weight"] = w["w3"][i]
        t[pre + "mlp.down_proj.weight"] = w["w2"][i]
    t["model.norm.weight"] = w["rms_final"]
    if not p["shared"]:
        t["lm_head.weight"] = w["wcls"]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": dim // n_heads,
        "hidden_act": "silu",
        "hidden_size": dim,
        "initializer_range": 0.02,
        "intermediate_size": p["hidden_dim"],
        "max_position_embeddings": p["seq_len"],
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": n_heads,
        "num_hidden_layers": p["n_layers"],
        "num_key_value_heads": n_kv,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": p["shared"],
        "torch_dtype": "float32",
        "transformers_version": "4.44.0",
        "use_cache": True,
        "vocab_size": p["vocab_size"],
    }
    return config, t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("outdir")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--shards", type=int, default=1)
    args = ap.parse_args()
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    config, tensors = to_hf(*read_llama2c(args.input))
    config["torch_dtype"] = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[args.dtype]
    tensors = {k: v.to(dt).contiguous() for k, v in tensors.items()}
    os.makedirs(args.outdir, exist_ok=True)
    # Stale files from an earlier run with another layout would confuse load_hf's choice.
    for name in os.listdir(args.outdir):
        if name.endswith(".safetensors") or name == "model.safetensors.index.json":
            os.remove(os.path.join(args.outdir, name))
    with open(os.path.join(args.outdir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    meta = {"format": "pt"}
    if args.shards > 1:
        safetensors_io.write_sharded(args.outdir, tensors, args.shards, meta)
    else:
        safetensors_io.write(os.path.join(args.outdir, "model.safetensors"), tensors, meta)


if __name__ == "__main__":
    main()
