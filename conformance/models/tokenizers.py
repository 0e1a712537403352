"""Tokenizers for the tiny models, built in memory from the caption vocabulary.

* ``build_clip_tokenizer``: a byte-level BPE ``CLIPTokenizer`` whose vocabulary holds single
  characters (with and without the ``</w>`` end-of-word marker) and merges that turn every caption
  word into one token. Text outside the caption vocabulary still tokenizes (character by
  character; characters outside the alphabet map to the unknown token).
* ``build_t5_tokenizer``: a unigram ``T5Tokenizer`` built from a ``(piece, score)`` vocabulary
  with whole-word pieces, single-character fallbacks and the 100 ``<extra_id_*>`` sentinels.

Both are saved with ``save_pretrained`` (and the CLIP one also as ``vocab.json`` +
``merges.txt``), so ``from_pretrained`` reads them back without network access.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from transformers import CLIPTokenizer, T5Tokenizer

from conformance.models.data import vocabulary

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 32
T5_EXTRA_IDS = 100
ALPHABET: str = string.ascii_lowercase + string.digits + ",.!?-'"
EOW = "</w>"


def _bpe_tokenize(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Plain BPE: repeatedly merge the lowest-ranked adjacent pair (leftmost on ties)."""
    syms = list(symbols)
    while len(syms) > 1:
        best: tuple[int, int] | None = None
        for i in range(len(syms) - 1):
            rank = ranks.get((syms[i], syms[i + 1]))
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        syms[i : i + 2] = [syms[i] + syms[i + 1]]
    return syms


def clip_vocab_and_merges(words: list[str] | None = None) -> tuple[dict[str, int], list[str]]:
    """Vocabulary and merges (``"a b"`` strings, rank order) for the caption words.

    Merges are appended word by word; each word first applies the merges that already exist and
    then merges its remaining symbols left to right. Later merges rank after earlier ones, so
    they never change how an earlier word tokenizes: every word ends as a single token.
    """
    words = vocabulary() if words is None else words
    tokens: list[str] = []
    for ch in ALPHABET:
        tokens.append(ch)
    for ch in ALPHABET:
        tokens.append(ch + EOW)
    ranks: dict[tuple[str, str], int] = {}
    merges: list[str] = []
    known = set(tokens)
    for word in words:
        if len(word) < 2:
            continue
        symbols = [*word[:-1], word[-1] + EOW]
        syms = _bpe_tokenize(symbols, ranks)
        while len(syms) > 1:
            pair = (syms[0], syms[1])
            ranks[pair] = len(merges)
            merges.append(f"{pair[0]} {pair[1]}")
            merged = pair[0] + pair[1]
            if merged not in known:
                known.add(merged)
                tokens.append(merged)
            syms = [merged, *syms[2:]]
    tokens += [CLIP_BOS, CLIP_EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return vocab, merges


def build_clip_tokenizer(words: list[str] | None = None) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` over the caption words (``model_max_length`` 77)."""
    vocab, merges = clip_vocab_and_merges(words)
    merge_pairs = [tuple(m.split(" ")) for m in merges]
    return CLIPTokenizer(
        vocab=vocab,
        merges=merge_pairs,
        unk_token=CLIP_EOS,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        pad_token=CLIP_EOS,
        model_max_length=CLIP_MAX_LENGTH,
    )


def save_clip_tokenizer(out_dir: str | Path, words: list[str] | None = None) -> CLIPTokenizer:
    """Write the CLIP tokenizer to ``out_dir`` (``vocab.json``, ``merges.txt`` and configs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_clip_tokenizer(words)
    tok.save_pretrained(str(out))
    vocab, merges = clip_vocab_and_merges(words)
    (out / "vocab.json").write_text(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    return tok


def t5_vocab(words: list[str] | None = None) -> list[tuple[str, float]]:
    """``(piece, score)`` list: specials, whole words, characters, then the sentinels."""
    words = vocabulary() if words is None else words
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces.append(("\u2581", -2.0))
    for word in words:
        pieces.append(("\u2581" + word, -1.0))
    seen = {p for p, _ in pieces}
    for ch in ALPHABET + string.ascii_uppercase:
        for piece in ("\u2581" + ch, ch):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, -10.0))
    for i in range(T5_EXTRA_IDS - 1, -1, -1):
        pieces.append((f"<extra_id_{i}>", 0.0))
    return pieces


def build_t5_tokenizer(words: list[str] | None = None) -> T5Tokenizer:
    """A unigram ``T5Tokenizer`` over the caption words (``model_max_length`` 32)."""
    return T5Tokenizer(
        vocab=t5_vocab(words),
        extra_ids=T5_EXTRA_IDS,
        model_max_length=T5_MAX_LENGTH,
    )


def save_t5_tokenizer(out_dir: str | Path, words: list[str] | None = None) -> T5Tokenizer:
    """Write the T5 tokenizer to ``out_dir`` (``tokenizer.json`` and configs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_t5_tokenizer(words)
    tok.save_pretrained(str(out))
    return tok
