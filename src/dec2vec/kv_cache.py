"""Reused key-value states for generation: a prompt prefix already prefilled is not prefilled again.

A grounded prompt is a list of token segments (the fixed instruction, then one per retrieved passage, then
the question). ``PrefixCache.prefill`` returns the causal key-value states of every segment but the last:
it starts from the longest prefix it holds that ends at a segment boundary and computes only the rest,
storing each new boundary. The states of a token depend only on the tokens before it, so states kept for
the same prefix are the states generation would compute: in float32 greedy output is the same as without
the cache (tested). In bfloat16 a prefill split at the boundaries rounds differently from one whole
prefill, so an answer may differ from the uncached one in a late token; a hit and the miss that filled it
always agree, since a miss prefills segment by segment too (tested). A passage retrieved again at the same
place after the same passages is a hit; anywhere else it is a miss, because its states would differ.

Hand-written because transformers caches states for one prompt at a time (``past_key_values``), not a
bounded store of many prefixes; the states themselves stay transformers' ``DynamicCache``.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


def _key(ids: Sequence[int]) -> bytes:
    return hashlib.blake2b(torch.tensor(ids, dtype=torch.int64).numpy().tobytes(), digest_size=16).digest()


def _nbytes(cache: DynamicCache) -> int:
    return sum(
        tensor.numel() * tensor.element_size()
        for layer in cache.layers
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None))
        if isinstance(tensor, torch.Tensor)
    )


@dataclass
class CacheStats:
    hits: int = 0  # prompts that started from cached states
    misses: int = 0  # prompts that found nothing cached
    reused_tokens: int = 0  # prompt tokens not prefilled thanks to the cache
    prefilled_tokens: int = 0  # prompt tokens computed (the last segment is left to generate)
    evictions: int = 0


class PrefixCache:
    """Causal key-value states of token prefixes ending at segment boundaries, LRU-bounded in MiB."""

    def __init__(self, max_mib: float = 256.0) -> None:
        if max_mib <= 0:
            raise ValueError(f"the cache size must be positive, got {max_mib} MiB")
        self.max_bytes = int(max_mib * 2**20)
        self.entries: OrderedDict[bytes, tuple[DynamicCache, int]] = OrderedDict()
        self.stats = CacheStats()
        self._lock = threading.Lock()  # the server prefills from several threads

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.entries.values())

    def prefill(self, model: PreTrainedModel, segments: Sequence[Sequence[int]]) -> tuple[DynamicCache, int]:
        """States of all ``segments`` but the last (a fresh copy the caller may extend), and how many of
        their tokens came from the cache."""
        boundaries, ids = [], []
        for segment in segments[:-1]:
            ids.extend(segment)
            boundaries.append(len(ids))
        start, states = 0, None
        with self._lock:
            for end in reversed(boundaries):
                key = _key(ids[:end])
                if key in self.entries:
                    self.entries.move_to_end(key)
                    start, states = end, copy.deepcopy(self.entries[key][0])
                    break
            self.stats.hits += start > 0
            self.stats.misses += start == 0
            self.stats.reused_tokens += start
        reused = start
        states = states if states is not None else DynamicCache(config=model.config)
        with torch.inference_mode():
            for end in (b for b in boundaries if b > start):
                piece = torch.tensor([ids[start:end]], device=model.device)
                # logits_to_keep=1: the prefill only needs the states, not 50k-way logits per token
                model(input_ids=piece, cache=states, use_cache=True, logits_to_keep=1)
                self._store(ids[:end], states)
                self.stats.prefilled_tokens += end - start
                start = end
        return states, reused

    def _store(self, ids: Sequence[int], states: DynamicCache) -> None:
        size = _nbytes(states)
        if size > self.max_bytes:
            return
        key = _key(ids)
        with self._lock:
            self.entries[key] = (copy.deepcopy(states), size)
            self.entries.move_to_end(key)
            while self.bytes > self.max_bytes:
                self.entries.popitem(last=False)
                self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
