"""The searchable index: one encoder + one store. Ingest with upserts, search dense/lexical/hybrid, rerank.

Everything goes through ``Encoder`` (embedding, token states, next-token probabilities) and the ``Store``
protocol, so the SQLite and PostgreSQL backends share this whole pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, Literal, get_args

import numpy as np
from tqdm.auto import tqdm

from dec2vec.models import TextEncoder, load_model
from dec2vec.search.auto_filter import MARGIN, Reading, read_filters
from dec2vec.search.backends import open_store
from dec2vec.search.chunking import chunk_text
from dec2vec.search.documents import Document
from dec2vec.search.filters import Filter, normalize
from dec2vec.search.fusion import reciprocal_rank_fusion
from dec2vec.search.rerank import SCORERS, Reranker
from dec2vec.search.store import EncoderMismatchError, Quantization, Store, StoredChunk

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
MAX_RESULTS = 100_000  # k, rerank_candidates and rrf_k beyond this are mistakes, not requests
EMBED_DOCUMENTS = 32  # documents whose chunks are embedded together (length-sorted batches inside)


def encoder_info(encoder: TextEncoder) -> dict[str, Any]:
    """What an index records about its encoder: enough to reopen it and to refuse any other."""
    return {"spec": encoder.spec, "dim": encoder.dim, "fingerprint": encoder.fingerprint()}


def passage(title: str, text: str) -> str:
    """What the encoder sees of a chunk: its document's title on the first line, then the chunk."""
    return f"{title}\n{text}" if title else text


def chunk_and_embed(
    encoder: TextEncoder, documents: Sequence[Document], chunk_tokens: int, chunk_overlap: int
) -> list[tuple[list[str], np.ndarray]]:
    """Each document's chunks and their vectors, all chunks embedded in one ``encode_documents`` call.

    The one place that decides how a document becomes vectors: ``Index.add`` and corpus shards share it.
    """
    if not documents:
        return []
    chunks = [chunk_text(encoder.tokenizer, doc.text, chunk_tokens, chunk_overlap) for doc in documents]
    texts = [passage(doc.title, c) for doc, cs in zip(documents, chunks, strict=True) for c in cs]
    vectors = encoder.encode_documents(texts, show_progress=False)
    out, offset = [], 0
    for doc_chunks in chunks:
        out.append((doc_chunks, vectors[offset : offset + len(doc_chunks)]))
        offset += len(doc_chunks)
    return out


@dataclass
class Hit:
    """One document found: its best chunk, the final score, and its rank under each retriever/reranker."""

    id: str
    score: float
    ranks: dict[str, int]
    text: str
    title: str
    metadata: dict[str, Any]
    chunk: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Embedded:
    """A document with its chunks and their vectors, computed elsewhere (``dec2vec embed`` shards)."""

    document: Document
    content_hash: str
    chunks: list[str]
    vectors: np.ndarray


def _doc(item: Document | Embedded) -> Document:
    return item.document if isinstance(item, Embedded) else item


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0


