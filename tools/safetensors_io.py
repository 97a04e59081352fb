"""Tiny safetensors reader/writer (F32/F16/BF16) without the safetensors package.

Format: 8-byte little-endian header length n, n bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the raw little-endian data; offsets are relative to the end of the header.
"""
import json
import os
import struct

import torch

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_NAMES = {v: k for k, v in _DTYPES.items()}
# torch 1.13 has no uint16, so 2-byte types travel as int16 bit patterns.
_RAW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _to_bytes(t):
    t = t.detach().contiguous().cpu()
    return t.view(_RAW[t.dtype]).numpy().tobytes()


def write(path, tensors, metadata=None):
    """Writes {name: tensor} (F32/F16/BF16 tensors) to path, in the given order."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        if t.dtype not in _NAMES:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        b = _to_bytes(t)
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # pad so the data starts 8-byte aligned, as the reference does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return offset


def read(path):
    """Returns ({name: tensor}, metadata) for an F32/F16/BF16 safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        dt = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        raw = bytearray(data[8 + n + b:8 + n + e])
        t = torch.frombuffer(raw, dtype=_RAW[dt]).view(dt) if e > b else torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"])
    return out, metadata


def write_sharded(outdir, tensors, n_shards, metadata=None):
    """Writes model-0000i-of-0000n.safetensors shards (tensors split in order, about evenly
    by count) and model.safetensors.index.json as transformers does."""
    names = list(tensors)
    n_shards = max(1, min(n_shards, len(names)))
    per = -(-len(names) // n_shards)
    weight_map, total = {}, 0
    for i in range(n_shards):
        part = names[i * per:(i + 1) * per]
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        total += write(os.path.join(outdir, fname), {k: tensors[k] for k in part}, metadata)
        weight_map.update({k: fname for k in part})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(outdir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def read_dir(d):
    """All tensors of an HF directory (single file or sharded)."""
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        return read(single)[0]
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        wm = json.load(f)["weight_map"]
    out = {}
    for shard in sorted(set(wm.values())):
        out.update(read(os.path.join(d, shard))[0])
    return out
