"""Training data: plain text and (query, positive, negatives) pairs, checked line by line before training.

Text files: ``.txt`` (one example per line) or ``.jsonl`` with a ``text`` field. Pair files: ``.jsonl`` with
``query`` and ``positive`` and optionally ``negative`` (a string) or ``negatives`` (a list). ``builtin:NAME``
names a file shipped in the package (``dec2vec/data``), so the demo trains without any download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from dec2vec.files import DataFormatError, parse_json_object, read_jsonl, read_lines


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


def is_pair_file(path: str | Path) -> bool:
    """True when the first record of a .jsonl file has ``query`` and ``positive`` fields."""
    path = resolve(path)
    if path.suffix != ".jsonl":
        return False
    for number, line in read_lines(path):
        row = parse_json_object(path, number, line)
        return "query" in row and "positive" in row
    return False


def read_texts(path: str | Path) -> list[str]:
    path = resolve(path)
    if path.suffix == ".jsonl":
        return [row["text"] for row in read_jsonl(path, {"text": str})]
    texts = [line for _, line in read_lines(path)]
    if not texts:
        raise DataFormatError(f"{path}: no examples")
    return texts


def _negatives(row: dict) -> list[str]:
    return row.get("negatives", [row["negative"]] if "negative" in row else [])


def _check_negatives(row: dict) -> str | None:
    negatives = _negatives(row)
    if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
        return "'negative' must be a string and 'negatives' a list of strings"
    return None


def read_pairs(path: str | Path) -> list[Pair]:
    rows = read_jsonl(resolve(path), {"query": str, "positive": str}, _check_negatives)
    return [Pair(row["query"], row["positive"], _negatives(row)) for row in rows]


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
