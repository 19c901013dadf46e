"""The scale-out backend: PostgreSQL + pgvector (HNSW, cosine) with tsvector/ts_rank for the lexical side.

Same tables and answers as the SQLite store. Filtered dense queries scan the filtered rows exactly
(pgvector's HNSW would stop at ``ef_search`` candidates and return fewer than k under a selective filter).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from dec2vec.search.documents import Document
from dec2vec.search.filters import RANGE_OPS, Filter
from dec2vec.search.store import Quantization, StoredChunk, query_terms

TEXT_SEARCH_CONFIG = "english"


class PostgresStore:
    """Tables ``dec2vec_meta``, ``dec2vec_documents`` and ``dec2vec_chunks`` in the database of ``url``."""

    backend = "postgresql"
    quantization: Quantization = "float32"  # pgvector's HNSW over float vectors

    def __init__(self, url: str) -> None:
        self.url = self.location = url
        self.db = psycopg.connect(url, autocommit=True)
        self.db.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(self.db)
        self._depth = 0
        self._written = False

    def info(self) -> dict[str, Any] | None:
        if self.db.execute("SELECT to_regclass('dec2vec_meta')").fetchone()[0] is None:
            return None
        row = self.db.execute("SELECT value FROM dec2vec_meta WHERE key = 'encoder'").fetchone()
        return json.loads(row[0]) if row else None

    def create(self, info: dict[str, Any], quantization: Quantization) -> None:
        if quantization != "float32":
            raise ValueError("the PostgreSQL backend stores float32 vectors; quantization is SQLite's option")
        dim = int(info["dim"])
        with self.transaction():
            self.db.execute("CREATE TABLE dec2vec_meta (key text PRIMARY KEY, value text NOT NULL)")
            self.db.execute(
                """CREATE TABLE dec2vec_documents (
                       id text PRIMARY KEY, title text NOT NULL, metadata jsonb NOT NULL,
                       hash text NOT NULL)"""
            )
            self.db.execute(
                f"""CREATE TABLE dec2vec_chunks (
                       id bigserial PRIMARY KEY,
                       doc_id text NOT NULL REFERENCES dec2vec_documents(id) ON DELETE CASCADE,
                       position int NOT NULL,
                       text text NOT NULL,
                       metadata jsonb NOT NULL,
                       tsv tsvector NOT NULL,
                       embedding vector({dim}) NOT NULL)"""
            )
            self.db.execute("CREATE INDEX ON dec2vec_chunks (doc_id)")
            self.db.execute("CREATE INDEX ON dec2vec_chunks USING gin (tsv)")
            self.db.execute("CREATE INDEX ON dec2vec_chunks USING gin (metadata jsonb_path_ops)")
            self.db.execute("CREATE INDEX ON dec2vec_chunks USING hnsw (embedding vector_cosine_ops)")
            self.db.execute("INSERT INTO dec2vec_meta VALUES ('encoder', %s)", (json.dumps(info),))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._depth += 1
        try:
            with self.db.transaction():  # nested calls become savepoints
                yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._written:  # fresh statistics, or the planner may misjudge filters
            self._written = False
            self.db.execute("ANALYZE dec2vec_chunks")

    def hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        rows = self.db.execute("SELECT id, hash FROM dec2vec_documents WHERE id = ANY(%s)", (list(doc_ids),))
        return dict(rows.fetchall())

    def put(self, doc: Document, content_hash: str, chunks: list[str], vectors: np.ndarray) -> None:
        metadata = json.dumps(doc.metadata, ensure_ascii=False)
        self._written = True
        with self.transaction():
            self.db.execute("DELETE FROM dec2vec_chunks WHERE doc_id = %s", (doc.id,))
            self.db.execute(
                """INSERT INTO dec2vec_documents VALUES (%s, %s, %s, %s)
                   ON CONFLICT (id) DO UPDATE SET title = excluded.title, metadata = excluded.metadata,
                                                  hash = excluded.hash""",
                (doc.id, doc.title, metadata, content_hash),
            )
            with self.db.cursor() as cursor:
                cursor.executemany(
                    f"""INSERT INTO dec2vec_chunks (doc_id, position, text, metadata, tsv, embedding)
                        VALUES (%s, %s, %s, %s, to_tsvector('{TEXT_SEARCH_CONFIG}', %s), %s)""",
                    [
                        (doc.id, i, text, metadata, f"{doc.title} {text}", np.asarray(v, dtype=np.float32))
                        for i, (text, v) in enumerate(zip(chunks, vectors, strict=True))
                    ],
                )

    def delete(self, doc_ids: Sequence[str]) -> int:
        self._written = True
        with self.transaction():
            deleted = self.db.execute("DELETE FROM dec2vec_documents WHERE id = ANY(%s)", (list(doc_ids),))
            return deleted.rowcount

    @staticmethod
    def _where(filters: list[Filter]) -> tuple[str, list[Any]]:
        """``WHERE`` over the ``jsonb`` metadata and its parameters ("" when there are no filters)."""
        clauses, params = [], []
        for f in filters:
            if f.op in ("=", "in"):  # jsonb containment compares typed values and can use the GIN index
                values = f.value if f.op == "in" else (f.value,)
                clauses.append("(" + " OR ".join(["metadata @> %s::jsonb"] * len(values)) + ")")
                params += [json.dumps({f.field: v}) for v in values]
            else:
                if f.op not in RANGE_OPS:  # the grammar's closed set: the one piece spliced into the text
                    raise ValueError(f"filter {f.field}: unknown operator {f.op!r}")
                clauses.append(
                    f"(CASE WHEN jsonb_typeof(metadata -> %s) = 'number' "
                    f"THEN (metadata ->> %s)::float8 END) {f.op} %s"
                )
                params += [f.field, f.field, f.value]
        return ("WHERE " + " AND ".join(clauses), params) if clauses else ("", [])

    def dense(self, vector: np.ndarray, k: int, filters: list[Filter]) -> list[tuple[int, float]]:
        query = np.asarray(vector, dtype=np.float32)
        where, params = self._where(filters)
        with self.transaction():
            self.db.execute(f"SET LOCAL hnsw.ef_search = {max(40, int(k))}")
            if where:
                sql = f"""WITH passing AS MATERIALIZED (SELECT id, embedding FROM dec2vec_chunks {where})
                          SELECT id, embedding <=> %s AS d FROM passing ORDER BY d LIMIT %s"""
            else:
                sql = "SELECT id, embedding <=> %s AS d FROM dec2vec_chunks ORDER BY d LIMIT %s"
            rows = self.db.execute(sql, [*params, query, k]).fetchall()
        return [(chunk_id, 1.0 - distance) for chunk_id, distance in rows]

    def lexical(self, query: str, k: int, filters: list[Filter]) -> list[tuple[int, float]]:
        terms = list(dict.fromkeys(query_terms(query)))
        if not terms:
            return []
        where, params = self._where(filters)
        where = f"{where} AND tsv @@ q" if where else "WHERE tsv @@ q"
        rows = self.db.execute(
            f"""SELECT id, ts_rank(tsv, q) AS score
                FROM dec2vec_chunks, to_tsquery('{TEXT_SEARCH_CONFIG}', %s) AS q
                {where} ORDER BY score DESC, id LIMIT %s""",
            [" | ".join(terms), *params, k],
        ).fetchall()
        return [(chunk_id, float(score)) for chunk_id, score in rows]

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        rows = self.db.execute(
            """SELECT c.id, c.doc_id, c.position, c.text, d.title, d.metadata
               FROM dec2vec_chunks c JOIN dec2vec_documents d ON d.id = c.doc_id WHERE c.id = ANY(%s)""",
            (list(ids),),
        )
        return {r[0]: StoredChunk(*r) for r in rows}

    def _count(self, table: str) -> int:
        return self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def counts(self) -> dict[str, int]:
        return {
            "documents": self._count("dec2vec_documents"),
            "chunks": self._count("dec2vec_chunks"),
            "bytes": self.db.execute("SELECT pg_total_relation_size('dec2vec_chunks')").fetchone()[0],
        }

    def facets(self) -> dict[str, dict[str | bool, int]]:
        if self.info() is None:
            return {}
        rows = self.db.execute(
            """SELECT j.key, j.value, count(*) FROM dec2vec_documents, jsonb_each(metadata) AS j
               WHERE jsonb_typeof(j.value) IN ('string', 'boolean') GROUP BY j.key, j.value"""
        )
        out: dict[str, dict[str | bool, int]] = {}
        for key, value, count in rows:  # psycopg decodes jsonb: a str or a bool
            out.setdefault(key, {})[value] = count
        return out

    def check(self) -> None:
        orphans = self.db.execute(
            """SELECT count(*) FROM dec2vec_documents d
               WHERE NOT EXISTS (SELECT 1 FROM dec2vec_chunks c WHERE c.doc_id = d.id)"""
        ).fetchone()[0]
        if orphans:
            raise RuntimeError(f"{self.url}: {orphans} documents without chunks")

    def close(self) -> None:
        self.db.close()
