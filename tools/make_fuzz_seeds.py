#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in tests/fuzz/, made from the real files.

    python3 tools/make_fuzz_seeds.py OUT_DIR [--shared ../shared]

Writes OUT_DIR/<target>/<seed> for every target except safetensors_fuzz (whose seeds are
committed in tests/fuzz/seeds/). Each seed stays under 64 KB: large real files are cut down
to a consistent subset (the first tokens of a vocabulary and the merges among them, a tiny
checkpoint with the real header layout), never copied whole. Deterministic.
"""
import argparse
import json
import os
import struct
import sys

LIMIT = 64 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(out, target, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > LIMIT:
        sys.exit(f"make_fuzz_seeds: {target}/{name} is {len(data)} bytes (> {LIMIT})")
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def cut_tokenizer_json(j, keep):
    """The first `keep` ids of a BPE tokenizer.json (plus the added tokens), the merges among
    them, and every other section (normalizer, pre_tokenizer, decoder, post_processor) as is."""
    j = json.loads(json.dumps(j))
    added = j.get("added_tokens") or []  # kept whole: post-processors name them
    special = {a["id"] for a in added}
    vocab = {p: i for p, i in j["model"]["vocab"].items() if i < keep or i in special}
    merges = []
    for m in j["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    j["model"]["vocab"] = vocab
    j["model"]["merges"] = merges
    j["added_tokens"] = added
    return json.dumps(j, ensure_ascii=False, separators=(",", ":"))


def tokenizer_json_seeds(out, shared):
    own = json.load(open(os.path.join(ROOT, "models/eexit-shakespeare/tokenizer.json")))
    write(out, "tokenizer_json_fuzz", "bytelevel_300", cut_tokenizer_json(own, 300))
    tl = json.load(open(os.path.join(shared, "models/tokenizers/tinyllama-1.1b-chat-v1.0/tokenizer.json")))
    write(out, "tokenizer_json_fuzz", "sentencepiece_400", cut_tokenizer_json(tl, 400))
    # The Metaspace pre-tokenizer form of the same vocabulary (newer tokenizer.json files).
    meta = json.loads(cut_tokenizer_json(tl, 300))
    meta["normalizer"] = None
    meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                             "prepend_scheme": "first", "split": True}
    write(out, "tokenizer_json_fuzz", "metaspace_300", json.dumps(meta, ensure_ascii=False))


def llama2c_tokenizer(records, max_len):
    b = struct.pack("<i", max_len)
    for piece, score in records:
        b += struct.pack("<fi", score, len(piece)) + piece
    return b


def read_llama2c_tokenizer(path):
    data = open(path, "rb").read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, recs = 4, []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        recs.append((data[off + 8:off + 8 + n], score))
        off += 8 + n
    return max_len, recs


def tokenizer_bin_seeds(out, shared):
    max_len, recs = read_llama2c_tokenizer(os.path.join(shared, "models/stories260K/tok512.bin"))
    write(out, "tokenizer_bin_fuzz", "tok512", llama2c_tokenizer(recs, max_len))
    max_len, recs = read_llama2c_tokenizer(os.path.join(shared, "models/tokenizers/llama2c/tokenizer.bin"))
    write(out, "tokenizer_bin_fuzz", "llama2_first_600", llama2c_tokenizer(recs[:600], max_len))


def llama2c_checkpoints(out):
    """Tiny checkpoints in both header versions (dim 8, 2 heads, 1 KV head, 1 layer)."""
    dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 1, 16, 8
    hd = dim // heads
    per_layer = dim + dim * dim + 2 * dim * kv * hd + dim * dim + dim + 3 * dim * hidden
    def floats(n, base):
        return struct.pack(f"<{n}f", *[base + 0.01 * (i % 97) for i in range(n)])
    body = floats(vocab * dim + layers * per_layer + dim, 0.5)
    freq = floats(seq * hd, 0.0)  # v0: freq_cis real + imag, (seq, head_dim/2) each
    v0 = struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq) + body + freq
    write(out, "llama2c_checkpoint_fuzz", "v0_shared", v0)
    v0u = struct.pack("<7i", dim, hidden, layers, heads, kv, -vocab, seq) + body + freq + floats(vocab * dim, 1.0)
    write(out, "llama2c_checkpoint_fuzz", "v0_untied", v0u)
    hdr = struct.pack("<Ii7iB", 0x616B3432, 1, dim, hidden, layers, heads, kv, vocab, seq, 1)
    write(out, "llama2c_checkpoint_fuzz", "v1_shared", hdr + b"\0" * (256 - len(hdr)) + body)


def config_seeds(out, shared):
    write(out, "config_json_fuzz", "eexit_shakespeare",
          open(os.path.join(ROOT, "models/eexit-shakespeare/config.json"), "rb").read())
    tl = json.load(open(os.path.join(shared, "models/tokenizers/tinyllama-1.1b-chat-v1.0/config.json")))
    write(out, "config_json_fuzz", "tinyllama", json.dumps(tl))
    q = dict(tl, architectures=["Qwen2ForCausalLM"], sliding_window=64, use_sliding_window=True)
    write(out, "config_json_fuzz", "qwen2_window", json.dumps(q))
    l3 = dict(tl, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
              eos_token_id=[2, 3])
    write(out, "config_json_fuzz", "llama3_scaling", json.dumps(l3))


def openai_seeds(out):
    # First byte: bit 0 chat, bit 1 server runs all-confident (see openai_request_fuzz.cpp).
    seeds = {
        "completion": (0, {"model": "eexit-shakespeare", "prompt": "ROMEO:", "max_tokens": 16,
                           "temperature": 0.7, "top_p": 0.9, "stop": ["\n\n"], "seed": 3,
                           "logprobs": 2, "stream": True, "stream_options": {"include_usage": True}}),
        "completion_ids": (0, {"prompt": [1, 2, 3], "n": 1, "echo": False, "ignore_eos": True}),
        "chat": (1, {"messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                     "max_completion_tokens": 8, "logprobs": True, "top_logprobs": 2,
                     "frequency_penalty": 0.5, "presence_penalty": -0.5, "top_k": 40, "min_p": 0.05}),
        "chat_early_exit": (3, {"messages": [{"role": "user", "content": "Hello"}],
                                "early_exit": {"policy": "all-confident", "threshold": 0.4},
                                "repetition_penalty": 1.1}),
        "completion_full": (2, {"prompt": "x", "early_exit": {"policy": "full"}}),
    }
    for name, (flag, body) in seeds.items():
        write(out, "openai_request_fuzz", name, bytes([flag]) + json.dumps(body).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    a = ap.parse_args()
    tokenizer_json_seeds(a.out, a.shared)
    tokenizer_bin_seeds(a.out, a.shared)
    llama2c_checkpoints(a.out)
    config_seeds(a.out, a.shared)
    openai_seeds(a.out)


if __name__ == "__main__":
    main()
