"""The embedded default index: one SQLite file with FTS5 (BM25) and a sqlite-vec ``vec0`` vector table.

The pyenv Python here cannot load SQLite extensions, so the connection comes from ``pysqlite3`` (a wheel
with its own SQLite) when the standard module lacks ``enable_load_extension``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_vec

from dec2vec.search.documents import Document
from dec2vec.search.filters import RANGE_OPS, Filter
from dec2vec.search.store import Quantization, StoredChunk, query_terms


class IndexLockedError(RuntimeError):
    """Another connection holds the write lock for longer than the busy timeout."""


BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another's lock before IndexLockedError
KNN_LIMIT = 4096  # sqlite-vec's most neighbours per KNN query
RESCORE_FACTOR = 8  # quantized KNN fetches k * this candidates, then ranks them by float cosine


def _connect(path: str) -> sqlite3.Connection:
    module: Any = sqlite3
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        import pysqlite3.dbapi2 as module  # type: ignore[no-redef]
    # isolation_level=None: we issue BEGIN/COMMIT ourselves; a writer waits up to 30 s for another's lock
    connection = module.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    connection.enable_load_extension(True)
    sqlite_vec.load(connection)
    connection.enable_load_extension(False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header and schema
    except module.DatabaseError as err:
        connection.close()
        raise ValueError(f"{path}: not a usable SQLite index ({err})") from err
    return connection


def where_clause(filters: list[Filter]) -> tuple[str, list[Any]]:
    """A conjunction over the ``metadata`` JSON column and its parameters ("" when there are no filters)."""
    clauses, params = [], []
    for f in filters:
        path = f'$."{f.field}"'
        if f.op in ("=", "in"):
            values = f.value if f.op == "in" else (f.value,)
            clauses.append(f"json_extract(metadata, ?) IN ({', '.join('?' * len(values))})")
            params += [path, *values]
        else:  # only numbers compare: SQLite would rank any text above every number
            if f.op not in RANGE_OPS:  # the grammar's closed set: the one piece spliced into the text
                raise ValueError(f"filter {f.field}: unknown operator {f.op!r}")
            clauses.append(
                f"(json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) {f.op} ?)"
            )
            params += [path, path, f.value]
    return " AND ".join(clauses), params


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, metadata TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
-- chunks.metadata is the document's, copied so that filters run on this table alone
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(title, text, tokenize='porter unicode61');
"""


