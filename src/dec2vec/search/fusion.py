"""Reciprocal Rank Fusion of ranked lists (Cormack et al., 2009)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[Hashable]], weights: Mapping[str, float] | None = None, k: int = 60
) -> list[tuple[Hashable, float]]:
    """Fuse named rankings (best first): ``score(d) = sum_r w_r / (k + rank_r(d))`` with 1-based ranks.

    Returns (item, score) best first; ties keep the order in which items were first seen.
    """
    weights = weights or {}
    scores: dict[Hashable, float] = {}
    for name, ranking in rankings.items():
        weight = weights.get(name, 1.0)
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
