"""Reused key-value states for generation: a prompt prefix already prefilled is not prefilled again.

A grounded prompt is a list of token segments (the fixed instruction, then one per retrieved passage, then
the question). ``PrefixCache.prefill`` returns the causal key-value states of every segment but the last:
it starts from the longest prefix it holds that ends at a segment boundary and computes only the rest,
in one pass, storing a copy cut at each new boundary. The states of a token depend only on the tokens
before it, so states kept for the same prefix are the states generation would compute: in float32 greedy
output is the same as without the cache (tested). In bfloat16 a prefill split in two (cached part, new
part) rounds differently from one whole prefill, so an answer may differ from the uncached one in a late
token; the same prompt again answers as the miss that filled the cache did (tested). A passage retrieved
again at the same place after the same passages is a hit; anywhere else it is a miss, because its states
would differ.

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

    def __init__(self, max_mib: float = 256.0, min_reuse: float = 0.15) -> None:
        """``min_reuse``: the share of a prompt a cached prefix must cover to be used. A prefill after
        cached states needs an explicit attention mask, a slower kernel than one causal pass: on 2 CPU
        cores (SmolLM2, 1,111-token prompt) reusing 49 tokens was 10-20% slower than reusing none, 128
        broke even, 256 saved 11% and 512 saved 35%."""
        if max_mib <= 0:
            raise ValueError(f"the cache size must be positive, got {max_mib} MiB")
        if not 0 <= min_reuse <= 1:
            raise ValueError(f"min_reuse is a share of the prompt, from 0 to 1, got {min_reuse}")
        self.max_bytes, self.min_reuse = int(max_mib * 2**20), min_reuse
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
        worth = self.min_reuse * (len(ids) + len(segments[-1]))
        with self._lock:
            for end in reversed(boundaries):
                if end < worth:
                    break
                key = _key(ids[:end])
                if key in self.entries:
                    self.entries.move_to_end(key)
                    start, states = end, copy.deepcopy(self.entries[key][0])
                    break
            self.stats.hits += start > 0
            self.stats.misses += start == 0
            self.stats.reused_tokens += start
        states = states if states is not None else DynamicCache(config=model.config)
        new = [b for b in boundaries if b > start]
        if new:  # one pass over the rest; each boundary's states are a prefix of its keys and values
            piece = torch.tensor([ids[start : new[-1]]], device=model.device)
            with torch.inference_mode():
                # logits_to_keep=1: the prefill only needs the states, not 50k-way logits per token
                model(input_ids=piece, cache=states, use_cache=True, logits_to_keep=1)
            for end in new:
                self._store(ids[:end], states)
            self.stats.prefilled_tokens += new[-1] - start
        return states, start

    def _store(self, ids: Sequence[int], states: DynamicCache) -> None:
        """Keep a copy of ``states`` cut to the first ``len(ids)`` positions."""
        kept = copy.deepcopy(states)
        if extra := kept.get_seq_length() - len(ids):
            kept.crop(-extra)  # transformers crops by a negative count: drop the last ``extra`` positions
        size = _nbytes(kept)
        if size > self.max_bytes:
            return
        key = _key(ids)
        with self._lock:
            self.entries[key] = (kept, size)
            self.entries.move_to_end(key)
            while self.bytes > self.max_bytes:
                self.entries.popitem(last=False)
                self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
