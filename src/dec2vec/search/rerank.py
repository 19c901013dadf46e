"""Reranking with the same model that embeds: nothing extra to download.

- ``maxsim``: late interaction (ColBERT-style). Each query token takes its best cosine match among the
  passage's token states; the passage scores the mean of those maxima. Best with a bidirectional encoder.
- ``yes``: pointwise generative relevance for instruct/GRIT backbones: P("yes") after asking whether
  the passage answers the query, read from the causal LM head of the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from dec2vec.encoder import Encoder

Reranker = Literal["maxsim", "yes"]
YES_PROMPT = "Query: {query}\nPassage: {passage}\nDoes the passage answer the query? Answer with yes or no."


def _unit_rows(states: np.ndarray) -> np.ndarray:
    return states / np.maximum(np.linalg.norm(states, axis=1, keepdims=True), 1e-12)


def _prompt_name(encoder: Any, role: str) -> str | None:
    """``role`` when the encoder has a prompt of that name (baselines have none)."""
    config = getattr(encoder, "config", None)
    return role if role in getattr(config, "prompts", {}) else None


def maxsim_scores(encoder: Any, query: str, passages: Sequence[str]) -> np.ndarray:
    """Mean over query tokens of the best cosine with any passage token (in [-1, 1])."""
    [(query_states, _)] = encoder.token_embeddings([query], prompt_name=_prompt_name(encoder, "query"))
    q = _unit_rows(query_states)
    scores = []
    passage_states = encoder.token_embeddings(list(passages), prompt_name=_prompt_name(encoder, "document"))
    for states, _ in passage_states:
        scores.append(float((q @ _unit_rows(states).T).max(axis=1).mean()))
    return np.asarray(scores, dtype=np.float32)


def _token_ids(encoder: Encoder, words: Sequence[str]) -> list[int]:
    """First token of each spelling (with and without a leading space), deduplicated."""
    ids = {encoder.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words}
    return sorted(ids)


def yes_scores(encoder: Any, query: str, passages: Sequence[str]) -> np.ndarray:
    """P(yes) / (P(yes) + P(no)) for "does the passage answer the query?" (in [0, 1])."""
    if not isinstance(encoder, Encoder):
        raise ValueError(f"the yes reranker needs a dec2vec encoder with an LM head, not {encoder.spec}")
    prompts = [YES_PROMPT.format(query=query, passage=p) for p in passages]
    probabilities = encoder.next_token_probabilities(prompts, chat=True).numpy()
    yes = probabilities[:, _token_ids(encoder, ["yes", "Yes", " yes", " Yes"])].sum(axis=1)
    no = probabilities[:, _token_ids(encoder, ["no", "No", " no", " No"])].sum(axis=1)
    return (yes / np.maximum(yes + no, 1e-12)).astype(np.float32)


SCORERS: dict[str, Callable[[Any, str, Sequence[str]], np.ndarray]] = {
    "maxsim": maxsim_scores,
    "yes": yes_scores,
}
