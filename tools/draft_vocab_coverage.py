#!/usr/bin/python3
"""Coverage of a draft vocabulary: the share of a held-out text's tokens that fall in the
top N of a ranking made from other text (issue 17: how often a frequency-ranked draft head
can propose the right token at all).

usage: /usr/bin/python3 tools/draft_vocab_coverage.py RANKING HELD_OUT_COUNTS [N ...]

Both files are eexit-generate --rank-vocab output ("id count" lines, '#' comments): RANKING
from the text the ranking is made of, HELD_OUT_COUNTS from the text it is tested on.
Prints one line per N (default 1024 2048 4096 8192 16384 32768).
"""
import sys


def read(path):
    out = []
    for line in open(path):
        f = line.split()
        if f and not f[0].startswith("#"):
            out.append((int(f[0]), int(f[1]) if len(f) > 1 else 1))
    return out


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    ranking = [t for t, _ in read(argv[1])]
    held = dict(read(argv[2]))
    total = sum(held.values())
    ns = [int(x) for x in argv[3:]] or [1024, 2048, 4096, 8192, 16384, 32768]
    print(f"# {argv[1]}: {len(ranking)} ranked ids; held out: {total} tokens, "
          f"{len(held)} distinct")
    print("N,coverage")
    for n in ns:
        top = set(ranking[:n])
        print(f"{n},{sum(c for t, c in held.items() if t in top) / total:.4f}")


if __name__ == "__main__":
    main(sys.argv)
