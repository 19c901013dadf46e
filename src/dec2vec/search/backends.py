"""Which store a location opens: a registry by URL scheme (a new backend is one entry).

Backends are imported only when used, so PostgreSQL's client libraries stay optional.
"""

from __future__ import annotations

import importlib

from dec2vec.search.store import Store

# scheme (the part before "://"; "" for a plain path) -> "module:class" taking the location
BACKENDS = {
    "": "dec2vec.search.sqlite_store:SqliteStore",
    "postgresql": "dec2vec.search.postgres_store:PostgresStore",
    "postgres": "dec2vec.search.postgres_store:PostgresStore",
}


def open_store(location: str) -> Store:
    """``postgresql://…`` opens PostgreSQL + pgvector; a path opens a SQLite file."""
    scheme = location.split("://", 1)[0] if "://" in location else ""
    if scheme not in BACKENDS:
        known = ", ".join(f"{s}://" for s in BACKENDS if s)
        raise ValueError(f"{location}: no index backend for {scheme}:// (a file path, or one of {known})")
    module, _, name = BACKENDS[scheme].partition(":")
    return getattr(importlib.import_module(module), name)(location)
