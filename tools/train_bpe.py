#!/usr/bin/python3
"""Byte-level BPE tokenizer for the embedded Shakespeare model, exported as HF tokenizer.json.

GPT-2 style: text is split by the GPT-2 pre-tokenizer pattern
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
(hand-written below: Debian has no `regex` module for \\p{..}), each piece is mapped to
GPT-2's bytes-to-unicode characters, and merges are learnt on the piece counts.

Vocabulary (1024 ids):
    0..255      one token per byte, id = byte value (piece = bytes_to_unicode[byte])
    256..1022   the 767 merges, in the order learnt (id = 256 + merge rank)
    1023        <|endoftext|>: the one special token, used as BOS and EOS; the
                TemplateProcessing post-processor prepends it to every encoded text.
Training: the first 90% of tinyshakespeare only (characters [0, len*9//10)). Each round
merges the most frequent adjacent pair; ties go to the lexicographically smallest
(left, right) pair of piece strings, so the result is deterministic.

usage: /usr/bin/python3 tools/train_bpe.py [--data PATH] [--out DIR]
  writes DIR/tokenizer.json and DIR/tokenizer_config.json (default models/eexit-shakespeare).
As a module: load(path) -> Tokenizer with encode(text, add_special=True) / decode(ids).
"""
import argparse
import collections
import json
import os
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")
DEFAULT_OUT = os.path.join(ROOT, "models", "eexit-shakespeare")
VOCAB_SIZE = 1024
SPECIAL = "<|endoftext|>"
GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")


def split_text(text):
    """(train, held-out): the first 90% of the characters and the last 10%."""
    cut = len(text) * 9 // 10
    return text[:cut], text[cut:]


def bytes_to_unicode():
    """GPT-2's table: printable bytes map to themselves, the rest to U+0100 + n."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


B2U = bytes_to_unicode()
U2B = {u: b for b, u in B2U.items()}


def _letter(c):
    return unicodedata.category(c).startswith("L")


def _number(c):
    return unicodedata.category(c).startswith("N")


def _space(c):
    return c.isspace()


def _other(c):
    return not (_letter(c) or _number(c) or _space(c))


def pre_split(text):
    """The GPT-2 pattern above as a scanner that tries the alternatives in order."""
    out, i, n = [], 0, len(text)
    while i < n:
        c, j = text[i], i
        if c == "'" and i + 1 < n:
            a, b = text[i + 1], text[i + 2] if i + 2 < n else ""
            if a + b in ("re", "ve", "ll"):
                j = i + 3
            elif a in "stmd":
                j = i + 2
        for cls in (_letter, _number, _other):  # ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
            if j != i:
                break
            k = i + 1 if c == " " and i + 1 < n and cls(text[i + 1]) else i
            if k < n and cls(text[k]):
                while k < n and cls(text[k]):
                    k += 1
                j = k
        if j == i:  # white space: \s+(?!\S) leaves the last one to prefix the next piece
            e = i
            while e < n and _space(text[e]):
                e += 1
            j = e if (e == n or e - i == 1) else e - 1
        out.append(text[i:j])
        i = j
    return out


def to_unicode(piece):
    return "".join(B2U[b] for b in piece.encode("utf-8"))


def train(text, vocab_size=VOCAB_SIZE):
    """Merges [(left, right)] learnt on text; len = vocab_size - 256 - 1 (the special)."""
    counts = collections.Counter(to_unicode(p) for p in pre_split(text))
    words = [list(w) for w in counts]  # symbols of each distinct piece
    freq = [counts[w] for w in counts]
    pairs = collections.Counter()
    where = collections.defaultdict(set)  # pair -> indices of words containing it
    for wi, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[a, b] += freq[wi]
            where[a, b].add(wi)
    merges = []
    while len(merges) < vocab_size - 257:
        best = min((p for p, c in pairs.items() if c > 0), key=lambda p: (-pairs[p], p),
                   default=None)
        if best is None:
            break
        merges.append(best)
        a, b = best
        for wi in sorted(where.pop(best, ())):
            w, f = words[wi], freq[wi]
            for x, y in zip(w, w[1:]):  # remove this word's old pairs
                pairs[x, y] -= f
            nw, k = [], 0
            while k < len(w):
                if k + 1 < len(w) and w[k] == a and w[k + 1] == b:
                    nw.append(a + b)
                    k += 2
                else:
                    nw.append(w[k])
                    k += 1
            words[wi] = nw
            for x, y in zip(nw, nw[1:]):
                pairs[x, y] += f
                where[x, y].add(wi)
        pairs.pop(best, None)
    return merges


class Tokenizer:
    """Encodes exactly as tokenizer.json says: GPT-2 split, byte-level, BPE by merge rank."""

    def __init__(self, vocab, merges, special_id):
        self.vocab = vocab  # piece -> id
        self.inv = {i: p for p, i in vocab.items()}
        self.inv[special_id] = SPECIAL
        self.rank = {tuple(m): r for r, m in enumerate(merges)}
        self.special_id = special_id
        self.cache = {}

    def _bpe(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        w = list(to_unicode(piece))
        while len(w) > 1:
            r, k = min((self.rank.get((w[k], w[k + 1]), 1 << 30), k) for k in range(len(w) - 1))
            if r == 1 << 30:
                break
            w[k:k + 2] = [w[k] + w[k + 1]]  # lowest rank, leftmost first (as HF)
        ids = [self.vocab[s] for s in w]
        self.cache[piece] = ids
        return ids

    def encode(self, text, add_special=True):
        """Ids of text; the special token in the text is not parsed (our corpora lack it)."""
        ids = [self.special_id] if add_special else []
        for p in pre_split(text):
            ids.extend(self._bpe(p))
        return ids

    def decode(self, ids):
        s = "".join(self.inv[i] for i in ids if i != self.special_id)
        return bytes(U2B[c] for c in s).decode("utf-8", errors="replace")


def build(merges):
    vocab = {B2U[b]: b for b in range(256)}
    for r, (a, b) in enumerate(merges):
        vocab[a + b] = 256 + r
    special_id = len(vocab)
    return vocab, special_id


def tokenizer_json(vocab, merges, special_id):
    added = {"id": special_id, "content": SPECIAL, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": SPECIAL, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": SPECIAL, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": SPECIAL, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {SPECIAL: {"id": SPECIAL, "ids": [special_id], "tokens": [SPECIAL]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }


def tokenizer_config(special_id):
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(special_id): {
            "content": SPECIAL, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}},
        "bos_token": SPECIAL,
        "eos_token": SPECIAL,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def load(path):
    """Tokenizer from a tokenizer.json written by this script (or a directory holding one)."""
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    merges = [tuple(m) for m in j["model"]["merges"]]
    special_id = j["added_tokens"][0]["id"]
    return Tokenizer(j["model"]["vocab"], merges, special_id)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    with open(args.data, encoding="utf-8") as f:
        train_text, _ = split_text(f.read())
    merges = train(train_text)
    vocab, special_id = build(merges)
    assert special_id + 1 == VOCAB_SIZE, special_id
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges, special_id), f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(special_id), f, indent=2)
        f.write("\n")
    print(f"{len(merges)} merges, vocab {special_id + 1}, {SPECIAL} = {special_id}")


if __name__ == "__main__":
    main()