class Index:
    """A document index at ``location`` (a SQLite path or ``postgresql://`` URL) searched with ``encoder``.

    ``encoder`` may be None to reopen the one the index recorded, or for stats and deletes.
    """

    def __init__(
        self,
        location: str,
        encoder: TextEncoder | None = None,
        *,
        quantization: Quantization = "float32",
        chunk_tokens: int = 256,
        chunk_overlap: int = 32,
    ) -> None:
        self.location = location
        self.store: Store = open_store(location)
        self.quantization = quantization
        self.chunk_tokens, self.chunk_overlap = chunk_tokens, chunk_overlap
        self._encoder: TextEncoder | None = encoder
        recorded = self.store.info()
        if recorded is not None and encoder is not None:
            self._refuse_another(recorded, encoder.spec, encoder.dim, encoder.fingerprint())

    @property
    def encoder(self) -> TextEncoder:
        """The index's encoder, loaded from what the index recorded when none was given."""
        if self._encoder is None:
            recorded = self.store.info()
            if recorded is None:
                raise ValueError(f"{self.location} is empty: add documents (with a model) first")
            self._encoder = load_model(recorded["spec"])  # type: ignore[assignment]
        return self._encoder

    # ---- writing --------------------------------------------------------------------------------------

    def add(
        self, documents: Iterable[Document], *, batch_size: int = 256, show_progress: bool | None = None
    ) -> IngestReport:
        """Insert new documents and replace changed ones (same id, new content); unchanged ones are skipped.

        Each batch of ``batch_size`` documents is one transaction, embedding included: a run killed at any
        point leaves every batch either fully written or not at all, and re-running it is idempotent.
        """
        if self.store.info() is None:
            self.store.create(encoder_info(self.encoder), self.quantization)
        return self._ingest(documents, batch_size, show_progress)

    def add_embedded(
        self,
        items: Iterable[Embedded],
        info: Mapping[str, Any],
        *,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> IngestReport:
        """Like ``add``, for documents whose chunks and vectors were computed elsewhere (``dec2vec embed``
        shards) by the encoder ``info`` describes; no model is loaded."""
        recorded = self.store.info()
        if recorded is None:
            self.store.create({k: info[k] for k in ("spec", "dim", "fingerprint")}, self.quantization)
        else:
            self._refuse_another(recorded, info["spec"], info["dim"], info["fingerprint"])
        return self._ingest(items, batch_size, show_progress)

    def embed(self, documents: Sequence[Document]) -> list[Embedded]:
        """Chunks and vectors of the documents not already stored with this content, for ``add_embedded``.

        Lets a caller do the slow part in pieces (the server, so searches run in between) and then write
        them in one short transaction.
        """
        stored = self.store.hashes([doc.id for doc in documents]) if self.store.info() else {}
        changed = [doc for doc in documents if stored.get(doc.id) != doc.content_hash()]
        embedded = chunk_and_embed(self.encoder, changed, self.chunk_tokens, self.chunk_overlap)
        return [
            Embedded(doc, doc.content_hash(), chunks, vectors)
            for doc, (chunks, vectors) in zip(changed, embedded, strict=True)
        ]

    def _refuse_another(self, recorded: Mapping[str, Any], spec: str, dim: int, fingerprint: str) -> None:
        """Raise unless the vectors at hand come from the encoder this index recorded."""
        if fingerprint != recorded["fingerprint"]:
            raise EncoderMismatchError(
                f"{self.location} holds vectors from another encoder ({recorded['spec']}, {recorded['dim']} "
                f"dims) than {spec} ({dim} dims, other weights or settings). Search it with its own "
                "encoder (leave --model out) or index into a new location."
            )

    def _ingest(
        self, items: Iterable[Document | Embedded], batch_size: int, show_progress: bool | None
    ) -> IngestReport:
        report = IngestReport()
        iterator = iter(items)
        total = len(items) if isinstance(items, Sized) else None
        bar = tqdm(desc="indexing", unit="doc", total=total, disable=show_progress is False)
        try:
            while batch := list(islice(iterator, batch_size)):
                self._add_batch(batch, report, bar)
        finally:
            bar.close()
        return report

    def _add_batch(self, batch: list[Document | Embedded], report: IngestReport, bar: tqdm) -> None:
        latest = {_doc(item).id: item for item in batch}  # a repeated id within a batch: the last one wins
        stored = self.store.hashes(list(latest))
        hashes = {
            doc_id: item.content_hash if isinstance(item, Embedded) else item.content_hash()
            for doc_id, item in latest.items()
        }
        changed = [item for doc_id, item in latest.items() if stored.get(doc_id) != hashes[doc_id]]
        report.unchanged += len(latest) - len(changed)
        bar.update(len(batch) - len(changed))
        with self.store.transaction():
            for item in changed:
                if isinstance(item, Embedded):
                    self.store.put(item.document, item.content_hash, item.chunks, item.vectors)
                    report.chunks += len(item.chunks)
                    bar.update()
            raw = [item for item in changed if isinstance(item, Document)]
            for start in range(0, len(raw), EMBED_DOCUMENTS):  # embed many documents' chunks at once
                group = raw[start : start + EMBED_DOCUMENTS]
                embedded = chunk_and_embed(self.encoder, group, self.chunk_tokens, self.chunk_overlap)
                for doc, (chunks, vectors) in zip(group, embedded, strict=True):
                    self.store.put(doc, hashes[doc.id], chunks, vectors)
                    report.chunks += len(chunks)
                bar.update(len(group))
        report.updated += sum(_doc(item).id in stored for item in changed)
        report.added += sum(_doc(item).id not in stored for item in changed)

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents by id (one transaction); returns how many were present."""
        with self.store.transaction():
            return self.store.delete(list(doc_ids))

    # ---- searching ------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        filters: Mapping[str, Any] | Sequence[Filter | str] | None = None,
        rerank: Reranker | None = None,
        rerank_candidates: int = 20,
        rrf_k: int = 60,
        weights: Mapping[str, float] | None = None,
        candidates: int = 100,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, each with its best chunk.

        Retrievers fetch ``candidates`` chunks each (filters applied inside them), chunks collapse to their
        documents, ``hybrid`` fuses the two rankings with RRF (``rrf_k``, per-retriever ``weights``), and
        an optional reranker reorders the top ``rerank_candidates``.
        """
        if not query.strip():
            raise ValueError("the query is empty")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if rerank is not None and rerank not in SCORERS:
            raise ValueError(f"rerank must be one of {', '.join(SCORERS)}, got {rerank!r}")
        for name, value in (("k", k), ("rerank_candidates", rerank_candidates), ("rrf_k", rrf_k)):
            if not 1 <= value <= MAX_RESULTS:
                raise ValueError(f"{name} must be between 1 and {MAX_RESULTS}, got {value}")
        for name, weight in (weights or {}).items():
            if name not in ("dense", "lexical") or not 0 <= weight <= 1000:  # NaN fails both comparisons
                raise ValueError(
                    f"weights: {name}={weight}: expected dense or lexical, a number from 0 to 1000"
                )
        if self.store.info() is None:
            return []
        wanted = normalize(filters)
        pool = max(candidates, k, rerank_candidates if rerank else 0)
        found: dict[str, list[tuple[int, float]]] = {}
        if mode in ("dense", "hybrid"):
            vector = self.encoder.encode_queries([query], show_progress=False)[0]
            found["dense"] = self.store.dense(vector, pool, wanted)
        if mode in ("lexical", "hybrid"):
            found["lexical"] = self.store.lexical(query, pool, wanted)
        chunks = self.store.chunks([cid for hits in found.values() for cid, _ in hits])
        best_chunk: dict[str, StoredChunk] = {}
        rankings: dict[str, list[str]] = {}
        scores: dict[str, dict[str, float]] = {}
        for name, hits in found.items():
            ranking: list[str] = []
            scores[name] = {}
            for chunk_id, score in hits:  # a document ranks where its best chunk does
                chunk = chunks[chunk_id]
                if chunk.doc_id not in scores[name]:
                    ranking.append(chunk.doc_id)
                    scores[name][chunk.doc_id] = score
                    best_chunk.setdefault(chunk.doc_id, chunk)
            rankings[name] = ranking
        if mode == "hybrid":
            fused = reciprocal_rank_fusion(rankings, weights, rrf_k)
        else:
            fused = list(scores[mode].items())
        ranks = {
            name: {doc: r for r, doc in enumerate(ranking, start=1)} for name, ranking in rankings.items()
        }
        if rerank:
            head = fused[:rerank_candidates]
            passages = [passage(best_chunk[doc].title, best_chunk[doc].text) for doc, _ in head]
            reranked = SCORERS[rerank](self.encoder, query, passages) if head else np.zeros(0)
            order = np.argsort(-reranked, kind="stable")
            ranks[rerank] = {head[i][0]: r for r, i in enumerate(order, start=1)}
            fused = [(head[i][0], float(reranked[i])) for i in order] + fused[rerank_candidates:]
        return [
            Hit(
                id=doc,
                score=float(score),
                ranks={name: table[doc] for name, table in ranks.items() if doc in table},
                text=best_chunk[doc].text,
                title=best_chunk[doc].title,
                metadata=best_chunk[doc].metadata,
                chunk=best_chunk[doc].position,
            )
            for doc, score in fused[:k]
        ]

    def search_auto(
        self,
        query: str,
        *,
        filters: Mapping[str, Any] | Sequence[Filter | str] | None = None,
        margin: float = MARGIN,
        **options: Any,
    ) -> tuple[Reading, list[Hit]]:
        """``search`` with the hard filters the index's encoder reads out of ``query`` (``auto_filter``)
        added to ``filters``; fields the caller filters on are the caller's and are not asked about."""
        given = normalize(filters)
        asked = {f: v for f, v in self.store.facets().items() if f not in {g.field for g in given}}
        reading = read_filters(self.encoder, query, asked, margin=margin)
        applied = given + [Filter(name, "=", value) for name, value in reading.filters.items()]
        return reading, self.search(query, filters=applied, **options)

    def search_many(
        self,
        queries: Sequence[tuple[Any, str]],
        *,
        auto_filter: bool = False,
        show_progress: bool | None = None,
        **options: Any,
    ) -> Iterator[tuple[Any, Reading | None, list[Hit]]]:
        """(query id, what auto-filtering read or None, hits) for each ``(id, text)`` in turn, with
        ``search``'s options (``search_auto``'s with ``auto_filter``); progress when many."""
        bar = tqdm(queries, desc="queries", disable=show_progress is False or len(queries) < 2)
        for query_id, text in bar:
            if auto_filter:
                yield query_id, *self.search_auto(text, **options)
            else:
                yield query_id, None, self.search(text, **options)

    def stats(self) -> dict[str, Any]:
        """Counts and settings, for ``dec2vec index stats``."""
        info = self.store.info()
        if info is None:
            return {"location": self.store.location, "documents": 0, "chunks": 0}
        counts = self.store.counts()
        return {
            "location": self.store.location,
            "backend": self.store.backend,
            "documents": counts["documents"],
            "chunks": counts["chunks"],
            "quantization": self.store.quantization,
            "encoder": info,
            "bytes": counts["bytes"],
        }

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
