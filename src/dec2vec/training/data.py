"""Training data: plain text and (query, positive, negatives) pairs, checked line by line before training.

Text files: ``.txt`` (one example per line) or ``.jsonl`` with a ``text`` field. Pair files: ``.jsonl`` with
``query`` and ``positive`` and optionally ``negative`` (a string) or ``negatives`` (a list). ``builtin:NAME``
names a file shipped in the package (``dec2vec/data``), so the demo trains without any download.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from dec2vec.errors import DataFormatError


@dataclass
class Pair:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)


def resolve(path: str | Path) -> Path:
    """A data path, with ``builtin:NAME`` mapped to the file shipped inside the package."""
    text = str(path)
    if text.startswith("builtin:"):
        resolved = Path(str(files("dec2vec").joinpath("data", text.removeprefix("builtin:"))))
        if not resolved.is_file():
            raise DataFormatError(f"{text}: no such bundled file")
        return resolved
    return Path(path)


def _lines(path: Path):
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line.rstrip("\n")


def _json_object(path: Path, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{number}: not valid JSON ({err.msg})") from err
    if not isinstance(row, dict):
        raise DataFormatError(f"{path}:{number}: expected a JSON object")
    return row


def is_pair_file(path: str | Path) -> bool:
    """True when the first record of a .jsonl file has ``query`` and ``positive`` fields."""
    path = resolve(path)
    if path.suffix != ".jsonl":
        return False
    for number, line in _lines(path):
        row = _json_object(path, number, line)
        return "query" in row and "positive" in row
    return False


def read_texts(path: str | Path) -> list[str]:
    path = resolve(path)
    if path.suffix != ".jsonl":
        return [line for _, line in _lines(path)]
    texts = []
    for number, line in _lines(path):
        row = _json_object(path, number, line)
        if not isinstance(row.get("text"), str):
            raise DataFormatError(f"{path}:{number}: expected a string 'text' field")
        texts.append(row["text"])
    if not texts:
        raise DataFormatError(f"{path}: no examples")
    return texts


def read_pairs(path: str | Path) -> list[Pair]:
    path = resolve(path)
    pairs = []
    for number, line in _lines(path):
        row = _json_object(path, number, line)
        for key in ("query", "positive"):
            if not isinstance(row.get(key), str):
                raise DataFormatError(f"{path}:{number}: expected a string {key!r} field")
        negatives = row.get("negatives", [row["negative"]] if "negative" in row else [])
        if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
            raise DataFormatError(
                f"{path}:{number}: 'negative' must be a string, 'negatives' a list of strings"
            )
        pairs.append(Pair(row["query"], row["positive"], negatives))
    if not pairs:
        raise DataFormatError(f"{path}: no examples")
    return pairs


def batch_plan(
    lengths: list[list[int]], batch_size: int, n_batches: int, seed: int
) -> list[tuple[int, list[int]]]:
    """The first ``n_batches`` batches as (dataset, example indices), epoch after epoch, fixed by ``seed``.

    Every batch comes from one dataset (``lengths`` holds each dataset's example lengths), datasets mixed in
    proportion to their size. Length bucketing: each epoch is shuffled, cut into pools of 50 batches, each
    pool sorted by length and sliced into batches, and the batches shuffled, so padding stays small while
    order stays random. A fixed plan is what makes a resumed run see exactly the batches the uninterrupted
    one would.
    """
    if any(len(dataset) < batch_size for dataset in lengths):
        raise DataFormatError(f"every dataset needs at least batch_size={batch_size} examples")
    rng = np.random.default_rng(seed)
    plan: list[tuple[int, list[int]]] = []
    pool = 50 * batch_size
    while len(plan) < n_batches:
        epoch = []
        for d, dataset in enumerate(lengths):
            order = rng.permutation(len(dataset))
            for start in range(0, len(order) - batch_size + 1, pool):
                chunk = sorted(order[start : start + pool], key=lambda i: dataset[i])
                epoch += [
                    (d, [int(i) for i in chunk[j : j + batch_size]])
                    for j in range(0, len(chunk) - batch_size + 1, batch_size)
                ]
        plan += [epoch[j] for j in rng.permutation(len(epoch))]
    return plan[:n_batches]
