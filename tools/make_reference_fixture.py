#!/usr/bin/python3
"""Writes tests/fixtures/stories260K_logits.json: reference logits of stories260K.bin.

Regenerate (from the repository root, with ../shared beside it):
    /usr/bin/python3 tools/make_reference_fixture.py [SHARED_DIR] [OUT_JSON]

The prompt is BOS plus the first greedy tokens of shared/models/stories260K/
greedy_reference_t0.txt, run as one prefill, then 3 greedy decode steps (each feeds the
previous argmax). Logits come from tools/reference_forward.py in float64 and are stored
rounded to float32 (shortest decimal that round-trips). The same logits are recomputed
from the HF conversion (tools/llama2c_to_hf.py, rotate_half RoPE) as a cross-check.
"""
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama2c_to_hf  # noqa: E402
import reference_forward as ref  # noqa: E402
import safetensors_io  # noqa: E402

PROMPT = [1, 403, 407, 261]  # BOS + the first 3 ids of greedy_reference_t0.txt
DECODE_STEPS = 3


def f32_list(t):
    # str(np.float32) is the shortest decimal that reads back as the same float32.
    return [float(str(np.float32(v))) for v in t.tolist()]


def run(model):
    """[(tokens fed, positions, logits at the last fed position)] for prefill + decode."""
    steps = []
    seq = list(PROMPT)
    fed, pos = list(PROMPT), list(range(len(PROMPT)))
    for _ in range(DECODE_STEPS + 1):
        logits = ref.forward(model, seq)[-1]  # recomputed over the whole prefix: plain
        steps.append((fed, pos, logits))
        nxt = int(logits.argmax())
        fed, pos = [nxt], [len(seq)]
        seq.append(nxt)
    return steps


def main():
    root = os.path.dirname(HERE)
    shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "tests", "fixtures",
                                                              "stories260K_logits.json")
    bin_path = os.path.join(shared, "models", "stories260K", "stories260K.bin")
    steps = run(ref.load(bin_path))

    # Cross-check: the HF conversion must give the same logits with rotate_half RoPE.
    with tempfile.TemporaryDirectory() as d:
        config, tensors = llama2c_to_hf.to_hf(*llama2c_to_hf.read_llama2c(bin_path))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f)
        safetensors_io.write(os.path.join(d, "model.safetensors"), tensors)
        for (_, _, a), (_, _, b) in zip(steps, run(ref.load(d))):
            diff = float((a - b).abs().max())
            assert diff < 1e-9, f"HF conversion differs from .bin by {diff}"

    with open(os.path.join(shared, "models", "stories260K", "greedy_reference_t0.txt")) as f:
        greedy = next(ln for ln in f if ln.startswith("ids:")).split()[1:]
    expected = [int(t) for t in greedy[: len(PROMPT) - 1 + DECODE_STEPS + 1]]
    got = PROMPT[1:] + [int(s[2].argmax()) for s in steps]
    assert got == expected, f"greedy ids {got} != greedy_reference_t0 {expected}"

    fixture = {
        "model": "models/stories260K/stories260K.bin",
        "generator": "tools/make_reference_fixture.py (float64 PyTorch, stored as float32)",
        "rope": "interleaved",
        "vocab_size": len(steps[0][2]),
        "prompt": PROMPT,
        "steps": [{"kind": "prefill" if i == 0 else "decode", "tokens": fed, "positions": pos,
                   "argmax": int(lg.argmax()), "logits": f32_list(lg)}
                  for i, (fed, pos, lg) in enumerate(steps)],
    }
    with open(out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: argmax {[s['argmax'] for s in fixture['steps']]}")


if __name__ == "__main__":
    main()
