"""open_clip's `SimpleTokenizer` (CLIP's byte-level BPE) in pure Python, for the device.

Gives the same ids as `open_clip.get_tokenizer(model)` (tests/test_tokenizer.py holds it to
that on over a thousand strings) from the bundle's `tokenizer.json`: the merges in rank
order and the vocabulary (id = index). No torch, no open_clip, no `regex` module: the
pre-tokenising pattern's Unicode classes are matched with `unicodedata`.
"""
from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .text_clean import clean_lower

SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
MERGES_USED = 49152 - 256 - 2  # SimpleTokenizer's slice of bpe_simple_vocab_16e6.txt.gz
_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")  # after an apostrophe, in the pattern's order
_FOLD = {"ſ": "s"}  # the pattern is case-insensitive: long s matches 's


@lru_cache(maxsize=1)
def _byte_encoder() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (`bytes_to_unicode`)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def byte_vocab() -> list[str]:
    """The first 512 vocabulary entries: each byte's character, then each with `</w>`."""
    chars = list(_byte_encoder().values())
    return chars + [c + "</w>" for c in chars]


def _is_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L")


def _is_number(c: str) -> bool:
    return unicodedata.category(c).startswith("N")


def pre_tokenize(text: str) -> list[str]:
    """`re.findall` of open_clip's pattern `<special>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|
    [^\\s\\p{L}\\p{N}]+` (ignore case): the first alternative that matches at each position wins."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        special = next((s for s in SPECIAL_TOKENS if text.startswith(s, i)), None)
        if special:
            out.append(special)
            i += len(special)
            continue
        if c == "'":
            rest = "".join(_FOLD.get(ch, ch) for ch in text[i + 1:i + 3]).lower()
            tail = next((t for t in _CONTRACTIONS if rest.startswith(t)), None)
            if tail:
                out.append(text[i:i + 1 + len(tail)])
                i += 1 + len(tail)
                continue
        j = i + 1
        if _is_letter(c):
            while j < n and _is_letter(text[j]):
                j += 1
        elif _is_number(c):
            pass
        elif c.isspace():
            i += 1
            continue
        else:
            while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
        out.append(text[i:j])
        i = j
    return out


class ClipTokenizer:
    """Text -> `(N, context_length)` int64 ids, open_clip's layout: start token, BPE ids, end
    token, zeros; a text too long is cut to `context_length` with the end token kept last."""

    def __init__(self, merges: Sequence[str], vocab: Sequence[str], context_length: int) -> None:
        expected = byte_vocab() + ["".join(m.split()) for m in merges] + list(SPECIAL_TOKENS)
        if list(vocab) != expected:  # the two halves of the file must tell the same story
            raise ValueError("the tokenizer's vocab does not follow from its merges")
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.sot, self.eot = self.encoder[SPECIAL_TOKENS[0]], self.encoder[SPECIAL_TOKENS[1]]
        self.context_length = int(context_length)
        self.cache: dict[str, str] = {t: t for t in SPECIAL_TOKENS}
        self.byte_encoder = _byte_encoder()

    @classmethod
    def from_file(cls, path: str | Path, context_length: int) -> "ClipTokenizer":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["merges"], data["vocab"], context_length)

    def bpe(self, token: str) -> str:
        """The BPE pieces of one pre-token, space-separated (CLIP's merge loop, lowest rank first)."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == best[0] and word[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        ids = []
        for token in pre_tokenize(clean_lower(text)):
            chars = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(chars).split(" "))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length]
                ids[-1] = self.eot
            out[row, :len(ids)] = ids
        return out
