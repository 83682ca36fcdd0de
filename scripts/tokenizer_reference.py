#!/usr/bin/env python3
"""Reference token ids for quantlens' tokenizer tests, computed independently of the Rust
`tokenizers` crate that quantlens uses:

* SmolLM2 (byte-level BPE from the GGUF metadata): a pure-Python transcription of the GPT-2
  algorithm (OpenAI's `encoder.py`: bytes→unicode table, regex pre-split, lowest-rank merges),
  with SmolLM2's extra pre-split of every digit (llama.cpp's `smollm` pre-tokenizer) and its
  control tokens matched literally.
* all-MiniLM-L6-v2 (WordPiece): `transformers.BertTokenizer`, the slow pure-Python tokenizer,
  from `vocab.txt` (lower-casing, accent stripping, punctuation split, greedy longest match).

Usage: python3 scripts/tokenizer_reference.py [fixtures dir] > tests/data/tokenizer_reference.json
Needs `pip install gguf regex transformers` (no torch).
"""
import json
import sys
from pathlib import Path

import regex
from gguf import GGUFReader

fixtures = Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures")

TEXTS = [
    "Hello world!",
    "The year 2024 has 365 days, and 1,000,000 is a million.",
    "  def f(x):\n\treturn x**2  # square\n\n\nprint(f(3))",
    "Naïve café — “quoted” text, déjà vu, Ünïcödé, 東京, emoji 🙂.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "it's we'll they're I'd you've she'd   spaces   before\nnewlines \n\n end",
]
DOC_FILES = ["tutorial/introduction.rst.txt", "library/functions.rst.txt"]
DOC_CHARS = 3000


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


class Bpe:
    def __init__(self, gguf_path):
        r = GGUFReader(str(gguf_path))
        f = r.fields["tokenizer.ggml.tokens"]
        self.tokens = [bytes(f.parts[i]).decode() for i in f.data]
        f = r.fields["tokenizer.ggml.token_type"]
        types = [int(f.parts[i][0]) for i in f.data]
        f = r.fields["tokenizer.ggml.merges"]
        merges = [tuple(bytes(f.parts[i]).decode().split(" ")) for i in f.data]
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.control = [t for t, ty in zip(self.tokens, types) if ty == 3]
        self.byte_map = bytes_to_unicode()

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            pairs = [p for p in pairs if p[0] is not None]
            if not pairs:
                break
            rank = min(pairs)[0]
            a, b = None, None
            out, i = [], 0
            # merge every occurrence of the best pair, left to right
            first, second = None, None
            for r_, j in pairs:
                if r_ == rank:
                    first, second = parts[j], parts[j + 1]
                    break
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                    out.append(first + second)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        return [self.ids[p] for p in parts]

    def encode_plain(self, text):
        ids = []
        # smollm pre-tokenizer: every digit is its own piece, then the GPT-2 split of the rest
        for piece in regex.split(r"(\p{N})", text):
            if piece == "":
                continue
            for word in GPT2_PATTERN.findall(piece):
                mapped = "".join(self.byte_map[b] for b in word.encode("utf-8"))
                ids.extend(self.bpe(mapped))
        return ids

    def encode(self, text):
        pattern = "(" + "|".join(regex.escape(c) for c in self.control) + ")"
        ids = []
        for piece in regex.split(pattern, text):
            if piece in self.control:
                ids.append(self.ids[piece])
            elif piece:
                ids.extend(self.encode_plain(piece))
        return ids


def main():
    from transformers import BertTokenizer

    bpe = Bpe(fixtures / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    wp = BertTokenizer(str(fixtures / "minilm" / "vocab.txt"), do_lower_case=True)
    texts = list(TEXTS)
    for name in DOC_FILES:
        texts.append((fixtures / "python-docs" / name).read_text(encoding="utf-8")[:DOC_CHARS])
    cases = []
    for t in texts:
        cases.append(
            {
                "text": t,
                "smollm2": bpe.encode(t),
                "minilm": wp.encode(t, add_special_tokens=True),
            }
        )
    json.dump({"generator": "scripts/tokenizer_reference.py", "cases": cases}, sys.stdout, ensure_ascii=False, indent=1)
    print()


if __name__ == "__main__":
    main()
