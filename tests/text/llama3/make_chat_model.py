#!/usr/bin/python3
"""A tiny Llama with the Llama 3 vocabulary whose greedy output is known, for the chat test.

usage: /usr/bin/python3 make_chat_model.py OUTDIR   (OUTDIR holds the tokenizer files already)

tools/make_random_model.py writes a random checkpoint (dim 64, 1 layer, vocab 128256); this
script then makes it a bigram model: the layer's output projections are zeroed, so the final
hidden state is the last token's embedding, and embeddings and lm_head rows are set so that
  "\\n\\n" (271, ends the assistant header) -> "Hello" (9906) -> <|eot_id|> (128009)
  " world" (1917) -> "!" (0) -> <|end_of_text|> (128001)
  " moon" (18266) -> <|eom_id|> (128008)
  any other token -> "." (13)
config.json gets Llama 3's bos/eos ids (128000, 128001); generation_config.json (written
beside it by make_fixtures.mjs) adds 128008 and 128009, as Llama 3.x Instruct's does.
"""
import json
import os
import subprocess
import sys

import torch

here = os.path.dirname(os.path.abspath(__file__))
tools = os.path.join(here, "..", "..", "..", "tools")
sys.path.insert(0, tools)
import safetensors_io  # noqa: E402

out = sys.argv[1]
subprocess.run([sys.executable, os.path.join(tools, "make_random_model.py"), out, "--dim", "64",
                "--layers", "1", "--heads", "2", "--kv-heads", "2", "--hidden", "64",
                "--vocab", "128256", "--max-seq-len", "512", "--seed", "3"], check=True)
path = os.path.join(out, "model.safetensors")
t, _ = safetensors_io.read(path)
t["model.layers.0.self_attn.o_proj.weight"].zero_()
t["model.layers.0.mlp.down_proj.weight"].zero_()
emb = torch.zeros_like(t["model.embed_tokens.weight"])
emb[:, 0] = 1.0  # every token: the same direction, whose lm_head column favours "."
head = t["lm_head.weight"]
head[13, 0] = 1.0
chain = {271: 9906, 9906: 128009, 1917: 0, 0: 128001, 18266: 128008}
for k, (tok, nxt) in enumerate(chain.items(), start=1):
    emb[tok, k] = 4.0
    head[nxt, k] = 10.0
t["model.embed_tokens.weight"] = emb
safetensors_io.write(path, t)
cfg_path = os.path.join(out, "config.json")
cfg = json.load(open(cfg_path))
cfg.update(bos_token_id=128000, eos_token_id=128001, rope_theta=500000.0)
json.dump(cfg, open(cfg_path, "w"), indent=2)
