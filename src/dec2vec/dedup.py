"""Near-duplicate groups: exact copies by hash first, then texts whose vectors are within a cosine threshold.

The neighbour search is scikit-learn's radius search (brute force over chunks of the similarity matrix,
bounded by its ``working_memory``), so memory grows with the pairs found, not with n². Groups are formed
greedily in input order: the first text not yet placed is kept, and every unplaced text within the
threshold of it becomes its duplicate — so each duplicate is within the threshold of the one kept for it
(connected components would chain A~B~C into one group even when A and C are far apart).

    result = find_duplicates(encoder, texts, threshold=0.95)
    result.kept      # indices to keep, in input order
    result.groups    # [Group(kept=3, duplicates=[8, 41]), ...]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors


@dataclass
class Group:
    kept: int
    duplicates: list[int]
    exact: list[int]  # those of ``duplicates`` that are the same text (up to case and whitespace)


@dataclass
class Duplicates:
    kept: list[int]
    groups: list[Group]  # only groups with at least one duplicate
    threshold: float


def normalized_hash(text: str) -> str:
    """Exact-duplicate key: the text with case folded and whitespace runs collapsed."""
    return hashlib.sha256(" ".join(text.casefold().split()).encode()).hexdigest()


def near_neighbours(vectors: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Per row, the other rows whose cosine with it is at least ``threshold`` (unit vectors)."""
    search = NearestNeighbors(radius=1.0 - threshold, metric="cosine", algorithm="brute").fit(vectors)
    neighbours = search.radius_neighbors(vectors, return_distance=False)
    return [row[row != i] for i, row in enumerate(neighbours)]


def find_duplicates(
    encoder: Any,
    texts: Sequence[str],
    threshold: float = 0.95,
    *,
    batch_size: int = 32,
    show_progress: bool = False,
) -> Duplicates:
    """Groups of exact and near duplicates; ``threshold`` is the cosine at or above which texts count as
    duplicates (1.0: exact copies only, nothing embedded)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine in (0, 1], got {threshold}")
    texts = list(texts)
    first: dict[str, int] = {}
    copy_of = [first.setdefault(normalized_hash(t), i) for i, t in enumerate(texts)]  # index of first copy
    unique = sorted(set(copy_of))
    neighbours: list[np.ndarray] = [np.empty(0, dtype=int)] * len(unique)
    if threshold < 1.0 and len(unique) > 1:
        vectors = encoder.encode(
            [texts[i] for i in unique], batch_size=batch_size, show_progress=show_progress
        )
        neighbours = near_neighbours(vectors, threshold)
    copies: dict[int, list[int]] = {}
    for i, j in enumerate(copy_of):
        if i != j:
            copies.setdefault(j, []).append(i)
    placed = np.zeros(len(unique), dtype=bool)
    kept, groups = [], []
    for u, i in enumerate(unique):  # input order: unique is sorted
        if placed[u]:
            continue
        placed[u] = True
        kept.append(i)
        near = [int(v) for v in sorted(neighbours[u]) if not placed[v]]
        placed[near] = True
        exact = copies.get(i, [])
        duplicates = sorted(exact + [d for v in near for d in (unique[v], *copies.get(unique[v], []))])
        if duplicates:
            groups.append(Group(i, duplicates, exact))
    return Duplicates(kept, groups, threshold)
