"""Corpus embedding at scale: documents → chunks → vectors in Parquet shards that an index bulk-loads.

One job is either one shard of N (``dec2vec embed --shard i/N``, e.g. one per GPU or node, each on its
contiguous slice of the documents) or a Ray Data job (``--ray``) mapping an actor pool of encoders over
the dataset. Shards hold one row per chunk, chunked exactly as ``Index.add`` would, next to a
``dec2vec_encoder.json`` naming the encoder, so ``dec2vec index add DB SHARDS/`` loads them without the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dec2vec.files import DataFormatError
from dec2vec.models import TextEncoder, load_model
from dec2vec.search.documents import Document, read_documents
from dec2vec.search.index import Embedded, Index, IngestReport, chunk_and_embed, encoder_info

ENCODER_FILE = "dec2vec_encoder.json"
COLUMNS = ("id", "chunk", "text", "title", "metadata", "hash")


def read_corpus(paths: Sequence[str | Path]) -> list[Document]:
    """Documents from folders, .txt/.md/.jsonl files (as ``read_documents``) and Parquet files
    with ``id`` and ``text`` columns (``title`` and ``metadata``, a JSON string or struct, optional)."""
    out: list[Document] = []
    for path in map(Path, paths):
        if path.suffix != ".parquet":
            out += read_documents([path])
            continue
        table = pq.read_table(path)
        if missing := {"id", "text"} - set(table.column_names):
            raise DataFormatError(f"{path}: Parquet needs columns id and text (missing {sorted(missing)})")
        for number, row in enumerate(table.to_pylist()):
            metadata = row.get("metadata") or {}
            metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
            if not isinstance(row["text"], str) or not (row["text"].strip() or row.get("title")):
                raise DataFormatError(f"{path}: row {number}: expected a string 'text' (or a title)")
            out.append(Document(str(row["id"]), row["text"], row.get("title") or "", metadata))
    return out


def embed_documents(
    encoder: TextEncoder, documents: Sequence[Document], chunk_tokens: int = 256, chunk_overlap: int = 32
) -> dict[str, list]:
    """Column lists (``COLUMNS`` + ``vector``) for the chunks of ``documents``, cut and embedded as
    ``Index.add`` does."""
    columns: dict[str, list] = {name: [] for name in (*COLUMNS, "vector")}
    embedded = chunk_and_embed(encoder, documents, chunk_tokens, chunk_overlap)
    for doc, (chunks, vectors) in zip(documents, embedded, strict=True):
        content_hash, metadata = doc.content_hash(), json.dumps(doc.metadata)
        for number, (text, vector) in enumerate(zip(chunks, vectors, strict=True)):
            row = {"id": doc.id, "chunk": number, "text": text, "title": doc.title, "metadata": metadata,
                   "hash": content_hash, "vector": vector.astype(np.float32)}  # fmt: skip
            for name, value in row.items():
                columns[name].append(value)
    return columns


def _write_info(out_dir: Path, encoder: TextEncoder, chunk_tokens: int, chunk_overlap: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {**encoder_info(encoder), "chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap}
    (out_dir / ENCODER_FILE).write_text(json.dumps(info, indent=2) + "\n")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)`` with ``0 <= i < N``: which contiguous slice of the rows a job embeds."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise ValueError(f"--shard {text!r}: expected i/N, e.g. 0/4") from err
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: expected 0 <= i < N")
    return index, count


def shard_bounds(total: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``i`` of ``N`` over ``total`` rows: contiguous, sizes within one."""
    index, count = shard
    return total * index // count, total * (index + 1) // count


