"""An on-disk embedding cache for evaluation and distillation teachers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dec2vec.models import TextEncoder, TokenStates


class CachedEncoder:
    """A TextEncoder whose outputs are stored per (model fingerprint, method, texts) and read back."""

    def __init__(self, model: TextEncoder, cache_dir: Path) -> None:
        self.model = model
        self.spec, self.dim, self.tokenizer = model.spec, model.dim, model.tokenizer
        self.dir = cache_dir / model.fingerprint()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _path(self, method: str, texts: Sequence[str], suffix: str) -> Path:
        digest = hashlib.blake2b(method.encode(), digest_size=16)
        for text in texts:
            digest.update(text.encode())
            digest.update(b"\x00")
        return self.dir / f"{method}-{digest.hexdigest()}{suffix}"

    def _cached(
        self, method: str, texts: Sequence[str], compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Arrays by name, from the cache when present; stored without pickles (cache folders are shared)."""
        path = self._path(method, texts, ".npz")
        if path.exists():
            self.hits += 1
            with np.load(path, allow_pickle=False) as stored:
                return dict(stored)
        self.misses += 1
        arrays = compute()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)  # atomic: an interrupted run never leaves a truncated cache file
        return arrays

    def encode(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        compute = lambda: {"vectors": self.model.encode(texts, **{"show_progress": True, **kwargs})}  # noqa: E731
        return self._cached("encode", texts, compute)["vectors"]

    def encode_queries(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        compute = lambda: {"vectors": self.model.encode_queries(texts, **{"show_progress": True, **kwargs})}  # noqa: E731
        return self._cached("query", texts, compute)["vectors"]

    def encode_documents(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        compute = lambda: {"vectors": self.model.encode_documents(texts, **{"show_progress": True, **kwargs})}  # noqa: E731
        return self._cached("document", texts, compute)["vectors"]

    def token_embeddings(self, texts: Sequence[str], **kwargs) -> TokenStates:
        def compute() -> dict[str, np.ndarray]:  # flat arrays and per-text counts: no object arrays
            pairs = self.model.token_embeddings(texts, **kwargs)
            return {
                "states": np.concatenate([s for s, _ in pairs]) if pairs else np.zeros((0, 0), np.float32),
                "tokens": np.array([len(s) for s, _ in pairs]),
                "spans": np.array([span for _, sp in pairs for span in sp], dtype=np.int64).reshape(-1, 2),
                "words": np.array([len(sp) for _, sp in pairs]),
            }

        stored = self._cached("tokens", texts, compute)
        token_ends, word_ends = np.cumsum(stored["tokens"]), np.cumsum(stored["words"])
        out = []
        for i in range(len(texts)):
            states = stored["states"][token_ends[i] - stored["tokens"][i] : token_ends[i]]
            spans = stored["spans"][word_ends[i] - stored["words"][i] : word_ends[i]]
            out.append((states, [(int(a), int(b)) for a, b in spans]))
        return out
