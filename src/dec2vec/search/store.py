"""What every index backend stores and answers (``backends.py`` picks one for a location)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import numpy as np

from dec2vec.search.documents import Document
from dec2vec.search.filters import Filter

Quantization = Literal["float32", "int8", "binary"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)


class EncoderMismatchError(ValueError):
    """The index holds vectors from a different encoder than the one asked to add to or search it."""


@dataclass
class StoredChunk:
    """A chunk as stored: its row id, its document and the document's title and metadata."""

    id: int
    doc_id: str
    position: int
    text: str
    title: str
    metadata: dict[str, Any]


class Store(Protocol):
    """A documents + chunks + full-text + vector store; scores are "higher is better"."""

    backend: str  # its name in ``backends.BACKENDS``
    location: str
    quantization: Quantization

    def info(self) -> dict[str, Any] | None:
        """The encoder description recorded at creation (None for a new, empty index)."""

    def create(self, info: dict[str, Any], quantization: Quantization) -> None:
        """Create the tables for vectors of ``info["dim"]`` dimensions and record ``info``."""

    def transaction(self) -> AbstractContextManager[None]:
        """All writes inside commit together or not at all."""

    def hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Stored content hashes of those of ``doc_ids`` that are present."""

    def put(self, doc: Document, content_hash: str, chunks: list[str], vectors: np.ndarray) -> None:
        """Insert or replace one document with its chunks and their vectors (inside a transaction)."""

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents with their chunks; returns how many existed (inside a transaction)."""

    def dense(self, vector: np.ndarray, k: int, filters: list[Filter]) -> list[tuple[int, float]]:
        """Chunk ids and cosine similarities of the ``k`` nearest chunks that pass ``filters``."""

    def lexical(self, query: str, k: int, filters: list[Filter]) -> list[tuple[int, float]]:
        """Chunk ids and BM25-like scores of the ``k`` best full-text matches that pass ``filters``."""

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """The stored chunks for ``ids``."""

    def counts(self) -> dict[str, int]:
        """How many documents and chunks, and the bytes they take."""

    def facets(self) -> dict[str, dict[str | bool, int]]:
        """Top-level metadata fields with string or boolean values: value -> number of documents."""

    def check(self) -> None:
        """Raise if documents, chunks, full-text rows and vectors are out of step."""

    def close(self) -> None: ...


def query_terms(query: str) -> Iterator[str]:
    """The words of a query for full-text search: letters and digits only, so no query syntax leaks in."""
    yield from (w.lower() for w in re.findall(r"\w+", query))