def embed_shard(
    encoder: TextEncoder,
    documents: Sequence[Document],
    out_dir: Path,
    shard: tuple[int, int] = (0, 1),
    *,
    chunk_tokens: int = 256,
    chunk_overlap: int = 32,
    batch_documents: int = 256,
) -> Path:
    """Embed shard ``i`` of ``n`` (a contiguous slice of ``documents``) into ``out_dir/part-…parquet``."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: expected 0 <= i < n")
    start, stop = shard_bounds(len(documents), shard)
    _write_info(out_dir, encoder, chunk_tokens, chunk_overlap)
    path = out_dir / f"part-{index:05d}-of-{count:05d}.parquet"
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, _schema(encoder.dim)) as writer:
        for begin in range(start, stop, batch_documents):
            group = documents[begin : min(begin + batch_documents, stop)]
            columns = embed_documents(encoder, group, chunk_tokens, chunk_overlap)
            writer.write_table(pa.table(columns, schema=_schema(encoder.dim)))
    partial.replace(path)  # a killed job leaves no half-written shard behind
    return path


def _schema(dim: int) -> pa.Schema:
    return pa.schema(
        [("id", pa.string()), ("chunk", pa.int32()), ("text", pa.string()), ("title", pa.string()),
         ("metadata", pa.string()), ("hash", pa.string()), ("vector", pa.list_(pa.float32(), dim))]
    )  # fmt: skip


class _RayEmbedder:
    """A Ray Data actor: one encoder per actor, loaded once, mapping batches of documents to chunk rows."""

    def __init__(self, spec: str, chunk_tokens: int, chunk_overlap: int) -> None:
        self.encoder = load_model(spec)
        self.chunk_tokens, self.chunk_overlap = chunk_tokens, chunk_overlap

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        documents = [
            Document(str(i), t, title or "", json.loads(m))
            for i, t, title, m in zip(
                batch["id"], batch["text"], batch["title"], batch["metadata"], strict=True
            )
        ]
        columns = embed_documents(self.encoder, documents, self.chunk_tokens, self.chunk_overlap)
        columns["vector"] = np.stack(columns["vector"]) if columns["vector"] else np.zeros((0, 0), np.float32)
        return columns


def embed_with_ray(
    encoder: TextEncoder,
    documents: Sequence[Document],
    out_dir: Path,
    *,
    actors: int = 2,
    batch_documents: int = 64,
    address: str | None = None,
    chunk_tokens: int = 256,
    chunk_overlap: int = 32,
) -> list[Path]:
    """A Ray Data job: ``actors`` encoder actors embed the documents; Parquet shards land in ``out_dir``.

    ``address`` joins a running cluster (``ray://…`` or ``auto``); without it a local one is started.
    Each actor loads the encoder from its model spec, so workers need the model where the spec points.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        _write_info(out_dir, encoder, chunk_tokens, chunk_overlap)
        rows = [
            {"id": d.id, "text": d.text, "title": d.title, "metadata": json.dumps(d.metadata)}
            for d in documents
        ]
        dataset = ray.data.from_items(rows).map_batches(
            _RayEmbedder,
            fn_constructor_kwargs={
                "spec": encoder.spec, "chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap,
            },
            batch_size=batch_documents,
            batch_format="numpy",
            concurrency=actors,
        )  # fmt: skip
        dataset.write_parquet(str(out_dir))
    finally:
        if started:
            ray.shutdown()
    return sorted(out_dir.glob("*.parquet"))


def read_shards(directory: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The encoder description of a shard directory and its rows (one per chunk), in file order."""
    info_path = directory / ENCODER_FILE
    if not info_path.exists():
        raise DataFormatError(f"{directory}: no {ENCODER_FILE}: not a directory written by dec2vec embed")
    info = json.loads(info_path.read_text())

    def rows() -> Iterator[dict[str, Any]]:
        for path in sorted(directory.glob("*.parquet")):
            yield from pq.read_table(path).to_pylist()

    return info, rows()


def load_shards(index: Index, directory: Path, *, batch_size: int = 256) -> IngestReport:
    """Bulk-load a shard directory into ``index`` (upserts by document id, content hashes as in ``add``)."""
    info, rows = read_shards(directory)

    def documents() -> Iterator[Embedded]:
        current: list[dict[str, Any]] = []
        for row in rows:  # a document's chunks are consecutive rows
            if current and row["id"] != current[0]["id"]:
                yield _embedded(current)
                current = []
            current.append(row)
        if current:
            yield _embedded(current)

    return index.add_embedded(documents(), info, batch_size=batch_size)


def _embedded(rows: list[dict[str, Any]]) -> Embedded:
    first = rows[0]
    rows = sorted(rows, key=lambda r: r["chunk"])
    document = Document(first["id"], "", first["title"], json.loads(first["metadata"]))
    vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    return Embedded(document, first["hash"], [r["text"] for r in rows], vectors)
