"""Search: an index of documents (SQLite + sqlite-vec + FTS5, or PostgreSQL + pgvector), hybrid retrieval,
metadata filters and reranking with the same model."""

from dec2vec.search.documents import Document, read_documents, read_queries
from dec2vec.search.index import Hit, Index, IngestReport
from dec2vec.search.store import EncoderMismatchError

__all__ = [
    "Document",
    "EncoderMismatchError",
    "Hit",
    "Index",
    "IngestReport",
    "read_documents",
    "read_queries",
]