class SqliteStore:
    backend = "sqlite"
    """Documents, chunks, an FTS5 table and a vec0 table whose rowids are the chunk ids."""

    def __init__(self, path: str | Path) -> None:
        self.path = self.location = str(path)
        self.db = _connect(self.path)
        self._in_transaction = False
        self._quantization: Quantization | None = None

    # ---- setup ----------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any] | None:
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        if not exists:
            return None
        row = self.db.execute("SELECT value FROM meta WHERE key = 'encoder'").fetchone()
        return json.loads(row[0]) if row else None

    @property
    def quantization(self) -> Quantization:
        """Fixed when the index is created; read once (every put and every dense query asks)."""
        if self._quantization is None:
            if self.info() is None:
                return "float32"
            row = self.db.execute("SELECT value FROM meta WHERE key = 'quantization'").fetchone()
            self._quantization = row[0] if row else "float32"
        return self._quantization

    def create(self, info: dict[str, Any], quantization: Quantization) -> None:
        dim = int(info["dim"])
        columns = f"embedding float[{dim}] distance_metric=cosine"
        if quantization == "int8":
            columns += f", quantized int8[{dim}] distance_metric=cosine"
        elif quantization == "binary":
            columns += f", quantized bit[{dim}]"
        with self.transaction():
            for statement in filter(str.strip, SCHEMA.split(";")):
                self.db.execute(statement)
            self.db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vec USING vec0({columns})")
            self.db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("encoder", json.dumps(info)), ("quantization", quantization)],
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_transaction:  # nested: the outer transaction commits
            yield
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except self.db.OperationalError as err:  # the connection module's own class (sqlite3 or pysqlite3)
            raise IndexLockedError(
                f"{self.path} is being written by another process (an ingest in progress?): {err}"
            ) from err
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_transaction = False

    # ---- writing --------------------------------------------------------------------------------------

    def hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        rows = self.db.execute(
            "SELECT id, hash FROM documents WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(doc_ids),),
        )
        return dict(rows.fetchall())

    def _delete_chunks(self, doc_ids: Sequence[str]) -> None:
        ids = json.dumps(list(doc_ids))
        rows = self.db.execute(
            "SELECT id FROM chunks WHERE doc_id IN (SELECT value FROM json_each(?))", (ids,)
        ).fetchall()
        # By rowid one at a time: an IN (subquery) makes vec0 and FTS5 scan the whole table.
        self.db.executemany("DELETE FROM chunks_fts WHERE rowid = ?", rows)
        self.db.executemany("DELETE FROM chunks_vec WHERE rowid = ?", rows)
        self.db.execute("DELETE FROM chunks WHERE doc_id IN (SELECT value FROM json_each(?))", (ids,))

    def put(self, doc: Document, content_hash: str, chunks: list[str], vectors: np.ndarray) -> None:
        metadata = json.dumps(doc.metadata, ensure_ascii=False)
        with self.transaction():
            self._delete_chunks([doc.id])
            self.db.execute(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                (doc.id, doc.title, metadata, content_hash),
            )
            quantized = self.quantization
            for position, (text, vector) in enumerate(zip(chunks, vectors, strict=True)):
                chunk_id = self.db.execute(
                    "INSERT INTO chunks (doc_id, position, text, metadata) VALUES (?, ?, ?, ?)",
                    (doc.id, position, text, metadata),
                ).lastrowid
                self.db.execute(
                    "INSERT INTO chunks_fts (rowid, title, text) VALUES (?, ?, ?)",
                    (chunk_id, doc.title, text),
                )
                blob = np.asarray(vector, dtype=np.float32).tobytes()
                if quantized == "float32":
                    self.db.execute(
                        "INSERT INTO chunks_vec (rowid, embedding) VALUES (?, ?)", (chunk_id, blob)
                    )
                else:
                    quantize = (
                        "vec_quantize_int8(?, 'unit')" if quantized == "int8" else "vec_quantize_binary(?)"
                    )
                    self.db.execute(
                        f"INSERT INTO chunks_vec (rowid, embedding, quantized) VALUES (?, ?, {quantize})",
                        (chunk_id, blob, blob),
                    )

    def delete(self, doc_ids: Sequence[str]) -> int:
        with self.transaction():
            present = len(self.hashes(doc_ids))
            self._delete_chunks(doc_ids)
            self.db.execute(
                "DELETE FROM documents WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(doc_ids)),),
            )
        return present

    # ---- searching ------------------------------------------------------------------------------------

    @staticmethod
    def _filtered(filters: list[Filter]) -> tuple[str, list[Any]]:
        """`` AND rowid IN (chunks passing the filters)``: the filter runs inside the KNN/full-text query."""
        where, params = where_clause(filters)
        return (f" AND rowid IN (SELECT id FROM chunks WHERE {where})", params) if where else ("", [])

    def dense(self, vector: np.ndarray, k: int, filters: list[Filter]) -> list[tuple[int, float]]:
        """The ``k`` nearest chunks; sqlite-vec finds at most 4,096 per query, so larger ``k`` is clamped."""
        k = min(k, KNN_LIMIT)
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        clause, params = self._filtered(filters)
        quantized = self.quantization
        if quantized == "float32":
            rows = self.db.execute(
                f"SELECT rowid, distance FROM chunks_vec WHERE embedding MATCH ? AND k = ?{clause} "
                "ORDER BY distance",
                [blob, k, *params],
            ).fetchall()
            return [(rowid, 1.0 - distance) for rowid, distance in rows]
        quantize = "vec_quantize_int8(?, 'unit')" if quantized == "int8" else "vec_quantize_binary(?)"
        rows = self.db.execute(
            f"""
            WITH candidates AS (
                SELECT rowid FROM chunks_vec WHERE quantized MATCH {quantize} AND k = ?{clause}
            )
            SELECT rowid, vec_distance_cosine(embedding, ?) AS d FROM chunks_vec
            WHERE rowid IN (SELECT rowid FROM candidates) ORDER BY d LIMIT ?
            """,
            [blob, min(k * RESCORE_FACTOR, KNN_LIMIT), *params, blob, k],
        ).fetchall()
        return [(rowid, 1.0 - distance) for rowid, distance in rows]

    def lexical(self, query: str, k: int, filters: list[Filter]) -> list[tuple[int, float]]:
        terms = list(dict.fromkeys(query_terms(query)))
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        clause, params = self._filtered(filters)
        rows = self.db.execute(
            f"SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?{clause} "
            "ORDER BY bm25(chunks_fts) LIMIT ?",
            [match, *params, k],
        ).fetchall()
        return [(rowid, -score) for rowid, score in rows]  # FTS5's bm25() is lower-is-better

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        rows = self.db.execute(
            """SELECT c.id, c.doc_id, c.position, c.text, d.title, d.metadata
               FROM chunks c JOIN documents d ON d.id = c.doc_id
               WHERE c.id IN (SELECT value FROM json_each(?))""",
            (json.dumps(list(ids)),),
        )
        return {r[0]: StoredChunk(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows}

    # ---- bookkeeping ----------------------------------------------------------------------------------

    def _count(self, table: str) -> int:
        return self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def counts(self) -> dict[str, int]:
        return {
            "documents": self._count("documents"),
            "chunks": self._count("chunks"),
            "bytes": Path(self.path).stat().st_size if Path(self.path).exists() else 0,
        }

    def facets(self) -> dict[str, dict[str | bool, int]]:
        if self.info() is None:
            return {}
        rows = self.db.execute(
            """SELECT j.key, j.type, j.value, count(*) FROM documents, json_each(documents.metadata) AS j
               WHERE j.type IN ('text', 'true', 'false') GROUP BY j.key, j.type, j.value"""
        )
        out: dict[str, dict[str | bool, int]] = {}
        for key, kind, value, count in rows:
            out.setdefault(key, {})[value if kind == "text" else kind == "true"] = count
        return out

    def check(self) -> None:
        counts = {t: self._count(t) for t in ("chunks", "chunks_fts", "chunks_vec")}
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"{self.path}: index out of step: {counts}")
        orphans = self.db.execute(
            "SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.doc_id = d.id)"
        ).fetchone()[0]
        if orphans:
            raise RuntimeError(f"{self.path}: {orphans} documents without chunks")

    def close(self) -> None:
        self.db.close()
